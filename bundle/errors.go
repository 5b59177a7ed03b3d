package bundle

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors; match them with errors.Is. Every verification failure also
// matches ErrVerification, which the CLI maps to exit code 3.
var (
	ErrVerification   = errors.New("verification failed")
	ErrDigestMismatch = fmt.Errorf("digest mismatch: %w", ErrVerification)
	ErrMissingBlob    = fmt.Errorf("missing blob: %w", ErrVerification)
	ErrUnreachable    = fmt.Errorf("not reachable from the bundle root: %w", ErrVerification)
	ErrUnsafeEntry    = fmt.Errorf("unsafe archive entry: %w", ErrVerification)
	ErrTruncated      = fmt.Errorf("archive is truncated: %w", ErrVerification)
	ErrTooLarge       = fmt.Errorf("too large: %w", ErrVerification)
	ErrNotBundle      = fmt.Errorf("not a zdt bundle: %w", ErrVerification)
	// ErrIndexMismatch: an index.json entry is not what the signed root
	// says (a retagged item, a renamed root, an entry the root does not
	// list); see IndexError.
	ErrIndexMismatch     = fmt.Errorf("index.json differs from the bundle root: %w", ErrVerification)
	ErrUnsupportedDigest = errors.New("unsupported digest algorithm (zdt uses sha256)")
	ErrLockMismatch      = errors.New("source does not match the lock file")
	// ErrNoChartDigest: a Helm repository index entry gives no digest and
	// build.CreateOptions.RequireChartDigests is set.
	ErrNoChartDigest = errors.New("chart index entry without a digest")
	// ErrChartRepoNotAllowed: a chart dependency names a repository the
	// spec and build.CreateOptions.AllowChartRepos do not allow.
	ErrChartRepoNotAllowed = errors.New("chart repository not allowed")
	// ErrChartCycle: chart dependencies that loop, or nest too deep.
	ErrChartCycle = errors.New("chart dependencies loop or nest too deep")
	// ErrRenderLimit: a chart's rendering exceeded its time or size limit.
	ErrRenderLimit = errors.New("chart rendering exceeded its limits")
	// ErrSizeMismatch: a source's size is not the one the spec gives.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrNoSpace: the disk lacks room for what is about to be written.
	ErrNoSpace = errors.New("not enough free disk space")
	// ErrNeedsBase: a delta bundle's blob is in its base, which was not
	// given (AttachBase).
	ErrNeedsBase = errors.New("the delta bundle's base is needed")
	// ErrWrongBase: the bundle given as base is not the one the delta names.
	ErrWrongBase = errors.New("not the base bundle this delta was made on")
)

// BlobError names the blob that failed and the bundle item it belongs to.
type BlobError struct {
	Digest digest.Digest
	Item   string // "image docker.io/library/nginx:1.25", "" if unknown
	Role   string // "layer", "config", "manifest", …
	Err    error
}

func (e *BlobError) Error() string {
	who := e.Digest.String()
	if e.Role != "" || e.Item != "" {
		who += " ("
		if e.Role != "" {
			who += e.Role
			if e.Item != "" {
				who += " of "
			}
		}
		who += e.Item + ")"
	}
	return "blob " + who + ": " + e.Err.Error()
}

func (e *BlobError) Unwrap() error { return e.Err }

// EntryError names a tar entry that is not allowed in a bundle.
type EntryError struct {
	Name string
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("archive entry %q: %v", e.Name, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// IndexError names the index.json entry that differs from the bundle root.
type IndexError struct {
	Entry int    // position in index.json's manifests
	Ref   string // its org.opencontainers.image.ref.name, "" if none
	Err   error
}

func (e *IndexError) Error() string {
	return fmt.Sprintf("index.json entry %d (%q): %v", e.Entry, e.Ref, e.Err)
}

func (e *IndexError) Unwrap() error { return e.Err }

// ErrCorruptContent: a file or disk layer whose bytes do not decode
// (corrupt zstd, or a window over MaxDecoderWindow). It matches
// ErrVerification.
var ErrCorruptContent = fmt.Errorf("content does not decode: %w", ErrVerification)
