package build

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/remote"
)

// Resumable fetches. A blob fetched from a registry is written to a
// partial file named after its digest, DIR/partial/sha256/<hex>, next to
// an identity record <hex>.json (digest, size, source). A create that is
// killed (or loses its connection) leaves the partial behind; the next
// attempt (a retry, or the next create) hashes the bytes already there and
// asks the registry for the rest with an HTTP Range request. The partial's
// bytes are as untrusted as any cache file: the final digest check covers
// every byte, old and new. A mismatch, or a registry that ignores Range
// (200 instead of 206), restarts the blob from zero once; a blob that still
// does not match is removed, partial and all.
//
// While a create writes a partial it holds an exclusive flock on it: a
// second create that wants the same blob at the same time fetches it
// without a partial, and cleanStale never removes a partial (or temp file)
// a running create holds. A partial no create holds is kept for
// stalePartial after its last write, for a create to resume.

// dirPartial holds the partials, beside blobs/sha256.
const dirPartial = "partial/sha256"

// minResumable is the smallest blob fetched through a partial: a smaller
// one costs less to fetch again than to keep track of.
const minResumable = 1 << 20

// stalePartial is how long a partial no running create holds is kept
// after its last write.
const stalePartial = 24 * time.Hour

// partialMeta is the identity of a partial: which blob it is the start of,
// and where its bytes came from. A partial whose record differs from what
// a create wants is started again from zero, never appended to.
type partialMeta struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	Source string        `json:"source"`
}

// rangeSource is a source that can send a blob from an offset.
type rangeSource interface {
	// fetchFrom returns the blob's bytes from offset on, and the offset
	// the answer starts at: offset (a 206 that matches the request) or 0
	// (the source sent the whole blob). The caller closes the reader.
	fetchFrom(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, int64, error)
	// sourceID names the source in the partial's identity record.
	sourceID() string
}

// asRangeSource gives the resumable view of a fetch source, if it has one
// (registries; local layouts and archives are read, not downloaded).
func asRangeSource(src content.Fetcher) (rangeSource, bool) {
	if repo, ok := src.(*orasremote.Repository); ok && repo.Client != nil {
		return registrySource{repo}, true
	}
	return nil, false
}

// registrySource fetches blob ranges from a registry through the
// repository's client (its TLS settings, credentials, token cache,
// retries and stall timeouts); oras-go's own Fetch sends no Range.
type registrySource struct{ repo *orasremote.Repository }

func (r registrySource) sourceID() string {
	return r.repo.Reference.Registry + "/" + r.repo.Reference.Repository
}

func (r registrySource) fetchFrom(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, int64, error) {
	rc, from, err := r.get(ctx, desc, offset)
	if errors.Is(err, errRangeRefused) {
		return r.get(ctx, desc, 0)
	}
	return rc, from, err
}

// errRangeRefused: a Range answer that is not the range asked for.
var errRangeRefused = errors.New("range refused")

func (r registrySource) get(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, int64, error) {
	ref := r.repo.Reference
	ref.Reference = desc.Digest.String()
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)
	scheme := "https"
	if r.repo.PlainHTTP {
		scheme = "http"
	}
	url := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Host(), ref.Repository, ref.Reference)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, desc.Size-1))
	}
	resp, err := r.repo.Client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, 0, nil
	case http.StatusPartialContent:
		if offset > 0 && contentRangeIs(resp.Header.Get("Content-Range"), offset, desc.Size) {
			return resp.Body, offset, nil
		}
		resp.Body.Close()
		return nil, 0, fmt.Errorf("GET %s: asked for bytes %d-, got %q: %w", url, offset, resp.Header.Get("Content-Range"), errRangeRefused)
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		return nil, 0, fmt.Errorf("GET %s: %s: %w", url, resp.Status, errRangeRefused)
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, 0, fmt.Errorf("%s: %w", desc.Digest, errdef.ErrNotFound)
	}
	resp.Body.Close()
	return nil, 0, &remote.StatusError{URL: url, StatusCode: resp.StatusCode, Status: resp.Status} // remote.Explain hints at 401/403
}

