package registry

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"

	"github.com/distribution/distribution/v3/registry/storage"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// PruneOptions say what PrunePlacements removes. Remove are the placements of what is
// no longer installed (typically the previous generation's, from
// Placements); Keep those still installed. A link that both name is kept,
// so passing the old and the new generation as they are is right.
type PruneOptions struct {
	Remove []Placement
	Keep   []Placement
	// DryRun reports what would be removed without removing it.
	DryRun bool
	// Logger receives what is done (default: the store's).
	Logger *slog.Logger
}

// PruneResult says what PrunePlacements removed (or would remove, with DryRun).
type PruneResult struct {
	// LinksRemoved counts repository/tag link files removed.
	LinksRemoved int
	// TagsRemoved are the repository:tag names untagged.
	TagsRemoved []string
	// BlobsDeleted and BytesFreed are what garbage collection deleted.
	BlobsDeleted int
	BytesFreed   int64
}

// PrunePlacements untags and unlinks the placements of items no longer
// installed, removes repositories left empty, then runs distribution's
// mark and sweep (registry/storage.MarkAndSweep) on the store so blobs no
// repository references any more are deleted. Content pushed by users
// into other repositories is not touched. Do not run it while `zdt serve`
// is accepting pushes into the same store.
func (s *Store) PrunePlacements(ctx context.Context, opts PruneOptions) (PruneResult, error) {
	if opts.Logger == nil {
		opts.Logger = s.opts.Logger
	}
	var res PruneResult
	root, storeDir := s.dir, s.path
	keep := map[string]bool{}
	keepTags := map[string]bool{}
	for _, l := range layoutLinks(opts.Keep) {
		keep[l.path] = true
	}
	for _, p := range opts.Keep {
		if p.Tag != "" {
			keepTags[p.Repository+":"+p.Tag] = true
		}
	}
	touched := map[string]bool{} // directories that may now be empty
	for _, p := range opts.Remove {
		if p.Tag == "" || keepTags[p.Repository+":"+p.Tag] {
			continue
		}
		dir := strings.TrimPrefix(path.Dir(path.Dir(tagCurrentPath(p.Repository, p.Tag))), "/")
		if _, err := root.Stat(dir); err != nil {
			continue
		}
		res.TagsRemoved = append(res.TagsRemoved, p.Repository+":"+p.Tag)
		if !opts.DryRun {
			if err := root.RemoveAll(dir); err != nil {
				return res, fmt.Errorf("untagging %s:%s: %w", p.Repository, p.Tag, err)
			}
		}
		touched[path.Dir(dir)] = true
	}
	for _, l := range layoutLinks(opts.Remove) {
		if keep[l.path] || strings.Contains(l.path, "/_manifests/tags/") {
			continue
		}
		rel := strings.TrimPrefix(l.path, "/")
		if _, err := root.Stat(rel); err != nil {
			continue
		}
		res.LinksRemoved++
		if !opts.DryRun {
			if err := root.Remove(rel); err != nil {
				return res, fmt.Errorf("unlinking %s: %w", l.path, err)
			}
		}
		touched[path.Dir(rel)] = true
	}
	if !opts.DryRun {
		stop := strings.TrimPrefix(reposRoot, "/")
		for dir := range touched {
			removeEmptyDirs(root, dir, stop)
		}
	}
	if !opts.DryRun {
		if err := repairRepositories(root); err != nil {
			return res, err
		}
	}
	before, beforeBytes, err := countBlobs(root)
	if err != nil {
		return res, err
	}
	// Manifests may be in kept archives: mark reads them there; sweep only
	// lists (and deletes) blobs copied into the store.
	drv, err := newStoreDriver(ctx, s, opts.Logger)
	if err != nil {
		return res, err
	}
	defer drv.Close()
	ns, err := storage.NewRegistry(ctx, drv, storage.EnableDelete)
	if err != nil {
		return res, fmt.Errorf("opening store: %w", err)
	}
	if before > 0 {
		if err := storage.MarkAndSweep(ctx, drv, ns, storage.GCOpts{DryRun: opts.DryRun, Quiet: true}); err != nil {
			return res, fmt.Errorf("garbage-collecting the store: %w", err)
		}
	}
	after, afterBytes, err := countBlobs(root)
	if err != nil {
		return res, err
	}
	res.BlobsDeleted, res.BytesFreed = before-after, beforeBytes-afterBytes
	opts.Logger.Info("pruned registry store", "store", storeDir, "tags", len(res.TagsRemoved), "links", res.LinksRemoved,
		"blobsDeleted", res.BlobsDeleted, "bytesFreed", res.BytesFreed, "dryRun", opts.DryRun)
	return res, nil
}

// repairRepositories gives every repository both its _manifests and its
// _layers directory. A prune or import killed half-way can leave one of
// them removed (or not yet created), and distribution's mark and sweep
// fails on a repository that lacks either.
func repairRepositories(root *os.Root) error {
	repos := strings.TrimPrefix(reposRoot, "/")
	if _, err := root.Stat(repos); err != nil {
		return nil
	}
	var fix []string
	err := fs.WalkDir(root.FS(), repos, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		switch path.Base(p) {
		case "_manifests", "_layers", "_uploads":
			fix = append(fix, path.Dir(p))
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("checking repositories: %w", err)
	}
	for _, repo := range fix {
		for _, sub := range []string{"_manifests", "_layers"} {
			if err := root.MkdirAll(path.Join(repo, sub), 0o755); err != nil {
				return fmt.Errorf("repairing repository %s: %w", repo, err)
			}
		}
	}
	return nil
}

// removeEmptyDirs removes dir and its parents while they are empty, up to
// (not including) stop.
func removeEmptyDirs(root *os.Root, dir, stop string) {
	for dir != stop && strings.HasPrefix(dir, stop+"/") {
		f, err := root.Open(dir)
		if err != nil {
			return
		}
		names, _ := f.Readdirnames(1)
		f.Close()
		if len(names) > 0 || root.Remove(dir) != nil {
			return
		}
		dir = path.Dir(dir)
	}
}

// countBlobs counts the blob data files of a store and their bytes,
// through its os.Root (a blobs directory leading out of it is an error).
func countBlobs(store *os.Root) (int, int64, error) {
	var n int
	var size int64
	err := fs.WalkDir(store.FS(), layout.BlobsDir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("counting blobs: %w", outsideErr(err))
		}
		if !d.IsDir() && d.Name() == "data" {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n++
			size += fi.Size()
		}
		return nil
	})
	return n, size, err
}

// outsideErr marks os.Root's refusal of an escaping path as ErrOutsideRoot.
func outsideErr(err error) error { return fsutil.MarkOutside(err) }
