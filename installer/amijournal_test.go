package installer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/internal/layout"
)

// TestAMIJournal: a snapshot record reads back as written; a region or
// digest that would name another file is refused; a record edited to name
// another item, or grown past its bound, is an error, never adopted.
func TestAMIJournal(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	j := amiJournal{root: root}
	d := "sha256:" + strings.Repeat("ab", 32)
	other := "sha256:" + strings.Repeat("cd", 32)
	rec := AMISnapshot{Item: "node", ItemDigest: d, Region: "eu-west-1", Name: "node-abababababab", SnapshotID: "snap-1", Checksum: "c2hh"}
	if err := j.RecordAMISnapshot(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, ok, err := j.AMISnapshot(ctx, "eu-west-1", d)
	if err != nil || !ok || got != rec {
		t.Fatalf("read back %+v %v %v, want %+v", got, ok, err, rec)
	}
	if _, ok, err := j.AMISnapshot(ctx, "eu-west-2", d); ok || err != nil {
		t.Errorf("another region: %v %v, want no record", ok, err)
	}
	if _, ok, err := (amiJournal{}).AMISnapshot(ctx, "eu-west-1", d); ok || err != nil {
		t.Errorf("no root: %v %v, want no record", ok, err)
	}
	for _, bad := range []AMISnapshot{
		{ItemDigest: d, Region: "../../../etc", SnapshotID: "s"},
		{ItemDigest: d, Region: "EU/1", SnapshotID: "s"},
		{ItemDigest: "sha256:../x", Region: "eu-west-1", SnapshotID: "s"},
		{ItemDigest: "sha512:" + strings.Repeat("ab", 64), Region: "eu-west-1", SnapshotID: "s"},
	} {
		if err := j.RecordAMISnapshot(ctx, bad); err == nil {
			t.Errorf("recorded %+v", bad)
		}
		if _, ok, err := j.AMISnapshot(ctx, bad.Region, bad.ItemDigest); err == nil || ok {
			t.Errorf("looked up %+v: %v %v", bad, ok, err)
		}
	}
	// A record copied to another item's name is not that item's.
	p := filepath.Join(dir, filepath.FromSlash(layout.AMIJournalDir))
	b, err := os.ReadFile(filepath.Join(p, "eu-west-1-"+strings.Repeat("ab", 32)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "eu-west-1-"+strings.Repeat("cd", 32)+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := j.AMISnapshot(ctx, "eu-west-1", other); err == nil || ok {
		t.Errorf("a record of another item: %v %v, want an error", ok, err)
	}
	// A record grown past its bound is not read into memory.
	if err := os.WriteFile(filepath.Join(p, "eu-west-1-"+strings.Repeat("ab", 32)+".json"), make([]byte, maxAMIRecord+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := j.AMISnapshot(ctx, "eu-west-1", d); err == nil || ok {
		t.Errorf("an oversized record: %v %v, want an error", ok, err)
	}
}
