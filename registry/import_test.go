package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
)

// pullAll pulls every platform image of an index with ggcr, which checks
// each layer's digest while reading it, and returns the layer digests.
func pullAll(t testing.TB, ref string) map[string]bool {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatalf("layer of %s: %v", ref, err)
			}
			if err := rc.Close(); err != nil {
				t.Fatalf("layer of %s: %v", ref, err)
			}
			d, _ := l.Digest()
			seen[d.String()] = true
		}
	}
	return seen
}

func TestImportIsIdempotentDedupsAndPrunes(t *testing.T) {
	ctx := context.Background()
	base, err := random.Layer(64<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	a := buildBundle(t, bundleSpec{name: "plat", version: "1.0.0", sharedBase: base, seedFile: "a"})
	b := buildBundle(t, bundleSpec{name: "plat", version: "2.0.0", sharedBase: base, seedFile: "b"})
	s, _ := testStore(t)

	var progressed int64
	first, err := s.Import(ctx, a.archive, ImportOptions{CopyBlobs: true, Progress: func(done, total int64) {
		if done > total {
			t.Errorf("progress %d > total %d", done, total)
		}
		progressed = total
	}})
	if err != nil {
		t.Fatal(err)
	}
	if first.BlobsWritten == 0 || first.BlobsPresent != 0 || first.LinksWritten == 0 || progressed == 0 {
		t.Fatalf("first import: %+v", first)
	}
	// Every blob of the archive is in the store now.
	if n, _, _ := countBlobs(s.dir); n != len(a.archive.Digests()) {
		t.Fatalf("store holds %d blobs, archive %d", n, len(a.archive.Digests()))
	}

	again, err := s.Import(ctx, a.archive, ImportOptions{CopyBlobs: true})
	if err != nil {
		t.Fatal(err)
	}
	if again.BlobsWritten != 0 || again.BytesWritten != 0 || again.LinksWritten != 0 || again.BlobsPresent != first.BlobsWritten {
		t.Fatalf("re-import wrote something: %+v", again)
	}

	up, err := s.Import(ctx, b.archive, ImportOptions{CopyBlobs: true})
	if err != nil {
		t.Fatal(err)
	}
	// The shared base layer, the chart, the empty config… are not copied again.
	if up.BlobsPresent < 3 || up.BlobsWritten+up.BlobsPresent != len(b.archive.Digests()) {
		t.Fatalf("upgrade import: %+v (archive has %d blobs)", up, len(b.archive.Digests()))
	}

	srv, _ := serveStore(t, s, "")
	host := strings.TrimPrefix(srv.URL, "http://")
	layersB := pullAll(t, host+"/library/web:1.0") // the tag moved to bundle B
	if !layersB[mustDigest(t, base)] {
		t.Fatal("shared base layer not in the pulled image")
	}
	if r := do(t, "GET", srv.URL+"/v2/files/tool/manifests/1.0.0", map[string]string{"Accept": acceptAll}, nil); r.status != 200 {
		t.Fatalf("files/tool:1.0.0 before prune: %d", r.status)
	}

	pa, _ := Placements(ctx, a.archive)
	pb, _ := Placements(ctx, b.archive)
	dry, err := s.PrunePlacements(ctx, PruneOptions{Remove: pa, Keep: pb, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, _, _ := countBlobs(s.dir); n != first.BlobsWritten+up.BlobsWritten || dry.BlobsDeleted != 0 || len(dry.TagsRemoved) == 0 {
		t.Fatalf("dry run changed the store or found nothing: %+v", dry)
	}
	pr, err := s.PrunePlacements(ctx, PruneOptions{Remove: pa, Keep: pb})
	if err != nil {
		t.Fatal(err)
	}
	if pr.BlobsDeleted == 0 || pr.BytesFreed <= 0 {
		t.Fatalf("prune deleted nothing: %+v", pr)
	}
	if n, _, _ := countBlobs(s.dir); n != len(b.archive.Digests()) {
		t.Fatalf("after prune the store holds %d blobs, bundle B has %d", n, len(b.archive.Digests()))
	}
	for _, tag := range []string{"files/tool:1.0.0", "zdt/plat:1.0.0", "amis/node-image:1.0.0"} {
		found := false
		for _, r := range pr.TagsRemoved {
			found = found || r == tag
		}
		if !found {
			t.Errorf("prune did not untag %s: %v", tag, pr.TagsRemoved)
		}
	}
	// A fresh server (no caches) still serves B entirely and nothing of A.
	srv2, _ := serveStore(t, s, "")
	host2 := strings.TrimPrefix(srv2.URL, "http://")
	if got := pullAll(t, host2+"/docker.io/library/web:1.0"); len(got) != len(layersB) {
		t.Fatalf("after prune: %d layers, want %d", len(got), len(layersB))
	}
	for path, want := range map[string]int{
		"/v2/files/tool/manifests/1.0.0":  404,
		"/v2/files/tool/manifests/2.0.0":  200,
		"/v2/zdt/plat/manifests/2.0.0":    200,
		"/v2/zdt/plat/manifests/1.0.0":    404,
		"/v2/charts/demo/manifests/1.2.3": 200,
	} {
		if r := do(t, "GET", srv2.URL+path, map[string]string{"Accept": acceptAll}, nil); r.status != want {
			t.Errorf("GET %s = %d, want %d", path, r.status, want)
		}
	}
}

func mustDigest(t testing.TB, l v1.Layer) string {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestImportRefusesCorruptBlobs: Import checks every byte it copies, even
// from an archive nobody verified, and leaves no partial blob behind.
func TestImportRefusesCorruptBlobs(t *testing.T) {
	ctx := context.Background()
	tb := buildBundle(t, bundleSpec{layerSize: 256 << 10, noAMI: true})
	data, big := flipLargestBlob(t, tb)
	bad, err := bundle.OpenReader(ctx, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	s, store := testStore(t)
	_, err = s.Import(ctx, bad, ImportOptions{CopyBlobs: true})
	var be *bundle.BlobError
	if !errors.Is(err, bundle.ErrVerification) || !errors.As(err, &be) || be.Digest != big {
		t.Fatalf("import of a corrupt blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(store, blobDataPath(big))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt blob left in the store: %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(store, filepath.Dir(blobDataPath(big)), fsutil.TempPrefix+"*"))
	if len(leftovers) != 0 {
		t.Fatalf("temp files left: %v", leftovers)
	}
}

// TestImportAfterCrashRechecksBlobs: blobs are synced once per import, so a
// power loss during one may leave a blob of the right size with torn bytes.
// The journal of the unfinished import makes the next import hash what is
// in the store and replace what is wrong; a finished import leaves no
// journal and a re-import reads nothing.
func TestImportAfterCrashRechecksBlobs(t *testing.T) {
	ctx := context.Background()
	tb := buildBundle(t, bundleSpec{layerSize: 128 << 10, noAMI: true})
	s, store := testStore(t)
	if _, err := s.Import(ctx, tb.archive, ImportOptions{CopyBlobs: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(store, importJournal)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a finished import left its journal: %v", err)
	}
	// Simulate the crash: a torn blob (same size, zeroed) and the journal.
	var big digest.Digest
	var bigSize int64
	for _, d := range tb.archive.Digests() {
		if s, _ := tb.archive.BlobSize(d); s > bigSize {
			big, bigSize = d, s
		}
	}
	p := filepath.Join(store, blobDataPath(big))
	if err := os.WriteFile(p, make([]byte, bigSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, importJournal), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := s.Import(ctx, tb.archive, ImportOptions{CopyBlobs: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsWritten != 1 {
		t.Fatalf("import after a crash rewrote %d blobs, want the 1 torn one: %+v", res.BlobsWritten, res)
	}
	if !storedBlobOK(ctx, mustRoot(t, store), strings.TrimPrefix(blobDataPath(big), "/"), big) {
		t.Fatal("the torn blob was not repaired")
	}
	if _, err := os.Stat(filepath.Join(store, importJournal)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal left after the repair: %v", err)
	}
}

func mustRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
