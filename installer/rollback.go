package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// ErrNoPrevious is returned by Rollback when there is nothing to go back to.
var ErrNoPrevious = errors.New("no previous generation to roll back to")

// Rollback returns to the generation the current one replaced: its files
// are restored byte for byte from the file store, its generated files from
// the backup taken before the upgrade, and its bundle is activated in the
// registry. It is recorded as a new generation (so a second rollback goes
// forward again).
func Rollback(ctx context.Context, opts Options) (Result, error) {
	res, err := rollback(ctx, opts)
	return res, fsutil.MarkOutside(err)
}

func rollback(ctx context.Context, opts Options) (Result, error) {
	opts.defaults()
	root, err := os.OpenRoot(opts.Root)
	if err != nil {
		return Result{}, err
	}
	defer root.Close()
	st, err := openState(root)
	if err != nil {
		return Result{}, err
	}
	defer st.close()
	cur, err := st.current()
	if err != nil {
		return Result{}, err
	}
	if cur == nil {
		return Result{}, ErrNoGeneration
	}
	if cur.Previous == 0 {
		return Result{}, ErrNoPrevious
	}
	prev, err := st.generation(cur.Previous)
	if err != nil {
		return Result{}, err
	}
	next, err := st.nextNumber()
	if err != nil {
		return Result{}, err
	}
	if err := backupState(root, cur, next); err != nil {
		return Result{}, err
	}
	res := Result{Generation: cur.Number}
	items, n, err := restoreFiles(ctx, root, cur, prev)
	res.FilesWritten += n
	if err != nil {
		return Result{}, err
	}
	// Generated files as they were before cur was installed.
	backup := path.Join(layout.Backup(cur.Number), "files")
	files := map[string][]byte{}
	for p := range prev.Generated {
		b, err := root.ReadFile(path.Join(backup, p))
		if err != nil {
			return Result{}, fmt.Errorf("restoring %s: no backup: %w", p, err)
		}
		files[p] = b
	}
	n, err = writeGenerated(root, files, cur)
	if err != nil {
		return Result{}, err
	}
	res.FilesWritten += n
	if opts.Registry != nil {
		if err := opts.Registry.Activate(ctx, digest.Digest(prev.BundleDigest)); err != nil {
			return Result{}, fmt.Errorf("activating %s in the registry: %w", prev.BundleDigest, err)
		}
	}
	ng := *prev
	ng.Number, ng.Previous, ng.Items = next, cur.Number, items
	if err := st.record(&ng); err != nil {
		return Result{}, err
	}
	res.Generation, res.Applied = next, true
	return res, nil
}

// restoreFiles puts prev's files back in place of cur's and returns prev's
// items as now placed, and the files written or removed.
//
// Current files at paths the previous generation does not use go first
// (kept in the file store); a path it uses is replaced atomically by the
// restore, its current file kept first. So a path that changed hands
// between the two generations gets its previous owner back.
func restoreFiles(ctx context.Context, root *os.Root, cur, prev *Generation) ([]ItemState, int, error) {
	n := 0
	prevTargets := map[string]bool{}
	for _, it := range prev.Items {
		if it.Kind == manifests.KindFile {
			prevTargets[it.Target] = true
		}
	}
	for _, it := range cur.Items {
		if it.Kind != manifests.KindFile {
			continue
		}
		if !prevTargets[it.Target] {
			if err := removeFile(ctx, root, it); err != nil {
				return nil, n, err
			}
			n++
		} else if err := keepVersion(ctx, root, it.Target, it.FileDigest); err != nil {
			return nil, n, err
		}
	}
	items := append([]ItemState(nil), prev.Items...)
	for i, it := range items {
		if it.Kind != manifests.KindFile {
			continue
		}
		if ok, err := fileMatches(root, it, it.Placed); err != nil {
			return nil, n, err
		} else if ok {
			continue
		}
		placed, err := restoreFile(ctx, root, it)
		if err != nil {
			return nil, n, err
		}
		items[i].Placed = placed
		n++
	}
	return items, n, nil
}

