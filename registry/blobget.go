package registry

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// blobCacheMaxAge is what distribution's blob server says too: blobs are
// immutable by digest.
const blobCacheMaxAge = 365 * 24 * time.Hour

// serveBlob answers GET /v2/<name>/blobs/<digest> from the storage driver
// directly. Distribution's blob server reads through a 4 MiB buffer per
// request, which a client that stops reading pins until its connection
// is dropped; here the data go out in small pooled chunks (copyPooled).
// The repository link and the blob are checked through distribution's
// own blob store. It returns false, having written nothing, when
// distribution should answer instead (unknown blob, bad name or digest).
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, name, dg string) bool {
	ctx := r.Context()
	d, err := digest.Parse(dg)
	if err != nil {
		return false
	}
	named, err := reference.WithName(name)
	if err != nil {
		return false
	}
	repo, err := h.ns.Repository(ctx, named)
	if err != nil {
		return false
	}
	desc, err := repo.Blobs(ctx).Stat(ctx, d)
	if err != nil {
		return false
	}
	f := &driverFile{ctx: ctx, driver: h.driver, path: blobDataPath(desc.Digest), size: desc.Size}
	defer f.Close()
	hd := w.Header()
	hd.Set("Docker-Distribution-API-Version", "registry/2.0")
	hd.Set("ETag", `"`+desc.Digest.String()+`"`) // If-None-Match handled by ServeContent
	hd.Set("Cache-Control", "max-age="+strconv.Itoa(int(blobCacheMaxAge.Seconds())))
	hd.Set("Docker-Content-Digest", desc.Digest.String())
	mt := desc.MediaType
	if mt == "" {
		mt = "application/octet-stream"
	}
	hd.Set("Content-Type", mt)
	http.ServeContent(w, r, "", time.Time{}, f)
	return true
}

// driverFile reads a file of a storage driver as an io.ReadSeeker,
// opening the driver's reader at the current offset on the first read
// after a seek. It holds the request's context for that (it lives only
// as long as the request). Not safe for concurrent use.
type driverFile struct {
	ctx    context.Context
	driver storagedriver.StorageDriver
	path   string
	size   int64
	off    int64
	rc     io.ReadCloser
}

func (f *driverFile) Read(p []byte) (int, error) {
	if f.off >= f.size {
		return 0, io.EOF
	}
	if f.rc == nil {
		rc, err := f.driver.Reader(f.ctx, f.path, f.off)
		if err != nil {
			return 0, err
		}
		f.rc = rc
	}
	if rest := f.size - f.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := f.rc.Read(p)
	f.off += int64(n)
	if err == io.EOF && f.off < f.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (f *driverFile) Seek(offset int64, whence int) (int64, error) {
	abs := offset
	switch whence {
	case io.SeekCurrent:
		abs += f.off
	case io.SeekEnd:
		abs += f.size
	}
	if abs < 0 {
		return 0, storagedriver.InvalidOffsetError{Path: f.path, Offset: abs}
	}
	if abs != f.off && f.rc != nil {
		_ = f.rc.Close()
		f.rc = nil
	}
	f.off = abs
	return abs, nil
}

func (f *driverFile) Close() error {
	if f.rc == nil {
		return nil
	}
	err := f.rc.Close()
	f.rc = nil
	return err
}
