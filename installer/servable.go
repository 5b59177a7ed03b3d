package installer

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// ErrNotServable is matched (errors.Is) by a NotServableError.
var ErrNotServable = errors.New("the registry storage cannot serve the generation")

// NotServableError is returned by Install, Rollback and Uninstall, before
// they write anything, when the registry must serve an installed
// generation (beside the bundle installed, or the one rolled back to) that
// is not in its storage: its placements record is missing (a damaged
// store), or it was installed from a registry by a zdt that imported
// nothing of it. Err says what to do.
type NotServableError struct {
	Name       string // the bundle
	Generation int
	Digest     string // its root
	Err        error
}

func (e *NotServableError) Error() string {
	return fmt.Sprintf("generation %d of bundle %s (%s): %v", e.Generation, e.Name, e.Digest, e.Err)
}

func (e *NotServableError) Unwrap() error { return e.Err }

func (e *NotServableError) Is(target error) bool { return target == ErrNotServable }

// checkServable checks that the registry can activate every generation of
// gens that is in its storage (inRegistry): the store holds its
// placements record. A Registry that is not a registryChecker is trusted.
func checkServable(reg Registry, gens []*Generation) error {
	rc, ok := reg.(registryChecker)
	if !ok {
		return nil
	}
	for _, g := range gens {
		if !g.inRegistry() {
			continue
		}
		if _, err := rc.Recorded(digest.Digest(g.BundleDigest)); err != nil {
			return &NotServableError{Name: g.Name, Generation: g.Number, Digest: g.BundleDigest,
				Err: fmt.Errorf("not in the registry storage (%w); install bundle %s again to import it", err, g.Name)}
		}
	}
	return nil
}
