package bundle_test

import (
	"zdt.dev/zdt/bundle"

	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// contentData is the file item's content in contentBundle.
var contentData = []byte("#!/bin/sh\necho content\n")

// contentBundle creates a bundle with one file (/opt/f, item "f") and one
// 1 MiB AMI ("node") and returns its entries.
func contentBundle(t testing.TB) []tarEntry {
	t.Helper()
	dir := t.TempDir()
	sum := sha256.Sum256(contentData)
	writeFile(t, filepath.Join(dir, "f"), contentData)
	if err := fixtures.RawDisk(filepath.Join(dir, "node.raw"), 1<<20, 3); err != nil {
		t.Fatal(err)
	}
	spec, err := manifests.Parse("zdt.yaml", []byte(`apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata: {name: c, version: "1"}
components:
  - name: c
    files:
      - {name: f, source: f, sha256: `+hex.EncodeToString(sum[:])+`, target: /opt/f}
    amis:
      - {name: node, source: node.raw}
`))
	if err != nil {
		t.Fatal(err)
	}
	spec.Dir = dir
	out := filepath.Join(dir, "c.zdt")
	if _, err := build.Create(context.Background(), spec, build.CreateOptions{Output: out}); err != nil {
		t.Fatal(err)
	}
	return readEntries(t, out)
}

// swapLayer replaces the layer of item kind/name with data, keeping the
// layer's annotations (what it says it decodes to).
func swapLayer(t testing.TB, es []tarEntry, kind, name string, data []byte) []tarEntry {
	t.Helper()
	_, m, err := fixtures.ItemManifest(es, kind, name)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := fixtures.SwapBlob(es, m.Layers[0].Digest, data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func zstdOf(t testing.TB, b []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(b, nil)
}

// TestVerifyDecodesContent attacks verify with file and AMI layers whose
// bytes hash right (the archive is consistent, as a crafted bundle is) but
// whose content is not what the bundle records: an 8 GiB zstd bomb in a
// few hundred KB, a 512 MiB window, corrupt zstd, other content, and an
// AMI config that lies about the disk. Verify decodes every file and disk
// layer, bounded by the recorded size, and refuses each as a verification
// failure naming the item, quickly and in little memory.
func TestVerifyDecodesContent(t *testing.T) {
	good := contentBundle(t)
	other := bytes.Repeat([]byte("x"), len(contentData))
	cases := []struct {
		name    string
		entries func() []tarEntry
		want    error
		wantMsg string
	}{
		{"8 GiB bomb", func() []tarEntry {
			return swapLayer(t, good, "file", "f", fixtures.ZstdRLE(8<<30, 0, 20))
		}, bundle.ErrTooLarge, "file f"},
		{"512 MiB window", func() []tarEntry {
			return swapLayer(t, good, "file", "f", fixtures.ZstdRLE(int64(len(contentData)), 'x', 29))
		}, bundle.ErrCorruptContent, "file f"},
		{"corrupt zstd", func() []tarEntry {
			b := zstdOf(t, contentData)
			return swapLayer(t, good, "file", "f", append(b[:6], bytes.Repeat([]byte{0xff}, 40)...))
		}, bundle.ErrCorruptContent, "file f"},
		{"other content of the same size", func() []tarEntry {
			return swapLayer(t, good, "file", "f", zstdOf(t, other))
		}, bundle.ErrDigestMismatch, "file f"},
		{"shorter content", func() []tarEntry {
			return swapLayer(t, good, "file", "f", zstdOf(t, contentData[:5]))
		}, bundle.ErrDigestMismatch, "file f"},
		{"disk bomb", func() []tarEntry {
			return swapLayer(t, good, "ami", "node", fixtures.ZstdRLE(8<<30, 0, 20))
		}, bundle.ErrTooLarge, "ami node"},
		{"ami config lies about the disk size", func() []tarEntry {
			_, m, err := fixtures.ItemManifest(good, "ami", "node")
			if err != nil {
				t.Fatal(err)
			}
			es, _, err := fixtures.EditBlob(good, m.Config.Digest, func(b []byte) []byte {
				return bytes.Replace(b, []byte(`"diskSize":1048576`), []byte(`"diskSize":1048577`), 1)
			})
			if err != nil {
				t.Fatal(err)
			}
			return es
		}, bundle.ErrDigestMismatch, "config of ami node"},
	}
	// #16: metadata no valid spec gives, on its way to EC2.
	for _, lie := range [][2]string{
		{`"bootMode":"legacy-bios"`, `"bootMode":"bios; rm -rf /"`},
		{`"deviceName":"/dev/xvda"`, `"deviceName":"/dev/../etc"`},
		{`"volumeType":"gp3"`, `"volumeType":"gp9"`},
		{`"volumeSize":1`, `"volumeSize":-1`},
	} {
		cases = append(cases, struct {
			name    string
			entries func() []tarEntry
			want    error
			wantMsg string
		}{"ami config " + lie[1], func() []tarEntry {
			_, m, err := fixtures.ItemManifest(good, "ami", "node")
			if err != nil {
				t.Fatal(err)
			}
			es, _, err := fixtures.EditBlob(good, m.Config.Digest, func(b []byte) []byte {
				if !bytes.Contains(b, []byte(lie[0])) {
					t.Fatalf("no %s in %s", lie[0], b)
				}
				return bytes.Replace(b, []byte(lie[0]), []byte(lie[1]), 1)
			})
			if err != nil {
				t.Fatal(err)
			}
			return es
		}, bundle.ErrNotBundle, "config of ami node"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.zdt")
			writeEntries(t, p, tc.entries())
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			ctx := context.Background()
			a, err := bundle.Open(ctx, p)
			if err != nil {
				t.Fatal(err) // the structure is fine: only the content lies
			}
			defer a.Close()
			if _, err := a.Walk(ctx); err != nil {
				t.Fatalf("walk: %v (the archive is consistent; only the content lies)", err)
			}
			_, err = a.Verify(ctx, bundle.VerifyOptions{})
			if !errors.Is(err, tc.want) || !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("verify = %v, want %v (a verification failure)", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("verify = %v, want it to name %q", err, tc.wantMsg)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if took, alloc := time.Since(start), after.TotalAlloc-before.TotalAlloc; took > 5*time.Second || alloc > 128<<20 {
				t.Fatalf("verify took %v and allocated %d MiB", took, alloc>>20)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("good", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "good.zdt")
		writeEntries(t, p, good)
		a, err := bundle.Open(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if _, err := a.Verify(context.Background(), bundle.VerifyOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOpenContentIsBounded reads an 8 GiB bomb through OpenContent: it
// yields at most the recorded size and then fails, however it is read.
func TestOpenContentIsBounded(t *testing.T) {
	bomb := fixtures.ZstdRLE(8<<30, 'a', 20)
	c := bundle.Content{Item: "file f", Layer: descOf(manifests.MediaTypeFileZstd, bomb), Digest: digest.FromBytes(contentData), Size: int64(len(contentData))}
	for _, bufSize := range []int{1, 7, 1 << 20} {
		t.Run(fmt.Sprint(bufSize), func(t *testing.T) {
			r, err := bundle.NewContentReader(context.Background(), c, bytes.NewReader(bomb), nil, bufSize > 1)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var n int64
			buf := make([]byte, bufSize)
			for {
				m, err := r.Read(buf)
				n += int64(m)
				if err != nil {
					if !errors.Is(err, bundle.ErrTooLarge) {
						t.Fatalf("err = %v, want ErrTooLarge", err)
					}
					break
				}
			}
			if n > c.Size {
				t.Fatalf("read %d bytes of content recorded as %d", n, c.Size)
			}
		})
	}
}

func descOf(mt string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// FuzzContent feeds arbitrary layer bytes to the content reader as a zstd
// file layer recording a small size: it never yields more than that, never
// panics, and either ends in the recorded digest or fails as a
// verification error.
func FuzzContent(f *testing.F) {
	f.Add(zstdOf(f, contentData))
	f.Add(fixtures.ZstdRLE(1<<30, 0, 20))
	f.Add(fixtures.ZstdRLE(10, 'x', 29))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	want := digest.FromBytes(contentData)
	f.Fuzz(func(t *testing.T, layer []byte) {
		for _, mt := range []string{manifests.MediaTypeFileZstd, manifests.MediaTypeFileRaw} {
			c := bundle.Content{Item: "file f", Digest: want, Size: int64(len(contentData))}
			c.Layer.MediaType, c.Layer.Digest, c.Layer.Size = mt, digest.FromBytes(layer), int64(len(layer))
			r, err := bundle.NewContentReader(context.Background(), c, bytes.NewReader(layer), nil, len(layer)%2 == 0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.LimitReader(r, 1<<20))
			r.Close()
			if int64(len(got)) > c.Size {
				t.Fatalf("%s: read %d bytes, recorded %d", mt, len(got), c.Size)
			}
			if err != nil && !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("%s: err = %v, not a verification error", mt, err)
			}
			if err == nil && !bytes.Equal(got, contentData) {
				t.Fatalf("%s: accepted %q", mt, got)
			}
		}
	})
}

// TestZstdRLEDecodes: the bomb fixture is a valid frame of what it says.
func TestZstdRLEDecodes(t *testing.T) {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, n := range []int64{0, 1, 128 << 10, 300001} {
		got, err := dec.DecodeAll(fixtures.ZstdRLE(n, 'a', 20), nil)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("a"), int(n))) {
			t.Fatalf("ZstdRLE(%d) decodes to %d bytes, %v", n, len(got), err)
		}
	}
}
