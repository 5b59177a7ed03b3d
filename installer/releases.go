package installer

import (
	"context"

	"zdt.dev/zdt/bundle"
)

// Release is one Helm release an install deployed, as the generation
// records it. The digests say what was deployed: the chart item's manifest
// digest, the sha256 of the merged values (canonical JSON) and of the
// rendered manifests (CRDs included); Revision is the Helm revision that
// holds it.
type Release struct {
	Component      string `json:"component"`
	Chart          string `json:"chart"`
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	Version        string `json:"version"`
	ChartDigest    string `json:"chartDigest"`
	ValuesDigest   string `json:"valuesDigest"`
	ManifestDigest string `json:"manifestDigest"`
	Revision       int    `json:"revision"`
	// CRDDigest is the sha256 of the chart's crds/ documents alone (empty
	// in generations recorded before it was).
	CRDDigest string `json:"crdDigest,omitempty"`
	// ImageRegistry is the --rewrite-images host the release's images
	// were rewritten to (empty: not rewritten).
	ImageRegistry string `json:"imageRegistry,omitempty"`
}

// Release actions in a plan.
const (
	ReleaseInstall   Action = "install"
	ReleaseUpgrade   Action = "upgrade"
	ReleaseUnchanged Action = "unchanged"
	// ReleaseUninstall: the installed generation deployed the release and
	// the bundle no longer has it.
	ReleaseUninstall Action = "uninstall"
)

// ReleaseChange is one release line of a plan: the release as it will be
// recorded (Revision is the installed one until it is deployed) and why it
// changes ("chart", "values", "manifests", "not recorded", "revision N
// deployed by someone else", ...).
type ReleaseChange struct {
	Action Action `json:"action"`
	Release
	Reasons []string `json:"reasons,omitempty"`
}

// Deployer deploys a bundle's charts into a cluster (package cluster
// implements it; installer stays free of Helm). PlanReleases only reads the
// cluster; Deploy installs or upgrades the changed releases in order and
// returns every release as it is now, unchanged ones included. Install
// records them in the new generation only when Deploy succeeded.
type Deployer interface {
	PlanReleases(ctx context.Context, a *bundle.Archive, g *bundle.Graph, installed []Release) ([]ReleaseChange, error)
	Deploy(ctx context.Context, a *bundle.Archive, changes []ReleaseChange) ([]Release, error)
}

// releaseChanges reports whether a release plan changes anything.
func releaseChanges(cs []ReleaseChange) bool {
	for _, c := range cs {
		if c.Action != ReleaseUnchanged {
			return true
		}
	}
	return false
}
