package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// Registry is the registry storage an install fills and `zdt serve`
// serves; registry.Store implements it. Import adds content without
// changing what is served; Activate makes the served tags exactly those of
// the imported bundles given, one per installed bundle name (and refuses
// content damaged since its import); Prune deletes content only other
// bundles reach.
type Registry interface {
	Import(ctx context.Context, a *bundle.Archive, opts registry.ImportOptions) (registry.ImportResult, error)
	Activate(ctx context.Context, roots ...digest.Digest) error
	Prune(ctx context.Context, keep []digest.Digest) error
}

// Options tune Install. Every zero field has the documented default.
type Options struct {
	// Root is the directory everything is installed under (default "/"),
	// created when it does not exist (except with PlanOnly, which plans
	// a missing root as one where nothing is installed).
	Root string
	// PlanOnly computes the plan and writes nothing.
	PlanOnly bool
	// RefuseDowngrade refuses, before anything is written, a bundle that
	// CheckUpgrade refuses: another bundle than the installed one, or an
	// older version (`zdt agent` sets it unless --allow-downgrade).
	RefuseDowngrade bool
	// Registry receives the bundle's images, charts and artifacts (nil:
	// registry steps are skipped).
	Registry Registry
	// ServeAddr is where `zdt serve` listens, for the mirror configuration
	// (default DefaultServeAddr).
	ServeAddr string
	// AMIExportDir, if set, receives each AMI's disk image and metadata.
	AMIExportDir string
	// Binary is the zdt executable to place at BinaryTarget, which the
	// generated systemd unit runs (cmd/zdt gives the running one): it is
	// hashed, kept by digest under layout.BinariesDir (written once,
	// atomically with its digest checked; the previous version stays for
	// rollback), hard-linked into place (copied across filesystems), and
	// its digest recorded in the generation. The same binary again changes
	// nothing. "" leaves BinaryTarget alone.
	Binary string
	// Name selects the installed bundle Rollback and Uninstall act on
	// (needed when several are installed; Install takes the bundle's).
	Name string
	// ToolVersion is written into generated files (default "dev").
	ToolVersion string
	// Logger receives progress messages (default: discard).
	Logger *slog.Logger
	// Progress is called with bytes imported so far and the total.
	Progress func(done, total int64)
	// Deployer, if set, deploys the bundle's charts into a cluster after
	// the registry and files are in place (package cluster). Without it
	// the releases of the current generation are carried over untouched.
	Deployer Deployer
	// Source, set by InstallFrom, is the registry the bundle is read from:
	// recorded in the generation and named by the mirror configuration
	// (after this node, for digests only). Unless Source.Replicated only
	// the bundle's metadata is imported into Registry (ImportOptions.
	// MetadataOnly): this node's `zdt serve` answers its images' tags
	// from the signed bundle, the registry only blobs by digest.
	Source *Source
	// KeepBackups is how many cluster backups (taken before an install
	// changes releases, when the Deployer is a Backuper) are kept, newest
	// generations first (default DefaultKeepBackups).
	KeepBackups int
	// AMIs, if set, registers the bundle's AMI items as machine images
	// (package cloud/ec2), after the files are in place; the generation
	// records their ids. Without it the current generation's images of
	// items the bundle still has are carried over.
	AMIs AMIRegistrar
	// PruneAMIs (with AMIs) deregisters the images this bundle name
	// registered that neither the new nor the previous generation
	// references, and deletes their snapshots.
	PruneAMIs bool
	// NodeName is ZDT_NODE_NAME of component actions (default: the host
	// name).
	NodeName string
	// Agent, when set, is the unit of `zdt agent` to write beside that of
	// `zdt serve` (install --agent), replacing the one recorded. Nil
	// keeps the recorded one (none at first): an install without --agent,
	// such as the agent's own, leaves the agent as it is. NoAgent removes
	// it (--agent=false).
	Agent   *AgentConfig
	NoAgent bool
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
	// Repaired is true when the plan had no changes but the registry
	// storage did not serve the installed bundle whole (what `zdt status`
	// reports as problems) and Install imported it again.
	Repaired bool `json:"repaired,omitempty"`
	// Releases is what Rollback and Uninstall did to the Helm releases.
	Releases []ReleaseChange `json:"releases,omitempty"`
	// Backup is the cluster backup taken before releases changed.
	Backup *ClusterBackup `json:"backup,omitempty"`
	// AMIs are the images of the bundle's AMI items after the install
	// (registered or reused; only with Options.AMIs).
	AMIs []AMI `json:"amis,omitempty"`
	// Actions are the component actions that ran, in order.
	Actions []ActionRun `json:"actions,omitempty"`
	// AgentUnit is the unit of `zdt agent` and what the install did to it
	// (nil: there is none and was none).
	AgentUnit *AgentUnit `json:"agentUnit,omitempty"`
	// AMIsDeregistered are the images Uninstall deregistered (their
	// snapshots deleted); AMIsLeft those the bundle's generations recorded
	// that it left registered (no Options.AMIs, or another region).
	AMIsDeregistered []AMI `json:"amisDeregistered,omitempty"`
	AMIsLeft         []AMI `json:"amisLeft,omitempty"`
}

