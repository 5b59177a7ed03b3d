package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
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
