package build

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

func TestCreateIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	specPath := testInputs(t, dir, []byte("binary"))
	spec, err := manifests.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var sums []digest.Digest
	for i, conc := range []int{1, 4} {
		out := filepath.Join(dir, "out", string(rune('a'+i))+".zdt")
		os.MkdirAll(filepath.Dir(out), 0o755)
		res, err := Create(ctx, spec, CreateOptions{Output: out, Concurrency: conc, ToolVersion: "v0.0.0-test"})
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := digest.FromBytes(data); got != res.Digest {
			t.Fatalf("result digest %s, file hashes to %s", res.Digest, got)
		}
		sums = append(sums, res.Digest)
	}
	if sums[0] != sums[1] {
		t.Fatalf("two creates of the same spec differ: %s vs %s", sums[0], sums[1])
	}
}

func TestRoundTrip(t *testing.T) {
	dir, res := createBundle(t, CreateOptions{})
	ctx := context.Background()
	a, err := bundle.Open(ctx, res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Root.Digest != res.Root.Digest {
		t.Fatalf("root %s, create said %s", a.Root.Digest, res.Root.Digest)
	}
	if a.Config.Name != "test" || a.Config.Version != "1.0.0" || !strings.Contains(a.Config.Spec, "registry.test/app/web:1.0") {
		t.Fatalf("config = %+v", a.Config)
	}
	if a.Config.Values["apps/demo"] != "replicas: 3\n" {
		t.Fatalf("chart values not carried: %v", a.Config.Values)
	}
	vr, err := a.Verify(ctx, bundle.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Blobs != res.Blobs {
		t.Fatalf("verify saw %d blobs, create wrote %d", vr.Blobs, res.Blobs)
	}
	want := []struct{ kind, name, ref string }{
		{"image", "registry.test/app/web:1.0", "registry.test/app/web:1.0"},
		{"image", "registry.test/app/tools:2.0", "registry.test/app/tools:2.0"},
		{"file", "tool", "files/tool:1.0.0"},
		{"chart", "demo", "charts/demo:1.2.3"},
		{"ami", "node-image", "amis/node-image:1.0.0"},
	}
	items := vr.Graph.Items
	if len(items) != len(want) {
		t.Fatalf("got %d items, want %d", len(items), len(want))
	}
	for i, w := range want {
		it := items[i]
		if it.Kind != w.kind || it.Name != w.name || it.Ref != w.ref || it.Size <= 0 {
			t.Errorf("item %d = %+v, want %+v", i, it, w)
		}
	}
	if items[2].Target != "/usr/local/bin/tool" || items[2].Mode != "0755" {
		t.Errorf("file item = %+v", items[2])
	}

	// The image keeps its original digest: compare with the source layout.
	p, err := layout.FromPath(filepath.Join(dir, "images", "web"))
	if err != nil {
		t.Fatal(err)
	}
	srcIdx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := srcIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := items[0].Digest; got != im.Manifests[0].Digest.String() {
		t.Errorf("image digest %s, source has %s", got, im.Manifests[0].Digest)
	}

	// Extract and read the layout back with go-containerregistry.
	out := filepath.Join(t.TempDir(), "layout")
	if err := bundle.Extract(ctx, a, out, bundle.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	li, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	lm, err := li.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(lm.Manifests) != 6 || lm.Manifests[0].Digest.String() != res.Root.Digest.String() {
		t.Fatalf("extracted index.json has %d entries, first %s", len(lm.Manifests), lm.Manifests[0].Digest)
	}
	// A file artifact decompresses to the original bytes.
	fileDesc := findLayer(t, a, items[2])
	if fileDesc.Annotations[ocispec.AnnotationTitle] != "tool.zst" || fileDesc.MediaType != manifests.MediaTypeFileZstd {
		t.Errorf("file layer = %+v", fileDesc)
	}
}

func findLayer(t *testing.T, a *bundle.Archive, it bundle.Item) ocispec.Descriptor {
	t.Helper()
	b, err := a.ReadSmall(context.Background(), ocispec.Descriptor{MediaType: it.MediaType, Digest: digest.Digest(it.Digest), Size: sizeOf(a, it.Digest)})
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Layers[0]
}

func sizeOf(a *bundle.Archive, d string) int64 {
	n, _ := a.BlobSize(digest.Digest(d))
	return n
}

func TestSharedBlobsAreStoredOnce(t *testing.T) {
	_, res := createBundle(t, CreateOptions{})
	a, err := bundle.Open(context.Background(), res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	g, err := a.Walk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Both images (three image manifests) share the base layer: the items'
	// total counts it per item, the archive holds it once.
	if g.TotalSize() <= g.UniqueSize() {
		t.Fatalf("total %d should exceed unique %d (shared base layer)", g.TotalSize(), g.UniqueSize())
	}
	counts := map[string]int{}
	for _, e := range readEntries(t, res.Path) {
		counts[e.Hdr.Name]++
	}
	for name, n := range counts {
		if n != 1 {
			t.Errorf("%s stored %d times", name, n)
		}
	}
	if len(counts)-4 != res.Blobs { // oci-layout, index.json, two dirs
		t.Errorf("archive has %d blob entries, create reported %d", len(counts)-4, res.Blobs)
	}
}

func TestPlatformFilter(t *testing.T) {
	_, res := createBundle(t, CreateOptions{Platforms: []string{"linux/arm64"}})
	a, err := bundle.Open(context.Background(), res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	web := res.Items[0]
	b, err := a.ReadSmall(context.Background(), ocispec.Descriptor{Digest: digest.Digest(web.Digest), Size: sizeOf(a, web.Digest)})
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Platform.Architecture != "arm64" {
		t.Fatalf("filtered index = %+v", idx.Manifests)
	}
	if _, err := a.Verify(context.Background(), bundle.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if res.Lock.Items[0].Digest != web.Digest {
		t.Fatalf("lock has %s, item %s", res.Lock.Items[0].Digest, web.Digest)
	}
}

func TestLockPinsContent(t *testing.T) {
	dir := t.TempDir()
	specPath := testInputs(t, dir, []byte("v1"))
	spec, err := manifests.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := Create(ctx, spec, CreateOptions{Output: filepath.Join(dir, "a.zdt")})
	if err != nil {
		t.Fatal(err)
	}
	lockYAML, err := first.Lock.Marshal("test")
	if err != nil {
		t.Fatal(err)
	}
	lock, err := manifests.ParseLock("zdt.lock.yaml", lockYAML)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Create(ctx, spec, CreateOptions{Output: filepath.Join(dir, "b.zdt"), Lock: lock})
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != first.Digest {
		t.Fatalf("--lock rebuild differs: %s vs %s", again.Digest, first.Digest)
	}
	// The chart changes: the locked create fails naming it, and writes nothing.
	writeFile(t, filepath.Join(dir, "charts", "demo", "templates", "extra.yaml"), []byte("# new\n"))
	out := filepath.Join(dir, "c.zdt")
	_, err = Create(ctx, spec, CreateOptions{Output: out, Lock: lock})
	if !errors.Is(err, bundle.ErrLockMismatch) || !strings.Contains(err.Error(), `chart "demo"`) {
		t.Fatalf("err = %v, want a lock mismatch naming chart demo", err)
	}
	assertNothingWritten(t, dir, out)
}

func TestCreateFailureWritesNothing(t *testing.T) {
	dir := t.TempDir()
	specPath := testInputs(t, dir, []byte("v1"))
	spec, err := manifests.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "bin", "tool"), []byte("changed after the spec was written"))
	out := filepath.Join(dir, "x.zdt")
	_, err = Create(context.Background(), spec, CreateOptions{Output: out})
	var de *SourceDigestError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "bin/tool") {
		t.Fatalf("err = %v, want a sha256 mismatch naming bin/tool", err)
	}
	assertNothingWritten(t, dir, out)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Create(ctx, spec, CreateOptions{Output: out}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled create: err = %v", err)
	}
	assertNothingWritten(t, dir, out)
}

func assertNothingWritten(t *testing.T, dir, out string) {
	t.Helper()
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("%s exists after a failed create", out)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("left behind %s", e.Name())
		}
	}
}

// TestBadArchives rewrites a good archive in the ways an attacker or a
// broken copy would, and checks that Open/Verify/Extract refuse each one
// with the right error and that Extract writes nothing.
func TestBadArchives(t *testing.T) {
	_, res := createBundle(t, CreateOptions{})
	good := readEntries(t, res.Path)
	blobIdx := -1 // a large (layer) blob to tamper with
	for i, e := range good {
		if strings.HasPrefix(e.Hdr.Name, dirBlobsSHA+"/") && (blobIdx < 0 || len(e.Data) > len(good[blobIdx].Data)) {
			blobIdx = i
		}
	}
	reg := func(name string, data []byte) tarEntry {
		return tarEntry{Hdr: &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, Data: data}
	}
	with := func(mut func([]tarEntry) []tarEntry) []tarEntry {
		cp := make([]tarEntry, len(good))
		for i, e := range good {
			h := *e.Hdr
			cp[i] = tarEntry{Hdr: &h, Data: append([]byte(nil), e.Data...)}
		}
		return mut(cp)
	}
	cases := []struct {
		name    string
		entries []tarEntry
		raw     func([]byte) []byte // applied to the written bytes
		want    error
		wantMsg string
	}{
		{name: "dotdot", entries: with(func(e []tarEntry) []tarEntry { return append(e, reg("blobs/../../evil", []byte("x"))) }), want: bundle.ErrUnsafeEntry, wantMsg: "blobs/../../evil"},
		{name: "absolute", entries: with(func(e []tarEntry) []tarEntry { return append(e, reg("/etc/passwd", []byte("x"))) }), want: bundle.ErrUnsafeEntry, wantMsg: "/etc/passwd"},
		{name: "symlink", entries: with(func(e []tarEntry) []tarEntry {
			return append(e, tarEntry{Hdr: &tar.Header{Name: dirSHA256 + strings.Repeat("a", 64), Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}})
		}), want: bundle.ErrUnsafeEntry, wantMsg: "links are not allowed"},
		{name: "hardlink", entries: with(func(e []tarEntry) []tarEntry {
			return append(e, tarEntry{Hdr: &tar.Header{Name: dirSHA256 + strings.Repeat("b", 64), Typeflag: tar.TypeLink, Linkname: "index.json"}})
		}), want: bundle.ErrUnsafeEntry, wantMsg: "links are not allowed"},
		{name: "stray file", entries: with(func(e []tarEntry) []tarEntry { return append(e, reg("README", []byte("x"))) }), want: bundle.ErrUnsafeEntry, wantMsg: "README"},
		{name: "duplicate entry", entries: with(func(e []tarEntry) []tarEntry { return append(e, e[len(e)-1]) }), want: bundle.ErrUnsafeEntry, wantMsg: "twice"},
		{name: "flipped byte", entries: with(func(e []tarEntry) []tarEntry { e[blobIdx].Data[len(e[blobIdx].Data)/2] ^= 0xff; return e }), want: bundle.ErrDigestMismatch, wantMsg: "image registry.test/app/"},
		{name: "unreachable blob", entries: with(func(e []tarEntry) []tarEntry {
			d := digest.FromString("stray")
			return append(e, reg(dirBlobsSHA+"/"+d.Encoded(), []byte("stray")))
		}), want: bundle.ErrUnreachable, wantMsg: digest.FromString("stray").Encoded()},
		{name: "missing blob", entries: with(func(e []tarEntry) []tarEntry { return append(e[:blobIdx], e[blobIdx+1:]...) }), want: bundle.ErrMissingBlob, wantMsg: strings.TrimPrefix(good[blobIdx].Hdr.Name, dirBlobsSHA+"/")},
		{name: "index.json over 4 MiB", entries: with(func(e []tarEntry) []tarEntry {
			e[1].Data = append(e[1].Data, bytes.Repeat([]byte(" "), bundle.MaxIndexSize)...)
			return e
		}), want: bundle.ErrTooLarge, wantMsg: "index.json"},
		{name: "truncated", entries: good, raw: func(b []byte) []byte { return b[:len(b)/2] }, want: bundle.ErrTruncated},
		{name: "cut at an entry boundary", entries: good, raw: func(b []byte) []byte { return b[:len(b)-1024] }, want: bundle.ErrTruncated, wantMsg: "end-of-archive"},
		{name: "not a tar", entries: good, raw: func(b []byte) []byte { return bytes.Repeat([]byte("garbage!"), 200) }, want: bundle.ErrVerification},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.zdt")
			writeEntries(t, p, tc.entries)
			if tc.raw != nil {
				b, _ := os.ReadFile(p)
				writeFile(t, p, tc.raw(b))
			}
			out := filepath.Join(t.TempDir(), "extracted")
			err := openVerifyExtract(p, out)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("err = %v does not match ErrVerification (exit code 3)", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want it to name %q", err, tc.wantMsg)
			}
			if _, serr := os.Stat(out); !os.IsNotExist(serr) {
				t.Fatalf("extract wrote %s despite %v", out, err)
			}
		})
	}
}

