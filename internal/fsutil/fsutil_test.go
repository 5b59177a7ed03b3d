package fsutil

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
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

// TestSparseWriter: zero blocks become holes (the file takes fewer blocks
// than its size) and the file reads back byte for byte, however the
// writes are cut, trailing zeros included.
func TestSparseWriter(t *testing.T) {
	const size = 8 << 20
	data := make([]byte, size)
	copy(data[100:], "not zero at the start")
	copy(data[3<<20+4090:], "across a block boundary")
	data[size/2] = 1
	for _, chunk := range []int{1, 1000, SparseBlock, 1 << 20, size} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			dir := t.TempDir()
			root, err := os.OpenRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			n, err := WriteAtomicSparse(context.Background(), root, "disk.img", 0o644, func(w io.Writer) error {
				for off := 0; off < len(data); off += chunk {
					if _, err := w.Write(data[off:min(off+chunk, len(data))]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil || n != size {
				t.Fatalf("wrote %d, %v", n, err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "disk.img"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differs: %v", len(got), err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(dir, "disk.img"), &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks*512 >= size/4 {
				t.Fatalf("%d bytes allocated for %d bytes with 4 non-zero blocks: not sparse", st.Blocks*512, size)
			}
		})
	}
}
