package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// TestPlantedSourceRecord attacks the cache's source records (issue 17.1):
// a record that maps a file's sha256 to a blob which is valid under its own
// name but does not decode to that file (other bytes of the same size, an
// 8 GiB bomb, a 512 MiB window, bytes that are not zstd), or to a blob
// whose bytes were changed. The record is not trusted: the file is
// downloaded again, the archive is the clean create's, in seconds and
// little memory. A good record is used (no download).
func TestPlantedSourceRecord(t *testing.T) {
	data := bytes.Repeat([]byte("a file from the web\n"), 4<<10)
	sum := sha256.Sum256(data)
	rawSHA := hex.EncodeToString(sum[:])
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { gets.Add(1); w.Write(data) }))
	defer srv.Close()
	dir := t.TempDir()
	spec := writeSpec(t, dir, fmt.Sprintf(`components:
  - name: apps
    files:
      - source: %s/tool
        sha256: %s
        target: /usr/local/bin/tool
`, srv.URL, rawSHA))
	cache := filepath.Join(dir, "cache")
	first := createIn(t, dir, "first", spec, CreateOptions{CacheDir: cache})

	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Repeat([]byte("x"), len(data))
	cases := []struct {
		name string
		blob []byte
		flip bool // change a byte of the blob after it was stored under its name
	}{
		{"other content of the same size", enc.EncodeAll(other, nil), false},
		{"8 GiB bomb", fixtures.ZstdRLE(8<<30, 0, 20), false},
		{"512 MiB window", fixtures.ZstdRLE(int64(len(data)), 'x', 29), false},
		{"not zstd", []byte("plain bytes, not a zstd frame"), false},
		{"the right blob with a byte changed", enc.EncodeAll(data, nil), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plantRecord(t, cache, rawSHA, int64(len(data)), tc.blob, tc.flip)
			before := gets.Load()
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			start := time.Now()
			res := createIn(t, dir, "again", spec, CreateOptions{CacheDir: cache})
			took := time.Since(start)
			runtime.ReadMemStats(&ms1)
			if res.Digest != first.Digest {
				t.Fatalf("archive %s differs from the clean create's %s", res.Digest, first.Digest)
			}
			if got := gets.Load() - before; got != 1 {
				t.Fatalf("file downloaded %d times, want once: the planted record was used", got)
			}
			if alloc := ms1.TotalAlloc - ms0.TotalAlloc; took > 5*time.Second || alloc > 128<<20 {
				t.Fatalf("create took %v and allocated %d MiB", took, alloc>>20)
			}
		})
	}
	t.Run("the record create wrote", func(t *testing.T) {
		before := gets.Load()
		res := createIn(t, dir, "cached", spec, CreateOptions{CacheDir: cache})
		if res.Digest != first.Digest || gets.Load() != before {
			t.Fatalf("archive %s (want %s), %d downloads (want 0)", res.Digest, first.Digest, gets.Load()-before)
		}
	})
}

// plantRecord stores blob in the cache under its digest (then flips one
// of its bytes, with flip) and points the record of the file rawSHA at it,
// as an attacker who can write the cache would.
func plantRecord(t *testing.T, cache, rawSHA string, size int64, blob []byte, flip bool) {
	t.Helper()
	s := openTestStore(t, cache)
	desc, err := s.Ingest(context.Background(), manifests.MediaTypeFileZstd, bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if flip {
		p := filepath.Join(cache, "blobs", "sha256", desc.Digest.Encoded())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		writeFile(t, p, b)
	}
	if err := s.recordSource(rawSHA, manifests.MediaTypeFileZstd, sourceEntry{Layer: desc, Size: size}); err != nil {
		t.Fatal(err)
	}
}
