package installer

import (
	"context"
	"path/filepath"
	"testing"
)

// TestCurrentGenerations: what `zdt agent` compares with the rollout's
// digest follows a local rollback (the Node's annotation does not): after
// beta 1 → beta 2 and a rollback, beta's current digest is beta 1's again,
// alpha's unchanged; a root not created yet has nothing installed.
func TestCurrentGenerations(t *testing.T) {
	ctx := context.Background()
	if gens, err := CurrentGenerations(filepath.Join(t.TempDir(), "none")); err != nil || len(gens) != 0 {
		t.Fatalf("root not created: %v, %v; want nothing installed", gens, err)
	}
	a1, _, b1, b2 := sideBySide(t, t.TempDir())
	root := t.TempDir()
	digests := func() map[string]string {
		t.Helper()
		gens, err := CurrentGenerations(root)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, g := range gens {
			out[g.Name] = g.BundleDigest
		}
		return out
	}
	installStore(t, a1, root, false)
	installStore(t, b1, root, false)
	v1 := digests()
	if whole, err := ServesWhole(root, "alpha"); err != nil || !whole {
		t.Errorf("ServesWhole of a bundle installed from its file: %v %v, want true", whole, err)
	}
	installStore(t, b2, root, false)
	v2 := digests()
	if _, err := Rollback(ctx, Options{Root: root, Name: "beta", Registry: openStore(t, root, false)}); err != nil {
		t.Fatal(err)
	}
	back := digests()
	if len(v1) != 2 || v1["beta"] == v2["beta"] || v1["alpha"] != v2["alpha"] || back["beta"] != v1["beta"] || back["alpha"] != v1["alpha"] {
		t.Errorf("current digests: installed %v, beta upgraded %v, beta rolled back %v", v1, v2, back)
	}
}
