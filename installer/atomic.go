package installer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// tempName is a unique temp file name next to name.
func tempName(name string) string {
	var b [6]byte
	rand.Read(b[:])
	return path.Join(path.Dir(name), ".zdt-tmp-"+path.Base(name)+"-"+hex.EncodeToString(b[:]))
}

// writeFileAtomic writes data to name under root: temp file, fsync, rename,
// fsync of the directory. Parents are created.
func writeFileAtomic(root *os.Root, name string, data []byte, mode os.FileMode) error {
	_, err := writeAtomic(context.Background(), root, name, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
	return err
}

// writeAtomic writes name under root through a temp file filled by fill; the
// rename happens only if fill and fsync succeed. It returns the bytes
// written.
func writeAtomic(ctx context.Context, root *os.Root, name string, mode os.FileMode, fill func(io.Writer) error) (int64, error) {
	if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return 0, err
	}
	tmp := tempName(name)
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	cw := &countWriter{w: f}
	err = fill(cw)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		if rerr := root.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return 0, errors.Join(err, rerr)
		}
		return 0, err
	}
	return cw.n, syncDir(root, path.Dir(name))
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// removeStaleTemps deletes temp files an interrupted run left in dirs
// (relative to root; missing dirs are skipped). Only zdt's own temp names
// are touched.
func removeStaleTemps(root *os.Root, dirs []string) error {
	seen := map[string]bool{}
	for _, d := range dirs {
		if seen[d] {
			continue
		}
		seen[d] = true
		f, err := root.Open(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			continue // not a directory
		}
		for _, n := range names {
			if strings.HasPrefix(n, ".zdt-tmp-") {
				if err := root.Remove(path.Join(d, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("removing stale temp file: %w", err)
				}
			}
		}
	}
	return nil
}
