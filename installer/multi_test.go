package installer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/layout"
)

// sideBySide are two bundles of different names sharing one image (same
// content, so the same digest) and each with its own files and images.
func sideBySide(t *testing.T, dir string) (alpha1, alpha2, beta1, beta2 string) {
	t.Helper()
	shared := int64(7)
	alpha1 = release{name: "alpha", version: "1.0.0", images: map[string]int64{"registry.test/shared/base:1": shared, "registry.test/alpha/app:1": 1},
		files: map[string][]byte{"/opt/alpha/alpha": []byte("alpha 1")}}.build(t, filepath.Join(dir, "a1"))
	alpha2 = release{name: "alpha", version: "2.0.0", images: map[string]int64{"registry.test/shared/base:1": shared, "registry.test/alpha/app:1": 2},
		files: map[string][]byte{"/opt/alpha/alpha": []byte("alpha 2")}}.build(t, filepath.Join(dir, "a2"))
	beta1 = release{name: "beta", version: "1.0.0", images: map[string]int64{"registry.test/shared/base:1": shared, "quay.io/beta/svc:1": 3},
		files: map[string][]byte{"/opt/beta/beta": []byte("beta 1")}}.build(t, filepath.Join(dir, "b1"))
	beta2 = release{name: "beta", version: "2.0.0", images: map[string]int64{"registry.test/shared/base:1": shared, "quay.io/beta/svc:1": 4},
		files: map[string][]byte{"/opt/beta/beta": []byte("beta 2")}}.build(t, filepath.Join(dir, "b2"))
	return
}

// TestBundlesSideBySide: two bundles of different names install into one
// root without removing each other, each upgrades and rolls back on its
// own (the other's files and images untouched), the image both hold is
// stored once, status lists both, and uninstalling one leaves the other
// served.
func TestBundlesSideBySide(t *testing.T) { inBothStoreModes(t, bundlesSideBySide) }

