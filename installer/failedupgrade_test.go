package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
)

// activateHook is a Registry that runs before when Activate is asked for
// root: the fault of a test, at the moment the new generation's content
// would go live.
type activateHook struct {
	*registry.Store
	root   digest.Digest
	before func()
}

func (h activateHook) Activate(ctx context.Context, roots ...digest.Digest) error {
	if slices.Contains(roots, h.root) && h.before != nil {
		h.before()
	}
	return h.Store.Activate(ctx, roots...)
}

// TestFailedUpgradeKeepsServing: the new bundle's file is truncated during
// its install — right after its blobs were verified through the hard link
// the store keeps, or just before it goes live. The install fails, nothing
// of the new bundle is active, and the installed generation keeps serving:
// the store opens for `zdt serve --root`, its health is OK, rollback
// returns to the one before and the old bundle installs again.
func TestFailedUpgradeKeepsServing(t *testing.T) {
	dir := t.TempDir()
	rv := func(v string, seed int64) string {
		return release{version: v, images: map[string]int64{"registry.test/app/a:1": seed, "quay.io/x/y:2": seed + 100},
			files: map[string][]byte{"/opt/tool": []byte("tool " + v)}}.build(t, filepath.Join(dir, v))
	}
	a1, a2 := rv("1.0.0", 1), rv("2.0.0", 2)
	truncate := func(t *testing.T, p string) {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil { // in place: the kept link shares the inode
			t.Fatal(err)
		}
	}
	for _, when := range []string{"after verify", "before activation"} {
		t.Run(when, func(t *testing.T) {
			root := t.TempDir()
			ctx := context.Background()
			installStore(t, a1, root, false)
			installStore(t, a2, root, false)
			// A fresh copy of v3 per case: the fault truncates it.
			a3 := rv("3.0.0-"+filepath.Base(root), 3)
			a, err := bundle.Open(ctx, a3)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			store := openStore(t, root, false)
			reg := activateHook{Store: store, root: a.Root.Digest}
			var once sync.Once
			opts := Options{Root: root, Registry: reg}
			switch when {
			case "after verify": // the last progress report of the verification
				opts.Progress = func(done, total int64) {
					if done == total {
						once.Do(func() { truncate(t, a3) })
					}
				}
			case "before activation":
				reg.before = func() { truncate(t, a3) }
				opts.Registry = reg
			}
			_, err = Install(ctx, a, opts)
			if err == nil {
				t.Fatal("install of a bundle truncated while being installed succeeded")
			}
			if !errors.Is(err, registry.ErrBadStore) && !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("install error = %v, want ErrBadStore or ErrVerification (the bundle changed)", err)
			}
			if p, ok := store.Kept(a.Root.Digest); ok {
				t.Fatalf("the damaged archive is still kept: %s", p)
			}

			// The installed generation (v2) is current and serves.
			st, err := GetStatus(ctx, root)
			if err != nil || st.Generation == nil || st.Generation.Version != "2.0.0" {
				t.Fatalf("status after the failed upgrade: %+v, %v; want v2 current", st.Generation, err)
			}
			if st.Registry == nil || len(st.Registry.Problems) != 0 || st.Registry.Served == 0 {
				t.Fatalf("registry health after the failed upgrade: %+v, want healthy", st.Registry)
			}
			srv := serveStore(t, root) // what serve --root does: it must open
			servesAll(t, srv, "after the failed upgrade", a2, "")

			// Rollback returns to v1, and v2 installs again (repairing the
			// file the failed install placed).
			if _, err := Rollback(ctx, Options{Root: root, Registry: openStore(t, root, false)}); err != nil {
				t.Fatalf("rollback after the failed upgrade: %v", err)
			}
			servesAll(t, srv, "rolled back to v1", a1, "")
			readIs(t, root, "opt/tool", "tool 1.0.0")
			installStore(t, a2, root, false)
			servesAll(t, srv, "v2 installed again", a2, "")
			readIs(t, root, "opt/tool", "tool 2.0.0")
		})
	}
}
