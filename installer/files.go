package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/manifests"
)

// ErrContentMismatch is returned when a blob or file does not hash to
// what the bundle says; it matches bundle.ErrVerification.
var ErrContentMismatch = fmt.Errorf("content does not match its digest: %w", bundle.ErrVerification)

func storePath(d string) string {
	return path.Join(StateDir, "files", "sha256", strings.TrimPrefix(d, "sha256:"))
}

func rel(target string) string { return strings.TrimPrefix(path.Clean(target), "/") }

// hashFile hashes a file under root.
func hashFile(root *os.Root, name string) (digest.Digest, error) {
	f, err := root.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, _, err := fsutil.CopyVerified(context.Background(), io.Discard, f, "", -1, nil, nil)
	return d, err
}

// keepVersion makes sure the file version with digest d, currently at
// target, is kept in the file store (for rollback): a hard link when
// possible, else a copy. It does nothing if the store has it or the target
// does not hold that version any more.
func keepVersion(ctx context.Context, root *os.Root, target, d string) error {
	if d == "" {
		return nil
	}
	sp := storePath(d)
	if _, err := root.Lstat(sp); err == nil {
		return nil
	}
	got, err := hashFile(root, rel(target))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("keeping %s: %w", target, err)
	}
	if got.String() != d {
		return nil // changed by hand since zdt placed it: nothing to keep
	}
	tmp := fsutil.TempName(sp)
	if err := root.Link(rel(target), tmp); err == nil {
		if err := root.Rename(tmp, sp); err != nil {
			return err
		}
		return fsutil.SyncDir(root, path.Dir(sp))
	}
	src, err := root.Open(rel(target))
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = fsutil.WriteAtomic(ctx, root, sp, 0o444, func(w io.Writer) error {
		_, err := io.CopyBuffer(w, src, make([]byte, 1<<20))
		return err
	})
	return err
}

// placeFile writes a file item's content to its target atomically: the
// layer is read from the archive, decompressed if zdt compressed it (never
// past the recorded size), and both the layer digest and the content
// digest are checked before the rename. The version being replaced is kept
// in the file store first, and the target's filesystem must have room for
// the content.
func placeFile(ctx context.Context, root *os.Root, a *bundle.Archive, it ItemState, c bundle.Content, oldDigest string) (*Placed, error) {
	if err := keepVersion(ctx, root, it.Target, oldDigest); err != nil {
		return nil, err
	}
	mode, err := manifests.ParseMode(it.Mode)
	if err != nil {
		return nil, err
	}
	if err := checkSpace(root, path.Dir(rel(it.Target)), c.Size); err != nil {
		return nil, fmt.Errorf("placing %s: %w", it.Target, err)
	}
	if err := writeContent(ctx, root, a, c, rel(it.Target), manifests.FileMode(mode)); err != nil {
		return nil, fmt.Errorf("placing %s: %w", it.Target, err)
	}
	fi, err := root.Lstat(rel(it.Target))
	if err != nil {
		return nil, err
	}
	return placedOf(fi), nil
}

// writeContent writes an item's verified content to name under root,
// atomically: the rename happens only once every byte read checked out.
func writeContent(ctx context.Context, root *os.Root, a *bundle.Archive, c bundle.Content, name string, mode os.FileMode) error {
	return writeContentWith(ctx, fsutil.WriteAtomic, root, a, c, name, mode)
}

// writeContentWith is writeContent through write (fsutil.WriteAtomic, or
// fsutil.WriteAtomicSparse for disk images).
func writeContentWith(ctx context.Context, write func(context.Context, *os.Root, string, os.FileMode, func(io.Writer) error) (int64, error),
	root *os.Root, a *bundle.Archive, c bundle.Content, name string, mode os.FileMode) error {
	r, err := a.OpenContent(ctx, c)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = write(ctx, root, name, mode, func(w io.Writer) error {
		_, err := fsutil.CopyCtx(ctx, w, r)
		return err
	})
	return err
}

// restoreFile puts a kept version back at target (rollback).
func restoreFile(ctx context.Context, root *os.Root, it ItemState) (*Placed, error) {
	src, err := root.Open(storePath(it.FileDigest))
	if err != nil {
		return nil, fmt.Errorf("restoring %s: version %s is not in the file store: %w", it.Target, it.FileDigest, err)
	}
	defer src.Close()
	mode, _ := manifests.ParseMode(it.Mode)
	_, err = fsutil.WriteAtomic(ctx, root, rel(it.Target), manifests.FileMode(mode), func(w io.Writer) error {
		got, _, err := fsutil.CopyVerified(ctx, w, src, "", -1, nil, nil)
		if err == nil && got.String() != it.FileDigest {
			return fmt.Errorf("kept version of %s hashes to %s: %w", it.Target, got, ErrContentMismatch)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	fi, err := root.Lstat(rel(it.Target))
	if err != nil {
		return nil, err
	}
	return placedOf(fi), nil
}

// removeFile keeps the installed version, then removes the target.
func removeFile(ctx context.Context, root *os.Root, it ItemState) error {
	if err := keepVersion(ctx, root, it.Target, it.FileDigest); err != nil {
		return err
	}
	if err := root.Remove(rel(it.Target)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", it.Target, err)
	}
	return fsutil.SyncDir(root, path.Dir(rel(it.Target)))
}