// registryChecker is a Registry that can say whether a bundle it imported
// is served whole and drop its kept archive (registry.Store): Install then
// repairs a registry `zdt status` finds broken.
type registryChecker interface {
	Recorded(root digest.Digest) ([]registry.Placement, error)
	Health(ctx context.Context, ps []registry.Placement) (registry.Health, error)
	RemoveKept(root digest.Digest) error
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
	// Before reading more of the bundle than its metadata.
	if opts.RefuseDowngrade {
		if err := CheckUpgrade(opts.Root, a.Config.Name, a.Config.Version); err != nil {
			return Result{}, err
		}
	}
	g, err := a.Walk(ctx)
	if err != nil {
		return Result{}, err
	}
	desired, contents, err := desiredItems(ctx, a, g)
	if err != nil {
		return Result{}, err
	}
	if err := checkItems(desired); err != nil {
		return Result{}, err
	}
	if err := manifests.CheckBundleName(a.Config.Name); err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrInvalidItem, err)
	}
	// Component actions come from the signed spec: one that does not
	// parse is refused before anything is written (planActions reads it).
	if _, err := specActions(a.Config.Spec); err != nil {
		return Result{}, err
	}
	if opts.PlanOnly { // no lock, nothing created
		return planInstall(ctx, a, g, opts, desired, contents)
	}
	if err := os.MkdirAll(opts.Root, 0o755); err != nil {
		return Result{}, fmt.Errorf("creating root %s: %w", opts.Root, err)
	}
	root, err := os.OpenRoot(opts.Root)
	if err != nil {
		return Result{}, fmt.Errorf("opening root %s: %w", opts.Root, err)
	}
	defer root.Close()
	r := &run{a: a, opts: opts, root: root, desired: desired, contents: contents}
	if r.st, err = openState(root); err != nil {
		return Result{}, err
	}
	defer r.st.close()
	if err := r.readInstalled(r.st.installed()); err != nil {
		return Result{}, err
	}
	res, err := r.makePlan(ctx)
	if err != nil {
		return Result{}, err
	}
	if err := r.planReleases(ctx, g, res.Plan); err != nil {
		return Result{}, err
	}
	if err := r.planAMIs(ctx, res.Plan); err != nil {
		return Result{}, err
	}
	if err := r.planActions(res.Plan); err != nil {
		return Result{}, err
	}
	// The CA of zdt serve exists from the install on, so that every
	// runtime's trust can be written with the mirror configuration; its
	// key stays in layout.TLSDir.
	ca, err := registry.OpenCA(opts.Root)
	if err != nil {
		return Result{}, err
	}
	gc := genFor(opts.ToolVersion, opts.ServeAddr, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), r.bundles())
	gc.agent = r.agent
	r.files = generatedFiles(gc)
	broken, err := r.dropBrokenRegistry(ctx)
	if err != nil {
		return Result{}, err
	}
	if !res.Plan.HasChanges() && generatedUpToDate(root, r.files) {
		// Only actions with onChange: false run.
		if err := r.runActions(ctx, manifests.PhaseBefore, r.cur.Number); err != nil {
			return Result{}, err
		}
		if !broken {
			opts.Logger.Info("already installed; nothing to do", "generation", r.cur.Number, "bundle", a.Root.Digest)
			for _, c := range res.Plan.AMIs {
				if c.Action == AMIReuse {
					res.AMIs = append(res.AMIs, c.AMI)
				}
			}
			if err := r.pruneAMIs(ctx, res.Plan); err != nil {
				return res, err
			}
		} else {
			if err := r.reimport(ctx); err != nil {
				return Result{}, err
			}
			res.Repaired = true
		}
		if err := r.runActions(ctx, manifests.PhaseAfter, r.cur.Number); err != nil {
			return Result{}, err
		}
		res.Actions = r.ran
		res.AgentUnit = r.agentUnit(res.Plan)
		return res, nil
	}
	return r.applyAndRecord(ctx, res)
}

