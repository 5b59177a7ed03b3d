package installer

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// ErrNoPrevious is returned by Rollback when there is nothing to go back to.
var ErrNoPrevious = errors.New("no previous generation to roll back to")

// Rollback returns the bundle opts.Name (or the only installed one) to
// the generation its current one replaced: its files are restored byte for
// byte from the file store, the generated files are written for it and
// the other installed bundles, and its bundle is activated in the
// registry beside theirs. Other bundles' files and images are not
// touched. It is recorded as a new generation (so a second rollback goes
// forward again). When the releases change and the Deployer is a
// Backuper, the cluster is backed up before anything is written, as
// Install does, and the new generation records it; a failed backup stops
// the rollback with nothing changed.
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
	installed, err := st.installed()
	if err != nil {
		return Result{}, err
	}
	cur, err := resolve(installed, opts.Name)
	if err != nil {
		return Result{}, err
	}
	if cur.Previous == 0 {
		return Result{}, fmt.Errorf("%s: %w", cur.Name, ErrNoPrevious)
	}
	prev, err := st.generation(cur.Previous)
	if err != nil {
		return Result{}, err
	}
	if prev.Name != cur.Name { // a root from before bundles were keyed by name
		return Result{}, fmt.Errorf("%s: %w (generation %d before it is of bundle %s)", cur.Name, ErrNoPrevious, prev.Number, prev.Name)
	}
	if err := checkReleaseManager(opts, "rolling back "+cur.Name, cur.Releases, prev.Releases); err != nil {
		return Result{}, err
	}
	rest := others(installed, cur.Name)
	// The registry side is checked before anything is written: a
	// generation it cannot serve stops the rollback here.
	if opts.Registry != nil {
		if !prev.inRegistry() {
			return Result{}, &NotServableError{Name: prev.Name, Generation: prev.Number, Digest: prev.BundleDigest,
				Err: fmt.Errorf("installed from %s by a zdt that imported none of it into the registry storage; install it again instead: zdt install --from %s", prev.Source.Registry, prev.Source.Reference)}
		}
		if err := checkServable(opts.Registry, append(slices.Clone(rest), prev)); err != nil {
			return Result{}, err
		}
	}
	next, err := st.nextNumber()
	if err != nil {
		return Result{}, err
	}
	// The cluster is backed up before anything is written: a failed
	// backup stops the rollback here.
	backup, err := takeClusterBackup(ctx, root, opts, next, rollbackChanges(cur.Releases, prev.Releases))
	if err != nil {
		return Result{}, err
	}
	if err := backupState(root, cur, next); err != nil {
		return Result{}, err
	}
	res := Result{Generation: cur.Number, Backup: backup}
	items, n, err := restoreFiles(ctx, root, cur, prev)
	res.FilesWritten += n
	if err != nil {
		return Result{}, err
	}
	n, agent, err := rollbackGenerated(root, opts, cur, prev, rest, installed)
	res.FilesWritten += n
	if err != nil {
		return Result{}, err
	}
	// The zdt binary prev placed, when it placed one.
	if prev.Binary != "" {
		rec, err := readBinaryRecord(root)
		if err != nil {
			return Result{}, err
		}
		ok := false
		if rec.Digest == prev.Binary {
			if ok, err = binaryMatches(root, rec.Digest, rec.Size, rec.Placed); err != nil {
				return Result{}, err
			}
		}
		if !ok {
			if err := placeBinary(ctx, root, prev.Binary, nil); err != nil {
				return Result{}, err
			}
			res.FilesWritten++
		}
	}
	if opts.Registry != nil {
		if err := opts.Registry.Activate(ctx, append(roots(rest), roots([]*Generation{prev})...)...); err != nil {
			return Result{}, fmt.Errorf("activating %s in the registry: %w", prev.BundleDigest, err)
		}
	}
	ng := *prev
	ng.Number, ng.Previous, ng.Items, ng.Agent, ng.Backup = next, cur.Number, items, agent, backup
	// The releases last: prev's images are served and its files placed.
	if ng.Releases, res.Releases, err = rollbackReleases(ctx, opts, cur, prev); err != nil {
		return Result{}, err
	}
	if err := st.record(&ng); err != nil {
		return Result{}, err
	}
	res.Generation, res.Applied = next, true
	return res, nil
}

