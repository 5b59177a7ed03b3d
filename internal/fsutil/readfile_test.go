package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReadFileInIsBounded(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "small"), []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 6), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if b, err := ReadFileIn(root, "small", 5); err != nil || string(b) != "12345" {
		t.Fatalf("a file of exactly the limit: %q, %v", b, err)
	}
	if b, err := ReadFileIn(root, "big", 5); !errors.Is(err, ErrTooLarge) || b != nil {
		t.Fatalf("a file over the limit: %q, %v; want ErrTooLarge", b, err)
	}
	if _, err := ReadFileIn(root, "out", 5); err == nil {
		t.Fatal("a symlink out of the root was read")
	}
}
