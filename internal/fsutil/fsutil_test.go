package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWritePathReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "file")
	for _, data := range []string{"first", "second"} { // the second write replaces the first
		if err := WritePath(p, []byte(data), 0o600); err != nil {
			t.Fatalf("WritePath: %v", err)
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(p); string(b) != "second" {
		t.Errorf("content = %q", b)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestRemoveTempsOnlyRemovesTemps(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{TempPrefix + "x-1", "keep", ".other"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := RemoveTemps(root, []string{".", "missing"}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 || entries[0].Name() != ".other" || entries[1].Name() != "keep" {
		t.Errorf("left %v, want .other and keep", entries)
	}
}
