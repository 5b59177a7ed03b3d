package installer

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/signing"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		version, installed string
		ok                 bool
	}{
		{"1.0.0", "1.0.0", true},
		{"1.0.1", "1.0.0", true},
		{"v1.2.0", "1.1.9", true},
		{"2.0.0", "1.99.99", true},
		{"1.22.8-1", "1.22.8-0", true},
		{"1.22.8", "1.22.8-1", true},
		{"1.0.0+build2", "1.0.0+build1", true}, // build metadata does not order
		{"0.9.0", "1.0.0", false},
		{"1.22.8-0", "1.22.8-1", false},
		{"1.22.8-1", "1.22.8", false},
		{"1.0.0-rc.1", "1.0.0", false},
		{"v0.1.0", "v0.2.0", false},
		{"nightly", "nightly", true},
		{"nightly-2", "nightly-1", false}, // not semver: only equal passes
		{"1.0", "0.9.0", false},           // not strict semver
		{"2.0.0", "latest", false},
	} {
		err := compareVersions("plat", tc.version, tc.installed)
		if (err == nil) != tc.ok {
			t.Errorf("%s over %s: %v, want ok=%v", tc.version, tc.installed, err, tc.ok)
		}
		var de *DowngradeError
		if err != nil && (!errors.As(err, &de) || !errors.Is(err, ErrDowngrade) || !strings.Contains(err.Error(), tc.installed) || !strings.Contains(err.Error(), tc.version)) {
			t.Errorf("%s over %s: %v does not name both", tc.version, tc.installed, err)
		}
	}
}

// TestRefuseDowngrade: with RefuseDowngrade, an older version of the
// installed bundle and another bundle are refused, from a registry
// (InstallFrom) and from a file (Install), after the signature check and
// before anything under the root changes; a newer version, the same
// version again and a fresh root are installed; without it Install
// behaves as before (the older version installs).
func TestRefuseDowngrade(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	build := func(name, version, content string) string {
		return release{name: name, version: version, files: map[string][]byte{"/usr/local/bin/t": []byte(content)}}.build(t, filepath.Join(dir, name+version))
	}
	v1 := build("plat", "1.0.0", "v1")
	old := build("plat", "0.9.0", "old")
	newer := build("plat", "1.1.0", "newer")
	other := build("evil", "9.0.0", "other")
	root := filepath.Join(dir, "node")
	from := func(p string) (Result, error) {
		host := serveBundle(t, p, nil)
		a, err := bundle.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		return InstallFrom(ctx, host+"/zdt/"+a.Config.Name+"@"+a.Root.Digest.String(), FromOptions{
			Options: Options{Root: root, ToolVersion: "test", RefuseDowngrade: true},
			Policy:  signing.Policy{InsecureSkipSignature: true},
		})
	}
	fromFile := func(p string, refuse bool) (Result, error) {
		a, err := bundle.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		reg, err := registry.OpenStore(root, registry.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
		return Install(ctx, a, Options{Root: root, ToolVersion: "test", Registry: reg, RefuseDowngrade: refuse})
	}

	if res, err := from(v1); err != nil || res.Generation != 1 {
		t.Fatalf("1.0.0 on a fresh root: %+v %v", res, err)
	}
	if res, err := from(v1); err != nil || res.Applied {
		t.Fatalf("1.0.0 again: %+v %v", res, err)
	}
	before := snapshot(t, root)
	for _, tc := range []struct {
		name, p string
		want    []string
	}{
		{"older", old, []string{"plat 0.9.0", "older than the installed version", "plat 1.0.0"}},
		{"another bundle", other, []string{"evil 9.0.0", "another bundle", "plat 1.0.0"}},
	} {
		for _, via := range []string{"registry", "file"} {
			var err error
			if via == "registry" {
				_, err = from(tc.p)
			} else {
				_, err = fromFile(tc.p, true)
			}
			var de *DowngradeError
			if !errors.As(err, &de) || !errors.Is(err, ErrDowngrade) {
				t.Fatalf("%s from a %s: %v, want a DowngradeError", tc.name, via, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s from a %s: %q does not say %q", tc.name, via, err, w)
				}
			}
			if after := snapshot(t, root); !maps.Equal(before, after) {
				t.Errorf("%s from a %s changed the root", tc.name, via)
			}
		}
	}
	readIs(t, root, "usr/local/bin/t", "v1")
	if res, err := from(newer); err != nil || res.Generation != 2 {
		t.Fatalf("1.1.0 over 1.0.0: %+v %v", res, err)
	}
	readIs(t, root, "usr/local/bin/t", "newer")
	// Without the option, install is what it was: the older one installs.
	if res, err := fromFile(old, false); err != nil || !res.Applied {
		t.Fatalf("0.9.0 without RefuseDowngrade: %+v %v", res, err)
	}
	readIs(t, root, "usr/local/bin/t", "old")
}
