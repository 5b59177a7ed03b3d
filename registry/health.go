package registry

import (
	"context"
	"fmt"
	"strings"
)

// Health is what Store.Health found in a store: where its content lives and
// whether every placement of the installed bundle is served.
type Health struct {
	// KeptArchives are the bundle archives kept in the store.
	KeptArchives []string `json:"keptArchives,omitempty"`
	// CopiedBlobs and CopiedBytes are the blobs copied into the store.
	CopiedBlobs int   `json:"copiedBlobs"`
	CopiedBytes int64 `json:"copiedBytes"`
	// Served counts the placements whose tag and content resolve.
	Served int `json:"served"`
	// Problems name what does not resolve; empty when healthy.
	Problems []string `json:"problems,omitempty"`
}

// checkPlacements checks that every placement resolves through d: its
// tag names its digest and every manifest and blob it needs is there.
func checkPlacements(ctx context.Context, d *storeDriver, ps []Placement, h *Health) {
	for _, p := range ps {
		name := p.Repository
		if p.Tag != "" {
			name += ":" + p.Tag
			b, err := d.GetContent(ctx, tagCurrentPath(p.Repository, p.Tag))
			if err != nil || strings.TrimSpace(string(b)) != p.Digest.String() {
				h.Problems = append(h.Problems, fmt.Sprintf("%s does not name %s", name, p.Digest))
				continue
			}
		}
		ok := true
		for _, dg := range append(append(p.Manifests[:len(p.Manifests):len(p.Manifests)], p.Blobs...), p.Digest) {
			if _, err := d.Stat(ctx, blobDataPath(dg)); err != nil {
				h.Problems = append(h.Problems, fmt.Sprintf("%s: blob %s is missing", name, dg))
				ok = false
				break
			}
		}
		if ok {
			h.Served++
		}
	}
}