// contentRangeIs reports whether a Content-Range header says "bytes
// offset-(size-1)/size" (or an unknown total).
func contentRangeIs(h string, offset, size int64) bool {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return false
	}
	span, total, ok := strings.Cut(rest, "/")
	if !ok || (total != "*" && total != strconv.FormatInt(size, 10)) {
		return false
	}
	first, last, ok := strings.Cut(span, "-")
	return ok && first == strconv.FormatInt(offset, 10) && last == strconv.FormatInt(size-1, 10)
}

// errPartialBusy: the blob's partial cannot be used (another create holds
// it, or the partial dir is not a plain directory); the blob is fetched
// without one.
var errPartialBusy = errors.New("partial held by another create")

// resumeResult says what one resumable fetch did.
type resumeResult struct {
	// Resumed is the number of bytes taken from a partial (0 when the
	// blob was fetched from zero, or restarted).
	Resumed int64
	// Restarted is set when the partial's bytes were dropped (a mismatch,
	// or a source that ignored the Range request).
	Restarted bool
}

// partialPaths are the names of a blob's partial and its identity record.
func (s *blobStore) partialPaths(d digest.Digest) (data, meta string, err error) {
	if _, err := s.path(d); err != nil {
		return "", "", err
	}
	data = path.Join(dirPartial, d.Encoded())
	return data, data + ".json", nil
}

// fetchResumable fetches desc from src into the store through its partial
// (see above). report gets the bytes added to (or, negative, dropped from)
// the partial, those found there included; on an error it has been given
// back everything it was told, since the next attempt reports the
// partial's size again.
func (s *blobStore) fetchResumable(ctx context.Context, desc ocispec.Descriptor, src rangeSource, report func(int64)) (res resumeResult, err error) {
	if desc.Size < 0 {
		return res, fmt.Errorf("blob %s: negative size %d", desc.Digest, desc.Size)
	}
	dataPath, metaPath, err := s.partialPaths(desc.Digest)
	if err != nil {
		return res, err
	}
	if err := s.begin(); err != nil {
		return res, fmt.Errorf("staging blob: %w", err)
	}
	// The partial is an optimisation: where it cannot be used, the blob
	// is fetched without one. A symlinked partial dir (onto blobs/sha256,
	// say) would put partial bytes under a blob's name, and a symlink in
	// place of a partial would make the append land in another blob
	// (O_NOFOLLOW); os.Root keeps everything in the cache.
	if err := s.root.MkdirAll(dirPartial, 0o755); err != nil {
		return res, errPartialBusy
	}
	for _, d := range []string{path.Dir(dirPartial), dirPartial} {
		if fi, err := s.root.Lstat(d); err != nil || !fi.IsDir() {
			return res, errPartialBusy
		}
	}
	f, err := openPlain(s.root, dataPath)
	if err != nil {
		return res, errPartialBusy
	}
	defer f.Close()
	if ok, err := tryLock(f, syscall.LOCK_EX); err != nil {
		return res, fmt.Errorf("staging blob: %w", err)
	} else if !ok {
		return res, errPartialBusy
	}
	w := &partialWriter{f: f, h: sha256.New(), report: report}
	defer func() {
		if err != nil {
			report(-w.reported)
		}
	}()
	if err := w.load(s, metaPath, partialMeta{Digest: desc.Digest, Size: desc.Size, Source: src.sourceID()}); err != nil {
		return res, err
	}
	res.Resumed = w.n
	if err := checkFreeSpace(s.dir, desc.Size-w.n, "blob "+desc.Digest.String()); err != nil {
		return res, err
	}
	for {
		if w.n < desc.Size {
			if err := w.fetch(ctx, src, desc); err != nil {
				return res, err
			}
		}
		if w.n == desc.Size && digest.NewDigest(digest.SHA256, w.h) == desc.Digest {
			break
		}
		got := digest.NewDigest(digest.SHA256, w.h)
		if res.Resumed > 0 && !w.restarted {
			// The partial's bytes (or the rest the source sent) were not
			// the blob's: start again from zero, once.
			if err := w.reset(); err != nil {
				return res, err
			}
			continue
		}
		_ = f.Truncate(0)
		_ = s.root.Remove(dataPath)
		_ = s.root.Remove(metaPath)
		return res, fmt.Errorf("blob %s: got %s (%d bytes), want %d bytes: %w", desc.Digest, got, w.n, desc.Size, content.ErrMismatchedDigest)
	}
	if res.Restarted = w.restarted; res.Restarted {
		res.Resumed = 0
	}
	p, _ := s.path(desc.Digest)
	if err := s.root.Rename(dataPath, p); err != nil {
		return res, fmt.Errorf("staging blob: %w", err)
	}
	_ = s.root.Remove(metaPath)
	s.fresh.Store(desc.Digest, true)
	return res, nil
}