// rollbackGenerated writes the generated files for prev beside the other
// installed bundles (rest). With no other bundle they are what prev wrote:
// generated again for its serve address and tool version or, for a
// generation recorded before bundles were keyed by name, restored from
// the backup taken before cur was installed. With others, they are
// generated for all at the address of the current generated files. The
// agent's unit follows the same rule: prev's (none when prev had none)
// alone, the current one beside others. It returns the agent's options
// written.
func rollbackGenerated(root *os.Root, opts Options, cur, prev *Generation, rest, installed []*Generation) (int, *AgentConfig, error) {
	rec, _, err := readGenerated(root, installed)
	if err != nil {
		return 0, nil, err
	}
	if len(rest) == 0 && prev.ServeAddr == "" {
		backup := path.Join(layout.Backup(cur.Number), "files")
		files := map[string][]byte{}
		for p := range prev.Generated {
			b, err := root.ReadFile(path.Join(backup, p))
			if err != nil {
				return 0, nil, fmt.Errorf("restoring %s: no backup: %w", p, err)
			}
			files[p] = b
		}
		n, err := writeGenerated(root, files, rec.Files)
		if err != nil {
			return n, nil, err
		}
		return n, nil, writeGeneratedRecord(root, rec.ServeAddr, nil, files)
	}
	addr, tool, agent := prev.ServeAddr, prev.ToolVersion, prev.Agent
	if agent != nil && len(rest) == 0 { // the agent's unit is written from it
		if err := agent.Check(); err != nil {
			return 0, nil, fmt.Errorf("%s is corrupt: its agent options: %w", layout.Generation(prev.Number), err)
		}
	}
	if len(rest) > 0 {
		addr, tool, agent = rec.ServeAddr, opts.ToolVersion, rec.Agent
		if addr == "" {
			addr = opts.ServeAddr
		}
	}
	n, err := regenerate(root, opts.Root, tool, addr, agent, rec.Files, append(bundlesOf(rest), bundlesOf([]*Generation{prev})...))
	return n, agent, err
}

// regenerate writes the generated files for bundles at serve address addr
// with the agent's unit of agent (removing those in prev no longer
// generated) and records them.
func regenerate(root *os.Root, rootDir, toolVersion, addr string, agent *AgentConfig, prev map[string]string, bundles []genBundle) (int, error) {
	sort.Slice(bundles, func(i, j int) bool { return bundles[i].name < bundles[j].name })
	ca, err := registry.OpenCA(rootDir)
	if err != nil {
		return 0, err
	}
	g := genFor(toolVersion, addr, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), bundles)
	g.agent = agent
	files := generatedFiles(g)
	n, err := writeGenerated(root, files, prev)
	if err != nil {
		return n, err
	}
	return n, writeGeneratedRecord(root, addr, agent, files)
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

