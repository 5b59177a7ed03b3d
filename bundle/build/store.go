package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"zdt.dev/zdt/bundle"
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
//
// Every access goes through an os.Root opened on the store's directory: a
// symlink planted in the cache (blobs/sha256 pointing elsewhere) cannot
// make the store read or write outside it.
type blobStore struct {
	dir        string
	root       *os.Root
	persistent bool
	begun      sync.Once
	beginErr   error
	// lock is the cache's lock file, held shared (persistent stores).
	lock *os.File
	// fresh holds the digests this store instance wrote (hashed on the way
	// in); every other blob came from an earlier create and is checked
	// again when the archive is written.
	fresh sync.Map
}

const cacheJournal = "journal"

const dirBlobsSHA = "blobs/sha256"

func newBlobStore(dir string, persistent bool) (*blobStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating blob store: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening blob store: %w", err)
	}
	if err := root.MkdirAll(dirBlobsSHA, 0o755); err != nil {
		root.Close()
		return nil, fmt.Errorf("creating blob store: %w", err)
	}
	s := &blobStore{dir: dir, root: root, persistent: persistent}
	if persistent {
		// Shared by creates; `zdt cache prune` takes it exclusively, so
		// nothing is evicted while a create relies on it (a prune is short:
		// this waits).
		if s.lock, err = lockCacheFile(root, syscall.LOCK_SH, true); err != nil {
			root.Close()
			return nil, err
		}
		if err := s.settle(); err != nil {
			s.close()
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
	fi, err := s.root.Stat(cacheJournal)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	b, _ := s.root.ReadFile(cacheJournal)
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
	ents, err := s.readDir(dirBlobsSHA)
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
		p := path.Join(dirBlobsSHA, e.Name())
		f, err := s.root.Open(p)
		if err != nil {
			return err
		}
		_, _, err = fsutil.CopyVerified(context.Background(), io.Discard, f, d, -1, buf, nil)
		f.Close()
		if err != nil {
			if err := s.root.Remove(p); err != nil {
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
		s.beginErr = fsutil.WriteFileAtomic(s.root, cacheJournal, []byte(bootID()+"\n"), 0o644)
	})
	return s.beginErr
}

// finish makes every blob durable (one syncfs) and removes the journal.
// Create does not call it (see settle); a later create does.
func (s *blobStore) finish() error {
	if _, err := s.root.Stat(cacheJournal); !s.persistent || err != nil {
		return nil // nothing was written
	}
	if err := fsutil.SyncFS(s.root); err != nil {
		return fmt.Errorf("syncing the cache: %w", err)
	}
	if err := s.root.Remove(cacheJournal); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fsutil.SyncDir(s.root, ".")
}

// readDir lists a directory under the store's root.
func (s *blobStore) readDir(dir string) ([]fs.DirEntry, error) {
	f, err := s.root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// close releases the store's root and lock.
func (s *blobStore) close() error {
	if s.lock != nil {
		s.lock.Close()
	}
	return s.root.Close()
}

// path is a blob's name under the store's root.
func (s *blobStore) path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("%s: %w", d, bundle.ErrUnsupportedDigest)
	}
	return path.Join(dirBlobsSHA, d.Encoded()), nil
}

