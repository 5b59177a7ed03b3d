package installer

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
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

// ErrConflict is matched by the refusal of a bundle that claims what
// another installed bundle holds: a file path, or a name the registry
// serves with other content.
var ErrConflict = errors.New("claimed by another installed bundle")

// ConflictError names what two bundles claim: Path is a file target or a
// served reference (repository:tag), Bundle the bundle being installed
// and Other the installed one.
type ConflictError struct {
	Path, Bundle, Other string
	// What is "path" or "reference".
	What string
	// Detail says how they clash when it is not the same path.
	Detail string
}

func (e *ConflictError) Error() string {
	s := fmt.Sprintf("%s %s is claimed by bundle %s and by bundle %s, which is installed", e.What, e.Path, e.Bundle, e.Other)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s + ": uninstall one of them (zdt uninstall --name) or change its spec"
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// checkConflicts refuses, before anything is written, a bundle that claims
// what another installed bundle holds: a file target equal to one of its
// targets, inside one or holding one; or a reference the registry serves
// (repository:tag) that the other serves with other content. Sharing an
// image at the same digest is fine: the store holds it once.
func checkConflicts(name string, desired []ItemState, others []*Generation) error {
	type owner struct {
		bundle string
		item   ItemState
	}
	targets := map[string]owner{}
	refs := map[string]owner{}
	for _, g := range others {
		for _, it := range g.Items {
			if it.Kind == manifests.KindFile && it.Target != "" {
				targets[it.Target] = owner{g.Name, it}
			}
			for _, k := range servedNames(it) {
				refs[k] = owner{g.Name, it}
			}
		}
	}
	var errs []error
	for _, it := range desired {
		if it.Kind == manifests.KindFile {
			if o, ok := targets[it.Target]; ok {
				errs = append(errs, &ConflictError{What: "path", Path: it.Target, Bundle: name, Other: o.bundle})
				continue
			}
			for d := path.Dir(it.Target); d != "/" && d != "."; d = path.Dir(d) {
				if o, ok := targets[d]; ok {
					errs = append(errs, &ConflictError{What: "path", Path: it.Target, Bundle: name, Other: o.bundle, Detail: "inside " + d + ", a file of " + o.bundle})
					break
				}
			}
			for t, o := range targets {
				if strings.HasPrefix(t, it.Target+"/") {
					errs = append(errs, &ConflictError{What: "path", Path: it.Target, Bundle: name, Other: o.bundle, Detail: "a directory holding " + t + ", a file of " + o.bundle})
					break
				}
			}
		}
		for _, k := range servedNames(it) {
			if o, ok := refs[k]; ok && o.item.Digest != it.Digest {
				errs = append(errs, &ConflictError{What: "reference", Path: k, Bundle: name, Other: o.bundle,
					Detail: fmt.Sprintf("%s here, %s there", it.Digest, o.item.Digest)})
				break
			}
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// servedNames are the repository:tag names the registry serves an item
// under (none for a reference by digest only).
func servedNames(it ItemState) []string {
	if it.Ref == "" {
		return nil
	}
	if it.Kind == manifests.KindImage {
		repos, tag, _, err := registry.ImageRepositories(it.Ref)
		if err != nil || tag == "" {
			return nil
		}
		out := make([]string, 0, len(repos))
		for _, r := range repos {
			out = append(out, r+":"+tag)
		}
		return out
	}
	if strings.Contains(it.Ref, "@") {
		return nil
	}
	return []string{it.Ref}
}