// bundles are the installed bundles as the generated files cover them:
// this one as it will be, the others as they are.
func (r *run) bundles() []genBundle {
	bundles := append(bundlesOf(r.others), genBundle{name: r.a.Config.Name, version: r.a.Config.Version, digest: r.a.Root.Digest.String(), items: r.desired, source: r.opts.Source})
	sort.Slice(bundles, func(i, j int) bool { return bundles[i].name < bundles[j].name })
	return bundles
}

// agentUnit is the agent's unit in the result, from its plan line.
func (r *run) agentUnit(p *Plan) *AgentUnit {
	for _, c := range p.Changes {
		if c.Kind == KindUnit && c.Name == AgentUnitName {
			u := &AgentUnit{Unit: AgentUnitName, Path: filepath.Join(r.opts.Root, filepath.FromSlash(layout.SystemdUnit(AgentUnitName))), Action: c.Action}
			if r.agent != nil {
				u.Node = r.agent.Node
			}
			return u
		}
	}
	return nil
}

// planInstall is install --plan: it reads the recorded state, takes no
// lock and creates nothing, not even a root that does not exist yet.
func planInstall(ctx context.Context, a *bundle.Archive, g *bundle.Graph, opts Options, desired []ItemState, contents map[string]bundle.Content) (Result, error) {
	root, err := os.OpenRoot(opts.Root)
	if errors.Is(err, fs.ErrNotExist) { // a root not created yet has nothing installed
		r := &run{a: a, opts: opts, desired: desired, contents: contents}
		return r.planWithReleases(ctx, g)
	}
	if err != nil {
		return Result{}, fmt.Errorf("opening root %s: %w", opts.Root, err)
	}
	defer root.Close()
	r := &run{a: a, opts: opts, root: root, desired: desired, contents: contents}
	if err := r.readInstalled(readInstalled(root)); err != nil {
		return Result{}, err
	}
	return r.planWithReleases(ctx, g)
}

// applyAndRecord runs the steps of an install that has changes: prepare,
// vacate, apply, deploy and record. Until the generation is recorded a
// failure serves the installed generations again.
func (r *run) applyAndRecord(ctx context.Context, res Result) (Result, error) {
	// The other bundles are activated beside this one: refused here,
	// before anything is written, when the registry could not serve them.
	if err := checkServable(r.opts.Registry, r.others); err != nil {
		return Result{}, err
	}
	if err := r.prepare(); err != nil {
		return Result{}, err
	}
	// The cluster is backed up before anything changes: a failed backup
	// stops the install here.
	if err := r.backupCluster(ctx, res.Plan.Releases); err != nil {
		return Result{}, err
	}
	res.Backup = r.backup
	// Before actions: nothing of the bundle is applied yet.
	if err := r.runActions(ctx, manifests.PhaseBefore, r.next); err != nil {
		return Result{}, err
	}
	if err := r.vacate(ctx); err != nil {
		return Result{}, err
	}
	// From the import on until the generation is recorded, a failure
	// serves the current generation's bundle again (its tags, its kept
	// archive active): nothing of an uncommitted generation stays active.
	committed := false
	if r.opts.Registry != nil && len(r.all) > 0 {
		defer func() {
			if !committed {
				if err := r.opts.Registry.Activate(context.WithoutCancel(ctx), roots(r.all)...); err != nil {
					r.opts.Logger.Error("serving the installed generations again", "bundle", r.a.Config.Name, "err", err)
				}
			}
		}()
	}
	n, err := r.apply(ctx)
	res.FilesWritten += n
	if err != nil {
		return Result{}, err
	}
	// Charts last: their images are served and their files placed. A
	// failed deploy records no generation, so a re-run retries it.
	if r.opts.Deployer != nil {
		if r.releases, err = r.opts.Deployer.Deploy(ctx, r.a, res.Plan.Releases); err != nil {
			return Result{}, err
		}
	} else if r.cur != nil {
		r.releases = r.cur.Releases
	}
	// After actions: everything is in place; a failure records nothing,
	// so a re-run runs them again.
	if err := r.runActions(ctx, manifests.PhaseAfter, r.next); err != nil {
		return Result{}, err
	}
	if err := r.record(); err != nil {
		return Result{}, err
	}
	committed = true
	res.Generation, res.Applied, res.Actions = r.next, true, r.ran
	res.AgentUnit = r.agentUnit(res.Plan)
	if r.opts.AMIs != nil {
		res.AMIs = r.amis
	}
	// Images neither this generation nor the previous one references go
	// once the generation that stops referencing them is recorded.
	if err := r.pruneAMIs(ctx, res.Plan); err != nil {
		return res, fmt.Errorf("generation %d recorded, but %w", r.next, err)
	}
	return res, nil
}