// Status is what `zdt status` reports. With one bundle installed its
// fields are those of that bundle (as before bundles were installed side
// by side); with several, Generation is nil and the others add up every
// bundle's. Bundles has each installed bundle, sorted by name.
type Status struct {
	Installed  bool           `json:"installed"`
	Generation *Generation    `json:"current,omitempty"`
	Counts     map[string]int `json:"counts,omitempty"`
	Drift      []string       `json:"drift,omitempty"` // files that differ from what was installed
	History    []int          `json:"generations,omitempty"`
	// Registry is the health of the registry storage (nil when the
	// installed bundles put nothing there).
	Registry *registry.Health  `json:"registry,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
	// Bundles are the installed bundles, each with its own status.
	Bundles []BundleStatus `json:"bundles,omitempty"`
	// Backups are the cluster backups under var/lib/zdt/backups, newest
	// first.
	Backups []ClusterBackup `json:"backups,omitempty"`
}

// BundleStatus is one installed bundle in Status. Drift lists its files
// (the generated files, shared by all bundles, are in Status.Drift).
type BundleStatus struct {
	Name       string           `json:"name"`
	Generation *Generation      `json:"current"`
	Counts     map[string]int   `json:"counts"`
	Drift      []string         `json:"drift,omitempty"`
	History    []int            `json:"generations"`
	Registry   *registry.Health `json:"registry,omitempty"`
}

// Healthy reports whether nothing is wrong with what is installed: no
// installed or generated file drifted and the registry storage serves
// every installed bundle whole (true when nothing is installed).
func (s Status) Healthy() bool {
	return len(s.Drift) == 0 && (s.Registry == nil || len(s.Registry.Problems) == 0)
}

// GetStatus reads the state under root without writing anything.
func GetStatus(ctx context.Context, rootDir string) (Status, error) {
	return GetStatusOf(ctx, rootDir, "")
}

// GetStatusOf is GetStatus of the installed bundle name only ("": all).
func GetStatusOf(ctx context.Context, rootDir, name string) (Status, error) {
	if rootDir == "" {
		rootDir = "/"
	}
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return Status{}, err
	}
	defer root.Close()
	installed, err := readInstalled(root)
	if err != nil {
		return Status{}, err
	}
	if name != "" {
		g, err := resolve(installed, name)
		if err != nil {
			return Status{}, err
		}
		installed = []*Generation{g}
	}
	if len(installed) == 0 {
		// The cluster backups an uninstall left.
		s := Status{}
		if name == "" {
			s.Backups, err = listClusterBackups(root, &state{root: root})
		}
		return s, err
	}
	all, _ := (&state{root: root}).generations()
	s := Status{Installed: true, Counts: map[string]int{}}
	var problems []string
	var health *registry.Health
	for _, cur := range installed {
		b := BundleStatus{Name: cur.Name, Generation: cur, Counts: map[string]int{}}
		for _, it := range cur.Items {
			b.Counts[it.Kind]++
			s.Counts[it.Kind]++
			if it.Kind == manifests.KindFile {
				ok, err := fileMatches(root, it, it.Placed)
				if err != nil {
					return Status{}, err
				}
				if !ok {
					b.Drift = append(b.Drift, it.Target)
				}
			}
		}
		s.Drift = append(s.Drift, b.Drift...)
		b.History = historyOf(root, all, cur.Name)
		// Whole, or (installed from a registry) its metadata.
		if b.Registry = registryHealth(ctx, root, rootDir, digest.Digest(cur.BundleDigest)); b.Registry != nil {
			h := *b.Registry
			if health == nil {
				health = &h
			} else {
				health.Served += h.Served
			}
			for _, p := range h.Problems {
				problems = append(problems, cur.Name+": "+p)
			}
		}
		s.Bundles = append(s.Bundles, b)
	}
	rec, _, err := readGenerated(root, installed)
	if err != nil {
		return Status{}, err
	}
	for _, p := range sortedKeys(rec.Files) {
		b, err := root.ReadFile(p)
		if err != nil || hashes(map[string][]byte{p: b})[p] != rec.Files[p] {
			s.Drift = append(s.Drift, "/"+p)
		}
	}
	if s.Backups, err = listClusterBackups(root, &state{root: root}); err != nil {
		return Status{}, err
	}
	if drift, err := binaryDrift(root); err != nil {
		return Status{}, err
	} else if drift {
		s.Drift = append(s.Drift, BinaryTarget)
	}
	if len(installed) == 1 {
		s.Generation, s.History, s.Registry = installed[0], s.Bundles[0].History, s.Bundles[0].Registry
		return s, nil
	}
	if health != nil {
		health.Problems = problems
	}
	s.History, s.Registry = all, health
	return s, nil
}

// historyOf lists the generations of the bundle name among all; a root
// from before bundles were keyed by name lists all its generations.
func historyOf(root *os.Root, all []int, name string) []int {
	var out []int
	st := &state{root: root}
	for _, n := range all {
		g, err := st.generation(n)
		if err != nil || (g.Name == name && !g.Uninstalled) {
			out = append(out, n)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
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

// Uninstall removes the bundle opts.Name (or the only installed one): its
// files, and its content from the registry storage that no other bundle
// uses; the generated files are written for the bundles that stay. When
// it is the last bundle, every generated file and zdt's whole state
// directory (registry storage included) go, except the cluster backups
// (see removeState).
//
// When the bundle deployed releases and the Deployer is a Backuper, the
// cluster is backed up first, as Install does (same file, same pruning to
// opts.KeepBackups); a failed backup stops the uninstall before anything
// changes. Once the releases are uninstalled, a generation record marked
// Uninstalled names the backup (and reserves its generation number).
//
// Its files go first, then its pointer (it is no longer installed), then
// its registry content: a crash part-way leaves it installed with files
// missing (status reports them; uninstall again finishes), or content in
// the store no bundle uses (the next install prunes it).
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
	installed, err := st.installed()
	if err != nil {
		st.close()
		return Result{}, err
	}
	var cur *Generation
	if len(installed) > 0 || opts.Name != "" {
		if cur, err = resolve(installed, opts.Name); err != nil {
			st.close()
			return Result{}, err
		}
	}
	// The cluster is backed up before any release goes: a failed backup
	// stops the uninstall here.
	var backup *ClusterBackup
	if cur != nil && len(cur.Releases) > 0 && releaseManager(opts) != nil {
		next, err := st.nextNumber()
		if err == nil {
			backup, err = takeClusterBackup(ctx, root, opts, next, uninstallChanges(cur.Releases))
		}
		if err != nil {
			st.close()
			return Result{}, err
		}
	}
	// The releases first: a failure leaves the bundle installed, and
	// uninstall again retries.
	var relChanges []ReleaseChange
	if cur != nil {
		if relChanges, err = uninstallReleases(ctx, opts, cur); err != nil {
			st.close()
			return Result{}, err
		}
	}
	if backup != nil {
		if err := st.recordUninstall(cur, backup, opts.ToolVersion); err != nil {
			st.close()
			return Result{}, err
		}
	}
	// The images its generations registered, while the state still
	// records them: a failure leaves the bundle installed.
	var dereg, left []AMI
	if cur != nil {
		if dereg, left, err = uninstallAMIs(ctx, st, opts, cur); err != nil {
			st.close()
			return Result{}, err
		}
	}
	if cur != nil {
		if rest := others(installed, cur.Name); len(rest) > 0 {
			defer st.close()
			res, err := uninstallOne(ctx, root, st, opts, cur, rest, installed)
			res.Releases, res.Backup, res.AMIsDeregistered, res.AMIsLeft = relChanges, backup, dereg, left
			return res, err
		}
	}
	res := Result{Releases: relChanges, Backup: backup, AMIsDeregistered: dereg, AMIsLeft: left}
	if cur != nil {
		n, err := removeFiles(root, cur)
		res.FilesWritten += n
		if err != nil {
			st.close()
			return Result{}, err
		}
		rec, _, err := readGenerated(root, installed)
		if err != nil {
			st.close()
			return Result{}, err
		}
		for _, p := range sortedKeys(rec.Files) {
			if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				st.close()
				return Result{}, fmt.Errorf("removing %s: %w", p, err)
			}
			res.FilesWritten++
		}
		// The zdt binary, when it is still the one zdt placed.
		removed, err := removeBinary(root)
		if err != nil {
			st.close()
			return Result{}, err
		}
		if removed {
			res.FilesWritten++
		}
	}
	st.close()
	if err := removeState(root); err != nil {
		return res, err
	}
	res.Applied = true
	return res, ctx.Err()
}

// removeFiles removes the files of generation g.
func removeFiles(root *os.Root, g *Generation) (int, error) {
	n := 0
	for _, it := range g.Items {
		if it.Kind != manifests.KindFile {
			continue
		}
		if err := root.Remove(rel(it.Target)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("removing %s: %w", it.Target, err)
		}
		n++
	}
	return n, nil
}

// uninstallOne uninstalls cur while the bundles rest stay installed.
func uninstallOne(ctx context.Context, root *os.Root, st *state, opts Options, cur *Generation, rest, installed []*Generation) (Result, error) {
	res := Result{}
	if err := checkServable(opts.Registry, rest); err != nil {
		return res, err
	}
	n, err := removeFiles(root, cur)
	res.FilesWritten += n
	if err != nil {
		return res, err
	}
	rec, _, err := readGenerated(root, installed)
	if err != nil {
		return res, err
	}
	addr := rec.ServeAddr
	if addr == "" {
		addr = opts.ServeAddr
	}
	n, err = regenerate(root, opts.Root, opts.ToolVersion, addr, rec.Agent, rec.Files, bundlesOf(rest))
	res.FilesWritten += n
	if err != nil {
		return res, err
	}
	if err := st.unsetCurrent(cur.Name); err != nil {
		return res, err
	}
	if reg := opts.Registry; reg != nil {
		if err := reg.Activate(ctx, roots(rest)...); err != nil {
			return res, fmt.Errorf("serving the other bundles: %w", err)
		}
		if err := reg.Prune(ctx, st.rollbackRoots(rest)); err != nil {
			return res, fmt.Errorf("pruning the registry: %w", err)
		}
	}
	res.Applied = true
	return res, ctx.Err()
}
