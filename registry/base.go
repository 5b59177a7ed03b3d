package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
)

// Base finds the base of a delta bundle in the store: its kept archive,
// else the blobs installs copied into the store (where a delta's blobs
// from an earlier base may also be). What the delta needs and the base
// lacks shows up when the delta is attached (Archive.AttachBase walks
// it). Close the source when done (before the store).
func (s *Store) Base(ctx context.Context, base digest.Digest) (bundle.BlobSource, io.Closer, error) {
	if _, ok := s.Kept(base); ok {
		f, a, err := openKept(ctx, s.dir, keptRel(base))
		if err != nil {
			return nil, nil, fmt.Errorf("kept archive of base %s: %w", base, err)
		}
		if a.Base() != "" { // itself a delta: its own base first
			src, c, err := s.Base(ctx, a.Base())
			if err == nil {
				err = a.AttachBase(ctx, src)
			}
			if err != nil {
				a.Close()
				f.Close()
				if c != nil {
					c.Close()
				}
				return nil, nil, err
			}
			return a, closers{a, f, c}, nil
		}
		return a, closers{a, f}, nil
	}
	if _, err := s.dir.Stat(layout.BlobsDir); err != nil {
		return nil, nil, fmt.Errorf("no kept archive or copied blobs in %s: %w", s.path, bundle.ErrNeedsBase)
	}
	b := &storeBlobs{dir: s.dir, open: map[digest.Digest]*os.File{}}
	return b, b, nil
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

// storeBlobs reads the blobs copied into a store, by digest, through the
// store's os.Root.
type storeBlobs struct {
	dir  *os.Root
	mu   sync.Mutex
	open map[digest.Digest]*os.File
}

func (s *storeBlobs) path(d digest.Digest) (string, bool) {
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return "", false
	}
	return strings.TrimPrefix(blobDataPath(d), "/"), true
}

func (s *storeBlobs) BlobSize(d digest.Digest) (int64, bool) {
	p, ok := s.path(d)
	if !ok {
		return 0, false
	}
	fi, err := s.dir.Stat(p)
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
		if f, err = s.dir.Open(p); err != nil {
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

// keptBase is the base of the bundle whose archive is kept in the store
// ("" for a whole bundle, or when none is kept).
func (s *Store) keptBase(ctx context.Context, root digest.Digest) digest.Digest {
	if _, ok := s.Kept(root); !ok {
		return ""
	}
	f, a, err := openKept(ctx, s.dir, keptRel(root))
	if err != nil {
		return ""
	}
	defer f.Close()
	defer a.Close()
	return a.Base()
}