func bundlesSideBySide(t *testing.T, copyBlobs bool) {
	ctx := context.Background()
	dir := t.TempDir()
	a1, a2, b1, b2 := sideBySide(t, dir)
	root := t.TempDir()
	installStore(t, a1, root, copyBlobs)
	res := installStore(t, b1, root, copyBlobs)
	if c := res.Plan.Counts(); c[ActionRemove] != 0 || res.Plan.Installed != nil {
		t.Fatalf("installing beta beside alpha planned %v over %+v; want nothing removed, beta not installed yet", c, res.Plan.Installed)
	}
	readIs(t, root, "opt/alpha/alpha", "alpha 1")
	readIs(t, root, "opt/beta/beta", "beta 1")
	srv := serveStore(t, root)
	served := func(step string, want map[string]int) map[string]string {
		t.Helper()
		got := map[string]string{}
		for ref, code := range want {
			repo, tag, _ := strings.Cut(ref, ":")
			d, c := manifestDigest(t, srv, repo, tag)
			if c != code {
				t.Fatalf("%s: %s answers %d, want %d", step, ref, c, code)
			}
			got[ref] = d
		}
		return got
	}
	all := map[string]int{"registry.test/shared/base:1": 200, "registry.test/alpha/app:1": 200, "quay.io/beta/svc:1": 200,
		"zdt/alpha:1.0.0": 200, "zdt/beta:1.0.0": 200}
	before := served("both installed", all)
	if copyBlobs {
		// Every blob of both archives once: the shared image's blobs are
		// in both, stored once.
		want := archiveDigests(t, a1)
		for d := range archiveDigests(t, b1) {
			want[d] = true
		}
		got := blobFiles(t, root)
		for d := range want {
			if _, ok := got[d]; !ok {
				t.Errorf("blob %s of the bundles is not in the store", d)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%d blobs stored, want %d (each once)", len(got), len(want))
		}
	}

	st, err := GetStatus(ctx, root)
	if err != nil || len(st.Bundles) != 2 || st.Bundles[0].Name != "alpha" || st.Bundles[1].Name != "beta" || !st.Healthy() || st.Generation != nil {
		t.Fatalf("status = %+v, %v; want alpha and beta, healthy", st, err)
	}

	// Upgrading beta leaves alpha's file and images as they are.
	betaFile := snapshot(t, root)["opt/alpha/alpha"]
	installStore(t, b2, root, copyBlobs)
	readIs(t, root, "opt/beta/beta", "beta 2")
	if now := snapshot(t, root)["opt/alpha/alpha"]; now != betaFile {
		t.Errorf("upgrading beta rewrote alpha's file: %+v → %+v", betaFile, now)
	}
	after := served("beta upgraded", map[string]int{"registry.test/shared/base:1": 200, "registry.test/alpha/app:1": 200, "quay.io/beta/svc:1": 200})
	if after["registry.test/alpha/app:1"] != before["registry.test/alpha/app:1"] || after["quay.io/beta/svc:1"] == before["quay.io/beta/svc:1"] {
		t.Errorf("after beta's upgrade: %v, before %v; want alpha's image unchanged and beta's new", after, before)
	}
	installStore(t, a2, root, copyBlobs)
	readIs(t, root, "opt/alpha/alpha", "alpha 2")
	readIs(t, root, "opt/beta/beta", "beta 2")
	after = served("alpha upgraded", map[string]int{"registry.test/alpha/app:1": 200, "quay.io/beta/svc:1": 200})
	if after["registry.test/alpha/app:1"] == before["registry.test/alpha/app:1"] {
		t.Errorf("alpha's upgrade did not serve its new image")
	}

	// Rollback must be told which; then it moves only that bundle.
	if _, err := Rollback(ctx, Options{Root: root, Registry: openStore(t, root, false)}); !errors.Is(err, ErrAmbiguousName) {
		t.Fatalf("rollback without a name = %v, want ErrAmbiguousName", err)
	}
	if _, err := Rollback(ctx, Options{Root: root, Name: "gamma", Registry: openStore(t, root, false)}); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("rollback of a bundle not installed = %v, want ErrNotInstalled", err)
	}
	if _, err := Rollback(ctx, Options{Root: root, Name: "beta", Registry: openStore(t, root, false)}); err != nil {
		t.Fatal(err)
	}
	readIs(t, root, "opt/beta/beta", "beta 1")
	readIs(t, root, "opt/alpha/alpha", "alpha 2")
	rolled := served("beta rolled back", map[string]int{"quay.io/beta/svc:1": 200, "registry.test/alpha/app:1": 200, "registry.test/shared/base:1": 200})
	if rolled["quay.io/beta/svc:1"] != before["quay.io/beta/svc:1"] || rolled["registry.test/alpha/app:1"] != after["registry.test/alpha/app:1"] {
		t.Errorf("after beta's rollback: %v; want beta's v1 image and alpha's v2", rolled)
	}
	if st, err := GetStatus(ctx, root); err != nil || !st.Healthy() || len(st.Bundles) != 2 {
		t.Fatalf("status after beta's rollback = %+v, %v", st, err)
	}
	// The generated files name both bundles' registries.
	if _, err := os.Stat(filepath.Join(root, layout.HostsTOML("quay.io"))); err != nil {
		t.Errorf("no mirror configuration for beta's registry: %v", err)
	}

	// Uninstalling alpha leaves beta installed and served.
	if _, err := Uninstall(ctx, Options{Root: root, Name: "alpha", Registry: openStore(t, root, copyBlobs)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "opt/alpha/alpha")); !os.IsNotExist(err) {
		t.Errorf("alpha's file survived its uninstall: %v", err)
	}
	readIs(t, root, "opt/beta/beta", "beta 1")
	served("alpha uninstalled", map[string]int{"quay.io/beta/svc:1": 200, "registry.test/shared/base:1": 200,
		"registry.test/alpha/app:1": http.StatusNotFound, "zdt/alpha:2.0.0": http.StatusNotFound})
	st, err = GetStatus(ctx, root)
	if err != nil || len(st.Bundles) != 1 || st.Generation == nil || st.Generation.Name != "beta" || !st.Healthy() {
		t.Fatalf("status after alpha's uninstall = %+v, %v; want beta alone, healthy", st, err)
	}
	// Without a name, with one bundle left, commands work as before.
	if _, err := Uninstall(ctx, Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, StateDir)); !os.IsNotExist(err) {
		t.Errorf("the last uninstall left the state directory: %v", err)
	}
}

