package fsutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"zdt.dev/zdt/internal/hashcount"
)

// MismatchError: the bytes CopyVerified copied do not hash to the digest
// wanted, or are not as many as wanted. Callers wrap it in their own typed
// error naming the item.
type MismatchError struct {
	Want     digest.Digest
	WantSize int64 // -1: not checked
	Got      digest.Digest
	Size     int64
}

func (e *MismatchError) Error() string {
	if e.WantSize >= 0 {
		return fmt.Sprintf("bytes hash to %s (%d bytes), want %s (%d bytes)", e.Got, e.Size, e.Want, e.WantSize)
	}
	return fmt.Sprintf("bytes hash to %s, want %s", e.Got, e.Want)
}

// ReadError marks an error of CopyVerified's source (not its destination),
// so a caller can say which side failed. Its text is the source's error.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// CopyVerified is zdt's one hash-while-copy loop: it copies src to dst
// through buf (1 MiB when nil), hashing (sha256) what passes in the same
// pass, and stops when ctx is cancelled (returning ctx's error as is).
// With size >= 0 it reads at most size+1 bytes (so an oversized source is
// caught without reading it all). With want set, bytes that do not hash to
// want, or (size >= 0) are not size bytes, fail with a *MismatchError;
// with want empty nothing is checked and the digest is just returned.
// progress, if set, sees the length of each chunk copied. dst io.Discard
// hashes only. Errors reading src are *ReadError.
func CopyVerified(ctx context.Context, dst io.Writer, src io.Reader, want digest.Digest, size int64, buf []byte, progress func(int64)) (digest.Digest, int64, error) {
	if buf == nil {
		buf = make([]byte, 1<<20)
	}
	if size >= 0 {
		src = io.LimitReader(src, size+1)
	}
	h := hashcount.SHA256()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return "", n, err
		}
		m, rerr := src.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			if dst != io.Discard {
				if _, err := dst.Write(buf[:m]); err != nil {
					return "", n, err
				}
			}
			n += int64(m)
			if progress != nil {
				progress(int64(m))
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", n, &ReadError{rerr}
		}
	}
	got := digest.NewDigest(digest.SHA256, h)
	if want != "" && (got != want || (size >= 0 && n != size)) {
		return got, n, &MismatchError{Want: want, WantSize: size, Got: got, Size: n}
	}
	return got, n, nil
}

// SyncFS flushes the whole filesystem holding root (one syncfs for many
// files written without a per-file fsync). A kernel without syncfs
// (ENOSYS) is not an error.
func SyncFS(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	return nil
}
