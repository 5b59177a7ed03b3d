package installer

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/hashcount"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// TestFileLayerHashedOnce counts the bytes an install hashes: each byte
// of a file item's layer is hashed once (the placement's check of the
// layer digest is the one the kept archive relies on), and a compressed
// file's content once more (its own sha256), not the layer a second time.
// The rest of the archive (manifests, configs, an image) is hashed once
// too: the whole install hashes the archive's blobs plus the decoded
// bytes of compressed files, nothing more.
func TestFileLayerHashedOnce(t *testing.T) {
	trustFreshArchives(t) // built just now: an install would hash them in full
	const n = 16 << 20
	rng := rand.New(rand.NewSource(1))
	raw := make([]byte, n) // starts like gzip: stored as is, the layer is the content
	rng.Read(raw)
	copy(raw, []byte{0x1f, 0x8b, 0x08})
	half := make([]byte, n/2) // about 2:1 compressible: zstd
	rng.Read(half)
	comp := bytes.Join([][]byte{half, make([]byte, n/2)}, nil)
	for _, tc := range []struct {
		name       string
		content    []byte
		compressed bool
	}{
		{"stored as is", raw, false},
		{"compressed", comp, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			archive := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1},
				files: map[string][]byte{"/opt/big": tc.content}}.build(t, dir)
			ctx := context.Background()
			a, err := bundle.Open(ctx, archive)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			// Every blob of the archive hashed once, and the file's layer.
			stop := hashcount.Start()
			res, err := a.Verify(ctx, bundle.VerifyOptions{SkipContent: true})
			blobs := stop()
			if err != nil {
				t.Fatal(err)
			}
			if blobs != res.Bytes {
				t.Fatalf("verify hashed %d bytes, its blobs are %d", blobs, res.Bytes)
			}
			var c bundle.Content
			for _, it := range res.Graph.Items {
				if it.Kind == manifests.KindFile {
					if c, err = a.ItemContent(ctx, it); err != nil {
						t.Fatal(err)
					}
				}
			}
			if c.Compressed() != tc.compressed || c.Size != n {
				t.Fatalf("the file's layer: %+v", c)
			}
			want := blobs // every blob once
			if tc.compressed {
				want += n // and the decoded content once
			}
			reg, err := registry.OpenStore(t.TempDir(), registry.StoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			root := t.TempDir()
			stop = hashcount.Start()
			_, err = Install(ctx, a, Options{Root: root, ToolVersion: "test", Registry: reg})
			hashed := stop()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("install hashed %d bytes: the blobs are %d, the file's layer %d, its content %d", hashed, blobs, c.Layer.Size, c.Size)
			if hashed != want {
				t.Fatalf("install hashed %d bytes, want %d (blobs %d, file layer %d, content %d): %d extra",
					hashed, want, blobs, c.Layer.Size, c.Size, hashed-want)
			}
			readIs(t, root, "opt/big", string(tc.content))
		})
	}
}

// flipLayer writes a copy of the archive at p with one byte of the
// layer of the file item installed at target flipped (same size, so only
// its digest tells), and returns its path.
func flipLayer(t *testing.T, p, target string) string {
	t.Helper()
	ctx := context.Background()
	a, err := bundle.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	g, err := a.Walk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var layer digest.Digest
	for _, it := range g.Items {
		if it.Kind == manifests.KindFile && it.Target == target {
			c, err := a.ItemContent(ctx, it)
			if err != nil {
				t.Fatal(err)
			}
			layer = c.Layer.Digest
		}
	}
	a.Close()
	if layer == "" {
		t.Fatalf("no file item at %s", target)
	}
	es, err := fixtures.ReadTar(p)
	if err != nil {
		t.Fatal(err)
	}
	flipped := false
	for i, e := range es {
		if e.Hdr.Name == "blobs/sha256/"+layer.Encoded() {
			es[i].Data = bytes.Clone(e.Data)
			es[i].Data[len(e.Data)/2] ^= 0x55
			flipped = true
		}
	}
	if !flipped {
		t.Fatalf("layer %s not in the archive", layer)
	}
	return writeBundle(t, es)
}

// keptArchives lists the archives kept in the registry store under root.
func keptArchives(t *testing.T, root string) []string {
	t.Helper()
	kept, err := filepath.Glob(filepath.Join(registry.StoreDir(root), "archives", "*.zdt"))
	if err != nil {
		t.Fatal(err)
	}
	return kept
}