// Status is what `zdt status` reports.
type Status struct {
	Installed  bool           `json:"installed"`
	Generation *Generation    `json:"current,omitempty"`
	Counts     map[string]int `json:"counts,omitempty"`
	Drift      []string       `json:"drift,omitempty"` // files that differ from what was installed
	History    []int          `json:"generations,omitempty"`
	// Registry is the health of the registry storage (nil when the
	// installed bundle put nothing there).
	Registry *registry.Health  `json:"registry,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

// Healthy reports whether nothing is wrong with what is installed: no
// installed or generated file drifted and the registry storage serves the
// installed bundle whole (true when nothing is installed).
func (s Status) Healthy() bool {
	return len(s.Drift) == 0 && (s.Registry == nil || len(s.Registry.Problems) == 0)
}

// GetStatus reads the state under root without writing anything.
func GetStatus(ctx context.Context, rootDir string) (Status, error) {
	if rootDir == "" {
		rootDir = "/"
	}
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return Status{}, err
	}
	defer root.Close()
	cur, err := readCurrent(root)
	if err != nil || cur == nil {
		return Status{}, err
	}
	s := Status{Installed: true, Generation: cur, Counts: map[string]int{}}
	for _, it := range cur.Items {
		s.Counts[it.Kind]++
		if it.Kind == manifests.KindFile {
			ok, err := fileMatches(root, it, it.Placed)
			if err != nil {
				return Status{}, err
			}
			if !ok {
				s.Drift = append(s.Drift, it.Target)
			}
		}
	}
	for p, want := range cur.Generated {
		b, err := root.ReadFile(p)
		if err != nil || hashes(map[string][]byte{p: b})[p] != want {
			s.Drift = append(s.Drift, "/"+p)
		}
	}
	s.History, _ = (&state{root: root}).generations()
	s.Registry = registryHealth(ctx, root, rootDir, digest.Digest(cur.BundleDigest))
	return s, nil
}

// registryHealth is the health of the registry store under root for the
// bundle whose root is d (nil when d put nothing there).
func registryHealth(ctx context.Context, root *os.Root, rootDir string, d digest.Digest) *registry.Health {
	if _, err := root.Stat(layout.Placements(d)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	problem := func(err error) *registry.Health { return &registry.Health{Problems: []string{err.Error()}} }
	store, err := registry.OpenStore(rootDir, registry.StoreOptions{ReadOnly: true})
	if err != nil {
		return problem(fmt.Errorf("registry store: %w", err))
	}
	defer store.Close()
	ps, err := store.Recorded(d)
	if err != nil {
		return problem(err)
	}
	h, err := store.Health(ctx, ps)
	if err != nil {
		h.Problems = append(h.Problems, err.Error())
	}
	return &h
}

// Uninstall removes every file and generated file of the current
// generation and zdt's whole state directory (registry storage included).
func Uninstall(ctx context.Context, opts Options) (Result, error) {
	opts.defaults()
	root, err := os.OpenRoot(opts.Root)
	if err != nil {
		return Result{}, err
	}
	defer root.Close()
	st, err := openState(root)
	if err != nil {
		return Result{}, err
	}
	cur, err := st.current()
	if err != nil {
		st.close()
		return Result{}, err
	}
	res := Result{}
	if cur != nil {
		for _, it := range cur.Items {
			if it.Kind != manifests.KindFile {
				continue
			}
			if err := root.Remove(rel(it.Target)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				st.close()
				return Result{}, fmt.Errorf("removing %s: %w", it.Target, err)
			}
			res.FilesWritten++
		}
		for p := range cur.Generated {
			if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				st.close()
				return Result{}, fmt.Errorf("removing %s: %w", p, err)
			}
			res.FilesWritten++
		}
	}
	st.close()
	if err := root.RemoveAll(StateDir); err != nil {
		return res, fmt.Errorf("removing %s: %w", StateDir, err)
	}
	res.Applied = true
	return res, ctx.Err()
}
