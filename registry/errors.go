package registry

import (
	"errors"

	"zdt.dev/zdt/internal/fsutil"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrBadReference: a reference name in a bundle can't be mapped to a
	// repository and tag.
	ErrBadReference = errors.New("reference can't be served")
	// ErrReadOnly is returned by every write to the archive storage driver.
	ErrReadOnly = errors.New("read-only storage: serving a bundle archive")
	// ErrBadStore: the store directory holds something Import or Prune did
	// not expect (a link with other content, a blob of the wrong size).
	ErrBadStore = errors.New("registry store is inconsistent")
	// ErrNoStorage: NewHandler was given neither a store nor archives.
	ErrNoStorage = errors.New("nothing to serve: give a store directory or bundle archives")
	// ErrPushNeedsStore: push (htpasswd) was asked for while serving archives.
	ErrPushNeedsStore = errors.New("push needs a store directory: bundle archives are read-only")
)

// ErrOutsideRoot: a path zdt uses under an install root goes through a
// symlink leading out of the root; it is refused, not followed.
var ErrOutsideRoot = fsutil.ErrOutsideRoot