// run is one install: what its steps (plan, prepare, vacate, apply,
// record) share. It holds no context: each step takes one.
type run struct {
	a    *bundle.Archive
	opts Options
	root *os.Root
	st   *state      // locked state (nil for PlanOnly)
	cur  *Generation // the bundle's current generation (nil: none)
	// installed are the current generations of every installed bundle
	// (the one being installed included), others those of the others.
	all, others []*Generation
	desired     []ItemState               // the bundle's items; apply fills in Placed
	contents    map[string]bundle.Content // of file and AMI items, by key
	plan        *Plan
	files       map[string][]byte // generated files by path
	agent       *AgentConfig      // the agent unit's options (nil: none)
	bin         *binarySource     // the zdt binary to place (nil: none)

	next       int                  // the generation being installed
	installed  map[string]ItemState // cur's items by key
	byKey      map[string]Change    // the plan's changes by key
	newTargets map[string]bool      // file targets the bundle places
	releases   []Release            // as deployed (or carried over)
	backup     *ClusterBackup       // taken before releases changed
	amis       []AMI                // as registered (or carried over)
	ran        []ActionRun          // the component actions that ran
}

// planWithReleases is makePlan plus the Deployer's release plan (--plan).
func (r *run) planWithReleases(ctx context.Context, g *bundle.Graph) (Result, error) {
	res, err := r.makePlan(ctx)
	if err != nil {
		return Result{}, err
	}
	if err := r.planReleases(ctx, g, res.Plan); err != nil {
		return Result{}, err
	}
	if err := r.planAMIs(ctx, res.Plan); err != nil {
		return Result{}, err
	}
	res.AgentUnit = r.agentUnit(res.Plan)
	return res, r.planActions(res.Plan)
}

// planReleases adds the Deployer's release plan to p (reads only).
func (r *run) planReleases(ctx context.Context, g *bundle.Graph, p *Plan) error {
	if r.opts.Deployer == nil {
		return nil
	}
	var installed []Release
	if r.cur != nil {
		installed = r.cur.Releases
	}
	rs, err := r.opts.Deployer.PlanReleases(ctx, r.a, g, installed)
	if err != nil {
		return fmt.Errorf("planning the releases: %w", err)
	}
	p.Releases = rs
	return nil
}

// readInstalled takes the installed generations: the bundle's own and
// the other bundles'.
func (r *run) readInstalled(installed []*Generation, err error) error {
	if err != nil {
		return err
	}
	r.all = installed
	r.others = others(installed, r.a.Config.Name)
	for _, g := range installed {
		if g.Name == r.a.Config.Name {
			r.cur = g
		}
	}
	return nil
}