// partialWriter appends to a partial while hashing everything in it.
type partialWriter struct {
	f *os.File
	h hash.Hash
	n int64 // bytes in the partial (and hashed)
	// restarted is set once bytes the partial held were dropped.
	restarted bool
	reported  int64
	report    func(int64)
	buf       []byte
}

func (w *partialWriter) add(n int64) {
	w.n += n
	w.reported += n
	w.report(n)
}

// load takes the partial's bytes if its identity record is want, hashing
// them; otherwise it empties the partial and writes want as its record.
func (w *partialWriter) load(s *blobStore, metaPath string, want partialMeta) error {
	var have partialMeta
	b, err := fsutil.ReadFileIn(s.root, metaPath, maxRecordSize)
	if err == nil {
		err = json.Unmarshal(b, &have)
	}
	fi, serr := w.f.Stat()
	if err != nil || have != want || serr != nil || !fi.Mode().IsRegular() || fi.Size() > want.Size {
		if err := w.f.Truncate(0); err != nil {
			return fmt.Errorf("staging blob: %w", err)
		}
		b, _ := json.Marshal(want)
		// Removed first, created anew: never written through a symlink.
		if err := s.root.Remove(metaPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("staging blob: %w", err)
		}
		mf, err := s.root.OpenFile(metaPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("staging blob: %w", err)
		}
		_, err = mf.Write(b)
		if cerr := mf.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("staging blob: %w", err)
		}
		return nil
	}
	n, err := io.Copy(w.h, io.LimitReader(w.f, fi.Size()))
	if err != nil || n != fi.Size() {
		return w.reset()
	}
	w.add(n)
	return nil
}

// reset empties the partial.
func (w *partialWriter) reset() error {
	if err := w.f.Truncate(0); err != nil {
		return fmt.Errorf("staging blob: %w", err)
	}
	w.h.Reset()
	w.restarted = w.restarted || w.n > 0
	w.report(-w.n)
	w.reported -= w.n
	w.n = 0
	return nil
}

// fetch appends the rest of the blob from src (from zero when src ignores
// the range asked for), at most one byte more than desc says.
func (w *partialWriter) fetch(ctx context.Context, src rangeSource, desc ocispec.Descriptor) error {
	rc, from, err := src.fetchFrom(ctx, desc, w.n)
	if err != nil {
		return err
	}
	defer rc.Close()
	if from != w.n {
		if err := w.reset(); err != nil {
			return err
		}
	}
	if _, err := w.f.Seek(w.n, io.SeekStart); err != nil {
		return fmt.Errorf("staging blob: %w", err)
	}
	if w.buf == nil {
		w.buf = make([]byte, 1<<20)
	}
	r := io.LimitReader(rc, desc.Size-w.n+1)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := r.Read(w.buf)
		if n > 0 {
			if _, err := w.f.Write(w.buf[:n]); err != nil {
				return fmt.Errorf("staging blob: %w", err)
			}
			w.h.Write(w.buf[:n])
			w.add(int64(n))
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// openPlain opens (creating) a regular file for reading and writing,
// never through a symlink: os.Root follows symlinks that stay inside it,
// O_NOFOLLOW included, so the file found is checked to be the one at name.
func openPlain(root *os.Root, name string) (*os.File, error) {
	before, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	}
	if err != nil {
		return nil, err
	}
	if !before.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	f, err := root.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !os.SameFile(fi, before) {
		f.Close()
		return nil, fmt.Errorf("%s changed while it was opened", name)
	}
	return f, nil
}

// tryLock takes a flock (LOCK_EX or LOCK_SH) on f without waiting; false
// means another open file holds a conflicting one. The lock goes with the
// file's close (or the process's death, kill -9 included).
func tryLock(f *os.File, how int) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		}
		return false, err
	}
}