// TestDamagedFileLayerRefused: with each layer hashed once, the layer a
// placement checks is not hashed by the import, and one no placement
// reads (the item is unchanged) is hashed by the import. Either way a
// layer whose bytes do not match its digest refuses the install: no
// generation, no archive kept, no blob copied, the file not placed (or
// left as installed). (With blobs copied, an unchanged file's layer the
// store holds already, checked when copied, is not read from the new
// archive at all: that install succeeds and serves the store's bytes.)
func TestDamagedFileLayerRefused(t *testing.T) { inBothStoreModes(t, damagedFileLayerRefused) }

func damagedFileLayerRefused(t *testing.T, copyBlobs bool) {
	dir := t.TempDir()
	big := append([]byte{0x1f, 0x8b, 0x08}, bytes.Repeat([]byte("the big file "), 200_000)...) // stored as is
	same := bytes.Repeat([]byte("the same file "), 100_000)
	v1 := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1},
		files: map[string][]byte{"/opt/same": same}}.build(t, filepath.Join(dir, "v1"))
	v2 := release{version: "2.0.0", images: map[string]int64{"registry.test/app/a:1": 2},
		files: map[string][]byte{"/opt/big": big, "/opt/same": same}}.build(t, filepath.Join(dir, "v2"))
	ctx := context.Background()
	try := func(p, root string) error {
		a, err := bundle.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		reg := openStore(t, root, copyBlobs)
		_, err = Install(ctx, a, Options{Root: root, ToolVersion: "test", Registry: reg})
		return err
	}
	storeBlobs := func(root string) int {
		n := 0
		filepath.Walk(filepath.Join(registry.StoreDir(root), "docker/registry/v2/blobs"), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n++
			}
			return nil
		})
		return n
	}

	t.Run("placed", func(t *testing.T) { // the placement's check is the only one
		root := t.TempDir()
		err := try(flipLayer(t, v2, "/opt/big"), root)
		if !errors.Is(err, bundle.ErrVerification) || !errors.Is(err, bundle.ErrDigestMismatch) {
			t.Fatalf("install of a damaged file layer: %v, want a digest mismatch", err)
		}
		if kept := keptArchives(t, root); len(kept) > 0 {
			t.Fatalf("archive kept although a layer did not check out: %v", kept)
		}
		if n := storeBlobs(root); n > 0 && !copyBlobs {
			t.Fatalf("%d blobs copied", n)
		}
		if _, err := os.Stat(filepath.Join(root, "opt/big")); !os.IsNotExist(err) {
			t.Fatalf("the damaged file was placed: %v", err)
		}
		if st, err := GetStatus(ctx, root); err == nil && st.Generation != nil {
			t.Fatalf("a generation was recorded: %+v", st.Generation)
		}
		if bad := badStoreBlobsIfAny(t, root); len(bad) > 0 {
			t.Fatalf("store blobs that do not hash to their name: %v", bad)
		}
	})

	t.Run("unchanged", func(t *testing.T) { // no placement reads it: the import hashes it
		root := t.TempDir()
		if err := try(v1, root); err != nil {
			t.Fatal(err)
		}
		before := keptArchives(t, root)
		err := try(flipLayer(t, v2, "/opt/same"), root)
		if copyBlobs {
			if err != nil {
				t.Fatal(err)
			}
			readIs(t, root, "opt/same", string(same))
			if bad := badStoreBlobs(t, root); len(bad) > 0 {
				t.Fatalf("store blobs that do not hash to their name: %v", bad)
			}
			return
		}
		if !errors.Is(err, bundle.ErrVerification) {
			t.Fatalf("install of a damaged layer of an unchanged file: %v, want a verification error", err)
		}
		if kept := keptArchives(t, root); len(kept) != len(before) {
			t.Fatalf("archives kept %v, before %v", kept, before)
		}
		st, err := GetStatus(ctx, root)
		if err != nil || st.Generation == nil || st.Generation.Version != "1.0.0" {
			t.Fatalf("status after the refused upgrade: %+v, %v", st, err)
		}
		readIs(t, root, "opt/same", string(same))
		if bad := badStoreBlobsIfAny(t, root); len(bad) > 0 {
			t.Fatalf("store blobs that do not hash to their name: %v", bad)
		}
	})
}

// badStoreBlobsIfAny is badStoreBlobs of a store that may be empty.
func badStoreBlobsIfAny(t *testing.T, root string) []string {
	t.Helper()
	if len(keptArchives(t, root)) == 0 {
		n := 0
		filepath.Walk(filepath.Join(registry.StoreDir(root), "docker/registry/v2/blobs"), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fi.Name() == "data" {
				n++
			}
			return nil
		})
		if n == 0 {
			return nil
		}
	}
	return badStoreBlobs(t, root)
}