// makePlan plans the bundle against its current generation, refusing
// paths other installed bundles hold.
func (r *run) makePlan(ctx context.Context) (Result, error) {
	bundleName := r.a.Config.Name + " " + r.a.Config.Version
	if err := checkConflicts(r.a.Config.Name, r.desired, r.others); err != nil {
		return Result{}, err
	}
	plan, err := makePlan(r.root, r.cur, r.desired, bundleName, r.a.Root.Digest.String())
	if err != nil {
		return Result{}, err
	}
	for _, g := range r.others {
		plan.Beside = append(plan.Beside, GenerationRef{Number: g.Number, Name: g.Name, Version: g.Version, BundleDigest: g.BundleDigest})
	}
	// The agent's unit: given, removed, or as recorded.
	var recorded map[string]string
	if r.agent, recorded, err = r.agentFor(); err != nil {
		return Result{}, err
	}
	gc := genFor(r.opts.ToolVersion, r.opts.ServeAddr, nil, r.bundles())
	gc.agent = r.agent
	if err := r.planAgent(plan, gc, recorded); err != nil {
		return Result{}, err
	}
	if r.opts.Binary != "" {
		rec, err := readBinaryRecord(r.root)
		if err != nil {
			return Result{}, err
		}
		// A first placement (nothing placed yet: an add whatever the
		// digest) hashes the binary while it copies it, in one read;
		// --plan shows the digest.
		if rec.Digest == "" && !r.opts.PlanOnly {
			r.bin, err = statBinary(r.opts.Binary)
		} else {
			r.bin, err = hashBinary(ctx, r.opts.Binary, rec.Source)
		}
		if err != nil {
			return Result{}, err
		}
		c, err := binaryChange(r.root, r.bin, rec)
		if err != nil {
			return Result{}, err
		}
		plan.Changes = append(plan.Changes, c)
	}
	r.plan = plan
	res := Result{Plan: plan}
	if r.cur != nil {
		res.Generation = r.cur.Number
	}
	return res, nil
}

// dropBrokenRegistry checks, when the bundle being installed is the one
// installed, that the registry storage serves it whole, as `zdt status`
// does. When it does not (a kept archive overwritten in place, a copied
// blob deleted), the bundle's kept archive is removed so that the import
// keeps (or copies) the verified bundle again; it reports whether it was
// broken.
func (r *run) dropBrokenRegistry(ctx context.Context) (bool, error) {
	reg, ok := r.opts.Registry.(registryChecker)
	if !ok || r.cur == nil || r.cur.BundleDigest != r.a.Root.Digest.String() {
		return false, nil
	}
	d := r.a.Root.Digest
	var problems []string
	ps, err := reg.Recorded(d)
	if err == nil {
		var h registry.Health
		h, err = reg.Health(ctx, ps)
		problems = h.Problems
	}
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) == 0 {
		return false, nil
	}
	r.opts.Logger.Warn("the registry storage does not serve the installed bundle whole; importing it again", "bundle", d, "problems", problems)
	if err := reg.RemoveKept(d); err != nil {
		return true, fmt.Errorf("repairing the registry storage: %w", err)
	}
	return true, nil
}

// reimport imports the installed bundle into the registry storage again
// and serves it: the repair of a registry dropBrokenRegistry found broken
// when nothing else changes (no new generation is recorded).
func (r *run) reimport(ctx context.Context) error {
	reg := r.opts.Registry
	if _, err := reg.Import(ctx, r.a, r.importOptions()); err != nil {
		return fmt.Errorf("repairing the registry storage: importing %s: %w", r.a.Root.Digest, err)
	}
	if err := reg.Activate(ctx, append(roots(r.others), r.localRoot()...)...); err != nil {
		return fmt.Errorf("repairing the registry storage: activating %s: %w", r.a.Root.Digest, err)
	}
	if !r.servedHere() && !r.cur.Metadata { // installed by a zdt that imported nothing
		g := *r.cur
		g.Metadata = true
		if err := r.st.record(&g); err != nil {
			return fmt.Errorf("repairing the registry storage: %w", err)
		}
	}
	return nil
}

// prepare removes what an interrupted run left, numbers the new
// generation, backs up the current one and indexes what apply needs.
func (r *run) prepare() error {
	if err := fsutil.RemoveTemps(r.root, append(tempDirs(r.cur, r.desired, r.files), layout.BinariesDir, path.Dir(layout.Binary))); err != nil {
		return err
	}
	next, err := r.st.nextNumber()
	if err != nil {
		return err
	}
	r.next = next
	r.installed = map[string]ItemState{}
	if r.cur != nil {
		if err := backupState(r.root, r.cur, next); err != nil {
			return err
		}
		for _, it := range r.cur.Items {
			r.installed[it.key()] = it
		}
	}
	r.byKey = map[string]Change{}
	for _, c := range r.plan.Changes {
		r.byKey[c.Kind+" "+c.Name] = c
	}
	r.newTargets = map[string]bool{}
	for _, it := range r.desired {
		if it.Kind == manifests.KindFile {
			r.newTargets[it.Target] = true
		}
	}
	return nil
}

