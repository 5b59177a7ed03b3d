package build

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// What `zdt cache ls` and `zdt cache prune` see of the cache
// (CreateOptions.CacheDir). The cache's lock file (DIR/lock) is held
// shared by every create for its whole run and exclusively by a prune, so
// a prune never evicts what a running create relies on. A blob's access
// time is its last use: a create sets it on every blob it writes into an
// archive.

// cacheLockFile is the cache's lock, under the cache directory.
const cacheLockFile = "lock"

// ErrCacheBusy: a create is using the cache, so it cannot be pruned now.
var ErrCacheBusy = errors.New("the cache is in use by a running create")

// lockCacheFile opens the cache's lock file and takes a flock on it
// (LOCK_SH or LOCK_EX); wait says whether to wait for it, else a held
// lock is ErrCacheBusy. Closing the file releases the lock.
func lockCacheFile(root *os.Root, how int, wait bool) (*os.File, error) {
	f, err := root.OpenFile(cacheLockFile, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the cache lock: %w", err)
	}
	if wait {
		for {
			err = syscall.Flock(int(f.Fd()), how)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking the cache: %w", err)
		}
		return f, nil
	}
	ok, err := tryLock(f, how)
	if err != nil || !ok {
		f.Close()
		if err == nil {
			err = ErrCacheBusy
		}
		return nil, fmt.Errorf("locking the cache %s: %w", root.Name(), err)
	}
	return f, nil
}

// touch records that a create used these blobs now (their access time:
// the last use `zdt cache ls` shows and `zdt cache prune` evicts by).
// Errors are ignored: a failure only makes a blob look older.
func (s *blobStore) touch(blobs []ocispec.Descriptor) {
	if !s.persistent {
		return
	}
	now := time.Now()
	for _, b := range blobs {
		if p, err := s.path(b.Digest); err == nil {
			_ = s.root.Chtimes(p, now, time.Time{})
		}
	}
}
