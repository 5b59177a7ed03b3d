package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sort"
	"strconv"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// Registry is the registry storage an install fills and `zdt serve`
// serves; registry.Store implements it. Import adds content without
// changing what is served; Activate makes the served tags exactly those of
// one imported bundle (and refuses content damaged since its import);
// Prune deletes content only other bundles reach.
type Registry interface {
	Import(ctx context.Context, a *bundle.Archive, opts registry.ImportOptions) (registry.ImportResult, error)
	Activate(ctx context.Context, root digest.Digest) error
	Prune(ctx context.Context, keep []digest.Digest) error
}

// Options tune Install. Every zero field has the documented default.
type Options struct {
	// Root is the directory everything is installed under (default "/").
	Root string
	// PlanOnly computes the plan and writes nothing.
	PlanOnly bool
	// VerifySignature checks the bundle's signature against the trust
	// policy; it runs before anything else (nil: the caller checked it).
	VerifySignature func(ctx context.Context, a *bundle.Archive) error
	// Registry receives the bundle's images, charts and artifacts (nil:
	// registry steps are skipped).
	Registry Registry
	// ServeAddr is where `zdt serve` listens, for the mirror configuration
	// (default DefaultServeAddr).
	ServeAddr string
	// AMIExportDir, if set, receives each AMI's disk image and metadata.
	AMIExportDir string
	// ToolVersion is written into generated files (default "dev").
	ToolVersion string
	// Logger receives progress messages (default: discard).
	Logger *slog.Logger
	// Progress is called with bytes imported so far and the total.
	Progress func(done, total int64)
}

// placeConcurrency is how many files are placed at once.
const placeConcurrency = 3

// Result says what Install did.
type Result struct {
	Plan *Plan `json:"plan"`
	// Generation is the generation now current (0 if nothing was installed).
	Generation int `json:"generation"`
	// Applied is false when the plan had no changes or PlanOnly was set.
	Applied bool `json:"applied"`
	// FilesWritten counts files placed, restored or generated.
	FilesWritten int `json:"filesWritten"`
}

