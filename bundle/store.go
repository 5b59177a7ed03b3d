package bundle

import (
	"strings"
	"sync"
	"time"

	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"zdt.dev/zdt/internal/fsutil"
)

// blobStore is a directory of blobs/sha256/<hex> used to stage a bundle's
// content before the archive is written. It implements oras-go's
// content.Storage, so oras.CopyGraph can fill it from any source. A blob
// appears under its digest only after its bytes were checked (temp file →
// digest and size check → rename), so an existing blob is a valid one.
// Safe for concurrent use.
//
// A persistent store (the cache) is made durable once per create rather
// than per blob: the first write creates a journal, finish syncs the
// filesystem and removes it. If a create dies before that (power loss), a
// blob may exist with torn bytes; the journal left behind makes the next
// create hash every cached blob once and drop the torn ones.
type blobStore struct {
	root       string
	persistent bool
	begun      sync.Once
	beginErr   error
}

const cacheJournal = "journal"

func newBlobStore(root string, persistent bool) (*blobStore, error) {
	if err := os.MkdirAll(filepath.Join(root, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("creating blob store: %w", err)
	}
	s := &blobStore{root: root, persistent: persistent}
	if persistent {
		if err := s.settle(); err != nil {
			return nil, fmt.Errorf("checking the cache after an earlier create: %w", err)
		}
	}
	return s, nil
}

// The cache is not synced by the create that writes it (that would double
// the durable writes of a create: the cache, then the archive). Instead
// the journal, written before the first blob, names the boot it was
// written in. A blob is renamed under its digest only once complete, so a
// killed process never leaves a torn one; only a crash of the machine can
// (unsynced bytes lost), and that is a new boot. So a later create finds:
//
//   - no journal: every blob was synced;
//   - a journal of this boot: blobs are intact; once it is older than
//     settleAfter the kernel has written them back, so one syncfs (cheap
//     by then) makes them durable and the journal goes;
//   - a journal of another boot (or unreadable): blobs written since it
//     may be torn: each is hashed, and those that do not match are
//     removed.
const settleAfter = 2 * time.Minute

// settle applies the rules above to the journal an earlier create left.
func (s *blobStore) settle() error {
	j := filepath.Join(s.root, cacheJournal)
	fi, err := os.Stat(j)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	b, _ := os.ReadFile(j)
	if boot := bootID(); boot != "" && strings.TrimSpace(string(b)) == boot {
		if time.Since(fi.ModTime()) < settleAfter {
			s.begun.Do(func() {}) // the journal stands for this create's blobs too
			return nil
		}
		return s.finish()
	}
	return s.recover(fi.ModTime())
}

// bootID identifies this boot of the machine ("" when unknown, which makes
// every journal look like another boot's).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// recover hashes every blob written since the journal was (since: its
// modification time, less a margin for clock granularity), removes those
// that do not match their name, and clears the journal. Blobs older than
// that were synced by the create that finished the previous journal.
func (s *blobStore) recover(since time.Time) error {
	dir := filepath.Join(s.root, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, e := range ents {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() != nil || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(since.Add(-2*time.Second)) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		hw := newHashingWriter()
		_, err = io.CopyBuffer(hw, f, buf)
		f.Close()
		if err != nil || hw.digest() != d {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return s.finish()
}

// begin writes the journal (this boot's id) before the first blob is.
func (s *blobStore) begin() error {
	if !s.persistent {
		return nil
	}
	s.begun.Do(func() {
		s.beginErr = fsutil.WritePath(filepath.Join(s.root, cacheJournal), []byte(bootID()+"\n"), 0o644)
	})
	return s.beginErr
}

// finish makes every blob durable (one syncfs) and removes the journal.
// Create does not call it (see settle); a later create does.
func (s *blobStore) finish() error {
	j := filepath.Join(s.root, cacheJournal)
	if _, err := os.Stat(j); !s.persistent || err != nil {
		return nil // nothing was written
	}
	if err := syncFS(s.root); err != nil {
		return fmt.Errorf("syncing the cache: %w", err)
	}
	if err := os.Remove(j); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(s.root)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

func (s *blobStore) path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("%s: %w", d, ErrUnsupportedDigest)
	}
	return filepath.Join(s.root, "blobs", "sha256", d.Encoded()), nil
}

// Exists reports whether the blob is staged.
func (s *blobStore) Exists(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	p, err := s.path(desc.Digest)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fi.Size() == desc.Size, nil
}

// Fetch opens a staged blob; the caller closes it.
func (s *blobStore) Fetch(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	p, err := s.path(desc.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", desc.Digest, errdef.ErrNotFound)
	}
	return f, err
}

// Push stores r's bytes, which must match desc's digest and size.
func (s *blobStore) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	got, err := s.ingest(ctx, io.LimitReader(r, desc.Size+1), &desc)
	if err != nil {
		return err
	}
	if got.Digest != desc.Digest || got.Size != desc.Size {
		return fmt.Errorf("pushing %s: %w", desc.Digest, content.ErrMismatchedDigest)
	}
	return nil
}

// Ingest stores r's bytes under their digest and returns a descriptor with
// the given media type.
func (s *blobStore) Ingest(ctx context.Context, mediaType string, r io.Reader) (ocispec.Descriptor, error) {
	d, err := s.ingest(ctx, r, nil)
	d.MediaType = mediaType
	return d, err
}

// PutBytes stores a small blob.
func (s *blobStore) PutBytes(ctx context.Context, mediaType string, b []byte) (ocispec.Descriptor, error) {
	desc := content.NewDescriptorFromBytes(mediaType, b)
	if ok, _ := s.Exists(ctx, desc); ok {
		return desc, nil
	}
	return desc, s.Push(ctx, desc, bytes.NewReader(b))
}

// ingest copies r into a temp file while hashing, then renames it to its
// digest. With want set, a mismatch is refused before the rename.
func (s *blobStore) ingest(ctx context.Context, r io.Reader, want *ocispec.Descriptor) (ocispec.Descriptor, error) {
	if err := s.begin(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.root, "blobs"), ".ingest-*")
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := fsutil.CopyCtx(ctx, io.MultiWriter(tmp, h), r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	d := ocispec.Descriptor{Digest: digest.NewDigest(digest.SHA256, h), Size: n}
	if want != nil && (d.Digest != want.Digest || d.Size != want.Size) {
		return d, fmt.Errorf("blob %s: got %s (%d bytes), want %d bytes: %w", want.Digest, d.Digest, d.Size, want.Size, content.ErrMismatchedDigest)
	}
	p, _ := s.path(d.Digest)
	if err := os.Rename(tmp.Name(), p); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	return d, nil
}

// hashingWriter counts and hashes what passes through it.
type hashingWriter struct {
	h hash.Hash
	n int64
}

func newHashingWriter() *hashingWriter { return &hashingWriter{h: sha256.New()} }

func (w *hashingWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}

func (w *hashingWriter) digest() digest.Digest { return digest.NewDigest(digest.SHA256, w.h) }
