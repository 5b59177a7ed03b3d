package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
)

// InstalledBase finds the base of a delta bundle in the store at storeDir:
// its kept archive, else the blobs installs copied into the store (where a
// delta's blobs from an earlier base may also be). What the delta needs and
// the base lacks shows up when the delta is attached (Archive.AttachBase
// walks it). Close the source when done.
func InstalledBase(ctx context.Context, storeDir string, base digest.Digest) (bundle.BlobSource, io.Closer, error) {
	if p, ok := KeptArchive(storeDir, base); ok {
		a, err := bundle.Open(ctx, p)
		if err != nil {
			return nil, nil, fmt.Errorf("kept archive of base %s: %w", base, err)
		}
		if a.Base() != "" { // itself a delta: its own base first
			src, c, err := InstalledBase(ctx, storeDir, a.Base())
			if err == nil {
				err = a.AttachBase(ctx, src)
			}
			if err != nil {
				a.Close()
				if c != nil {
					c.Close()
				}
				return nil, nil, err
			}
			return a, closers{a, c}, nil
		}
		return a, a, nil
	}
	if _, err := os.Stat(filepath.Join(storeDir, filepath.FromSlash(storeSubdir), "blobs")); err != nil {
		return nil, nil, fmt.Errorf("no kept archive or copied blobs in %s: %w", storeDir, bundle.ErrNeedsBase)
	}
	s := &storeBlobs{dir: storeDir, open: map[digest.Digest]*os.File{}}
	return s, s, nil
}

type closers []io.Closer

func (c closers) Close() error {
	var errs []error
	for _, x := range c {
		if x != nil {
			errs = append(errs, x.Close())
		}
	}
	return errors.Join(errs...)
}

// storeBlobs reads the blobs copied into a store, by digest.
type storeBlobs struct {
	dir  string
	mu   sync.Mutex
	open map[digest.Digest]*os.File
}

func (s *storeBlobs) path(d digest.Digest) (string, bool) {
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return "", false
	}
	return filepath.Join(s.dir, filepath.FromSlash(strings.TrimPrefix(blobDataPath(d), "/"))), true
}

func (s *storeBlobs) BlobSize(d digest.Digest) (int64, bool) {
	p, ok := s.path(d)
	if !ok {
		return 0, false
	}
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}

func (s *storeBlobs) BlobReader(d digest.Digest) (*io.SectionReader, error) {
	p, ok := s.path(d)
	if !ok {
		return nil, fmt.Errorf("%s: %w", d, bundle.ErrMissingBlob)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.open[d]
	if f == nil {
		var err error
		if f, err = os.Open(p); err != nil {
			return nil, err
		}
		s.open[d] = f
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(f, 0, fi.Size()), nil
}

func (s *storeBlobs) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, f := range s.open {
		f.Close()
		delete(s.open, d)
	}
	return nil
}

// KeptBase is the base of the bundle whose archive is kept in storeDir
// ("" for a whole bundle, or when none is kept).
func KeptBase(ctx context.Context, storeDir string, root digest.Digest) digest.Digest {
	p, ok := KeptArchive(storeDir, root)
	if !ok {
		return ""
	}
	a, err := bundle.Open(ctx, p)
	if err != nil {
		return ""
	}
	defer a.Close()
	return a.Base()
}
