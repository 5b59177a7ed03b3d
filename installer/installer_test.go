package installer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// release describes a test bundle: images by name (seeded content) and
// files by target.
type release struct {
	name    string // default plat
	version string
	images  map[string]int64  // ref → seed of its one 64 KiB layer
	files   map[string][]byte // target → content
	base    string            // a bundle to make this one a delta on
}

// build creates the bundle of r in dir and returns its path.
func (r release) build(t testing.TB, dir string) string {
	t.Helper()
	if r.name == "" {
		r.name = "plat"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: %s, version: %q}\ncomponents:\n  - name: base\n", r.name, r.version)
	refs := keys(r.images)
	if len(refs) > 0 {
		b.WriteString("    images:\n")
	}
	for i, ref := range refs {
		data := make([]byte, 64<<10)
		mrand.New(mrand.NewSource(r.images[ref])).Read(data)
		layer, err := fixtures.Layer(map[string]fixtures.File{"data": {Data: data}})
		if err != nil {
			t.Fatal(err)
		}
		img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, layer)
		if err != nil {
			t.Fatal(err)
		}
		lp := filepath.Join(dir, "img", fmt.Sprint(i))
		if err := fixtures.WriteLayoutImage(lp, "x", img); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "      - {ref: %q, source: \"oci:%s:x\"}\n", ref, lp)
	}
	targets := keys(r.files)
	if len(targets) > 0 {
		b.WriteString("    files:\n")
	}
	for i, target := range targets {
		p := filepath.Join(dir, "files", fmt.Sprint(i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, r.files[target], 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(r.files[target])
		fmt.Fprintf(&b, "      - {source: %q, sha256: %s, target: %q, mode: \"0755\"}\n", p, hex.EncodeToString(sum[:]), target)
	}
	spec, err := manifests.Parse("zdt.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	out := filepath.Join(dir, r.name+"-"+r.version+".zdt")
	opts := build.CreateOptions{Output: out}
	if r.base != "" {
		base, err := bundle.Open(context.Background(), r.base)
		if err != nil {
			t.Fatal(err)
		}
		defer base.Close()
		opts.Base = base
	}
	if _, err := build.Create(context.Background(), spec, opts); err != nil {
		t.Fatal(err)
	}
	return out
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func install(t testing.TB, archive, root string) Result {
	t.Helper()
	res, err := installArchive(archive, root)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func installArchive(archive, root string) (Result, error) {
	a, err := bundle.Open(context.Background(), archive)
	if err != nil {
		return Result{}, err
	}
	defer a.Close()
	reg, err := registry.OpenStore(root, registry.StoreOptions{CopyBlobs: os.Getenv("ZDT_COPY_BLOBS") == "1"})
	if err != nil {
		return Result{}, err
	}
	defer reg.Close()
	return Install(context.Background(), a, Options{Root: root, ToolVersion: "test", Registry: reg})
}

type fileState struct {
	size  int64
	mtime time.Time
	ino   uint64
	mode  fs.FileMode
	sum   string
}

// snapshot records every file under root.
func snapshot(t testing.TB, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		rel, _ := filepath.Rel(root, p)
		out[rel] = fileState{fi.Size(), fi.ModTime(), fi.Sys().(*syscall.Stat_t).Ino, fi.Mode(), hex.EncodeToString(sum[:])}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var v1Release = release{
	version: "1.0.0",
	images:  map[string]int64{"registry.test/app/a:1": 1, "registry.test/app/b:1": 2},
	files: map[string][]byte{
		"/usr/local/bin/keep":   []byte("keep v1"),
		"/usr/local/bin/change": []byte("change v1"),
		"/etc/plat/remove.conf": []byte("removed in v2"),
	},
}

func TestReinstallChangesNothing(t *testing.T) {
	dir := t.TempDir()
	archive := v1Release.build(t, dir)
	root := t.TempDir()
	start := time.Now()
	first := install(t, archive, root)
	firstTook := time.Since(start)
	if !first.Applied || first.Generation != 1 {
		t.Fatalf("first install = %+v", first)
	}
	before := snapshot(t, root)
	start = time.Now()
	again := install(t, archive, root)
	againTook := time.Since(start)
	if again.Applied || again.Generation != 1 || again.Plan.HasChanges() || again.FilesWritten != 0 {
		t.Fatalf("re-install = %+v", again)
	}
	if n := again.Plan.Counts()[ActionUnchanged]; n != 5 {
		t.Fatalf("re-install plan has %d unchanged items, want 5: %+v", n, again.Plan.Changes)
	}
	after := snapshot(t, root)
	if len(before) != len(after) {
		t.Fatalf("re-install changed the file set: %d → %d", len(before), len(after))
	}
	for p, b := range before {
		if after[p] != b {
			t.Errorf("re-install touched %s: %+v → %+v", p, b, after[p])
		}
	}
	t.Logf("first install %v, re-install %v", firstTook, againTook)
}

func TestUpgradeAndRollback(t *testing.T) {
	dir := t.TempDir()
	a1 := v1Release.build(t, filepath.Join(dir, "v1"))
	v2 := release{
		version: "2.0.0",
		images:  map[string]int64{"registry.test/app/a:1": 3, "registry.test/app/b:1": 2},
		files: map[string][]byte{
			"/usr/local/bin/keep":   []byte("keep v1"),
			"/usr/local/bin/change": []byte("change v2"),
			"/usr/local/bin/added":  []byte("added in v2"),
		},
	}
	a2 := v2.build(t, filepath.Join(dir, "v2"))
	root := t.TempDir()
	install(t, a1, root)
	v1Files := snapshot(t, root)

	a, err := bundle.Open(context.Background(), a2)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	plan, err := Install(context.Background(), a, Options{Root: root, PlanOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Action{}
	for _, c := range plan.Plan.Changes {
		got[c.Kind+" "+c.Name] = c.Action
	}
	want := map[string]Action{
		"image registry.test/app/a:1": ActionChange,
		"image registry.test/app/b:1": ActionUnchanged,
		"file keep":                   ActionUnchanged,
		"file change":                 ActionChange,
		"file remove.conf":            ActionRemove,
		"file added":                  ActionAdd,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("plan: %s = %q, want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("plan has %d items, want exactly %d: %v", len(got), len(want), got)
	}
	if snap := snapshot(t, root); len(snap) != len(v1Files) {
		t.Fatalf("--plan wrote files")
	}

	res := install(t, a2, root)
	if res.Generation != 2 {
		t.Fatalf("upgrade = %+v", res)
	}
	readIs(t, root, "usr/local/bin/change", "change v2")
	readIs(t, root, "usr/local/bin/added", "added in v2")
	if _, err := os.Stat(filepath.Join(root, "etc/plat/remove.conf")); !os.IsNotExist(err) {
		t.Fatalf("removed item still installed: %v", err)
	}
	keepBefore := v1Files["usr/local/bin/keep"]
	if now := snapshot(t, root)["usr/local/bin/keep"]; now != keepBefore {
		t.Errorf("unchanged file was rewritten: %+v → %+v", keepBefore, now)
	}
	if _, err := os.Stat(filepath.Join(root, StateDir, "backups", "2", "generation.json")); err != nil {
		t.Errorf("no state backup before the upgrade: %v", err)
	}

	rb, err := Rollback(context.Background(), Options{Root: root, ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Generation != 3 {
		t.Fatalf("rollback = %+v", rb)
	}
	after := snapshot(t, root)
	for p, f := range v1Files {
		if strings.HasPrefix(p, StateDir) {
			continue
		}
		if after[p].sum != f.sum || after[p].mode != f.mode {
			t.Errorf("rollback: %s = %+v, v1 had %+v", p, after[p], f)
		}
	}
	for p := range after {
		if _, ok := v1Files[p]; !ok && !strings.HasPrefix(p, StateDir) {
			t.Errorf("rollback left %s behind", p)
		}
	}
	st, err := GetStatus(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation.Version != "1.0.0" || len(st.Drift) != 0 {
		t.Fatalf("status after rollback = %+v", st)
	}
}

func readIs(t *testing.T, root, rel, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil || string(b) != want {
		t.Fatalf("%s = %q, %v; want %q", rel, b, err, want)
	}
}

func TestDriftIsRepaired(t *testing.T) {
	archive := v1Release.build(t, t.TempDir())
	root := t.TempDir()
	install(t, archive, root)
	p := filepath.Join(root, "usr/local/bin/change")
	if err := os.WriteFile(p, []byte("edited by hand"), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := GetStatus(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Drift) != 1 || st.Drift[0] != "/usr/local/bin/change" {
		t.Fatalf("drift = %v", st.Drift)
	}
	res := install(t, archive, root)
	if res.Plan.Counts()[ActionRepair] != 1 || !res.Applied {
		t.Fatalf("repair install = %+v", res.Plan.Changes)
	}
	readIs(t, root, "usr/local/bin/change", "change v1")
}

func TestConcurrentInstallIsRefused(t *testing.T) {
	root := t.TempDir()
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, err := openState(r)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	archive := v1Release.build(t, t.TempDir())
	if _, err := installArchive(archive, root); !errors.Is(err, ErrLocked) {
		t.Fatalf("install while locked: err = %v, want ErrLocked", err)
	}
}

func TestUninstall(t *testing.T) {
	archive := v1Release.build(t, t.TempDir())
	root := t.TempDir()
	install(t, archive, root)
	if _, err := Uninstall(context.Background(), Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	if left := snapshot(t, root); len(left) != 0 {
		t.Fatalf("uninstall left %v", keys(left))
	}
}

// buildSpec creates a bundle from a spec text whose file sources are
// relative to dir, and returns its path.
func buildSpec(t *testing.T, dir, name, spec string) string {
	t.Helper()
	s, err := manifests.Parse(filepath.Join(dir, "zdt.yaml"), []byte(spec))
	if err != nil {
		t.Fatalf("%v\n%s", err, spec)
	}
	out := filepath.Join(dir, name)
	if _, err := build.Create(context.Background(), s, build.CreateOptions{Output: out}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTargetsChangeHands: between versions a path can pass from one item to
// another (an item renamed, or moved while another takes its place). The
// upgrade must leave each path with its new owner's content, whatever the
// order items are handled in, and rollback must restore every old file.
func TestTargetsChangeHands(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(content))
		return hex.EncodeToString(sum[:])
	}
	spec := func(version string, files ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: hands, version: %q}\ncomponents:\n  - name: c\n    files:\n", version)
		for i := 0; i < len(files); i += 3 {
			fmt.Fprintf(&b, "      - {name: %s, source: %s, sha256: %s, target: %s}\n", files[i], filepath.Join(dir, files[i]+"-"+version), file(files[i]+"-"+version, files[i+2]), files[i+1])
		}
		return b.String()
	}
	// v1: old at /opt/x, mover at /opt/y.
	// v2: old is gone and renamed as new at /opt/x; mover moves to /opt/z
	//     and taker takes /opt/y.
	v1 := buildSpec(t, dir, "v1.zdt", spec("1.0.0", "old", "/opt/x", "old v1", "mover", "/opt/y", "mover v1"))
	v2 := buildSpec(t, dir, "v2.zdt", spec("2.0.0", "new", "/opt/x", "new v2", "mover", "/opt/z", "mover v2", "taker", "/opt/y", "taker v2"))
	root := t.TempDir()
	install(t, v1, root)
	install(t, v2, root)
	readIs(t, root, "opt/x", "new v2")
	readIs(t, root, "opt/y", "taker v2")
	readIs(t, root, "opt/z", "mover v2")
	if again := install(t, v2, root); again.Applied {
		t.Fatalf("re-install changed things: %+v", again.Plan.Changes)
	}
	if _, err := Rollback(context.Background(), Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	readIs(t, root, "opt/x", "old v1")
	readIs(t, root, "opt/y", "mover v1")
	if _, err := os.Stat(filepath.Join(root, "opt/z")); !os.IsNotExist(err) {
		t.Fatalf("opt/z survived the rollback: %v", err)
	}
}