// remove drops a blob (a cache entry whose bytes do not match its name).
func (s *blobStore) remove(d digest.Digest) error {
	p, err := s.path(d)
	if err != nil {
		return err
	}
	s.fresh.Delete(d)
	if err := s.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// isFresh reports whether this store instance wrote the blob.
func (s *blobStore) isFresh(d digest.Digest) bool {
	_, ok := s.fresh.Load(d)
	return ok
}

// verify hashes a stored blob; one that matches counts as fresh (it is not
// checked again when the archive is written), one that does not is
// removed. It reports whether the blob is there and good.
func (s *blobStore) verify(ctx context.Context, desc ocispec.Descriptor) bool {
	if s.isFresh(desc.Digest) {
		return true
	}
	rc, err := s.Fetch(ctx, desc)
	if err != nil {
		return false
	}
	_, _, err = fsutil.CopyVerified(ctx, io.Discard, rc, desc.Digest, desc.Size, nil, nil)
	rc.Close()
	var mm *fsutil.MismatchError
	if errors.As(err, &mm) {
		_ = s.remove(desc.Digest)
		return false
	}
	if err != nil {
		return false
	}
	s.fresh.Store(desc.Digest, true)
	return true
}

// readVerified reads a stored blob of at most limit bytes and checks that
// its bytes hash to d; a blob that does not is removed (a poisoned or torn
// cache entry) and reported missing.
func (s *blobStore) readVerified(ctx context.Context, d digest.Digest, limit int64) ([]byte, bool) {
	desc, ok := s.stat(d)
	if !ok || desc.Size > limit {
		return nil, false
	}
	rc, err := s.Fetch(ctx, desc)
	if err != nil {
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	rc.Close()
	if err != nil {
		return nil, false
	}
	if digest.FromBytes(b) != d {
		_ = s.remove(d) // refetched; a failure to remove costs the next create the same check
		return nil, false
	}
	return b, true
}

// Exists reports whether the blob is staged.
func (s *blobStore) Exists(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	p, err := s.path(desc.Digest)
	if err != nil {
		return false, err
	}
	fi, err := s.root.Stat(p)
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
	f, err := s.root.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", desc.Digest, errdef.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
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

// PutBytes stores a small blob. It is written even when the store has the
// digest already: what an earlier create left is not trusted to hold these
// bytes, and rewriting a small blob costs less than hashing it again.
func (s *blobStore) PutBytes(ctx context.Context, mediaType string, b []byte) (ocispec.Descriptor, error) {
	desc := content.NewDescriptorFromBytes(mediaType, b)
	if s.isFresh(desc.Digest) {
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
	tmpName := fsutil.TempName(path.Join("blobs", ingestName))
	tmp, err := s.root.OpenFile(tmpName, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	defer s.root.Remove(tmpName)
	// Held until the temp file is renamed or removed: cleanStale leaves
	// temp files a running create holds.
	if _, err := tryLock(tmp, syscall.LOCK_EX); err != nil {
		tmp.Close()
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	if want != nil {
		if want.Size < 0 {
			tmp.Close()
			return ocispec.Descriptor{}, fmt.Errorf("blob %s: negative size %d", want.Digest, want.Size)
		}
		if err := checkFreeSpace(s.dir, want.Size, "blob "+want.Digest.String()); err != nil {
			tmp.Close()
			return ocispec.Descriptor{}, err
		}
	}
	var dst io.Writer = tmp
	var wantDigest digest.Digest
	wantSize := int64(-1)
	if want == nil {
		dst = &spaceGuard{w: tmp, dir: s.dir}
	} else {
		wantDigest, wantSize = want.Digest, want.Size
	}
	got, n, err := fsutil.CopyVerified(ctx, dst, r, wantDigest, wantSize, nil, nil)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	var mm *fsutil.MismatchError
	if errors.As(err, &mm) {
		return ocispec.Descriptor{Digest: got, Size: n}, fmt.Errorf("blob %s: got %s (%d bytes), want %d bytes: %w", want.Digest, got, n, want.Size, content.ErrMismatchedDigest)
	}
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	d := ocispec.Descriptor{Digest: got, Size: n}
	p, _ := s.path(d.Digest)
	if err := s.root.Rename(tmpName, p); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("staging blob: %w", err)
	}
	s.fresh.Store(d.Digest, true)
	return d, nil
}

// checkFreeSpace fails with ErrNoSpace when the filesystem of dir has
// fewer than need bytes free for what (a blob, the archive). When the free
// space cannot be read, the write itself will tell.
func checkFreeSpace(dir string, need int64, what string) error {
	free, ok := freeSpace(dir)
	if ok && need > free {
		return fmt.Errorf("%s needs %d bytes, %s has %d free: %w", what, need, dir, free, bundle.ErrNoSpace)
	}
	return nil
}

func freeSpace(dir string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Bsize <= 0 {
		return 0, false
	}
	if st.Bavail > uint64(math.MaxInt64)/uint64(st.Bsize) {
		return math.MaxInt64, true
	}
	return int64(st.Bavail) * st.Bsize, true
}

// spaceGuard fails a write of unknown length (a source without a size)
// once the disk has less than freeReserve left, checking every
// guardInterval bytes, rather than filling it.
type spaceGuard struct {
	w     io.Writer
	dir   string
	since int64
}

const (
	freeReserve   = 256 << 20
	guardInterval = 64 << 20
)

func (g *spaceGuard) Write(p []byte) (int, error) {
	g.since += int64(len(p))
	if g.since >= guardInterval {
		g.since = 0
		if free, ok := freeSpace(g.dir); ok && free < freeReserve {
			return 0, fmt.Errorf("stopped with %d bytes free in %s: %w", free, g.dir, bundle.ErrNoSpace)
		}
	}
	return g.w.Write(p)
}
