package fsutil

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
)

// endless is a hostile source that never ends.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.n += int64(len(p))
	return len(p), nil
}

func TestCopyVerified(t *testing.T) {
	data := []byte(strings.Repeat("zdt", 1<<19)) // 1.5 MiB: more than one chunk
	want := digest.FromBytes(data)
	other := digest.FromString("other")
	readFail := errors.New("disk on fire")
	tests := []struct {
		name     string
		src      io.Reader
		want     digest.Digest
		size     int64
		mismatch bool
		err      error // errors.Is target; nil: success unless mismatch
		copied   int64 // bytes that must reach dst (-1: don't check)
	}{
		{name: "match", src: bytes.NewReader(data), want: want, size: int64(len(data)), copied: int64(len(data))},
		{name: "match, size unchecked", src: bytes.NewReader(data), want: want, size: -1, copied: int64(len(data))},
		{name: "no digest wanted", src: bytes.NewReader(data), size: -1, copied: int64(len(data))},
		{name: "wrong digest", src: bytes.NewReader(data), want: other, size: int64(len(data)), mismatch: true, copied: -1},
		{name: "short", src: bytes.NewReader(data[:100]), want: want, size: int64(len(data)), mismatch: true, copied: 100},
		{name: "right digest, wrong size claimed", src: bytes.NewReader(data), want: want, size: int64(len(data)) - 1, mismatch: true, copied: int64(len(data))},
		{name: "endless source stops at size+1", src: &endless{}, want: want, size: 10, mismatch: true, copied: 11},
		{name: "read error", src: io.MultiReader(bytes.NewReader(data[:10]), iotest.ErrReader(readFail)), want: want, size: -1, err: readFail, copied: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var dst bytes.Buffer
			var progressed int64
			got, n, err := CopyVerified(context.Background(), &dst, tc.src, tc.want, tc.size, make([]byte, 64<<10), func(m int64) { progressed += m })
			var mm *MismatchError
			switch {
			case tc.mismatch:
				if !errors.As(err, &mm) {
					t.Fatalf("err = %v, want a *MismatchError", err)
				}
				if mm.Got != got || mm.Size != n || mm.Want != tc.want || mm.WantSize != tc.size {
					t.Errorf("mismatch = %+v, returned %s %d", mm, got, n)
				}
			case tc.err != nil:
				var re *ReadError
				if !errors.Is(err, tc.err) || !errors.As(err, &re) {
					t.Fatalf("err = %v, want a *ReadError of %v", err, tc.err)
				}
			default:
				if err != nil {
					t.Fatalf("CopyVerified: %v", err)
				}
				if got != want {
					t.Errorf("digest = %s, want %s", got, want)
				}
				if !bytes.Equal(dst.Bytes(), data) {
					t.Errorf("dst holds %d bytes, not the source's", dst.Len())
				}
			}
			if tc.copied >= 0 && (n != tc.copied || int64(dst.Len()) != tc.copied) {
				t.Errorf("copied n=%d dst=%d, want %d", n, dst.Len(), tc.copied)
			}
			if progressed != n {
				t.Errorf("progress saw %d bytes, copied %d", progressed, n)
			}
		})
	}
}

func TestCopyVerifiedStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	src := &endless{}
	var seen int64
	_, _, err := CopyVerified(ctx, io.Discard, src, "", -1, nil, func(n int64) {
		if seen += n; seen > 8<<20 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if src.n > 16<<20 {
		t.Errorf("read %d bytes after cancel", src.n)
	}
}

func TestCopyVerifiedWriteError(t *testing.T) {
	werr := errors.New("disk full")
	_, _, err := CopyVerified(context.Background(), errWriter{werr}, strings.NewReader("abc"), "", -1, nil, nil)
	var re *ReadError
	if !errors.Is(err, werr) || errors.As(err, &re) {
		t.Fatalf("err = %v, want the write error, not a *ReadError", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestSyncFS(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := SyncFS(root); err != nil {
		t.Fatalf("SyncFS: %v", err)
	}
}