// vacate frees the paths that change hands before anything is placed: an
// item moves away from a path, or is removed, while another item is placed
// there. Each old file whose path nobody takes any more is removed, and
// one whose path another item takes is only kept in the file store (for
// rollback): its new owner replaces it atomically.
func (r *run) vacate(ctx context.Context) error {
	vacate := func(old ItemState) error {
		if r.newTargets[old.Target] {
			return keepVersion(ctx, r.root, old.Target, old.FileDigest)
		}
		return removeFile(ctx, r.root, old)
	}
	for _, it := range r.desired {
		if old := r.installed[it.key()]; it.Kind == manifests.KindFile && old.Target != "" && old.Target != it.Target {
			if err := vacate(old); err != nil {
				return err
			}
		}
	}
	for _, c := range r.plan.Changes {
		if old := r.installed[c.Kind+" "+c.Name]; c.Action == ActionRemove && c.Kind == manifests.KindFile && r.newTargets[old.Target] {
			if err := vacate(old); err != nil {
				return err
			}
		}
	}
	return nil
}

// apply applies the plan: registry content and files side by side, then
// generated configuration, AMIs, what the bundle no longer has, and the
// registry's activation and pruning. It returns the files written.
func (r *run) apply(ctx context.Context) (int, error) {
	n, err := r.importAndPlace(ctx)
	if err != nil {
		return n, err
	}
	// Generated configuration.
	g, err := r.writeGenerated()
	n += g
	if err != nil {
		return n, err
	}
	// The zdt binary the unit runs is placed by importAndPlace; the
	// versions no generation needs any more go.
	if err := r.pruneBinaries(); err != nil {
		return n, err
	}
	// AMIs.
	if r.opts.AMIExportDir != "" {
		for _, it := range r.desired {
			if it.Kind == manifests.KindAMI {
				if err := exportAMI(ctx, r.a, it, r.contents[it.key()], r.opts.AMIExportDir); err != nil {
					return n, err
				}
			}
		}
	}
	if err := r.registerAMIs(ctx); err != nil {
		return n, err
	}
	// What the new bundle no longer has.
	for _, c := range r.plan.Changes {
		if old := r.installed[c.Kind+" "+c.Name]; c.Action == ActionRemove && c.Kind == manifests.KindFile && !r.newTargets[old.Target] {
			r.opts.Logger.Info("removing file", "target", c.Target)
			if err := removeFile(ctx, r.root, old); err != nil {
				return n, err
			}
		}
	}
	if reg := r.opts.Registry; reg != nil {
		if err := reg.Activate(ctx, append(roots(r.others), r.localRoot()...)...); err != nil {
			return n, fmt.Errorf("activating %s in the registry: %w", r.a.Root.Digest, err)
		}
		// Kept: this bundle's new and current generation, and every other
		// bundle's current and previous one (what its rollback needs).
		keep := []digest.Digest{r.a.Root.Digest}
		if r.cur != nil {
			keep = append(keep, digest.Digest(r.cur.BundleDigest))
		}
		keep = append(keep, r.st.rollbackRoots(r.others)...)
		if err := reg.Prune(ctx, keep); err != nil {
			return n, fmt.Errorf("pruning the registry: %w", err)
		}
	}
	return n, nil
}

// writeGenerated writes the generated files and records them. The
// record lists the paths written before and now until they are written,
// so a run killed in between still removes what is no longer generated.
func (r *run) writeGenerated() (int, error) {
	prev, _, err := readGenerated(r.root, r.all)
	if err != nil {
		return 0, err
	}
	pending := map[string][]byte{}
	for p := range prev.Files {
		pending[p] = nil
	}
	for p, b := range r.files {
		pending[p] = b
	}
	if len(pending) != len(r.files) {
		if err := writeGeneratedRecord(r.root, r.opts.ServeAddr, r.agent, pending); err != nil {
			return 0, err
		}
	}
	n, err := writeGenerated(r.root, r.files, prev.Files)
	if err != nil {
		return n, err
	}
	return n, writeGeneratedRecord(r.root, r.opts.ServeAddr, r.agent, r.files)
}

// roots are the bundle digests of gens that are in the registry storage,
// whole or (installed from a registry without replicating) their
// metadata; not those an older zdt installed from a registry, which
// imported nothing (no placements record to activate).
func roots(gens []*Generation) []digest.Digest {
	out := make([]digest.Digest, 0, len(gens))
	for _, g := range gens {
		if g.inRegistry() {
			out = append(out, digest.Digest(g.BundleDigest))
		}
	}
	return out
}