func (o *Options) defaults() {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.ServeAddr == "" {
		o.ServeAddr = DefaultServeAddr
	}
	if o.ToolVersion == "" {
		o.ToolVersion = "dev"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Install verifies a (signature-checked) bundle's structure, plans it
// against the recorded state and applies the plan: registry content, files,
// generated configuration, AMI export, pruning, and finally the new
// generation. Installing the current bundle again writes nothing. A failure
// or crash at any point leaves the previous generation current; running
// Install again converges.
//
// Paths under the root go through an os.Root: one that leads out of it
// through a symlink is refused with an error matching
// fsutil.ErrOutsideRoot (registry.ErrOutsideRoot).
func Install(ctx context.Context, a *bundle.Archive, opts Options) (Result, error) {
	res, err := installBundle(ctx, a, opts)
	return res, fsutil.MarkOutside(err)
}

func installBundle(ctx context.Context, a *bundle.Archive, opts Options) (Result, error) {
	opts.defaults()
	if opts.VerifySignature != nil {
		if err := opts.VerifySignature(ctx, a); err != nil {
			return Result{}, err
		}
	}
	g, err := a.Walk(ctx)
	if err != nil {
		return Result{}, err
	}
	desired, layers, err := desiredItems(ctx, a, g)
	if err != nil {
		return Result{}, err
	}
	root, err := os.OpenRoot(opts.Root)
	if err != nil {
		return Result{}, fmt.Errorf("opening root %s: %w", opts.Root, err)
	}
	defer root.Close()
	bundleName := a.Config.Name + " " + a.Config.Version

	// planFor is the plan against the current generation cur.
	planFor := func(cur *Generation) (Result, error) {
		plan, err := makePlan(root, cur, desired, bundleName, a.Root.Digest.String())
		if err != nil {
			return Result{}, err
		}
		res := Result{Plan: plan}
		if cur != nil {
			res.Generation = cur.Number
		}
		return res, nil
	}
	if opts.PlanOnly { // no lock, nothing created
		cur, err := readCurrent(root)
		if err != nil {
			return Result{}, err
		}
		return planFor(cur)
	}

	st, err := openState(root)
	if err != nil {
		return Result{}, err
	}
	defer st.close()
	cur, err := st.current()
	if err != nil {
		return Result{}, err
	}
	res, err := planFor(cur)
	if err != nil {
		return Result{}, err
	}
	plan := res.Plan
	gen := genContext{
		header:      Header(opts.ToolVersion, a.Config.Name, a.Config.Version, a.Root.Digest.String()),
		toolVersion: opts.ToolVersion, bundleDigest: a.Root.Digest.String(),
		serveAddr: opts.ServeAddr, rootDir: "/", items: desired,
	}
	files := generatedFiles(gen)
	if !plan.HasChanges() && generatedUpToDate(root, files) {
		opts.Logger.Info("already installed; nothing to do", "generation", cur.Number, "bundle", a.Root.Digest)
		return res, nil
	}

	if err := fsutil.RemoveTemps(root, tempDirs(cur, desired, files)); err != nil {
		return Result{}, err
	}
	next, err := st.nextNumber()
	if err != nil {
		return Result{}, err
	}
	if cur != nil {
		if err := backupState(root, cur, next); err != nil {
			return Result{}, err
		}
	}
	installed := map[string]ItemState{}
	if cur != nil {
		for _, it := range cur.Items {
			installed[it.key()] = it
		}
	}

	// 1. Registry content (the archive kept, or only new blobs copied) and
	// 2. files run side by side: hashing and disk writes of different
	// bytes, neither depending on the other.
	byKey := map[string]Change{}
	for _, c := range plan.Changes {
		byKey[c.Kind+" "+c.Name] = c
	}
	// A path may change hands: an item moves away from it or is removed
	// while another item is placed there. Before anything is placed, each
	// old file whose path nobody takes any more is removed, and one whose
	// path another item takes is only kept in the file store (for
	// rollback): its new owner replaces it atomically.
	newTargets := map[string]bool{}
	for _, it := range desired {
		if it.Kind == manifests.KindFile {
			newTargets[it.Target] = true
		}
	}
	vacate := func(old ItemState) error {
		if newTargets[old.Target] {
			return keepVersion(ctx, root, old.Target, old.FileDigest)
		}
		return removeFile(ctx, root, old)
	}
	for _, it := range desired {
		if old := installed[it.key()]; it.Kind == manifests.KindFile && old.Target != "" && old.Target != it.Target {
			if err := vacate(old); err != nil {
				return Result{}, err
			}
		}
	}
	for _, c := range plan.Changes {
		if old := installed[c.Kind+" "+c.Name]; c.Action == ActionRemove && c.Kind == manifests.KindFile && newTargets[old.Target] {
			if err := vacate(old); err != nil {
				return Result{}, err
			}
		}
	}

	// From the import on until the generation is recorded, a failure
	// serves the current generation's bundle again (its tags, its kept
	// archive active): nothing of an uncommitted generation stays active.
	committed := false
	if opts.Registry != nil && cur != nil {
		defer func() {
			if !committed {
				if err := opts.Registry.Activate(context.WithoutCancel(ctx), digest.Digest(cur.BundleDigest)); err != nil {
					opts.Logger.Error("serving the installed generation again", "generation", cur.Number, "err", err)
				}
			}
		}()
	}
	eg, ectx := errgroup.WithContext(ctx)
	filesSem := make(chan struct{}, placeConcurrency)
	if opts.Registry != nil {
		eg.Go(func() error {
			opts.Logger.Info("importing into the registry storage")
			if _, err := opts.Registry.Import(ectx, a, registry.ImportOptions{Progress: opts.Progress, Logger: opts.Logger}); err != nil {
				return fmt.Errorf("importing %s: %w", a.Root.Digest, err)
			}
			return nil
		})
	}
	// Files are placed a few at a time: each is decompressed and hashed
	// (CPU) and fsynced (disk), so several in flight keep both busy.
	var filesWritten atomic.Int64
	for i, it := range desired {
		if it.Kind != manifests.KindFile {
			continue
		}
		c := byKey[it.key()]
		old := installed[it.key()]
		if c.Action == ActionUnchanged {
			desired[i].Placed = old.Placed
			continue
		}
		eg.Go(func() error {
			filesSem <- struct{}{}
			defer func() { <-filesSem }()
			opts.Logger.Info("placing file", "target", it.Target, "action", c.Action)
			oldDigest := ""
			if old.Target == it.Target {
				oldDigest = old.FileDigest
			}
			placed, err := placeFile(ectx, root, a, it, layers[it.key()], oldDigest)
			if err != nil {
				return err
			}
			desired[i].Placed = placed
			filesWritten.Add(1)
			return nil
		})
	}
	err = eg.Wait()
	res.FilesWritten += int(filesWritten.Load())
	if err != nil {
		return Result{}, err
	}
	// 3. Generated configuration.
	n, err := writeGenerated(root, files, cur)
	if err != nil {
		return Result{}, err
	}
	res.FilesWritten += n
	// 4. AMIs.
	if opts.AMIExportDir != "" {
		for _, it := range desired {
			if it.Kind == manifests.KindAMI {
				if err := exportAMI(ctx, a, it, layers[it.key()], opts.AMIExportDir); err != nil {
					return Result{}, err
				}
			}
		}
	}
	// 5. What the new bundle no longer has.
	for _, c := range plan.Changes {
		if c.Action == ActionRemove && c.Kind == manifests.KindFile && !newTargets[installed[c.Kind+" "+c.Name].Target] {
			opts.Logger.Info("removing file", "target", c.Target)
			if err := removeFile(ctx, root, installed[c.Kind+" "+c.Name]); err != nil {
				return Result{}, err
			}
		}
	}
	if opts.Registry != nil {
		if err := opts.Registry.Activate(ctx, a.Root.Digest); err != nil {
			return Result{}, fmt.Errorf("activating %s in the registry: %w", a.Root.Digest, err)
		}
		keep := []digest.Digest{a.Root.Digest}
		if cur != nil {
			keep = append(keep, digest.Digest(cur.BundleDigest))
		}
		if err := opts.Registry.Prune(ctx, keep); err != nil {
			return Result{}, fmt.Errorf("pruning the registry: %w", err)
		}
	}
	// 6. Record.
	ng := &Generation{Number: next, BundleDigest: a.Root.Digest.String(), Name: a.Config.Name, Version: a.Config.Version,
		ToolVersion: opts.ToolVersion, Items: desired, Generated: hashes(files)}
	if cur != nil {
		ng.Previous = cur.Number
	}
	if err := st.record(ng); err != nil {
		return Result{}, err
	}
	committed = true
	res.Generation, res.Applied = next, true
	return res, nil
}

// readCurrent reads the current generation without locking or creating
// anything (for --plan and status).
func readCurrent(root *os.Root) (*Generation, error) {
	if _, err := root.Stat(StateDir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return (&state{root: root}).current()
}

func hashes(files map[string][]byte) map[string]string {
	out := map[string]string{}
	for p, b := range files {
		sum := sha256.Sum256(b)
		out[p] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return out
}

// generatedUpToDate reports whether every generated file has its content.
func generatedUpToDate(root *os.Root, files map[string][]byte) bool {
	for p, want := range files {
		got, err := root.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			return false
		}
	}
	return true
}

// writeGenerated writes the generated files whose content differs and
// removes those the previous generation wrote that are not generated any
// more. It returns the number of files written or removed.
func writeGenerated(root *os.Root, files map[string][]byte, cur *Generation) (int, error) {
	n := 0
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if got, err := root.ReadFile(p); err == nil && bytes.Equal(got, files[p]) {
			continue
		}
		if err := fsutil.WriteFileAtomic(root, p, files[p], 0o644); err != nil {
			return n, fmt.Errorf("writing %s: %w", p, err)
		}
		n++
	}
	if cur != nil {
		for p := range cur.Generated {
			if _, ok := files[p]; ok {
				continue
			}
			if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, fmt.Errorf("removing %s: %w", p, err)
			}
			n++
		}
	}
	return n, nil
}

// backupState copies the current generation record and the generated files
// into backups/<next>/ before an upgrade changes anything.
func backupState(root *os.Root, cur *Generation, next int) error {
	dir := path.Join(StateDir, "backups", strconv.Itoa(next))
	if err := root.RemoveAll(dir); err != nil { // left by an interrupted run
		return fmt.Errorf("backing up generation %d: %w", cur.Number, err)
	}
	b, err := root.ReadFile(path.Join(StateDir, "generations", strconv.Itoa(cur.Number)+".json"))
	if err != nil {
		return fmt.Errorf("backing up generation %d: %w", cur.Number, err)
	}
	if err := fsutil.WriteFileAtomic(root, path.Join(dir, "generation.json"), b, 0o644); err != nil {
		return fmt.Errorf("backing up generation %d: %w", cur.Number, err)
	}
	for p := range cur.Generated {
		data, err := root.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("backing up %s: %w", p, err)
		}
		if err := fsutil.WriteFileAtomic(root, path.Join(dir, "files", p), data, 0o644); err != nil {
			return fmt.Errorf("backing up %s: %w", p, err)
		}
	}
	return nil
}

// tempDirs lists every directory an install writes temp files in.
func tempDirs(cur *Generation, desired []ItemState, files map[string][]byte) []string {
	dirs := []string{StateDir, path.Join(StateDir, "generations"), path.Join(StateDir, "files", "sha256"), path.Join(StateDir, "placements")}
	items := desired
	if cur != nil {
		items = append(append([]ItemState(nil), desired...), cur.Items...)
		for p := range cur.Generated {
			dirs = append(dirs, path.Dir(p))
		}
	}
	for _, it := range items {
		if it.Target != "" {
			dirs = append(dirs, path.Dir(rel(it.Target)))
		}
	}
	for p := range files {
		dirs = append(dirs, path.Dir(p))
	}
	return dirs
}
