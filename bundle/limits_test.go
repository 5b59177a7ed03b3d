package bundle_test

import (
	"zdt.dev/zdt/bundle"

	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/manifests"
)

// headerOnlyArchive writes an archive of n empty blob entries, with
// oci-layout and an unsigned index.json first (as create writes them) or
// last.
func headerOnlyArchive(t *testing.T, n int, indexFirst bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "many.zdt")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("root"), Size: 4,
		Annotations: map[string]string{manifests.AnnotationBundleRoot: "true"}}}}
	ib, _ := json.Marshal(idx)
	meta := func() {
		for _, e := range []struct {
			name string
			data []byte
		}{{bundle.EntryLayout, []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {bundle.EntryIndex, ib}} {
			if err := tw.WriteHeader(bundle.Header(e.name, int64(len(e.data)), false)); err != nil {
				t.Fatal(err)
			}
			tw.Write(e.data)
		}
	}
	if indexFirst {
		meta()
	}
	var seed [8]byte
	for i := range n {
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		sum := sha256.Sum256(seed[:])
		if err := tw.WriteHeader(bundle.Header(fmt.Sprintf("%s%x", bundle.DirSHA256, sum), 0, false)); err != nil {
			t.Fatal(err)
		}
	}
	if !indexFirst {
		meta()
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

var errUnsignedForTest = fmt.Errorf("no signature: %w", bundle.ErrVerification)

// TestLimitsBeforeWork (issue 11.9): an unsigned archive of many
// header-only entries is refused after reading index.json when the caller
// requires a signature (CheckIndex), an archive of more than MaxEntries
// entries is refused with a clear error, and the index costs little per
// entry.
func TestLimitsBeforeWork(t *testing.T) {
	ctx := context.Background()
	const limit = 20_000 // MaxEntries is 1<<17; a smaller cap keeps the test fast
	many := headerOnlyArchive(t, limit+10, true)
	open := func(p string, check func(ocispec.Index, ocispec.Descriptor) error) (int64, time.Duration, error) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		cr := &countingReaderAt{r: f}
		start := time.Now()
		a, err := bundle.OpenReaderWith(ctx, cr, fi.Size(), bundle.OpenOptions{CheckIndex: check, MaxEntries: limit})
		if err == nil {
			a.Close()
		}
		return cr.n.Load(), time.Since(start), err
	}

	t.Run("unsigned refused after index.json", func(t *testing.T) {
		n, took, err := open(many, func(ocispec.Index, ocispec.Descriptor) error { return errUnsignedForTest })
		if !errors.Is(err, errUnsignedForTest) {
			t.Fatalf("err = %v", err)
		}
		if n > 1<<20 {
			t.Errorf("read %d bytes of a %d-entry archive before refusing it", n, limit+10)
		}
		t.Logf("refused after %d bytes in %v", n, took)
	})
	t.Run("too many entries", func(t *testing.T) {
		_, took, err := open(many, nil)
		if !errors.Is(err, bundle.ErrTooLarge) || !errors.Is(err, bundle.ErrVerification) || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
			t.Fatalf("err = %v, want ErrTooLarge naming the limit", err)
		}
		if took > 5*time.Second {
			t.Errorf("took %v", took)
		}
		t.Logf("refused in %v", took)
	})
	t.Run("index memory per entry", func(t *testing.T) {
		const n = limit - 10
		p := headerOnlyArchive(t, n, false) // index.json last: the check sees the whole index
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, took, err := open(p, func(ocispec.Index, ocispec.Descriptor) error {
			runtime.GC()
			runtime.ReadMemStats(&after)
			return errUnsignedForTest
		})
		if !errors.Is(err, errUnsignedForTest) {
			t.Fatalf("err = %v", err)
		}
		per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
		t.Logf("%d entries: %d bytes of heap per entry, %v", n, per, took)
		if per > 150 {
			t.Errorf("index holds %d bytes per entry", per)
		}
	})
}