// servedHere reports whether the bundle being installed goes into the
// registry storage whole (a file, or a registry's bundle replicated), not
// only its metadata.
func (r *run) servedHere() bool { return r.opts.Source == nil || r.opts.Source.Replicated }

// importOptions are those of the bundle's import into the registry
// storage: whole, or only its metadata.
func (r *run) importOptions() registry.ImportOptions {
	return registry.ImportOptions{Progress: r.opts.Progress, Logger: r.opts.Logger, MetadataOnly: !r.servedHere()}
}

// localRoot is the bundle's root, which goes into the registry storage.
func (r *run) localRoot() []digest.Digest { return []digest.Digest{r.a.Root.Digest} }

// rollbackRoots are the bundle digests of gens and of the generations
// they replaced: what the registry keeps for them.
func (s *state) rollbackRoots(gens []*Generation) []digest.Digest {
	out := roots(gens)
	for _, g := range gens {
		if g.Previous == 0 {
			continue
		}
		if p, err := s.generation(g.Previous); err == nil && p.Name == g.Name {
			out = append(out, digest.Digest(p.BundleDigest))
		}
	}
	return out
}

// importAndPlace imports the registry content (the archive kept, or only
// new blobs copied) and places files and the zdt binary side by side:
// hashing and disk writes of different bytes, none depending on another.
// A file's layer is hashed once: by its placement, which checks the
// layer's digest and size as it reads it (bundle.OpenContent); the import
// leaves the layers placed out of its own hashing of a kept archive and
// keeps the archive only once every placement succeeded and the file is
// unwritten since before they started (registry.CheckedLayers). It
// returns the files placed.
func (r *run) importAndPlace(ctx context.Context) (int, error) {
	eg, ectx := errgroup.WithContext(ctx)
	var toPlace []int // indexes in r.desired
	for i, it := range r.desired {
		if it.Kind != manifests.KindFile {
			continue
		}
		if r.byKey[it.key()].Action == ActionUnchanged {
			r.desired[i].Placed = r.installed[it.key()].Placed
			continue
		}
		toPlace = append(toPlace, i)
	}
	placing := newPlacing(len(toPlace))
	if reg := r.opts.Registry; reg != nil {
		iopts := r.importOptions()
		if r.servedHere() { // (the metadata holds no file layer)
			iopts.Checked = &registry.CheckedLayers{Digests: map[digest.Digest]bool{}, Wait: placing.wait}
			// The archive as it is before any placement reads it: kept only
			// if unwritten since (no stat, e.g. not a file: all hashed). A
			// file changed within a timestamp tick of this stat could be
			// written again with the same times: hashed in full too.
			if fi, err := r.a.Stat(); err == nil && !registry.ChangedWithin(fi, time.Now(), racyArchive) {
				iopts.Checked.Since = fi
			}
			for _, i := range toPlace {
				iopts.Checked.Digests[r.contents[r.desired[i].key()].Layer.Digest] = true
			}
		}
		eg.Go(func() error {
			r.opts.Logger.Info("importing into the registry storage", "metadataOnly", !r.servedHere())
			if _, err := reg.Import(ectx, r.a, iopts); err != nil {
				return fmt.Errorf("importing %s: %w", r.a.Root.Digest, err)
			}
			return nil
		})
	}
	var written atomic.Int64
	// The zdt binary (~100 MB: kept, fsynced once, linked) beside them too.
	if r.bin != nil {
		if c := r.byKey[KindBinary+" zdt"]; c.Action != ActionUnchanged {
			eg.Go(func() error {
				r.opts.Logger.Info("placing the zdt binary", "target", BinaryTarget, "digest", r.bin.digest, "action", c.Action)
				if err := installBinary(ectx, r.root, r.bin); err != nil {
					return err
				}
				for i := range r.plan.Changes { // hashed as it was copied
					if r.plan.Changes[i].Kind == KindBinary {
						r.plan.Changes[i].To = r.bin.digest.String()
					}
				}
				written.Add(1)
				return nil
			})
		}
	}
	// Files are placed a few at a time: each is decompressed and hashed
	// (CPU) and fsynced (disk), so several in flight keep both busy.
	filesSem := make(chan struct{}, placeConcurrency)
	for _, i := range toPlace {
		it := r.desired[i]
		c := r.byKey[it.key()]
		old := r.installed[it.key()]
		eg.Go(func() (err error) {
			defer func() { placing.done(err) }()
			filesSem <- struct{}{}
			defer func() { <-filesSem }()
			r.opts.Logger.Info("placing file", "target", it.Target, "action", c.Action)
			oldDigest := ""
			if old.Target == it.Target {
				oldDigest = old.FileDigest
			}
			placed, err := placeFile(ectx, r.root, r.a, it, r.contents[it.key()], oldDigest)
			if err != nil {
				return err
			}
			r.desired[i].Placed = placed
			written.Add(1)
			return nil
		})
	}
	err := eg.Wait()
	return int(written.Load()), err
}

