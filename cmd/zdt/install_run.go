package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/cloud/ec2"
	"zdt.dev/zdt/cluster"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/version"
	"zdt.dev/zdt/registry"
)

// run is `zdt install`.
func (o *installOptions) run(ctx context.Context, g *globals) error {
	if _, haveCluster := cluster.SelectTarget(o.kubeconfig, os.Getenv); o.diff && (!o.plan || !haveCluster) {
		return usageError{fmt.Errorf("--diff needs --plan and a cluster (--kubeconfig, KUBECONFIG or the in-cluster configuration)")}
	}
	switch {
	case o.bundle != "" && o.from != "":
		return usageError{fmt.Errorf("--bundle and --from exclude each other")}
	case o.from != "":
		return o.runFrom(ctx, g)
	case o.bundle == "":
		return usageError{fmt.Errorf("--bundle or --from is required")}
	case o.replicate:
		return usageError{fmt.Errorf("--replicate goes with --from")}
	case !o.agent.enable && (o.ca != "" || o.registryConfig != ""):
		return usageError{fmt.Errorf("--ca and --registry-config go with --from (or, for the agent's registry, --agent)")}
	}
	logger := g.logger()
	// The store is only read until the bundle is known to install
	// (a refused delta or --plan writes nothing).
	ro, err := registry.OpenStore(o.root, registry.StoreOptions{ReadOnly: true, Logger: logger})
	if errors.Is(err, fs.ErrNotExist) {
		ro, err = nil, nil
	}
	if err != nil {
		return err
	}
	defer ro.Close()
	// Signature first, then a delta's base from what is installed.
	var bases *installer.Bases
	if ro != nil {
		bases = &installer.Bases{Store: ro}
	}
	v, err := g.openVerified(ctx, o.bundle, &o.trust, bases)
	if err != nil {
		return err
	}
	defer v.Close()
	a := v.Archive
	if a.Base() != "" && !a.BaseAttached() {
		return fmt.Errorf("%s is a delta bundle on %s, which is not installed under %s: install that bundle (or the whole of this one) first (no registry store there: %w)", o.bundle, a.Base(), o.root, bundle.ErrNeedsBase)
	}
	// The running zdt is what the generated unit runs: install places it
	// at /usr/local/bin/zdt (hashed, its digest recorded).
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the zdt binary to install: %w", err)
	}
	opts := installer.Options{
		Root: o.root, PlanOnly: o.plan, AMIExportDir: o.amiExport, ServeAddr: o.serveAddr,
		ToolVersion: version.String(), Logger: logger, Binary: self,
	}
	if err := o.applyAgent(ctx, &opts); err != nil {
		return err
	}
	if !o.plan {
		// A root that does not exist yet is created, once the bundle
		// verified.
		if err := os.MkdirAll(o.root, 0o755); err != nil {
			return fmt.Errorf("creating --root %s: %w", o.root, err)
		}
		store, err := registry.OpenStore(o.root, registry.StoreOptions{CopyBlobs: o.copyBlobs, Logger: logger})
		if err != nil {
			return err
		}
		defer store.Close()
		opts.Registry = store
	}
	if opts.Deployer, err = o.deployer(logger); err != nil {
		return err
	}
	opts.KeepBackups = o.keepBackups
	if err := o.aws.registrar(ctx, logger, &opts); err != nil {
		return err
	}
	bar := g.progress("importing")
	opts.Progress = bar.update
	res, err := installer.Install(ctx, a, opts)
	bar.finish()
	if err != nil {
		return err
	}
	if o.diff {
		return o.reportDiff(ctx, g, opts.Deployer, res)
	}
	return o.report(g, res)
}

// registrar sets opts.AMIs (and PruneAMIs) from --aws-region; the other
// AWS flags without it are a usage error.
func (o *awsOptions) registrar(ctx context.Context, logger *slog.Logger, opts *installer.Options) error {
	if o.region == "" {
		if o.endpoint != "" || o.kmsKey != "" || o.pruneAMIs {
			return usageError{fmt.Errorf("--aws-endpoint, --aws-kms-key and --prune-amis need --aws-region")}
		}
		return nil
	}
	reg, err := ec2.New(ctx, ec2.Options{Region: o.region, Endpoint: o.endpoint, KMSKey: o.kmsKey, Logger: logger})
	if err != nil {
		return err
	}
	opts.AMIs, opts.PruneAMIs = reg, o.pruneAMIs
	return nil
}

