package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/testregistry"
)

// createJSON is the part of `bundle create --output json` these tests read.
type createJSON struct {
	Path     string
	LockFile string
	Blobs    int
	Items    []bundle.Item
}

// TestCreateJSONItemSizes: `bundle create --output json` reports each
// item's real size and blob count — what a reader of the archive counts —
// not "size":0,"blobs":0 (#13).
func TestCreateJSONItemSizes(t *testing.T) {
	dir := quickstart(t)
	r := zdt(t, dir, "bundle", "create", "--output", "json", "-o", "q.zdt").must(t, "create")
	var got createJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("create --output json: %v\n%s", err, r.stdout)
	}
	a, err := bundle.Open(context.Background(), filepath.Join(dir, "q.zdt"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	g, err := a.Walk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Items) != len(g.Items) || len(got.Items) != 5 {
		t.Fatalf("create reports %d items, the archive has %d", len(got.Items), len(g.Items))
	}
	for i, it := range got.Items {
		want := g.Items[i]
		if it.Name != want.Name || it.Size != want.Size || it.Blobs != want.Blobs || it.Size <= 0 || it.Blobs < 2 {
			t.Errorf("item %d: create says %s size %d blobs %d; the archive: %s size %d blobs %d",
				i, it, it.Size, it.Blobs, want, want.Size, want.Blobs)
		}
	}
	if got.Blobs != len(g.Blobs) {
		t.Errorf("create says %d blobs, the archive has %d", got.Blobs, len(g.Blobs))
	}
}

// TestCreateLockPerSpec: two specs in one directory keep a lock file
// each (NAME.lock.yaml; zdt.yaml's stays zdt.lock.yaml), --lock reads the
// spec's own, and the summary counts in the singular when there is one
// item (#13).
func TestCreateLockPerSpec(t *testing.T) {
	dir := t.TempDir()
	fileBundle(t, dir) // zdt.yaml: one file item
	zdtLock, err := os.ReadFile(filepath.Join(dir, "zdt.lock.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := os.ReadFile(filepath.Join(dir, "zdt.yaml"))
	other := strings.Replace(string(spec), "name: c,", "name: other,", 1)
	if err := os.WriteFile(filepath.Join(dir, "other.yaml"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	r := zdt(t, dir, "bundle", "create", "-f", "other.yaml", "-o", "other.zdt").must(t, "create other")
	if !strings.Contains(r.stdout, "1 item,") || strings.Contains(r.stdout, "1 items") {
		t.Errorf("summary of a one-item bundle:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "lock    other.lock.yaml") {
		t.Errorf("summary does not name other.lock.yaml:\n%s", r.stdout)
	}
	otherLock, err := os.ReadFile(filepath.Join(dir, "other.lock.yaml"))
	if err != nil {
		t.Fatalf("no other.lock.yaml: %v", err)
	}
	if !strings.Contains(string(otherLock), "name: other") {
		t.Errorf("other.lock.yaml:\n%s", otherLock)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "zdt.lock.yaml")); string(now) != string(zdtLock) {
		t.Fatalf("creating other.yaml rewrote zdt.lock.yaml:\n%s", now)
	}
	zdt(t, dir, "bundle", "create", "--lock", "-f", "other.yaml", "-o", "again.zdt").must(t, "create --lock other")
	zdt(t, dir, "bundle", "create", "--lock", "-o", "c-again.zdt").must(t, "create --lock zdt.yaml")
}

// TestCreateLockVersionMismatch: `create --lock` after the spec moved an
// image to another tag and a chart to another version fails before
// fetching anything, naming each item with the version the spec asks for
// and the one the lock holds (#13).
func TestCreateLockVersionMismatch(t *testing.T) {
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create")
	edit := func(file, old, new string) {
		t.Helper()
		p := filepath.Join(dir, file)
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), old) {
			t.Fatalf("%s: no %q (%v)", file, old, err)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("zdt.yaml", "ref: zdt.example/quickstart/hello:1.0", "ref: zdt.example/quickstart/hello:1.1")
	edit("zdt.yaml", "version: 0.1.0\n        namespace: hello", "version: 0.2.0\n        namespace: hello")
	edit("charts/hello/Chart.yaml", "version: 0.1.0", "version: 0.2.0")
	r := zdt(t, dir, "bundle", "create", "--lock", "-o", "v2.zdt")
	for _, want := range []string{
		"image zdt.example/quickstart/hello: the spec asks for zdt.example/quickstart/hello:1.1, the lock has zdt.example/quickstart/hello:1.0",
		"chart hello: the spec asks for version 0.2.0, the lock has 0.1.0",
		"run without --lock to update the lock",
	} {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("create --lock: exit %d, want 1 saying %q:\n%s", r.code, want, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "v2.zdt")); !os.IsNotExist(err) {
		t.Errorf("create --lock wrote v2.zdt")
	}
}

// TestCreateSinglePlatformMismatch: a single-platform image (linux/amd64)
// in a bundle for linux/arm64 is no longer included silently: create
// warns naming the image, its platform and the wanted ones, and with
// --strict-platforms fails (exit 1) and writes no archive (#13).
func TestCreateSinglePlatformMismatch(t *testing.T) {
	dir := t.TempDir()
	img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, testregistry.RandomLayers(t, 1, 4<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.WriteLayoutImage(filepath.Join(dir, "images", "tool"), "1.0", img); err != nil {
		t.Fatal(err)
	}
	arm, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "arm64"}, nil, testregistry.RandomLayers(t, 1, 4<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.WriteLayoutImage(filepath.Join(dir, "images", "armtool"), "1.0", arm); err != nil {
		t.Fatal(err)
	}
	spec := "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: plat, version: \"1\"}\nplatforms: [linux/arm64, linux/arm/v7]\ncomponents:\n" +
		"  - name: c\n    images:\n" +
		"      - {ref: 'zdt.example/tool:1.0', source: 'oci:images/tool'}\n" +
		"      - {ref: 'zdt.example/armtool:1.0', source: 'oci:images/armtool'}\n"
	testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte(spec))

	r := zdt(t, dir, "bundle", "create", "--no-cache", "-o", "warn.zdt").must(t, "create")
	for _, want := range []string{"zdt.example/tool:1.0", "linux/amd64", "linux/arm64,linux/arm/v7", "--strict-platforms"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("create's warning does not say %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "armtool") {
		t.Errorf("create warns about the arm64 image:\n%s", r.stderr)
	}

	r = zdt(t, dir, "bundle", "create", "--no-cache", "--strict-platforms", "-o", "strict.zdt")
	want := "image zdt.example/tool:1.0 is for linux/amd64 only, the bundle is for linux/arm64, linux/arm/v7"
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("create --strict-platforms: exit %d, want 1 saying %q:\n%s", r.code, want, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "strict.zdt")); !os.IsNotExist(err) {
		t.Fatal("create --strict-platforms wrote the archive")
	}
	// --platform overrides the spec: amd64 is wanted, nothing to say.
	r = zdt(t, dir, "bundle", "create", "--no-cache", "--strict-platforms", "--platform", "linux/amd64,linux/arm64", "-o", "both.zdt").must(t, "create --platform")
	if strings.Contains(r.stderr, "platform") {
		t.Errorf("create --platform linux/amd64,linux/arm64 warns:\n%s", r.stderr)
	}
}
