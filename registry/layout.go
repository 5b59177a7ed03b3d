package registry

import (
	"path"
	"sort"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/layout"
)

// Distribution's storage layout (registry/storage/paths.go), which Import
// writes, the archive driver synthesizes and distribution's filesystem
// driver serves:
//
//	/docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data
//	/docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
//	/docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
//	/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//	/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link
//
// A link file holds the digest string ("sha256:<hex>").
const (
	layoutRoot = "/" + layout.DistributionDir
	blobsRoot  = layoutRoot + "/blobs"
	reposRoot  = layoutRoot + "/repositories"
)

func blobDataPath(d digest.Digest) string {
	hex := d.Encoded()
	return path.Join(blobsRoot, d.Algorithm().String(), hex[:2], hex, "data")
}

func layerLinkPath(repo string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

func revisionLinkPath(repo string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_manifests/revisions", d.Algorithm().String(), d.Encoded(), "link")
}

func tagCurrentPath(repo, tag string) string {
	return path.Join(reposRoot, repo, "_manifests/tags", tag, "current/link")
}

func tagIndexPath(repo, tag string, d digest.Digest) string {
	return path.Join(reposRoot, repo, "_manifests/tags", tag, "index", d.Algorithm().String(), d.Encoded(), "link")
}

// link is one link file of the layout.
type link struct {
	path   string
	target digest.Digest
}

// layoutLinks lists the link files that serve placements: each repository's
// layer and revision links and its tags. When two placements give the same
// repository:tag, the later one wins. Sorted by path, no duplicates.
func layoutLinks(ps []Placement) []link {
	m := map[string]digest.Digest{}
	tags := map[string]string{} // repo:tag current path → index path of the winner
	for _, p := range ps {
		for _, d := range p.Blobs {
			m[layerLinkPath(p.Repository, d)] = d
		}
		for _, d := range p.Manifests {
			m[revisionLinkPath(p.Repository, d)] = d
		}
		if p.Tag != "" {
			cur := tagCurrentPath(p.Repository, p.Tag)
			if old, ok := tags[cur]; ok {
				delete(m, old)
			}
			idx := tagIndexPath(p.Repository, p.Tag, p.Digest)
			m[cur], m[idx], tags[cur] = p.Digest, p.Digest, idx
		}
	}
	out := make([]link, 0, len(m))
	for p, d := range m {
		out = append(out, link{p, d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}
