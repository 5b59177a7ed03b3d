package installer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/signing"
)

// Bases says where a delta bundle's base comes from.
type Bases struct {
	// Files are bundle files that may be the base (--base): the one whose
	// root the delta names is attached.
	Files []string
	// Store, if set, is an installed registry store: a base not among
	// Files is read from what is installed there (its kept archive or its
	// copied blobs).
	Store *registry.Store
}

// Verified is a bundle opened by OpenVerified: the archive (signature
// checked, a delta's base attached) and the signature check's result.
// Close it once when done; it closes the base too.
type Verified struct {
	*bundle.Archive
	// Signature is what the signature check found (zero when no policy
	// was given).
	Signature signing.Result
	closers   []io.Closer
}

// Close closes the base (if any) and the archive.
func (v *Verified) Close() error {
	var errs []error
	for i := len(v.closers) - 1; i >= 0; i-- {
		errs = append(errs, v.closers[i].Close())
	}
	return errors.Join(errs...)
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// OpenVerified opens a bundle for install, serve and push, in the order
// that reads the least of an untrusted file: the root's signature is
// checked against policy first (an unsigned bundle is refused after one
// small read of index.json, see signing.IndexCheck; the whole check reads
// only index.json, the root and its signature and attestation manifests),
// then a delta is given its base, from bases.Files, else from what
// bases.Store has installed. A nil policy skips the signature check
// (inspect); nil bases leave a delta without its base (its own blobs still
// read). Every refusal matches bundle.ErrVerification (exit code 3) or,
// for a missing base, bundle.ErrNeedsBase.
func OpenVerified(ctx context.Context, path string, policy *signing.Policy, bases *Bases) (*Verified, error) {
	return openVerified(ctx, path, policy, bases, func(opts bundle.OpenOptions) (*bundle.Archive, error) {
		return bundle.OpenWith(ctx, path, opts)
	})
}

// openVerified is OpenVerified of a bundle open opens (a file, a
// registry): the same checks in the same order whatever holds it.
func openVerified(ctx context.Context, path string, policy *signing.Policy, bases *Bases, open func(bundle.OpenOptions) (*bundle.Archive, error)) (*Verified, error) {
	var opts bundle.OpenOptions
	if policy != nil {
		opts.CheckIndex = signing.IndexCheck(*policy)
	}
	a, err := open(opts)
	if err != nil {
		return nil, err
	}
	v := &Verified{Archive: a, closers: []io.Closer{a}}
	if policy != nil {
		if v.Signature, err = signing.Verify(ctx, a, *policy); err != nil {
			v.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if bases != nil && a.Base() != "" {
		if err := v.attachBase(ctx, *bases); err != nil {
			v.Close()
			return nil, err
		}
	}
	return v, nil
}

func (v *Verified) attachBase(ctx context.Context, bases Bases) error {
	a := v.Archive
	for _, p := range bases.Files {
		b, err := bundle.Open(ctx, p)
		if err != nil {
			return err
		}
		if b.Root.Digest != a.Base() {
			b.Close()
			continue
		}
		if err := a.AttachBase(ctx, b); err != nil {
			b.Close()
			return err
		}
		v.closers = append(v.closers, b)
		return nil
	}
	if bases.Store == nil {
		return fmt.Errorf("%s is a delta bundle on %s: give that bundle with --base FILE (%w)", a.Path(), a.Base(), bundle.ErrNeedsBase)
	}
	src, c, err := bases.Store.Base(ctx, a.Base())
	if err == nil {
		v.closers = append(v.closers, c)
		err = a.AttachBase(ctx, src)
	}
	if err != nil {
		return fmt.Errorf("%s is a delta bundle on %s, which is not installed here: install that bundle (or the whole of this one) first (%w)", a.Path(), a.Base(), err)
	}
	return nil
}
