package ec2_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/cloud/ec2"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/mototest"
	"zdt.dev/zdt/manifests"
)

// extent is a run of non-zero bytes in a test disk.
type extent struct{ off, n int64 }

// writeDisk writes a sparse raw disk of size bytes whose only non-zero
// bytes are the extents (random, from seed), and returns it.
func writeDisk(t testing.TB, path string, size int64, seed uint64, extents []extent) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed)}))
	for _, e := range extents {
		b := make([]byte, e.n)
		for i := range b {
			b[i] = byte(rng.Uint32()) | 1 // never a zero byte: every block touched is non-zero
		}
		if _, err := f.WriteAt(b, e.off); err != nil {
			t.Fatal(err)
		}
	}
}

// nonZeroBlocks lists the indexes of the disk's 512 KiB blocks that are
// not all zeros.
func nonZeroBlocks(t testing.TB, path string) []int32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []int32
	buf := make([]byte, ec2.BlockSize)
	zero := make([]byte, ec2.BlockSize)
	for i := int32(0); ; i++ {
		n, err := io.ReadFull(f, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			out = append(out, i)
		}
		if err != nil {
			return out
		}
	}
}

// amiBundle creates a bundle NAME VERSION holding one AMI item "node"
// made from disk, and opens it.
func amiBundle(t testing.TB, dir, name, version, disk string) *bundle.Archive {
	t.Helper()
	spec, err := manifests.Parse("zdt.yaml", []byte(fmt.Sprintf(`apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata: {name: %s, version: "%s"}
components:
  - name: os
    amis:
      - {name: node, source: %s, description: "test node", architecture: x86_64, bootMode: uefi, ena: true, tpm: true}
`, name, version, disk)))
	if err != nil {
		t.Fatal(err)
	}
	spec.Dir = filepath.Dir(disk)
	out := filepath.Join(dir, name+"-"+version+".zdt")
	if _, err := build.Create(context.Background(), spec, build.CreateOptions{Output: out, CacheDir: filepath.Join(dir, "cache")}); err != nil {
		t.Fatal(err)
	}
	a, err := bundle.Open(context.Background(), out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// clients are the test's own view of moto (not through zdt).
type clients struct {
	ec2 *awsec2.Client
	ebs *ebs.Client
}

func newClients(t testing.TB, m *mototest.Server) clients {
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(mototest.Region))
	if err != nil {
		t.Fatal(err)
	}
	return clients{
		ec2: awsec2.NewFromConfig(cfg, func(o *awsec2.Options) { o.BaseEndpoint = aws.String(m.URL) }),
		ebs: ebs.NewFromConfig(cfg, func(o *ebs.Options) { o.BaseEndpoint = aws.String(m.URL) }),
	}
}

func (c clients) images(t testing.TB) []types.Image {
	t.Helper()
	out, err := c.ec2.DescribeImages(context.Background(), &awsec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Images
}

func (c clients) snapshots(t testing.TB) []types.Snapshot {
	t.Helper()
	out, err := c.ec2.DescribeSnapshots(context.Background(), &awsec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag-key"), Values: []string{ec2.TagItemDigest}}}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Snapshots
}

func tagOf(tags []types.Tag, k string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == k {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// install installs a with the registrar into root.
func install(t testing.TB, a *bundle.Archive, root string, reg installer.AMIRegistrar, prune bool) (installer.Result, error) {
	t.Helper()
	return installer.Install(context.Background(), a, installer.Options{Root: root, AMIs: reg, PruneAMIs: prune})
}

func newRegistrar(t testing.TB, m *mototest.Server, wrap func(ec2.EBSAPI) ec2.EBSAPI) *ec2.Registrar {
	return newRegistrarAt(t, m.URL, wrap)
}

func newRegistrarAt(t testing.TB, url string, wrap func(ec2.EBSAPI) ec2.EBSAPI) *ec2.Registrar {
	t.Helper()
	opts := ec2.Options{Region: mototest.Region, Endpoint: url}
	if wrap != nil {
		c := newClients(t, &mototest.Server{URL: url})
		opts.EBS = wrap(c.ebs)
		opts.EC2 = c.ec2
	}
	r, err := ec2.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type listedBlock struct {
	index int32
	token string
}

// listSnapshotBlocks is EBS ListSnapshotBlocks. moto 5.2.1 answers it
// with each BlockIndex as a JSON string ("0"), which the Go SDK refuses
// (it wants a number), so the test sends the request itself (moto checks
// no signature; it routes by the credential scope) and reads either.
func listSnapshotBlocks(t testing.TB, m *mototest.Server, snap string) []listedBlock {
	t.Helper()
	req, _ := http.NewRequest("GET", m.URL+"/snapshots/"+snap+"/blocks", nil)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/"+mototest.Region+"/ebs/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Blocks []struct {
			BlockIndex json.Number
			BlockToken string
		}
	}
	dec := json.NewDecoder(resp.Body)
	if err := dec.Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("ListSnapshotBlocks: %s: %v", resp.Status, err)
	}
	var bs []listedBlock
	for _, b := range out.Blocks {
		i, err := strconv.ParseInt(strings.Trim(b.BlockIndex.String(), `"`), 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, listedBlock{int32(i), b.BlockToken})
	}
	return bs
}

// TestRegisterFromSparseDisk registers a 1 GiB sparse raw disk against
// moto: the snapshot holds exactly the non-zero 512 KiB blocks (read back
// with ListSnapshotBlocks / GetSnapshotBlock, equal to the source; the last
// block of the data ends mid-block), the image has the metadata and the
// tags, and a re-run uploads nothing and registers nothing.
func TestRegisterFromSparseDisk(t *testing.T) {
	m := mototest.Shared(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "node.raw")
	writeDisk(t, disk, 1<<30, 1, []extent{{0, 4096}, {1 << 20, 3<<20 + 1000}, {300 << 20, 512 << 10}, {(1 << 30) - 100, 100}})
	want := nonZeroBlocks(t, disk)
	a := amiBundle(t, dir, "plat", "1.0", disk)
	root := filepath.Join(dir, "root")
	reg := newRegistrar(t, m, nil)

	res, err := install(t, a, root, reg, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AMIs) != 1 || res.AMIs[0].ImageID == "" || res.AMIs[0].SnapshotID == "" {
		t.Fatalf("install registered %+v", res.AMIs)
	}
	ami := res.AMIs[0]
	if got := reg.UploadedBlocks(); got != int64(len(want)) || ami.Blocks != int64(len(want)) {
		t.Errorf("uploaded %d blocks (recorded %d), want the %d non-zero ones", got, ami.Blocks, len(want))
	}
	if len(res.Plan.AMIs) != 1 || res.Plan.AMIs[0].Action != installer.AMIRegister {
		t.Errorf("plan: %+v, want one register", res.Plan.AMIs)
	}

	// The snapshot's blocks, read back, are the disk's non-zero blocks.
	c := newClients(t, m)
	ctx := context.Background()
	blocks := listSnapshotBlocks(t, m, ami.SnapshotID)
	var got []int32
	for _, b := range blocks {
		got = append(got, b.index)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("snapshot blocks %v, want the non-zero blocks %v", got, want)
	}
	src, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, b := range blocks {
		i := b.index
		out, err := c.ebs.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(ami.SnapshotID), BlockIndex: aws.Int32(i), BlockToken: aws.String(b.token)})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(out.BlockData)
		out.BlockData.Close()
		wantData := make([]byte, ec2.BlockSize)
		src.ReadAt(wantData, int64(i)*ec2.BlockSize) // the last block is padded with zeros
		if !bytes.Equal(data, wantData) {
			t.Fatalf("block %d differs from the source", i)
		}
		sum := sha256.Sum256(wantData)
		if cs := aws.ToString(out.Checksum); cs != base64.StdEncoding.EncodeToString(sum[:]) {
			t.Errorf("block %d checksum %q, want the block's base64 sha256", i, cs)
		}
	}

	// The image: its name, tags and (where moto keeps them) metadata.
	imgs := c.images(t)
	if len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != ami.ImageID {
		t.Fatalf("images %+v, want %s", imgs, ami.ImageID)
	}
	it := a.Root.Digest.String()
	for k, v := range map[string]string{ec2.TagBundle: "plat", ec2.TagBundleVersion: "1.0", ec2.TagBundleRoot: it, ec2.TagItem: "node", ec2.TagItemDigest: ami.ItemDigest, ec2.TagSnapshot: ami.SnapshotID} {
		if got := tagOf(imgs[0].Tags, k); got != v {
			t.Errorf("image tag %s = %q, want %q", k, got, v)
		}
	}
	if n := aws.ToString(imgs[0].Name); !strings.HasPrefix(n, "node-") || n != ami.Name {
		t.Errorf("image name %q, recorded %q", n, ami.Name)
	}
	snaps := c.snapshots(t)
	if len(snaps) != 1 || tagOf(snaps[0].Tags, ec2.TagItemDigest) != ami.ItemDigest || tagOf(snaps[0].Tags, ec2.TagBundleRoot) != it {
		t.Errorf("snapshots %+v, want one tagged with the item and bundle", snaps)
	}

	// The generation records it; a re-run reuses it and uploads nothing.
	st, err := installer.GetStatus(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation == nil || len(st.Generation.AMIs) != 1 || st.Generation.AMIs[0].ImageID != ami.ImageID {
		t.Fatalf("status: %+v", st.Generation)
	}
	again := newRegistrar(t, m, nil)
	res, err = install(t, a, root, again, false)
	if err != nil {
		t.Fatal(err)
	}
	if again.UploadedBlocks() != 0 || res.Applied || len(res.Plan.AMIs) != 1 || res.Plan.AMIs[0].Action != installer.AMIReuse || res.Plan.AMIs[0].ImageID != ami.ImageID {
		t.Fatalf("re-run: uploaded %d blocks, applied %v, plan %+v", again.UploadedBlocks(), res.Applied, res.Plan.AMIs)
	}
	if n, s := len(c.images(t)), len(c.snapshots(t)); n != 1 || s != 1 {
		t.Fatalf("re-run: %d images, %d snapshots, want 1 and 1", n, s)
	}
}

// TestUpgradeAndPruneAMIs: an upgrade registers a new image beside the
// old one; --prune-amis keeps what the current and the previous
// generation use, so the old image goes (with its snapshot) only once a
// later generation no longer needs it for rollback.
func TestUpgradeAndPruneAMIs(t *testing.T) {
	m := mototest.Shared(t)
	dir := t.TempDir()
	d1, d2 := filepath.Join(dir, "d1", "node.raw"), filepath.Join(dir, "d2", "node.raw")
	os.MkdirAll(filepath.Dir(d1), 0o755)
	os.MkdirAll(filepath.Dir(d2), 0o755)
	writeDisk(t, d1, 8<<20, 1, []extent{{0, 1 << 20}})
	writeDisk(t, d2, 8<<20, 2, []extent{{0, 1 << 20}, {6 << 20, 4096}})
	v1 := amiBundle(t, dir, "plat", "1", d1)
	v2 := amiBundle(t, dir, "plat", "2", d2)
	v3 := amiBundle(t, dir, "plat", "3", d2) // the same AMI item as v2
	root := filepath.Join(dir, "root")
	c := newClients(t, m)

	r1, err := install(t, v1, root, newRegistrar(t, m, nil), true)
	if err != nil {
		t.Fatal(err)
	}
	a1 := r1.AMIs[0]
	r2, err := install(t, v2, root, newRegistrar(t, m, nil), true)
	if err != nil {
		t.Fatal(err)
	}
	a2 := r2.AMIs[0]
	if a2.ImageID == a1.ImageID || a2.ItemDigest == a1.ItemDigest {
		t.Fatalf("upgrade reused %s", a1.ImageID)
	}
	for _, p := range r2.Plan.AMIs {
		if p.Action == installer.AMIDeregister {
			t.Fatalf("v2 --prune-amis deregisters %s, which generation 1 (rollback) uses", p.ImageID)
		}
	}
	if n := len(c.images(t)); n != 2 {
		t.Fatalf("%d images after the upgrade, want 2", n)
	}
	// v3 (same AMI as v2) with --prune-amis: generation 1's image goes.
	reg := newRegistrar(t, m, nil)
	plan, err := installer.Install(context.Background(), v3, installer.Options{Root: root, AMIs: reg, PruneAMIs: true, PlanOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, p := range plan.Plan.AMIs {
		actions = append(actions, string(p.Action)+" "+p.ImageID)
	}
	if wantA := []string{"reuse " + a2.ImageID, "deregister " + a1.ImageID}; !slices.Equal(actions, wantA) {
		t.Fatalf("plan %v, want %v", actions, wantA)
	}
	if n := len(c.images(t)); n != 2 {
		t.Fatalf("--plan changed the images: %d", n)
	}
	r3, err := install(t, v3, root, reg, true)
	if err != nil {
		t.Fatal(err)
	}
	if reg.UploadedBlocks() != 0 || len(r3.AMIs) != 1 || r3.AMIs[0].ImageID != a2.ImageID {
		t.Fatalf("v3 uploaded %d blocks, amis %+v", reg.UploadedBlocks(), r3.AMIs)
	}
	imgs := c.images(t)
	if len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != a2.ImageID {
		t.Fatalf("images after pruning: %v, want only %s", imgs, a2.ImageID)
	}
	snaps := c.snapshots(t)
	if len(snaps) != 1 || aws.ToString(snaps[0].SnapshotId) != a2.SnapshotID {
		t.Fatalf("snapshots after pruning: %d, want only %s", len(snaps), a2.SnapshotID)
	}
	// Rollback to v2 still has its image.
	if _, err := installer.Rollback(context.Background(), installer.Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	st, err := installer.GetStatus(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation.Version != "2" || len(st.Generation.AMIs) != 1 || st.Generation.AMIs[0].ImageID != a2.ImageID {
		t.Fatalf("after rollback: %s %+v", st.Generation.Version, st.Generation.AMIs)
	}
}

// checkingEBS emulates what AWS does and moto (5.2.1) does not: it
// refuses a block whose data does not hash to its checksum. bad says which
// block is damaged in transit (its data changed after zdt computed the
// checksum).
type checkingEBS struct {
	ec2.EBSAPI
	bad  int32
	puts atomic.Int64
}

func (e *checkingEBS) PutSnapshotBlock(ctx context.Context, in *ebs.PutSnapshotBlockInput, opts ...func(*ebs.Options)) (*ebs.PutSnapshotBlockOutput, error) {
	e.puts.Add(1)
	data, err := io.ReadAll(in.BlockData)
	if err != nil {
		return nil, err
	}
	if aws.ToInt32(in.BlockIndex) == e.bad {
		data = bytes.Clone(data)
		data[1000] ^= 0x40
	}
	sum := sha256.Sum256(data)
	if base64.StdEncoding.EncodeToString(sum[:]) != aws.ToString(in.Checksum) {
		return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: "The value of the checksum in the request does not match the checksum of the data"}
	}
	cp := *in
	cp.BlockData = bytes.NewReader(data)
	return e.EBSAPI.PutSnapshotBlock(ctx, &cp, opts...)
}

// TestBadBlockChecksumRegistersNothing: a block that arrives damaged (its
// data no longer matches the SHA256 zdt sent with it) is refused, as AWS
// refuses it; moto does not verify checksums, so the test's EBS wrapper
// does what AWS does. The install fails naming the block and the item,
// no image is registered, the snapshot is deleted, no generation is
// recorded; a re-run registers it.
func TestBadBlockChecksumRegistersNothing(t *testing.T) {
	m := mototest.Shared(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "node.raw")
	writeDisk(t, disk, 16<<20, 1, []extent{{0, 16 << 20}})
	a := amiBundle(t, dir, "plat", "1", disk)
	root := filepath.Join(dir, "root")
	c := newClients(t, m)

	reg := newRegistrar(t, m, func(e ec2.EBSAPI) ec2.EBSAPI { return &checkingEBS{EBSAPI: e, bad: 17} })
	_, err := install(t, a, root, reg, false)
	var be *ec2.BlockError
	var ae smithy.APIError
	if !errors.As(err, &be) || be.Index != 17 || !errors.As(err, &ae) || ae.ErrorCode() != "ValidationException" || !strings.Contains(err.Error(), "ami node") {
		t.Fatalf("install with a damaged block: %v, want a BlockError for block 17 of ami node", err)
	}
	t.Logf("error: %v", err)
	if n := len(c.images(t)); n != 0 {
		t.Fatalf("%d images registered after a failed upload", n)
	}
	if s := c.snapshots(t); len(s) != 0 {
		t.Fatalf("the failed upload's snapshot is left: %v", aws.ToString(s[0].SnapshotId))
	}
	if st, _ := installer.GetStatus(context.Background(), root); st.Installed {
		t.Fatalf("a generation was recorded: %+v", st.Generation)
	}
	ok := &checkingEBS{bad: -1}
	reg = newRegistrar(t, m, func(e ec2.EBSAPI) ec2.EBSAPI { ok.EBSAPI = e; return ok })
	res, err := install(t, a, root, reg, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AMIs) != 1 || ok.puts.Load() != 32 || len(c.images(t)) != 1 {
		t.Fatalf("re-run: %+v, %d blocks", res.AMIs, ok.puts.Load())
	}
}

// proxy forwards TCP connections to moto's server until it is stopped:
// then every connection is cut and new ones are refused, as when the
// server dies, while moto keeps its state for the test to look at.
type proxy struct {
	URL    string
	addr   string
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  map[net.Conn]bool
}

func newProxy(t testing.TB, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: l.Addr().String(), target: strings.TrimPrefix(target, "http://"), conns: map[net.Conn]bool{}}
	p.URL = "http://" + p.addr
	p.serve(l)
	t.Cleanup(p.Stop)
	return p
}

func (p *proxy) serve(l net.Listener) {
	p.l = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *proxy) forward(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.l == nil {
		p.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close() }()
	io.Copy(c, u)
	c.Close()
}

// Stop cuts every connection and refuses new ones.
func (p *proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Start listens again on the same address.
func (p *proxy) Start(t testing.TB) {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.serve(l)
	p.mu.Unlock()
}

// stoppingEBS stops the endpoint after `after` blocks were sent.
type stoppingEBS struct {
	ec2.EBSAPI
	p     *proxy
	after int64
	puts  atomic.Int64
}

func (e *stoppingEBS) PutSnapshotBlock(ctx context.Context, in *ebs.PutSnapshotBlockInput, opts ...func(*ebs.Options)) (*ebs.PutSnapshotBlockOutput, error) {
	if e.puts.Add(1) == e.after {
		e.p.Stop()
	}
	return e.EBSAPI.PutSnapshotBlock(ctx, in, opts...)
}

// TestEndpointStopsMidUpload: the EC2/EBS endpoint goes away (every
// connection cut, new ones refused, as when moto's server is killed)
// after 10 of 64 blocks. The install fails and records no generation, no
// image is registered (moto, reached again, has none) and the snapshot it
// could not delete is left; the re-run deletes that snapshot and
// registers the image. (moto itself is not killed: it keeps its state in
// memory, so a killed one could not show what the failed run left, and
// starting it again costs 15 s here.)
func TestEndpointStopsMidUpload(t *testing.T) {
	m := mototest.Shared(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "node.raw")
	writeDisk(t, disk, 32<<20, 1, []extent{{0, 32 << 20}})
	a := amiBundle(t, dir, "plat", "1", disk)
	root := filepath.Join(dir, "root")
	c := newClients(t, m)
	p := newProxy(t, m.URL)

	reg := newRegistrarAt(t, p.URL, func(e ec2.EBSAPI) ec2.EBSAPI { return &stoppingEBS{EBSAPI: e, p: p, after: 10} })
	if _, err := install(t, a, root, reg, false); err == nil {
		t.Fatal("install succeeded with the endpoint stopped mid-upload")
	} else {
		t.Logf("error: %v", err)
	}
	if st, _ := installer.GetStatus(context.Background(), root); st.Installed {
		t.Fatalf("a generation was recorded: %+v", st.Generation)
	}
	if n := len(c.images(t)); n != 0 {
		t.Fatalf("%d images registered by the failed run", n)
	}
	left := c.snapshots(t)
	if len(left) != 1 {
		t.Fatalf("%d snapshots after the failed run, want its one", len(left))
	}
	p.Start(t)
	reg = newRegistrarAt(t, p.URL, nil)
	res, err := install(t, a, root, reg, false)
	if err != nil {
		t.Fatal(err)
	}
	snaps := c.snapshots(t)
	if len(res.AMIs) != 1 || reg.UploadedBlocks() != 64 || len(c.images(t)) != 1 || len(snaps) != 1 || aws.ToString(snaps[0].SnapshotId) == aws.ToString(left[0].SnapshotId) {
		t.Fatalf("re-run: %+v, %d blocks, %d snapshots", res.AMIs, reg.UploadedBlocks(), len(snaps))
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	mototest.StopShared()
	os.Exit(code)
}