// TestConflictingPathRefused: a bundle whose file target another installed
// bundle holds (or lies inside or over one) is refused at plan time naming
// both bundles and the path, and nothing is written; so is a tag another
// bundle serves with other content.
func TestConflictingPathRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a1, _, _, _ := sideBySide(t, dir)
	for _, tc := range []struct {
		name string
		r    release
		want []string
	}{
		{"same path", release{name: "gamma", version: "1", files: map[string][]byte{"/opt/alpha/alpha": []byte("mine")}}, []string{"path /opt/alpha/alpha", "gamma", "alpha"}},
		{"inside a file", release{name: "gamma", version: "1", files: map[string][]byte{"/opt/alpha/alpha/x": []byte("mine")}}, []string{"/opt/alpha/alpha/x", "gamma", "alpha", "inside /opt/alpha/alpha"}},
		{"over a file", release{name: "gamma", version: "1", files: map[string][]byte{"/opt/alpha": []byte("mine")}}, []string{"path /opt/alpha ", "gamma", "alpha", "holding /opt/alpha/alpha"}},
		{"tag", release{name: "gamma", version: "1", images: map[string]int64{"registry.test/alpha/app:1": 99}}, []string{"reference registry.test/alpha/app:1", "gamma", "alpha"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			installStore(t, a1, root, false)
			before := snapshot(t, root)
			g := tc.r.build(t, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")))
			for _, plan := range []bool{true, false} {
				a, done := openDelta(t, g, nil)
				_, err := Install(ctx, a, Options{Root: root, PlanOnly: plan, Registry: openStore(t, root, false)})
				done()
				var ce *ConflictError
				if !errors.Is(err, ErrConflict) || !errors.As(err, &ce) {
					t.Fatalf("plan=%v: %v; want a ConflictError", plan, err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("plan=%v: %q does not say %q", plan, err, w)
					}
				}
			}
			after := snapshot(t, root)
			for p, f := range before {
				if after[p] != f {
					t.Errorf("refused install changed %s", p)
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("refused install wrote %s", p)
				}
			}
		})
	}
}

// TestOldLayoutMigrated: a root installed before bundles were keyed by
// name (var/lib/zdt/current, generations without a serve address, no
// record of the generated files) keeps working: status and plan read it
// as it is, an upgrade migrates it in place, rollback returns to the
// generation the old layout recorded, and a second bundle installs beside
// it. A migration interrupted after the new pointer was written (both
// pointers present) reads the same.
func TestOldLayoutMigrated(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v1 := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1}, files: map[string][]byte{"/opt/tool": []byte("v1")}}.build(t, filepath.Join(dir, "v1"))
	v2 := release{version: "2.0.0", images: map[string]int64{"registry.test/app/a:1": 2}, files: map[string][]byte{"/opt/tool": []byte("v2")}}.build(t, filepath.Join(dir, "v2"))
	other := release{name: "other", version: "1.0.0", images: map[string]int64{"quay.io/o/o:1": 3}, files: map[string][]byte{"/opt/other": []byte("other")}}.build(t, filepath.Join(dir, "o"))

	for _, interrupted := range []bool{false, true} {
		t.Run(map[bool]string{false: "old layout", true: "interrupted migration"}[interrupted], func(t *testing.T) {
			root := t.TempDir()
			installStore(t, v1, root, false)
			toOldLayout(t, root, interrupted)
			st, err := GetStatus(ctx, root)
			if err != nil || st.Generation == nil || st.Generation.Name != "plat" || st.Generation.Number != 1 || !st.Healthy() {
				t.Fatalf("status of the old layout = %+v, %v", st, err)
			}
			if again := installStore(t, v1, root, false); again.Applied || again.Generation != 1 {
				t.Fatalf("re-installing v1 over the old layout changed things: %+v", again)
			}
			installStore(t, v2, root, false)
			readIs(t, root, "opt/tool", "v2")
			if _, err := os.Stat(filepath.Join(root, layout.Current)); !os.IsNotExist(err) {
				t.Errorf("the old pointer survived the migration: %v", err)
			}
			if n, err := readPointer(mustRoot(t, root), layout.Installed("plat")); err != nil || n != 2 {
				t.Errorf("plat's pointer = %d, %v", n, err)
			}
			if _, err := Rollback(ctx, Options{Root: root, Registry: openStore(t, root, false)}); err != nil {
				t.Fatal(err)
			}
			readIs(t, root, "opt/tool", "v1")
			installStore(t, other, root, false)
			readIs(t, root, "opt/other", "other")
			readIs(t, root, "opt/tool", "v1")
			st, err = GetStatus(ctx, root)
			if err != nil || len(st.Bundles) != 2 || !st.Healthy() {
				t.Fatalf("status with both = %+v, %v", st, err)
			}
			// The generated files cover both: each one's registry, one
			// unit whose header names both bundles.
			for _, reg := range []string{"registry.test", "quay.io"} {
				if _, err := os.Stat(filepath.Join(root, layout.HostsTOML(reg))); err != nil {
					t.Errorf("no mirror configuration for %s with both installed: %v", reg, err)
				}
			}
			unit, err := os.ReadFile(filepath.Join(root, layout.SystemdUnit(UnitName)))
			conf, _ := os.ReadFile(filepath.Join(root, layout.ContainersRegistriesConf))
			if err != nil || !strings.Contains(string(conf), "from bundles other 1.0.0") || !strings.Contains(string(conf), "plat 1.0.0") ||
				strings.Count(string(unit), "sha256:") != 2 {
				t.Errorf("generated files do not name both bundles:\n%s\n%s", conf, unit)
			}
			// Uninstalling other takes its registry's configuration only.
			if _, err := Uninstall(ctx, Options{Root: root, Name: "other", Registry: openStore(t, root, false)}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(root, layout.HostsTOML("quay.io"))); !os.IsNotExist(err) {
				t.Errorf("other's mirror configuration survived its uninstall: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, layout.HostsTOML("registry.test"))); err != nil {
				t.Errorf("plat's mirror configuration went with other: %v", err)
			}
			if st, err := GetStatus(ctx, root); err != nil || st.Generation == nil || st.Generation.Name != "plat" || !st.Healthy() {
				t.Fatalf("status after other's uninstall = %+v, %v", st, err)
			}
		})
	}
}

