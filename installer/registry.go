package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/registry"
)

// StoreRegistry is the Registry of an install root: distribution's
// filesystem storage at ROOT/var/lib/zdt/registry (what `zdt serve --root`
// serves), with each imported bundle's placements recorded under
// ROOT/var/lib/zdt/placements so a previous bundle can be served again
// (rollback) without its archive.
type StoreRegistry struct {
	root   string
	logger *slog.Logger
	// Concurrency bounds blobs copied or verified at once (default
	// GOMAXPROCS).
	Concurrency int
	// CopyBlobs copies every blob into the store even when the archive is
	// on the store's filesystem and could be kept there by a hard link
	// (registry.ImportOptions.LinkArchive), which is the default.
	CopyBlobs bool
}

// NewStoreRegistry returns the registry storage under an install root.
func NewStoreRegistry(root string, logger *slog.Logger) *StoreRegistry {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &StoreRegistry{root: root, logger: logger}
}

func (r *StoreRegistry) store() string { return registry.StoreDir(r.root) }

func (r *StoreRegistry) placementsDir() string {
	return filepath.Join(r.root, StateDir, "placements")
}

func (r *StoreRegistry) placementsFile(root digest.Digest) string {
	return filepath.Join(r.placementsDir(), root.Encoded()+".json")
}

// Import keeps the archive in the store (a hard link, after verifying it)
// or, when it is on another filesystem or CopyBlobs is set, copies the
// blobs the store lacks; then it links its repositories and tags and
// records its placements.
func (r *StoreRegistry) Import(ctx context.Context, a *bundle.Archive, progress func(done, total int64)) error {
	res, err := registry.Import(ctx, a, r.store(), registry.ImportOptions{Concurrency: r.Concurrency, Logger: r.logger, Progress: progress, LinkArchive: !r.CopyBlobs})
	if err != nil {
		return err
	}
	b, err := json.Marshal(res.Placements)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(r.root)
	if err != nil {
		return err
	}
	defer root.Close()
	rel := path.Join(StateDir, "placements", a.Root.Digest.Encoded()+".json")
	if old, err := root.ReadFile(rel); err == nil && string(old) == string(b) {
		return nil
	}
	return fsutil.WriteFileAtomic(root, rel, b, 0o644)
}

func (r *StoreRegistry) placements(root digest.Digest) ([]registry.Placement, error) {
	b, err := os.ReadFile(r.placementsFile(root))
	if err != nil {
		return nil, fmt.Errorf("placements of bundle %s: %w", root, err)
	}
	var ps []registry.Placement
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("placements of bundle %s: %w", root, err)
	}
	return ps, nil
}

// recorded lists the bundle roots whose placements are recorded.
func (r *StoreRegistry) recorded() ([]digest.Digest, error) {
	ents, err := os.ReadDir(r.placementsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, e := range ents {
		if hex, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasPrefix(hex, ".") {
			out = append(out, digest.NewDigestFromEncoded(digest.SHA256, hex))
		}
	}
	return out, nil
}

// Activate serves exactly root's items under their names: its kept
// archive is made the active one, or (blobs copied) its links are
// (re)created, and every other recorded bundle keeps only its root
// repository (all its content by digest, for a later rollback).
func (r *StoreRegistry) Activate(ctx context.Context, root digest.Digest) error {
	ps, err := r.placements(root)
	if err != nil {
		return err
	}
	if _, kept := registry.KeptArchive(r.store(), root); !kept {
		if _, err := registry.Link(ctx, r.store(), ps); err != nil {
			return err
		}
	}
	if err := registry.SetActive(r.store(), root); err != nil { // none when not kept
		return err
	}
	others, err := r.recorded()
	if err != nil {
		return err
	}
	keep := append([]registry.Placement(nil), ps...)
	var remove []registry.Placement
	for _, o := range others {
		if o == root {
			continue
		}
		ops, err := r.placements(o)
		if err != nil {
			return err
		}
		remove = append(remove, ops...)
		keep = append(keep, registry.BundleOnly(ops)...)
	}
	if len(remove) == 0 {
		return nil
	}
	_, err = registry.Prune(ctx, r.store(), registry.PruneOptions{Remove: remove, Keep: keep, Logger: r.logger})
	return err
}

// Prune deletes every recorded bundle not in keep (nor the base of a delta
// in keep): its links, its placements record, its kept archive, and the
// blobs no kept bundle references.
func (r *StoreRegistry) Prune(ctx context.Context, keep []digest.Digest) error {
	all, err := r.recorded()
	if err != nil {
		return err
	}
	kept := map[digest.Digest]bool{}
	// A kept bundle that is a delta needs its base (and that its own).
	for len(keep) > 0 {
		k := keep[0]
		keep = keep[1:]
		if kept[k] {
			continue
		}
		kept[k] = true
		if b := registry.KeptBase(ctx, r.store(), k); b != "" {
			keep = append(keep, b)
		}
	}
	var remove, keepPs []registry.Placement
	var drop []digest.Digest
	for _, d := range all {
		ps, err := r.placements(d)
		if err != nil {
			return err
		}
		if kept[d] {
			keepPs = append(keepPs, ps...)
		} else {
			remove = append(remove, ps...)
			drop = append(drop, d)
		}
	}
	if len(remove) == 0 {
		return nil
	}
	if _, err := registry.Prune(ctx, r.store(), registry.PruneOptions{Remove: remove, Keep: keepPs, Logger: r.logger}); err != nil {
		return err
	}
	for _, d := range drop {
		// The kept archive goes before the record that names it, so a
		// crash in between leaves a record whose content is gone from
		// the store, not an archive nothing will ever remove.
		if err := registry.RemoveKeptArchive(r.store(), d); err != nil {
			return err
		}
		if err := os.Remove(r.placementsFile(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
