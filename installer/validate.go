package installer

import (
	"errors"
	"fmt"
	"path"
	"sort"

	"zdt.dev/zdt/manifests"
)

// ErrInvalidItem is matched by every refusal of checkItems: the bundle
// lists items install cannot place as they are.
var ErrInvalidItem = errors.New("invalid bundle item")

// ItemError names the bundle item install refuses and why.
type ItemError struct {
	Item string // "file tool"
	Err  error
}

func (e *ItemError) Error() string { return e.Item + ": " + e.Err.Error() }
func (e *ItemError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalidItem) true.
func (e *ItemError) Is(target error) bool { return target == ErrInvalidItem }

// checkItems refuses, before anything is written, the items of a bundle
// that no install could converge on: two items of one kind and name, a
// file target that is not a clean absolute path to a file, is zdt's own
// (its state directory or a file it generates), is another item's target
// or lies inside one, a mode with setuid, setgid or sticky bits the bundle
// does not allow, and an AMI name that is not one path element. The bundle
// is not trusted to have been made by `zdt bundle create`, which refuses
// the same things.
func checkItems(items []ItemState) error {
	var errs []error
	fail := func(it ItemState, format string, args ...any) {
		errs = append(errs, &ItemError{Item: it.String(), Err: fmt.Errorf(format, args...)})
	}
	keys := map[string]bool{}
	targets := map[string]ItemState{}
	for _, it := range items {
		if keys[it.key()] {
			fail(it, "listed twice in the bundle")
			continue
		}
		keys[it.key()] = true
		switch it.Kind {
		case manifests.KindFile:
			if err := manifests.CheckTarget(it.Target); err != nil {
				fail(it, "%v", err)
				continue
			}
			if other, ok := targets[it.Target]; ok {
				fail(it, "target %q is also the target of %s", it.Target, other)
				continue
			}
			targets[it.Target] = it
			mode, err := manifests.ParseMode(it.Mode)
			if err != nil {
				fail(it, "%v", err)
			} else if mode&manifests.SpecialBits != 0 && !it.AllowSpecialBits {
				fail(it, "mode %q sets setuid, setgid or sticky bits the bundle does not allow (%s)", it.Mode, manifests.AnnotationAllowSpecialBits)
			}
		case manifests.KindAMI:
			if err := manifests.CheckAMIName(it.Name); err != nil {
				fail(it, "%v", err)
			}
		}
	}
	for t, it := range targets {
		for d := path.Dir(t); d != "/"; d = path.Dir(d) {
			if other, ok := targets[d]; ok {
				fail(it, "target %q is inside %q, the target of %s", t, d, other)
				break
			}
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}