// deployer is the chart deployer of --kubeconfig (or $KUBECONFIG, or the
// in-cluster configuration in a pod: cluster.SelectTarget), nil without a
// cluster.
func (o *installOptions) deployer(logger *slog.Logger) (installer.Deployer, error) {
	if err := o.checkBackupFlags(); err != nil {
		return nil, err
	}
	values, err := o.readValues()
	if err != nil {
		return nil, err
	}
	if o.rewriteImages != "" {
		if err := cluster.CheckRegistryHost(o.rewriteImages); err != nil {
			return nil, usageError{err}
		}
	}
	tgt, ok := cluster.SelectTarget(o.kubeconfig, os.Getenv)
	if !ok {
		if o.rewriteImages != "" {
			return nil, usageError{fmt.Errorf("--rewrite-images: rewrites the manifests deployed to a cluster, which needs one (--kubeconfig, KUBECONFIG or in-cluster)")}
		}
		return nil, nil
	}
	d, err := cluster.New(cluster.Options{Kubeconfig: tgt.Kubeconfig, InCluster: tgt.InCluster, Timeout: o.timeout, Logger: logger, Values: values, Etcd: o.etcd, RewriteImages: o.rewriteImages})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// runFrom is `zdt install --from`.
func (o *installOptions) runFrom(ctx context.Context, g *globals) error {
	if o.copyBlobs {
		return usageError{fmt.Errorf("--copy-blobs goes with --bundle (--from copies with --replicate)")}
	}
	ref, err := registry.ParseBundleRef(o.from)
	if err != nil {
		return usageError{fmt.Errorf("--from: %w", err)}
	}
	policy, err := o.trust.load(ctx)
	if err != nil {
		return err
	}
	remotes, err := bundleRemotes(ref, o.registryConfig, o.ca)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the zdt binary to install: %w", err)
	}
	logger := g.logger()
	opts := installer.FromOptions{
		Options: installer.Options{
			Root: o.root, PlanOnly: o.plan, AMIExportDir: o.amiExport, ServeAddr: o.serveAddr,
			ToolVersion: version.String(), Logger: logger, Binary: self,
		},
		Policy: policy, CA: o.ca, Remotes: remotes, Replicate: o.replicate,
	}
	if err := o.applyAgent(ctx, &opts.Options); err != nil {
		return err
	}
	if opts.Deployer, err = o.deployer(logger); err != nil {
		return err
	}
	opts.KeepBackups = o.keepBackups
	// The AMI disks are read from the registry, every byte checked
	// against the signed digests while it streams to EBS.
	if err := o.aws.registrar(ctx, logger, &opts.Options); err != nil {
		return err
	}
	bar := g.progress("installing")
	opts.Progress = bar.update
	res, err := installer.InstallFrom(ctx, o.from, opts)
	bar.finish()
	if err != nil {
		return err
	}
	if o.diff {
		return o.reportDiff(ctx, g, opts.Deployer, res)
	}
	return o.report(g, res)
}

// readValues reads the --values CHART=FILE files (each at most
// cluster.MaxValuesSize).
func (o *installOptions) readValues() (map[string][]byte, error) {
	if len(o.values) == 0 {
		return nil, nil
	}
	if _, ok := cluster.SelectTarget(o.kubeconfig, os.Getenv); !ok {
		return nil, usageError{fmt.Errorf("--values needs a cluster to deploy to (--kubeconfig, KUBECONFIG or in-cluster)")}
	}
	out := map[string][]byte{}
	for _, v := range o.values {
		chart, file, ok := strings.Cut(v, "=")
		if !ok || chart == "" || file == "" {
			return nil, usageError{fmt.Errorf("--values %q: want CHART=FILE", v)}
		}
		if _, dup := out[chart]; dup {
			return nil, usageError{fmt.Errorf("--values %s given twice", chart)}
		}
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--values %s: %w", chart, err)
		}
		b, err := io.ReadAll(io.LimitReader(f, cluster.MaxValuesSize+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--values %s: %w", chart, err)
		}
		if len(b) > cluster.MaxValuesSize {
			return nil, fmt.Errorf("--values %s: %s is larger than %d bytes", chart, file, cluster.MaxValuesSize)
		}
		out[chart] = b
	}
	return out, nil
}

// report prints the plan and what install did (the result with --output
// json); with --plan --detailed-exitcode a plan with changes is
// errPlanChanges.
func (o *installOptions) report(g *globals, res installer.Result) error {
	if g.json() {
		if err := g.printJSON(res); err != nil {
			return err
		}
	} else {
		renderPlan(g.stdout, res.Plan)
		switch {
		case o.plan:
		case res.Applied:
			fmt.Fprintf(g.stdout, "installed: generation %d (%d files written)\n", res.Generation, res.FilesWritten)
			renderBackup(g.stdout, o.root, res.Backup)
			for _, a := range res.AMIs {
				fmt.Fprintf(g.stdout, "ami: %s %s (%s, %d blocks uploaded)\n", printable(a.ImageID), printable(a.Name), printable(a.Region), a.Blocks)
			}
			if n := len(res.Plan.Releases); n > 0 {
				changed := 0
				for _, r := range res.Plan.Releases {
					if r.Action != installer.ReleaseUnchanged {
						changed++
					}
				}
				fmt.Fprintf(g.stdout, "deployed: %d releases changed, %d unchanged\n", changed, n-changed)
			}
		case res.Repaired:
			fmt.Fprintf(g.stdout, "repaired: generation %d, the registry storage serves the bundle again (it was imported again)\n", res.Generation)
		default:
			fmt.Fprintf(g.stdout, "already installed: generation %d, nothing changed\n", res.Generation)
		}
		if n := len(res.Actions); n > 0 {
			fmt.Fprintf(g.stdout, "actions: %d ran\n", n)
		}
		renderAgentUnit(g.stdout, o.plan, res.AgentUnit)
	}
	if o.plan && o.detailedExitCode && res.Plan.HasChanges() {
		return errPlanChanges
	}
	return nil
}

// checkBackupFlags refuses etcd and backup flags that cannot work.
func (o *installOptions) checkBackupFlags() error {
	return checkBackupFlags(o.kubeconfig, o.keepBackups, o.etcd)
}

// renderBackup says which cluster backup an install took, and when it is
// no etcd snapshot, that it is not.
func renderBackup(w io.Writer, root string, b *installer.ClusterBackup) {
	if b == nil {
		return
	}
	p := filepath.Join(root, filepath.FromSlash(b.Path))
	switch b.Kind {
	case installer.BackupEtcd:
		fmt.Fprintf(w, "backup: etcd snapshot %s (%s, %s) from %s\n", p, humanBytes(b.Size), b.Digest, b.Source)
	default:
		fmt.Fprintf(w, "backup: no etcd snapshot (no --etcd-endpoints): exported %d objects to %s instead (%s, %s): %s\n", b.Objects, p, humanBytes(b.Size), b.Digest, b.Source)
	}
}
