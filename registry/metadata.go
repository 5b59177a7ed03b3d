package registry

import (
	"context"
	"slices"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// MetadataPlacements are what a store serves of a bundle whose layers it
// does not hold (`zdt install --from` without --replicate), given the
// bundle's placements (Placements):
//
//   - each image placement with its tag, every manifest it reaches and
//     the images' configs, but not their layers: the store answers the
//     image's tag and manifests from the signed bundle, and its layers
//     with 404 BLOB_UNKNOWN, which a container runtime then fetches by
//     digest from the registry the bundle came from;
//   - the bundle's root placement, untagged, with every manifest of the
//     bundle and those configs: once another bundle is active, Activate
//     keeps the bundle repositories of the others (BundleOnly), so a
//     rollback to this one finds its metadata still in the store.
//
// Files, charts, AMIs and the signature attachments are not placed, nor
// the bundle's tag: the store does not serve this bundle, which it could
// not give whole. The result is a subset of ps, each placement's blobs
// sorted as before.
func MetadataPlacements(ctx context.Context, a *bundle.Archive, ps []Placement) ([]Placement, error) {
	g, err := a.Walk(ctx)
	if err != nil {
		return nil, err
	}
	configs := map[digest.Digest]bool{}
	for _, p := range ps {
		if p.Kind != manifests.KindImage {
			continue
		}
		for _, m := range p.Manifests {
			for _, e := range g.Children[m] {
				if e.Role == "config" {
					configs[e.Desc.Digest] = true
				}
			}
		}
	}
	onlyConfigs := func(bs []digest.Digest) []digest.Digest {
		out := []digest.Digest{}
		for _, b := range bs {
			if configs[b] {
				out = append(out, b)
			}
		}
		return out
	}
	var out []Placement
	for _, p := range ps {
		switch p.Kind {
		case manifests.KindImage:
			p.Blobs = onlyConfigs(p.Blobs)
		case KindBundle:
			p.Tag, p.Blobs = "", sortedKeys(configs)
		default:
			continue
		}
		p.Manifests = slices.Clone(p.Manifests)
		out = append(out, p)
	}
	return out, nil
}