// toOldLayout turns root, with one bundle installed by this zdt, into what
// zdt wrote before bundles were keyed by name.
func toOldLayout(t *testing.T, root string, keepNew bool) {
	t.Helper()
	state := filepath.Join(root, StateDir)
	ptr := filepath.Join(root, layout.Installed("plat"))
	n, err := os.ReadFile(ptr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, layout.Current), n, 0o644); err != nil {
		t.Fatal(err)
	}
	if !keepNew {
		if err := os.RemoveAll(filepath.Join(root, layout.InstalledDir)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(root, layout.GeneratedRecord)); err != nil {
		t.Fatal(err)
	}
	gens, _ := filepath.Glob(filepath.Join(state, "generations", "*.json"))
	for _, p := range gens {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "serveAddr")
		b, _ = json.MarshalIndent(m, "", "  ")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestInstallRefusesBadBundleName: installations are keyed by the bundle's
// name (a state file named after it), so a crafted bundle whose name is
// not a bundle name (a path, a dot-dot) is refused before anything is
// written.
func TestInstallRefusesBadBundleName(t *testing.T) {
	good := release{version: "1.0.0", files: map[string][]byte{"/opt/a": []byte("a")}}.build(t, t.TempDir())
	es, err := fixtures.ReadTar(good)
	if err != nil {
		t.Fatal(err)
	}
	var config digest.Digest
	for _, e := range es {
		var c struct{ Name, Version, Spec *string }
		if strings.HasPrefix(e.Hdr.Name, "blobs/") && json.Unmarshal(e.Data, &c) == nil && c.Name != nil && c.Spec != nil && *c.Name == "plat" {
			config = digest.NewDigestFromEncoded(digest.SHA256, filepath.Base(e.Hdr.Name))
		}
	}
	if config == "" {
		t.Fatal("no bundle config in the archive")
	}
	for _, bad := range []string{"../../etc", "a/b", ".hidden", "UPPER"} {
		t.Run(bad, func(t *testing.T) {
			out, _, err := fixtures.EditBlob(es, config, func(b []byte) []byte {
				return []byte(strings.Replace(string(b), `"name":"plat"`, `"name":"`+bad+`"`, 1))
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range out {
				if e.Hdr.Name == "index.json" {
					out[i].Data = []byte(strings.ReplaceAll(string(e.Data), "zdt/plat:", "zdt/"+bad+":"))
					out[i].Hdr.Size = int64(len(out[i].Data))
				}
			}
			p := writeBundle(t, out)
			root := t.TempDir()
			_, err = installArchive(p, root)
			if !errors.Is(err, ErrInvalidItem) || !strings.Contains(err.Error(), strconv.Quote(bad)) {
				t.Fatalf("install of bundle %q = %v, want ErrInvalidItem naming it", bad, err)
			}
			rootIsEmpty(t, root)
		})
	}
}
