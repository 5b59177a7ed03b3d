package installer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
)

// More release actions, in what rollback and uninstall report.
const (
	// ReleaseRollback: the release was rolled back to the revision the
	// previous generation recorded (a new Helm revision).
	ReleaseRollback Action = "rollback"
)

// ErrNeedsCluster is returned by Rollback and Uninstall when the bundle's
// generations deployed Helm releases that the command would have to
// change and no cluster was given (Options.Deployer).
var ErrNeedsCluster = errors.New("the releases are in a cluster: give its kubeconfig (--kubeconfig or $KUBECONFIG)")

// ReleaseManager is a Deployer that can also roll releases back and
// uninstall them (package cluster). Rollback and Uninstall use
// Options.Deployer through it.
type ReleaseManager interface {
	// RollbackReleases returns the releases cur recorded to those prev
	// recorded: a release both have at different revisions is rolled
	// back to prev's revision, one only cur has is uninstalled, one only
	// prev has is installed again from prev's bundle (open; it fails
	// with a clear error when that bundle is not kept). It returns the
	// releases as they now are, in prev's order, and what it did.
	RollbackReleases(ctx context.Context, cur, prev []Release, open OpenBundle) ([]Release, []ReleaseChange, error)
	// UninstallReleases uninstalls rs in reverse order (the CRDs they
	// shipped are kept and named in each change's reasons).
	UninstallReleases(ctx context.Context, rs []Release) ([]ReleaseChange, error)
}

// OpenBundle opens an installed bundle's archive (its kept archive in the
// registry store) and walks it. Close the closer when done.
type OpenBundle func(ctx context.Context) (*bundle.Archive, *bundle.Graph, io.Closer, error)

// releasesDiffer reports whether going from a to b changes a release.
func releasesDiffer(a, b []Release) bool {
	if len(a) != len(b) {
		return true
	}
	byKey := map[string]Release{}
	for _, r := range a {
		byKey[r.Namespace+"/"+r.Name] = r
	}
	for _, r := range b {
		o, ok := byKey[r.Namespace+"/"+r.Name]
		if !ok || o.Revision != r.Revision || o.ChartDigest != r.ChartDigest || o.ValuesDigest != r.ValuesDigest || o.ManifestDigest != r.ManifestDigest {
			return true
		}
	}
	return false
}

// releaseManager is opts.Deployer as a ReleaseManager, when it is one.
func releaseManager(opts Options) ReleaseManager {
	rm, _ := opts.Deployer.(ReleaseManager)
	return rm
}

// checkReleaseManager refuses, before anything is written, a rollback or
// uninstall that must change releases without a cluster to change them in.
func checkReleaseManager(opts Options, what string, from, to []Release) error {
	if !releasesDiffer(from, to) || releaseManager(opts) != nil {
		return nil
	}
	return fmt.Errorf("%s: %d release(s) deployed (%s first): %w", what, len(from), releaseNames(from, to), ErrNeedsCluster)
}

func releaseNames(a, b []Release) string {
	for _, rs := range [][]Release{a, b} {
		if len(rs) > 0 {
			return rs[0].Namespace + "/" + rs[0].Name
		}
	}
	return "none"
}

// keptBundle opens the kept archive of the bundle whose root is d from
// the registry store (nil store: none).
func keptBundle(reg Registry, d digest.Digest) OpenBundle {
	return func(ctx context.Context) (*bundle.Archive, *bundle.Graph, io.Closer, error) {
		st, ok := reg.(*registry.Store)
		if !ok || st == nil {
			return nil, nil, nil, fmt.Errorf("bundle %s: no registry store to read it from", d)
		}
		if _, kept := st.Kept(d); !kept {
			return nil, nil, nil, fmt.Errorf("bundle %s: its archive was not kept (installed with --copy-blobs or from another filesystem): install that bundle again instead", d)
		}
		src, c, err := st.Base(ctx, d)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("bundle %s: %w", d, err)
		}
		a, ok := src.(*bundle.Archive)
		if !ok {
			c.Close()
			return nil, nil, nil, fmt.Errorf("bundle %s: its archive was not kept: install that bundle again instead", d)
		}
		g, err := a.Walk(ctx)
		if err != nil {
			c.Close()
			return nil, nil, nil, fmt.Errorf("kept archive of bundle %s: %w", d, err)
		}
		return a, g, c, nil
	}
}

// rollbackReleases returns the releases from cur's to prev's (see
// ReleaseManager.RollbackReleases); without a change it returns prev's.
func rollbackReleases(ctx context.Context, opts Options, cur, prev *Generation) ([]Release, []ReleaseChange, error) {
	if !releasesDiffer(cur.Releases, prev.Releases) {
		return prev.Releases, nil, nil
	}
	rm := releaseManager(opts)
	if rm == nil { // checked before anything was written
		return nil, nil, ErrNeedsCluster
	}
	rs, changes, err := rm.RollbackReleases(ctx, cur.Releases, prev.Releases, keptBundle(opts.Registry, digest.Digest(prev.BundleDigest)))
	if err != nil {
		return nil, changes, fmt.Errorf("rolling back the releases of %s: %w", cur.Name, err)
	}
	return rs, changes, nil
}

// uninstallReleases uninstalls the releases g deployed, in reverse order.
func uninstallReleases(ctx context.Context, opts Options, g *Generation) ([]ReleaseChange, error) {
	if len(g.Releases) == 0 {
		return nil, nil
	}
	rm := releaseManager(opts)
	if rm == nil {
		return nil, fmt.Errorf("uninstalling %s: %d release(s) deployed (%s first): %w", g.Name, len(g.Releases), g.Releases[len(g.Releases)-1].Namespace+"/"+g.Releases[len(g.Releases)-1].Name, ErrNeedsCluster)
	}
	changes, err := rm.UninstallReleases(ctx, g.Releases)
	if err != nil {
		return changes, fmt.Errorf("uninstalling the releases of %s: %w", g.Name, err)
	}
	return changes, nil
}
