package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"

	"zdt.dev/zdt/installer"
)

var _ installer.ReleaseManager = (*Deployer)(nil)

// RollbackReleases returns the releases of the current generation (cur)
// to those the previous one recorded (prev), in prev's order, then
// uninstalls the releases only cur has in reverse order:
//
//   - a release both recorded at the same revision is left alone;
//   - one at another revision is rolled back with Helm to prev's revision
//     (a new revision, "Rollback to N"); when that revision is no longer
//     in the release's history, prev's chart and values are deployed from
//     prev's bundle instead;
//   - one only prev has (cur pruned it) is installed again from prev's
//     bundle (open), which must be kept in the registry store and give
//     the values digest prev recorded (install-time --values overrides are
//     not recorded, so such a release cannot be rebuilt): otherwise the
//     error says so;
//   - one only cur has is uninstalled; its CRDs are kept.
//
// CRDs are never rolled back (the newer schema stays, with its objects).
// It stops at the first failure, with the changes done so far.
func (d *Deployer) RollbackReleases(ctx context.Context, cur, prev []installer.Release, open installer.OpenBundle) ([]installer.Release, []installer.ReleaseChange, error) {
	curBy := map[string]installer.Release{}
	for _, r := range cur {
		curBy[key(r.Namespace, r.Name)] = r
	}
	prevBy := map[string]bool{}
	var out []installer.Release
	var changes []installer.ReleaseChange
	var fromBundle *bundleSource
	defer func() {
		if fromBundle != nil {
			fromBundle.close()
		}
	}()
	for _, p := range prev {
		k := key(p.Namespace, p.Name)
		prevBy[k] = true
		c, had := curBy[k]
		latest, _, err := d.latestRevision(ctx, p.Namespace, p.Name)
		if err != nil {
			return nil, changes, err
		}
		if had && c.Revision == p.Revision && latest == p.Revision {
			out = append(out, p)
			changes = append(changes, installer.ReleaseChange{Action: installer.ReleaseUnchanged, Release: p})
			continue
		}
		if latest > 0 {
			ok, err := d.hasRevision(p.Namespace, p.Name, p.Revision)
			if err != nil {
				return nil, changes, err
			}
			if ok {
				rev, err := d.rollbackTo(ctx, p, latest)
				if err != nil {
					return nil, changes, fmt.Errorf("%w: rolling back %s/%s to revision %d: %w", ErrRelease, p.Namespace, p.Name, p.Revision, err)
				}
				r := p
				r.Revision = rev
				out = append(out, r)
				changes = append(changes, installer.ReleaseChange{Action: installer.ReleaseRollback, Release: r,
					Reasons: []string{fmt.Sprintf("revision %d -> %d (as revision %d)", latest, p.Revision, rev)}})
				d.opts.Logger.Info("release rolled back", "release", p.Name, "namespace", p.Namespace, "to", p.Revision, "revision", rev)
				continue
			}
		}
		// Not in the cluster's history (pruned by the current generation,
		// or trimmed): deploy prev's chart and values from prev's bundle.
		if fromBundle == nil {
			if fromBundle, err = d.openSource(ctx, open); err != nil {
				return nil, changes, fmt.Errorf("%w: %s/%s (revision %d of the previous generation is not in the cluster): %w", ErrRelease, p.Namespace, p.Name, p.Revision, err)
			}
		}
		w, err := fromBundle.release(p)
		if err != nil {
			return nil, changes, fmt.Errorf("%w: %s/%s (revision %d of the previous generation is not in the cluster): %w", ErrRelease, p.Namespace, p.Name, p.Revision, err)
		}
		if err := d.applyCRDs(ctx, []*desired{w}); err != nil {
			return nil, changes, err
		}
		act, why := installer.ReleaseInstall, "reinstalled from the previous bundle"
		if latest > 0 {
			act, why = installer.ReleaseUpgrade, fmt.Sprintf("revision %d no longer in the history: deployed from the previous bundle", p.Revision)
		}
		rev, err := d.deployOne(ctx, act, w)
		if err != nil {
			return nil, changes, fmt.Errorf("%w: %s/%s (component %s, chart %s %s): %w", ErrRelease, p.Namespace, p.Name, p.Component, p.Chart, p.Version, err)
		}
		r := p
		r.Revision = rev
		out = append(out, r)
		changes = append(changes, installer.ReleaseChange{Action: act, Release: r, Reasons: []string{why}})
		d.opts.Logger.Info("release deployed from the previous bundle", "release", p.Name, "namespace", p.Namespace, "revision", rev)
	}
	var drop []installer.Release
	for _, c := range cur {
		if !prevBy[key(c.Namespace, c.Name)] {
			drop = append(drop, c)
		}
	}
	un, err := d.UninstallReleases(ctx, drop)
	changes = append(changes, un...)
	if err != nil {
		return nil, changes, err
	}
	return out, changes, nil
}