func openVerifyExtract(p, out string) error {
	ctx := context.Background()
	a, err := bundle.Open(ctx, p)
	if err != nil {
		return err
	}
	defer a.Close()
	return bundle.Extract(ctx, a, out, bundle.ExtractOptions{})
}

// TestCacheRecoversFromTornBlobs: a create does not sync the cache; its
// journal names the boot. A later create in the same boot trusts the cache
// (a killed process cannot tear a renamed blob) and, once the journal is
// old, syncs it and drops the journal. A journal of another boot (the
// machine crashed: unsynced bytes may be lost) makes the next create hash
// the blobs written since, drop the torn one, and the archive comes out
// right.
func TestCacheRecoversFromTornBlobs(t *testing.T) {
	dir := t.TempDir()
	spec, err := manifests.Load(testInputs(t, dir, []byte("tool")))
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	journal := filepath.Join(cache, cacheJournal)
	ctx := context.Background()
	first, err := Create(ctx, spec, CreateOptions{Output: filepath.Join(dir, "a.zdt"), CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(journal); err != nil || strings.TrimSpace(string(b)) != bootID() {
		t.Fatalf("journal after a create = %q, %v; want this boot's id %q", b, err, bootID())
	}
	// Same boot, journal old: settled (synced, removed) by the next create
	// (which starts a new one if it writes blobs).
	old := time.Now().Add(-settleAfter - time.Minute)
	os.Chtimes(journal, old, old)
	if _, err := Create(ctx, spec, CreateOptions{Output: filepath.Join(dir, "s.zdt"), CacheDir: cache}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(journal); err == nil && !fi.ModTime().After(old) {
		t.Fatalf("an old journal of this boot was not settled (still from %v)", fi.ModTime())
	}
	// The crash: the largest cached blob zeroed, a journal of another boot
	// from before that blob was written.
	ents, _ := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
	var big string
	var size int64
	for _, e := range ents {
		if fi, _ := e.Info(); fi.Size() > size {
			big, size = e.Name(), fi.Size()
		}
	}
	writeFile(t, filepath.Join(cache, "blobs", "sha256", big), make([]byte, size))
	writeFile(t, journal, []byte("another-boot\n"))
	os.Chtimes(journal, old, old)
	again, err := Create(ctx, spec, CreateOptions{Output: filepath.Join(dir, "b.zdt"), CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != first.Digest {
		t.Fatalf("archive after recovery differs: %s vs %s", again.Digest, first.Digest)
	}
	a, err := bundle.Open(ctx, again.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Verify(ctx, bundle.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestDeltaBundle: a create with Base leaves out every blob the base holds
// and names the base in its root. Alone, the delta opens but reading it
// stops at the first left-out blob with ErrNeedsBase; with another bundle
// as base it is refused (ErrWrongBase); with its base it walks, verifies
// and extracts to the complete layout of the whole bundle.
func TestDeltaBundle(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	specPath := testInputs(t, dir, []byte("tool v1"))
	spec1, err := manifests.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	v1, err := Create(ctx, spec1, CreateOptions{Output: filepath.Join(dir, "v1.zdt"), CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	// v2: the file changes, nothing else.
	old := sha256.Sum256([]byte("tool v1"))
	nu := sha256.Sum256([]byte("tool v2"))
	writeFile(t, filepath.Join(dir, "bin", "tool"), []byte("tool v2"))
	b, _ := os.ReadFile(specPath)
	text := strings.Replace(strings.Replace(string(b), hex.EncodeToString(old[:]), hex.EncodeToString(nu[:]), 1), "version: 1.0.0", "version: 2.0.0", 1)
	writeFile(t, specPath, []byte(text))
	spec2, err := manifests.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	full, err := Create(ctx, spec2, CreateOptions{Output: filepath.Join(dir, "v2-full.zdt"), CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	base, err := bundle.Open(ctx, v1.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	delta, err := Create(ctx, spec2, CreateOptions{Output: filepath.Join(dir, "v2-delta.zdt"), CacheDir: cache, Base: base})
	if err != nil {
		t.Fatal(err)
	}
	if delta.BaseBlobs == 0 || delta.Blobs+delta.BaseBlobs != full.Blobs || delta.Size*4 > full.Size {
		t.Fatalf("delta: %d blobs (%d bytes) + %d left to the base; the whole bundle has %d blobs (%d bytes)",
			delta.Blobs, delta.Size, delta.BaseBlobs, full.Blobs, full.Size)
	}
	if delta.Root.Digest == full.Root.Digest {
		t.Fatal("the delta's root does not name its base")
	}

	d, err := bundle.Open(ctx, delta.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Base() != v1.Root.Digest {
		t.Fatalf("delta names base %q, want %s", d.Base(), v1.Root.Digest)
	}
	if _, err := d.Walk(ctx); !errors.Is(err, bundle.ErrNeedsBase) || !strings.Contains(err.Error(), v1.Root.Digest.String()) {
		t.Fatalf("walking a delta without its base: %v, want ErrNeedsBase naming %s", err, v1.Root.Digest)
	}
	other, err := bundle.Open(ctx, full.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := d.AttachBase(ctx, other); !errors.Is(err, bundle.ErrWrongBase) {
		t.Fatalf("attaching another bundle as base: %v, want ErrWrongBase", err)
	}
	if err := d.AttachBase(ctx, base); err != nil {
		t.Fatal(err)
	}
	vr, err := d.Verify(ctx, bundle.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Blobs != full.Blobs {
		t.Fatalf("delta with its base verifies %d blobs, the whole bundle has %d", vr.Blobs, full.Blobs)
	}
	out := filepath.Join(dir, "layout")
	if err := bundle.Extract(ctx, d, out, bundle.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(out, "blobs", "sha256"))
	if len(ents) != full.Blobs {
		t.Fatalf("extracted %d blobs, want %d (the whole bundle)", len(ents), full.Blobs)
	}
}
