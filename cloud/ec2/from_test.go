package ec2_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/cloud/ec2"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/internal/mototest"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/signing"
)

// serveArchive serves a as `zdt serve --bundle` does, through tamper
// (which may change a response), and returns its host.
func serveArchive(t *testing.T, a *bundle.Archive, tamper func(w http.ResponseWriter, r *http.Request, next http.Handler) bool) string {
	t.Helper()
	h, err := registry.NewHandler(context.Background(), registry.HandlerOptions{Archives: []*bundle.Archive{a}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tamper == nil || !tamper(w, r, h) {
			h.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() { srv.Close(); h.Close() })
	return strings.TrimPrefix(srv.URL, "http://")
}

// taggedFor lists the images and snapshots tagged for bundle name.
func taggedFor(t *testing.T, c clients, name string) (imgs, snaps []string) {
	t.Helper()
	f := []types.Filter{{Name: aws.String("tag:" + ec2.TagBundle), Values: []string{name}}}
	io, err := c.ec2.DescribeImages(context.Background(), &awsec2.DescribeImagesInput{Owners: []string{"self"}, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range io.Images {
		imgs = append(imgs, aws.ToString(im.ImageId))
	}
	so, err := c.ec2.DescribeSnapshots(context.Background(), &awsec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range so.Snapshots {
		snaps = append(snaps, aws.ToString(s.SnapshotId))
	}
	return imgs, snaps
}

// TestRegisterFromRegistry: InstallFrom with a registrar registers the
// AMI whose disk it reads from the serving registry (only its non-zero
// blocks uploaded, at their indexes), records it, and a re-run reuses it
// uploading nothing. A registry that serves the disk's layer with bytes
// changed gets nothing registered (no image, no snapshot left), and the
// error names the item.
func TestRegisterFromRegistry(t *testing.T) {
	m := mototest.Shared(t)
	ctx := context.Background()
	dir := t.TempDir()
	c := newClients(t, m)
	disk := func(n string, seed uint64) string {
		p := filepath.Join(dir, n, "node.raw")
		os.MkdirAll(filepath.Dir(p), 0o755)
		writeDisk(t, p, 8<<20, seed, []extent{{0, 600 << 10}, {5 << 20, 4096}})
		return p
	}
	good := disk("good", 21)
	a := amiBundle(t, dir, "fromplat", "1", good)
	host := serveArchive(t, a, nil)
	root := filepath.Join(dir, "node2")
	opts := func(reg installer.AMIRegistrar) installer.FromOptions {
		return installer.FromOptions{Options: installer.Options{Root: root, ToolVersion: "test", AMIs: reg}, Policy: signing.Policy{InsecureSkipSignature: true}}
	}
	reg := newRegistrar(t, m, nil)
	res, err := installer.InstallFrom(ctx, host+"/zdt/fromplat:1", opts(reg))
	if err != nil {
		t.Fatal(err)
	}
	want := nonZeroBlocks(t, good)
	if len(res.AMIs) != 1 || !strings.HasPrefix(res.AMIs[0].ImageID, "ami-") || reg.UploadedBlocks() != int64(len(want)) {
		t.Fatalf("InstallFrom registered %+v, uploading %d blocks (want %d)", res.AMIs, reg.UploadedBlocks(), len(want))
	}
	var got []int32
	for _, b := range listSnapshotBlocks(t, m, res.AMIs[0].SnapshotID) {
		got = append(got, b.index)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("snapshot blocks %v, want the disk's non-zero blocks %v", got, want)
	}
	st, err := installer.GetStatus(ctx, root)
	if err != nil || st.Generation.Source == nil || len(st.Generation.AMIs) != 1 || st.Generation.AMIs[0].ImageID != res.AMIs[0].ImageID {
		t.Fatalf("status: %+v %v", st.Generation, err)
	}
	again := newRegistrar(t, m, nil)
	if res2, err := installer.InstallFrom(ctx, host+"/zdt/fromplat:1", opts(again)); err != nil || res2.Applied || again.UploadedBlocks() != 0 {
		t.Fatalf("re-run: applied %v, uploaded %d, %v", res2.Applied, again.UploadedBlocks(), err)
	}

	// A registry that changes a byte of the disk's layer.
	bad := amiBundle(t, dir, "fromplatbad", "1", disk("bad", 22))
	var layerDigest string
	g, err := bad.Walk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range g.Items {
		if it.Kind == "ami" {
			c, err := bad.ItemContent(ctx, it)
			if err != nil {
				t.Fatalf("content of %s: %v", it.Name, err)
			}
			layerDigest = c.Layer.Digest.String()
		}
	}
	if layerDigest == "" {
		t.Fatal("no ami item")
	}
	tampered := 0
	badHost := serveArchive(t, bad, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+layerDigest) {
			return false
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		if len(b) > 0 {
			b[len(b)-1] ^= 0x55
			tampered++
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(b)
		return true
	})
	root2 := filepath.Join(dir, "node3")
	o := opts(newRegistrar(t, m, nil))
	o.Root = root2
	_, err = installer.InstallFrom(ctx, badHost+"/zdt/fromplatbad:1", o)
	if err == nil || !errors.Is(err, bundle.ErrVerification) || !strings.Contains(err.Error(), "node") || tampered == 0 {
		t.Fatalf("InstallFrom of a damaged disk: %v (tampered %d responses)", err, tampered)
	}
	t.Logf("refused: %v", err)
	if imgs, snaps := taggedFor(t, c, "fromplatbad"); len(imgs) != 0 || len(snaps) != 0 {
		t.Fatalf("a damaged disk left images %v, snapshots %v", imgs, snaps)
	}
	if _, err := os.Stat(filepath.Join(root2, layout.Generation(1))); err == nil {
		t.Fatal("a damaged disk recorded a generation")
	}
}