// UninstallReleases uninstalls rs in reverse order, each waited gone. The
// CRDs a release's chart shipped in crds/ are kept (deleting a CRD deletes
// every object of it) and named in its change. A release already gone is
// reported unchanged.
func (d *Deployer) UninstallReleases(ctx context.Context, rs []installer.Release) ([]installer.ReleaseChange, error) {
	var changes []installer.ReleaseChange
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		latest, _, err := d.latestRevision(ctx, r.Namespace, r.Name)
		if err != nil {
			return changes, err
		}
		if latest == 0 {
			changes = append(changes, installer.ReleaseChange{Action: installer.ReleaseUnchanged, Release: r, Reasons: []string{"not in the cluster"}})
			continue
		}
		crds, err := d.releaseCRDs(r.Namespace, r.Name, latest)
		if err != nil {
			return changes, fmt.Errorf("%w: %s/%s: %w", ErrRelease, r.Namespace, r.Name, err)
		}
		if err := d.uninstall(ctx, r); err != nil {
			return changes, fmt.Errorf("%w: uninstalling %s/%s (component %s, chart %s %s): %w", ErrRelease, r.Namespace, r.Name, r.Component, r.Chart, r.Version, err)
		}
		c := installer.ReleaseChange{Action: installer.ReleaseUninstall, Release: r}
		if len(crds) > 0 {
			c.Reasons = []string{"CRDs kept: " + strings.Join(crds, ", ")}
		}
		changes = append(changes, c)
		d.opts.Logger.Info("release uninstalled", "release", r.Name, "namespace", r.Namespace, "crdsKept", len(crds))
	}
	return changes, nil
}

// getRelease reads one revision of a release from the cluster (one
// storage Secret, bounded by the API server's object size limit).
func (d *Deployer) getRelease(ns, name string, rev int) (*release.Release, error) {
	cfg, err := d.helmConfig(ns)
	if err != nil {
		return nil, err
	}
	ri, err := cfg.Releases.Get(name, rev)
	if err != nil {
		return nil, err
	}
	r, ok := ri.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("release %s/%s revision %d: a %T", ns, name, rev, ri)
	}
	return r, nil
}

// hasRevision reports whether the release's history still holds rev.
func (d *Deployer) hasRevision(ns, name string, rev int) (bool, error) {
	if rev <= 0 {
		return false, nil
	}
	_, err := d.getRelease(ns, name, rev)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return false, nil
	}
	return false, fmt.Errorf("release %s/%s revision %d: %w", ns, name, rev, err)
}

// releaseCRDs names the CRDs in crds/ of the chart a release revision
// holds.
func (d *Deployer) releaseCRDs(ns, name string, rev int) ([]string, error) {
	r, err := d.getRelease(ns, name, rev)
	if err != nil {
		return nil, fmt.Errorf("reading revision %d: %w", rev, err)
	}
	if r.Chart == nil {
		return nil, nil
	}
	docs, err := crdDocs(r.Chart)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range docs {
		out = append(out, c.name)
	}
	return out, nil
}

// rollbackTo rolls release p back to p.Revision with Helm and returns the
// new revision (latest+1).
func (d *Deployer) rollbackTo(ctx context.Context, p installer.Release, latest int) (int, error) {
	cfg, err := d.helmConfig(p.Namespace)
	if err != nil {
		return 0, err
	}
	rb := action.NewRollback(cfg)
	rb.Version, rb.MaxHistory = p.Revision, MaxHistory
	rb.WaitStrategy, rb.Timeout = kube.StatusWatcherStrategy, d.opts.Timeout
	rb.CleanupOnFail = true
	if err := rb.Run(p.Name); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	rev, _, err := d.latestRevision(ctx, p.Namespace, p.Name)
	if err != nil {
		return 0, err
	}
	if rev <= latest {
		return 0, fmt.Errorf("helm recorded no new revision (latest %d)", rev)
	}
	return rev, nil
}

// bundleSource is the previous generation's bundle, its releases loaded.
type bundleSource struct {
	byKey map[string]*desired
	close func()
}

func (d *Deployer) openSource(ctx context.Context, open installer.OpenBundle) (*bundleSource, error) {
	if open == nil {
		return nil, fmt.Errorf("no previous bundle to deploy it from")
	}
	a, g, c, err := open(ctx)
	if err != nil {
		return nil, err
	}
	ws, err := d.desiredReleases(ctx, a, g)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("previous bundle %s %s: %w", a.Config.Name, a.Config.Version, err)
	}
	s := &bundleSource{byKey: map[string]*desired{}, close: func() { c.Close() }}
	for _, w := range ws {
		s.byKey[key(w.rel.Namespace, w.rel.Name)] = w
	}
	return s, nil
}

// release is p as the bundle gives it: the same chart and values digests
// the previous generation recorded, or an error saying why not.
func (s *bundleSource) release(p installer.Release) (*desired, error) {
	w, ok := s.byKey[key(p.Namespace, p.Name)]
	switch {
	case !ok:
		return nil, fmt.Errorf("the previous bundle has no release %s/%s", p.Namespace, p.Name)
	case w.rel.ChartDigest != p.ChartDigest:
		return nil, fmt.Errorf("the previous bundle's chart is %s, the generation recorded %s", w.rel.ChartDigest, p.ChartDigest)
	case w.rel.ValuesDigest != p.ValuesDigest:
		return nil, fmt.Errorf("it was deployed with --values overrides, which are not recorded: install the previous bundle again with them")
	}
	return w, nil
}
