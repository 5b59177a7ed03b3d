package registry

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
)

// TestKeptArchiveIsServed: an import with LinkArchive on the same
// filesystem copies no blob (the store holds a hard link of the archive
// and no blob or link file), and once the archive is active the store
// serves every image as an import that copies would.
func TestKeptArchiveIsServed(t *testing.T) {
	ctx := context.Background()
	tb := buildBundle(t, bundleSpec{layerSize: 64 << 10})
	s, _ := testStore(t)
	res, err := s.Import(ctx, tb.archive, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.ArchiveKept || res.BlobsWritten != 0 || res.LinksWritten != 0 {
		t.Fatalf("import = %+v, want the archive kept and nothing written", res)
	}
	kp, ok := s.Kept(tb.archive.Root.Digest)
	if !ok {
		t.Fatal("no kept archive")
	}
	a, _ := os.Stat(tb.path)
	k, _ := os.Stat(kp)
	if !os.SameFile(a, k) {
		t.Fatal("kept archive is not a hard link of the bundle")
	}
	if n, _, _ := countBlobs(s.dir); n != 0 {
		t.Fatalf("%d blobs copied into the store", n)
	}
	srv, _ := serveStore(t, s, "")
	host := strings.TrimPrefix(srv.URL, "http://")
	// Before SetActive only the bundle's own repository is served.
	web := findPlacement(t, res.Placements, "library/web", "1.0")
	if code := headManifest(t, srv.URL, web.Repository, web.Tag); code != 404 {
		t.Fatalf("inactive kept archive serves its items: %d", code)
	}
	if err := s.SetActive(tb.archive.Root.Digest); err != nil {
		t.Fatal(err)
	}
	if layers := pullAll(t, host+"/"+web.Repository+":"+web.Tag); len(layers) == 0 {
		t.Fatal("web:1.0: no layers pulled")
	}
	for _, p := range res.Placements {
		if p.Tag != "" {
			if code := headManifest(t, srv.URL, p.Repository, p.Tag); code != 200 {
				t.Fatalf("%s:%s (%s) not served: %d", p.Repository, p.Tag, p.Kind, code)
			}
		}
	}
	// Import again: nothing read or written.
	if res2, err := s.Import(ctx, tb.archive, ImportOptions{}); err != nil || !res2.ArchiveKept {
		t.Fatalf("re-import = %+v, %v", res2, err)
	}
	// Deactivated: the items are gone again (the store watches the
	// archives directory; no restart).
	if err := s.SetActive(""); err != nil {
		t.Fatal(err)
	}
	if code := headManifest(t, srv.URL, web.Repository, web.Tag); code != 404 {
		t.Fatalf("deactivated archive still serves its items: %d", code)
	}
	if err := s.RemoveKept(tb.archive.Root.Digest); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Kept(tb.archive.Root.Digest); ok {
		t.Fatal("kept archive not removed")
	}
	if _, err := os.Stat(tb.path); err != nil {
		t.Fatalf("removing the kept archive removed the bundle: %v", err)
	}
}

func headManifest(t testing.TB, base, repo, tag string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, base+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestKeptArchiveFallsBackAndRefuses: an archive that is not a file is
// copied instead of kept; a corrupt archive is refused before it is kept
// (no link, no temp file left), and so is one whose path was replaced
// after it was opened; a kept archive overwritten in place is refused,
// naming it, when the store is opened.
func TestKeptArchiveFallsBackAndRefuses(t *testing.T) {
	ctx := context.Background()
	tb := buildBundle(t, bundleSpec{layerSize: 64 << 10, noAMI: true})
	data, err := os.ReadFile(tb.path)
	if err != nil {
		t.Fatal(err)
	}

	// No file to link: blobs are copied.
	mem, err := bundle.OpenReader(ctx, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testStore(t)
	res, err := s.Import(ctx, mem, ImportOptions{})
	if err != nil || res.ArchiveKept || res.BlobsWritten == 0 {
		t.Fatalf("import of an in-memory archive = %+v, %v; want blobs copied", res, err)
	}

	// A flipped byte in the largest blob: refused, nothing kept.
	bad, big := flipLargestBlob(t, tb)
	badPath := filepath.Join(t.TempDir(), "bad.zdt")
	if err := os.WriteFile(badPath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	ba, err := bundle.Open(ctx, badPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ba.Close()
	s2, store2 := testStore(t)
	_, err = s2.Import(ctx, ba, ImportOptions{})
	var be *bundle.BlobError
	if !errors.As(err, &be) || be.Digest != big {
		t.Fatalf("import of a corrupt archive: %v, want the blob %s named", err, big)
	}
	if left, _ := os.ReadDir(filepath.Join(store2, keptDir)); len(left) != 0 {
		t.Fatalf("left in the archives directory: %v", left)
	}

	// The bundle path replaced (renamed over) after it was opened: what
	// would be linked is not what was opened and verified; refused.
	other := buildBundle(t, bundleSpec{name: "other", version: "9.9.9", layerSize: 64 << 10, noAMI: true})
	ob, err := os.ReadFile(other.path)
	if err != nil {
		t.Fatal(err)
	}
	swapped := filepath.Join(t.TempDir(), "swapped.zdt")
	if err := os.WriteFile(swapped, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sa, err := bundle.Open(ctx, swapped)
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	if err := os.WriteFile(swapped+".new", ob, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(swapped+".new", swapped); err != nil {
		t.Fatal(err)
	}
	s4, _ := testStore(t)
	if _, err := s4.Import(ctx, sa, ImportOptions{}); err == nil || !strings.Contains(err.Error(), "was replaced") {
		t.Fatalf("import after the bundle path was replaced: %v, want a refusal", err)
	}

	// Kept, then overwritten in place with another bundle's bytes.
	s3, _ := testStore(t)
	if _, err := s3.Import(ctx, tb.archive, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tb.path, ob, 0o644); err != nil { // truncates and rewrites the shared inode
		t.Fatal(err)
	}
	kp, _ := s3.Kept(tb.archive.Root.Digest)
	_, err = NewHandler(ctx, HandlerOptions{Store: s3})
	if !errors.Is(err, ErrBadStore) || !strings.Contains(err.Error(), kp) {
		t.Fatalf("serving a store whose kept archive was overwritten: %v, want ErrBadStore naming %s", err, kp)
	}
}