// racyArchive: an archive changed this recently when an install starts
// is hashed in full by the import, its placed layers again too (a write
// within the same tick of the file's timestamps would not move them).
var racyArchive = 2 * time.Second

// placing tracks the file placements of an install, for the import that
// waits for their checks of the layers it does not hash.
type placing struct {
	mu      sync.Mutex
	left    int
	err     error
	settled chan struct{} // closed once every placement ended
}

func newPlacing(n int) *placing {
	p := &placing{left: n, settled: make(chan struct{})}
	if n == 0 {
		close(p.settled)
	}
	return p
}

// done records the end of one placement (err nil: its content, layer
// digest and size included, checked out and is in place).
func (p *placing) done(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil && p.err == nil {
		p.err = err
	}
	if p.left--; p.left == 0 {
		close(p.settled)
	}
}

// wait returns once every placement ended: nil when all succeeded, else
// the first failure; or ctx's error.
func (p *placing) wait(ctx context.Context) error {
	select {
	case <-p.settled:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// record writes the new generation and makes it current.
func (r *run) record() error {
	ng := &Generation{Number: r.next, BundleDigest: r.a.Root.Digest.String(), Name: r.a.Config.Name, Version: r.a.Config.Version,
		ToolVersion: r.opts.ToolVersion, Items: r.desired, Generated: hashes(r.files), ServeAddr: r.opts.ServeAddr, Releases: r.releases,
		Source: r.opts.Source, Backup: r.backup, AMIs: r.amis, Actions: r.ran, Agent: r.agent,
		Metadata: r.opts.Registry != nil && !r.servedHere()}
	if r.cur != nil {
		ng.Previous = r.cur.Number
	}
	if r.bin != nil {
		ng.Binary = r.bin.digest.String()
	}
	return r.st.record(ng)
}

// pruneBinaries keeps only the zdt binaries the installed generations
// and their rollbacks name (importAndPlace placed the new one).
func (r *run) pruneBinaries() error {
	if r.bin == nil {
		return nil
	}
	keep := map[string]bool{r.bin.digest.String(): true}
	gens := append([]*Generation(nil), r.others...)
	if r.cur != nil {
		gens = append(gens, r.cur)
	}
	for _, g := range gens {
		keep[g.Binary] = true
		if g.Previous != 0 && g != r.cur {
			if p, err := r.st.generation(g.Previous); err == nil && p.Name == g.Name {
				keep[p.Binary] = true
			}
		}
	}
	return pruneBinaries(r.root, keep)
}

// readInstalled reads every installed bundle's current generation without
// locking or creating anything (for --plan and status).
func readInstalled(root *os.Root) ([]*Generation, error) {
	if _, err := root.Stat(StateDir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return (&state{root: root}).installed()
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
// removes those written before (prev, path → hash) that are not generated
// any more. It returns the number of files written or removed.
func writeGenerated(root *os.Root, files map[string][]byte, prev map[string]string) (int, error) {
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
	for p := range prev {
		if _, ok := files[p]; ok {
			continue
		}
		if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("removing %s: %w", p, err)
		}
		n++
	}
	return n, nil
}

// backupState copies the current generation record and the generated files
// into backups/<next>/ before an upgrade changes anything.
func backupState(root *os.Root, cur *Generation, next int) error {
	dir := layout.Backup(next)
	if err := root.RemoveAll(dir); err != nil { // left by an interrupted run
		return fmt.Errorf("backing up generation %d: %w", cur.Number, err)
	}
	b, err := root.ReadFile(layout.Generation(cur.Number))
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
	dirs := []string{layout.StateDir, layout.GenerationsDir, layout.InstalledDir, layout.FilesDir, layout.PlacementsDir}
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
