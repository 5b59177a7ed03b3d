package registry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Health is what Check found in a store: where its content lives and
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

// Check reads the store at storeDir the way `zdt serve --root` does and
// checks that every placement resolves: its tag names its digest and every
// manifest and blob it needs is there (kept or copied). It reads link files
// and stats blobs; it does not hash blob content (install did).
func Check(ctx context.Context, storeDir string, ps []Placement) (Health, error) {
	var h Health
	if _, err := os.Stat(storeDir); err != nil {
		return h, fmt.Errorf("registry store: %w", err)
	}
	var err error
	if h.CopiedBlobs, h.CopiedBytes, err = countBlobs(storeDir); err != nil {
		return h, err
	}
	h.KeptArchives, _ = filepath.Glob(filepath.Join(storeDir, keptDir, "*.zdt"))
	d, err := newStoreDriver(ctx, storeDir, nil)
	if err != nil {
		return h, err
	}
	defer d.Close()
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
	return h, nil
}
