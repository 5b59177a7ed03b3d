// Package fsutil holds the file-writing discipline every zdt package shares:
// nothing is written in place (temp file, fsync, rename, directory fsync),
// every write under a root goes through os.Root, and long copies stop when
// their context is cancelled.
package fsutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// TempPrefix starts the name of every temp file zdt writes, so stale ones
// left by a killed process can be recognised and removed.
const TempPrefix = ".zdt-tmp-"

// TempName is a unique temp file name in the directory of name.
func TempName(name string) string {
	var b [6]byte
	rand.Read(b[:])
	return path.Join(path.Dir(name), TempPrefix+path.Base(name)+"-"+hex.EncodeToString(b[:]))
}

// WriteFileAtomic writes data to name under root (see WriteAtomic).
func WriteFileAtomic(root *os.Root, name string, data []byte, mode os.FileMode) error {
	_, err := WriteAtomic(context.Background(), root, name, mode, writeData(data))
	return err
}

// WritePath is WriteFileAtomic for a path outside any root (caches, tools).
func WritePath(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer root.Close()
	return WriteFileAtomic(root, filepath.Base(p), data, mode)
}

func writeData(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
}

// WriteAtomic writes name under root through a temp file filled by fill:
// the rename happens only if fill, the mode change and the fsync succeed,
// and the directory is fsynced after it. Parents are created. On failure
// the temp file is removed and name is untouched. It returns the bytes
// written.
func WriteAtomic(ctx context.Context, root *os.Root, name string, mode os.FileMode, fill func(io.Writer) error) (int64, error) {
	return writeAtomic(ctx, root, name, mode, fill, false)
}

// WriteAtomicSparse is WriteAtomic for content with long runs of zero
// bytes (disk images): zero blocks are not written but left as holes, so
// the file takes only the disk space of its data. It reads back the same.
func WriteAtomicSparse(ctx context.Context, root *os.Root, name string, mode os.FileMode, fill func(io.Writer) error) (int64, error) {
	return writeAtomic(ctx, root, name, mode, fill, true)
}

func writeAtomic(ctx context.Context, root *os.Root, name string, mode os.FileMode, fill func(io.Writer) error, sparse bool) (int64, error) {
	if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return 0, err
	}
	tmp := TempName(name)
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	var cw *countWriter
	if sparse {
		sw := &SparseWriter{f: f}
		cw = &countWriter{w: sw}
		err = fill(cw)
		if err == nil {
			err = sw.Finish()
		}
	} else {
		cw = &countWriter{w: f}
		err = fill(cw)
	}
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
	return cw.n, SyncDir(root, path.Dir(name))
}

// SyncDir fsyncs a directory under root (making renames in it durable).
func SyncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SparseBlock is the granularity SparseWriter finds zero blocks at: a
// filesystem block.
const SparseBlock = 4096

var zeroBlock [SparseBlock]byte

// SparseWriter writes to a new (empty) file at increasing offsets, leaving
// every block-aligned run of zero bytes as a hole instead of writing it;
// Finish sets the file's size, so trailing zeros are a hole too. The file
// reads back exactly what was written. Not safe for concurrent use.
type SparseWriter struct {
	f   *os.File
	off int64
}

// NewSparseWriter writes f, which must be empty, from offset 0.
func NewSparseWriter(f *os.File) *SparseWriter { return &SparseWriter{f: f} }

// Write writes p's non-zero blocks at the current offset and skips its
// zero blocks.
func (s *SparseWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		// One run of blocks that are all zero or all not, cut at block
		// boundaries of the file.
		seg := min(len(p)-n, SparseBlock-int(s.off%SparseBlock))
		zero := bytes.Equal(p[n:n+seg], zeroBlock[:seg])
		run := seg
		for n+run < len(p) {
			next := min(len(p)-n-run, SparseBlock)
			if bytes.Equal(p[n+run:n+run+next], zeroBlock[:next]) != zero {
				break
			}
			run += next
		}
		if !zero {
			if _, err := s.f.WriteAt(p[n:n+run], s.off); err != nil {
				return n, err
			}
		}
		s.off += int64(run)
		n += run
	}
	return n, nil
}

// Finish sets the file's size to what was written (a trailing hole).
func (s *SparseWriter) Finish() error { return s.f.Truncate(s.off) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// CopyCtx copies src to dst with a 1 MiB buffer, stopping when ctx is
// cancelled. It returns the bytes copied.
func CopyCtx(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := src.Read(buf)
		if m > 0 {
			w, werr := dst.Write(buf[:m])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// RemoveTemps deletes the temp files (TempPrefix) an interrupted run left in dirs
// (relative to root; missing dirs are skipped). Only zdt's own temp names
// are touched.
func RemoveTemps(root *os.Root, dirs []string) error {
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
			if strings.HasPrefix(n, TempPrefix) {
				if err := root.Remove(path.Join(d, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("removing stale temp file: %w", err)
				}
			}
		}
	}
	return nil
}

// ErrTooLarge marks a file ReadFileIn refused for its size.
var ErrTooLarge = errors.New("file too large")

// ReadFileIn reads rel under root, at most limit bytes: a larger file is
// an error matching ErrTooLarge, never read into memory. It is how a
// record written by zdt (a cache record, a store's state file) is read
// back, since anyone who can write there can make it any size.
func ReadFileIn(root *os.Root, rel string, limit int64) ([]byte, error) {
	f, err := root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", rel, limit, ErrTooLarge)
	}
	return b, nil
}
