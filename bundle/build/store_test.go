package build

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"zdt.dev/zdt/internal/fsutil"
)

// A blob pushed with bytes that are not its descriptor's (a lying
// registry) is refused with content.ErrMismatchedDigest and leaves
// neither a blob nor a temp file; the right bytes are stored under their
// digest through a temp file named with fsutil.TempPrefix.
func TestStorePushChecksBytes(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	good := []byte(strings.Repeat("layer", 1000))
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageLayer, good)
	ctx := context.Background()
	for name, body := range map[string][]byte{
		"other bytes": bytes.Repeat([]byte("x"), len(good)),
		"one more":    append(append([]byte(nil), good...), 'x'),
		"short":       good[:10],
	} {
		if err := s.Push(ctx, desc, bytes.NewReader(body)); !errors.Is(err, content.ErrMismatchedDigest) {
			t.Errorf("%s: Push = %v, want content.ErrMismatchedDigest", name, err)
		}
		if ok, _ := s.Exists(ctx, desc); ok {
			t.Fatalf("%s: a mismatching blob was stored", name)
		}
	}
	if err := s.Push(ctx, desc, bytes.NewReader(good)); err != nil {
		t.Fatalf("Push: %v", err)
	}
	if ok, _ := s.Exists(ctx, desc); !ok {
		t.Fatal("pushed blob not stored")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "blobs"))
	if len(ents) != 1 || ents[0].Name() != "sha256" {
		t.Errorf("blobs/ holds %v, want only sha256/ (temp files left)", ents)
	}
}

// cleanStale removes the temp files a killed create left (fsutil's prefix,
// and the .ingest- prefix of caches written by earlier versions) once they
// are stale, and nothing else.
func TestStoreCleanStale(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	blobs := filepath.Join(dir, "blobs")
	old := time.Now().Add(-2 * staleIngest)
	plant := func(name string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(blobs, name)
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	stale := filepath.Base(fsutil.TempName(ingestName))
	plant(stale, old)
	plant(legacyIngestPrefix+"0123456789abcdef", old)
	running := filepath.Base(fsutil.TempName(ingestName))
	plant(running, time.Now())
	plant("not-a-temp", old)
	if n := s.cleanStale(staleIngest); n != 2 {
		t.Errorf("cleanStale removed %d files, want 2", n)
	}
	var left []string
	ents, _ := os.ReadDir(blobs)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{running, "not-a-temp", "sha256"}
	sort.Strings(want)
	sort.Strings(left)
	if strings.Join(left, ",") != strings.Join(want, ",") {
		t.Errorf("left %v, want %v", left, want)
	}
}

// openTestStore opens a non-persistent blob store in dir for one test.
func openTestStore(t *testing.T, dir string) *blobStore {
	t.Helper()
	s, err := newBlobStore(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}
