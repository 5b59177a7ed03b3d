package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fixtures"
)

// amplifier crafts a bundle of one image manifest of layers layers, tagged
// as items under repos repositories.
func amplifier(t *testing.T, layers, repos int) *bundle.Archive {
	return amplifierOf(t, layers, repos, false)
}

// amplifierOf is amplifier; distinct makes every item an index of its own
// over the one manifest.
func amplifierOf(t *testing.T, layers, repos int, distinct bool) *bundle.Archive {
	t.Helper()
	c := fixtures.NewCrafted("amp", "1")
	ls := make([]ocispec.Descriptor, layers)
	for i := range ls {
		ls[i] = c.Blob(ocispec.MediaTypeImageLayer, []byte(fmt.Sprint(i)))
	}
	m := c.Manifest(c.Blob(ocispec.MediaTypeImageConfig, []byte(`{"os":"linux"}`)), ls...)
	for i := range repos {
		it := m
		if distinct {
			it = c.JSON(ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
				Manifests: []ocispec.Descriptor{m}, Annotations: map[string]string{"n": fmt.Sprint(i)}})
		}
		c.Item("image", fmt.Sprintf("quay.io/amp/r%d:1", i), it)
	}
	p := filepath.Join(t.TempDir(), "amp.zdt")
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	a, err := bundle.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestPlacementAmplification (issue 11.6): a 5 MB bundle of one manifest
// with 5,000 layers placed under 400 repositories (2 million links;
// MaxLinks is 524,288) is
// refused by Placements — and so by serve --bundle, install and push —
// with a clear limit error, in well under a second of work and little
// memory; a bundle under the limits is placed.
func TestPlacementAmplification(t *testing.T) {
	ctx := context.Background()
	a := amplifier(t, 5000, 400)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := Placements(ctx, a)
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, bundle.ErrTooLarge) || !errors.Is(err, bundle.ErrVerification) || !strings.Contains(err.Error(), "repository links") {
		t.Fatalf("err = %v, want a limit on repository links (bundle.ErrTooLarge)", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("refused in %v, %d MiB allocated: %v", took, alloc>>20, err)
	if alloc > 128<<20 {
		t.Errorf("placements allocated %d MiB before refusing", alloc>>20)
	}
	if _, err := NewHandler(ctx, HandlerOptions{Archives: []*bundle.Archive{a}}); !errors.Is(err, bundle.ErrTooLarge) {
		t.Errorf("serve --bundle: %v, want bundle.ErrTooLarge", err)
	}
	st, err := OpenStore(t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Import(ctx, a, ImportOptions{}); !errors.Is(err, bundle.ErrTooLarge) {
		t.Errorf("import: %v, want bundle.ErrTooLarge", err)
	}

	t.Run("distinct indexes over the one manifest", func(t *testing.T) {
		a := amplifierOf(t, 5000, 400, true)
		start := time.Now()
		_, err := Placements(ctx, a)
		if !errors.Is(err, bundle.ErrTooLarge) {
			t.Fatalf("err = %v, want bundle.ErrTooLarge", err)
		}
		t.Logf("refused in %v: %v", time.Since(start), err)
	})
	t.Run("one blob in too many repositories", func(t *testing.T) {
		a := amplifier(t, 1, MaxRepositoriesPerBlob+1)
		_, err := Placements(ctx, a)
		if !errors.Is(err, bundle.ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(MaxRepositoriesPerBlob)) {
			t.Fatalf("err = %v, want the repositories-per-blob limit", err)
		}
	})
	t.Run("under the limits", func(t *testing.T) {
		a := amplifier(t, 500, 20)
		ps, err := Placements(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 21 || len(ps[0].Blobs) != 501 {
			t.Fatalf("%d placements, first with %d blobs", len(ps), len(ps[0].Blobs))
		}
	})
}

// TestServeBundleChecksStructure (issue 11.7): serving archives (serve
// --bundle, with or without --verify) always makes the structural checks:
// a missing blob or a stray entry is refused before anything is served.
func TestServeBundleChecksStructure(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		edit func(c *fixtures.Crafted, layer ocispec.Descriptor)
		want error
	}{
		{"missing blob", func(c *fixtures.Crafted, l ocispec.Descriptor) { c.Omit[l.Digest] = true }, bundle.ErrMissingBlob},
		{"unreachable entry", func(c *fixtures.Crafted, _ ocispec.Descriptor) { c.Stray = [][]byte{[]byte("stray")} }, bundle.ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fixtures.NewCrafted("s", "1")
			l := c.Blob(ocispec.MediaTypeImageLayer, []byte("layer"))
			c.Item("image", "quay.io/s/img:1", c.Manifest(c.Blob(ocispec.MediaTypeImageConfig, []byte(`{}`)), l))
			tc.edit(c, l)
			p := filepath.Join(t.TempDir(), "s.zdt")
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
			a, err := bundle.Open(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			h, err := NewHandler(ctx, HandlerOptions{Archives: []*bundle.Archive{a}})
			if err == nil {
				h.Close()
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzPlacements feeds arbitrary archives to Placements (what serve
// --bundle, install and push run after Open): it must never panic, refuse
// with a verification or reference error, and never place more than
// MaxLinks links.
func FuzzPlacements(f *testing.F) {
	c := fixtures.NewCrafted("f", "1")
	l := c.Blob(ocispec.MediaTypeImageLayer, []byte("layer"))
	m := c.Manifest(c.Blob(ocispec.MediaTypeImageConfig, []byte(`{}`)), l)
	c.Item("image", "docker.io/library/x:1", m)
	c.Item("file", "files/x:1", m)
	p := filepath.Join(f.TempDir(), "seed.zdt")
	if _, err := c.Write(p); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		a, err := bundle.OpenReader(ctx, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		defer a.Close()
		ps, err := Placements(ctx, a)
		if err != nil {
			if !errors.Is(err, bundle.ErrVerification) && !errors.Is(err, ErrBadReference) {
				t.Fatalf("refused with %v", err)
			}
			return
		}
		n := 0
		for _, p := range ps {
			n += len(p.Manifests) + len(p.Blobs)
		}
		if n > MaxLinks {
			t.Fatalf("%d links placed", n)
		}
	})
}

// TestPlacementsRecordDoesNotMultiply (issue 11.6): the placements record
// of a bundle whose one manifest of 500 layers is placed under 200
// repositories holds the closure once (kilobytes, not 200 copies), reads
// back to the same placements, and the list format of earlier versions
// still reads.
func TestPlacementsRecordDoesNotMultiply(t *testing.T) {
	ps, err := Placements(context.Background(), amplifier(t, 500, 200))
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodePlacements(ps)
	if err != nil {
		t.Fatal(err)
	}
	old, err := json.Marshal(ps)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("record %d bytes (as a list: %d)", len(b), len(old))
	if len(b) > 200<<10 || len(b)*20 > len(old) {
		t.Errorf("record is %d bytes, the list %d: it multiplies", len(b), len(old))
	}
	for _, in := range [][]byte{b, old} {
		got, err := decodePlacements(in)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, ps) {
			t.Fatalf("record does not read back (%d placements, want %d)", len(got), len(ps))
		}
	}
	if _, err := decodePlacements([]byte(`{"version":2,"closures":[],"placements":[{"closure":3}]}`)); err == nil {
		t.Error("a placement naming a missing closure was read")
	}
}

// FuzzPlacementsRecord: a placements record read back from the store never
// panics, and what reads encodes again to something that reads the same.
func FuzzPlacementsRecord(f *testing.F) {
	f.Add([]byte(`{"version":2,"closures":[{"manifests":["sha256:aa"],"blobs":[]}],"placements":[{"repository":"a","digest":"sha256:aa","closure":0}]}`))
	f.Add([]byte(`[{"repository":"a","tag":"1","digest":"sha256:aa","manifests":["sha256:aa"]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := decodePlacements(b)
		if err != nil {
			return
		}
		enc, err := encodePlacements(ps)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodePlacements(enc)
		if err != nil || len(again) != len(ps) {
			t.Fatalf("re-encoded record: %v, %d placements, want %d", err, len(again), len(ps))
		}
	})
}
