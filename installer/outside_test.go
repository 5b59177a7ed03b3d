package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
)

// installErr installs the bundle at p under root as zdt install does and
// returns the error.
func installErr(p, root string, copyBlobs bool) error {
	ctx := context.Background()
	store, err := registry.OpenStore(root, registry.StoreOptions{CopyBlobs: copyBlobs})
	if err != nil {
		return err
	}
	defer store.Close()
	a, err := bundle.Open(ctx, p)
	if err != nil {
		return err
	}
	defer a.Close()
	_, err = Install(ctx, a, Options{Root: root, Registry: store})
	return err
}

// tree maps every file under dir to its content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[strings.TrimPrefix(p, dir)] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSymlinksOutOfRootAreRefused plants symlinks under the install root
// that lead out of it — the registry store, its archives and blobs
// directories, the placements directory, the CA directory — and runs
// install, install --copy-blobs, prune, uninstall and what serve --root
// opens. Nothing outside the root is written or deleted (a sentinel and
// a foreign blob there stay as they were), and each refusal says so.
func TestSymlinksOutOfRootAreRefused(t *testing.T) {
	dir := t.TempDir()
	rv := func(v string, seed int64) string {
		return release{version: v, images: map[string]int64{"registry.test/app/a:1": seed}}.build(t, filepath.Join(dir, v))
	}
	a1, a2 := rv("1.0.0", 1), rv("2.0.0", 2)
	const (
		storeDir   = "var/lib/zdt/registry"
		blobsDir   = storeDir + "/docker/registry/v2/blobs"
		foreignHex = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
	)
	// plant makes rel (under root) a symlink to out; moving what is there
	// into out first when move is set.
	plant := func(t *testing.T, root, rel, out string, move bool) {
		t.Helper()
		p := filepath.Join(root, rel)
		if move {
			if err := os.Rename(p, out); err != nil {
				t.Fatal(err)
			}
		} else if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(out, p); err != nil {
			t.Fatal(err)
		}
	}
	openStore := func(root string) (*registry.Store, error) { return registry.OpenStore(root, registry.StoreOptions{}) }
	cases := []struct {
		name string
		// setup prepares root; out is the directory outside it to link to
		// (it does not exist yet).
		setup   func(t *testing.T, root, out string)
		op      func(root string) error
		wantErr bool
	}{
		{"store dir, install", func(t *testing.T, root, out string) {
			os.Mkdir(out, 0o755)
			plant(t, root, storeDir, out, false)
		}, func(root string) error { return installErr(a1, root, false) }, true},
		{"store dir, install --copy-blobs", func(t *testing.T, root, out string) {
			os.Mkdir(out, 0o755)
			plant(t, root, storeDir, out, false)
		}, func(root string) error { return installErr(a1, root, true) }, true},
		{"archives dir, install", func(t *testing.T, root, out string) {
			os.Mkdir(out, 0o755)
			plant(t, root, storeDir+"/archives", out, false)
		}, func(root string) error { return installErr(a1, root, false) }, true},
		{"blobs dir, install --copy-blobs", func(t *testing.T, root, out string) {
			os.Mkdir(out, 0o755)
			plant(t, root, blobsDir, out, false)
		}, func(root string) error { return installErr(a1, root, true) }, true},
		{"placements dir, install", func(t *testing.T, root, out string) {
			os.Mkdir(out, 0o755)
			plant(t, root, "var/lib/zdt/placements", out, false)
		}, func(root string) error { return installErr(a1, root, false) }, true},
		{"blobs dir, prune", func(t *testing.T, root, out string) {
			if err := installErr(a1, root, true); err != nil {
				t.Fatal(err)
			}
			if err := installErr(a2, root, true); err != nil {
				t.Fatal(err)
			}
			plant(t, root, blobsDir, out, true) // v1's blobs, which a prune would delete, now outside
			foreign := filepath.Join(out, "sha256", foreignHex[:2], foreignHex, "data")
			os.MkdirAll(filepath.Dir(foreign), 0o755)
			os.WriteFile(foreign, []byte("not zdt's"), 0o644)
		}, func(root string) error {
			s, err := openStore(root)
			if err != nil {
				return err
			}
			defer s.Close()
			a, err := bundle.Open(context.Background(), a2)
			if err != nil {
				return err
			}
			defer a.Close()
			return s.Prune(context.Background(), []digest.Digest{a.Root.Digest})
		}, true},
		{"store dir, uninstall", func(t *testing.T, root, out string) {
			if err := installErr(a1, root, true); err != nil {
				t.Fatal(err)
			}
			plant(t, root, storeDir, out, true)
		}, func(root string) error {
			_, err := Uninstall(context.Background(), Options{Root: root})
			return err
		}, false},
		{"store dir, serve --root", func(t *testing.T, root, out string) {
			if err := installErr(a1, root, true); err != nil {
				t.Fatal(err)
			}
			plant(t, root, storeDir, out, true)
		}, func(root string) error {
			s, err := openStore(root)
			if err != nil {
				return err
			}
			defer s.Close()
			h, err := registry.NewHandler(context.Background(), registry.HandlerOptions{Store: s})
			if err == nil {
				h.Close()
			}
			return err
		}, true},
		{"tls dir, serve --root", func(t *testing.T, root, out string) {
			os.Mkdir(out, 0o700)
			plant(t, root, "var/lib/zdt/tls", out, false)
		}, func(root string) error {
			_, err := registry.OpenCA(root)
			return err
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			out := filepath.Join(t.TempDir(), "outside")
			c.setup(t, root, out)
			if err := os.WriteFile(filepath.Join(out, "sentinel"), []byte("outside the root"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := tree(t, out)
			err := c.op(root)
			if c.wantErr && !errors.Is(err, registry.ErrOutsideRoot) {
				t.Errorf("error = %v, want one matching registry.ErrOutsideRoot", err)
			}
			if !c.wantErr && err != nil {
				t.Errorf("error = %v", err)
			}
			after := tree(t, out)
			for p, b := range before {
				if after[p] != b {
					t.Errorf("%s outside the root was changed or deleted", p)
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("%s was written outside the root", p)
				}
			}
		})
	}
}
