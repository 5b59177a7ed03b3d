package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"zdt.dev/zdt/cluster"
	"zdt.dev/zdt/installer"
)

// clusterOptions are the flags of a command that acts on the releases
// install deployed (rollback, uninstall, status).
type clusterOptions struct {
	kubeconfig string
	timeout    time.Duration
	// etcd and keepBackups: the cluster backup rollback and uninstall
	// take before they change releases (AddBackupFlags).
	etcd        cluster.EtcdOptions
	keepBackups int
	backupFlags bool // AddBackupFlags was called
}

// addBackupFlags adds the flags of the cluster backup taken before zdt
// changes releases (install, rollback, uninstall).
func addBackupFlags(fs *pflag.FlagSet, etcd *cluster.EtcdOptions, keep *int) {
	fs.StringSliceVar(&etcd.Endpoints, "etcd-endpoints", nil, "etcd client URLs (https://HOST:2379): before an install, rollback or uninstall changes any release, etcd is snapshotted into ROOT/var/lib/zdt/backups/GENERATION-etcd.db (without them, the objects of the releases about to change are exported to GENERATION-objects.yaml instead)")
	fs.StringVar(&etcd.CACert, "etcd-cacert", "", "CA certificate (PEM) that verifies etcd's serving certificate")
	fs.StringVar(&etcd.Cert, "etcd-cert", "", "client certificate (PEM) for etcd")
	fs.StringVar(&etcd.Key, "etcd-key", "", "key (PEM) of --etcd-cert")
	fs.IntVar(keep, "keep-backups", installer.DefaultKeepBackups, "how many cluster backups (etcd snapshots or object exports) to keep, newest generations first")
}

// AddBackupFlags adds the etcd and --keep-backups flags (rollback,
// uninstall).
func (o *clusterOptions) AddBackupFlags(fs *pflag.FlagSet) {
	addBackupFlags(fs, &o.etcd, &o.keepBackups)
	o.backupFlags = true
}

// checkBackupFlags refuses etcd and backup flags that cannot work.
func checkBackupFlags(kubeconfig string, keep int, e cluster.EtcdOptions) error {
	if keep < 1 {
		return usageError{fmt.Errorf("--keep-backups %d: keep at least 1 (the backup of this install)", keep)}
	}
	if len(e.Endpoints) == 0 && (e.CACert != "" || e.Cert != "" || e.Key != "") {
		return usageError{fmt.Errorf("--etcd-cacert, --etcd-cert and --etcd-key need --etcd-endpoints")}
	}
	if (e.Cert == "") != (e.Key == "") {
		return usageError{fmt.Errorf("--etcd-cert and --etcd-key go together")}
	}
	if _, ok := cluster.SelectTarget(kubeconfig, os.Getenv); len(e.Endpoints) > 0 && !ok {
		return usageError{fmt.Errorf("--etcd-endpoints: the snapshot is taken before releases change, which needs a cluster to deploy to (--kubeconfig, KUBECONFIG or in-cluster)")}
	}
	return nil
}

func (o *clusterOptions) AddFlags(fs *pflag.FlagSet, what string) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", what+" (default $KUBECONFIG)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for one release to become ready or be gone")
}

// AddReadFlags adds the flags of a command that only reads the cluster
// (status): no --timeout, it never waits.
func (o *clusterOptions) AddReadFlags(fs *pflag.FlagSet, what string) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", what+" (default $KUBECONFIG)")
}

// deployer is the cluster of --kubeconfig or $KUBECONFIG, or the
// in-cluster configuration in a pod (cluster.SelectTarget; nil: none).
func (o *clusterOptions) deployer(g *globals) (*cluster.Deployer, error) {
	if o.backupFlags {
		if err := checkBackupFlags(o.kubeconfig, o.keepBackups, o.etcd); err != nil {
			return nil, err
		}
	}
	tgt, ok := cluster.SelectTarget(o.kubeconfig, os.Getenv)
	if !ok {
		return nil, nil
	}
	return cluster.New(cluster.Options{Kubeconfig: tgt.Kubeconfig, InCluster: tgt.InCluster, Timeout: o.timeout, Logger: g.logger(), Etcd: o.etcd})
}

// renderBackups lists the cluster backups status found.
func renderBackups(w io.Writer, root string, bs []installer.ClusterBackup) {
	for _, b := range bs {
		sum := b.Digest
		if !b.Recorded {
			sum = "not recorded: its install failed"
		}
		fmt.Fprintf(w, "backup     generation %d  %-7s %s  %s  %s  %s\n", b.Generation, b.Kind, filepath.Join(root, filepath.FromSlash(b.Path)), humanBytes(b.Size), b.Time.Format(time.RFC3339), sum)
	}
}

// renderReleaseChanges prints what rollback or uninstall did to releases.
func renderReleaseChanges(w io.Writer, cs []installer.ReleaseChange) {
	for _, r := range cs {
		why := ""
		if len(r.Reasons) > 0 {
			why = " (" + strings.Join(r.Reasons, ", ") + ")"
		}
		sign := releaseSigns[r.Action]
		if r.Action == installer.ReleaseRollback {
			sign = "<"
		}
		fmt.Fprintf(w, "  %s release %-42s %s %s %s%s\n", sign, r.Namespace+"/"+r.Name, r.Action, r.Chart, r.Version, why)
	}
}

// releaseStatuses are the releases of every installed bundle's current
// generation, with their health in the cluster when co names one.
func (co *clusterOptions) releaseStatuses(ctx context.Context, g *globals, s installer.Status) ([]releaseStatus, error) {
	var out []releaseStatus
	var all []installer.Release
	for _, b := range s.Bundles {
		for _, r := range b.Generation.Releases {
			out = append(out, releaseStatus{Bundle: b.Name, Component: r.Component, Namespace: r.Namespace, Name: r.Name,
				Chart: r.Chart, Version: r.Version, Revision: r.Revision, Health: "unknown"})
			all = append(all, r)
		}
	}
	if len(all) == 0 {
		return out, nil
	}
	d, err := co.deployer(g)
	if err != nil || d == nil {
		return out, err
	}
	hs, err := d.Health(ctx, all)
	if err != nil {
		return nil, err
	}
	for i, h := range hs {
		out[i].ClusterRevision, out[i].HelmStatus, out[i].NotReady = h.Revision, h.Status, h.NotReady
		out[i].Health = "ready"
		if !h.Ready {
			out[i].Health = "not ready"
		}
	}
	return out, nil
}

// renderReleaseStatuses prints one line per release.
func renderReleaseStatuses(w io.Writer, rs []releaseStatus) {
	for _, r := range rs {
		health := "(as deployed; --kubeconfig for its health)"
		switch {
		case r.Health == "ready":
			health = "ready"
		case r.Health == "not ready":
			health = "not ready: " + printable(r.NotReady) // cluster text
		}
		if r.Health != "unknown" && r.ClusterRevision != r.Revision {
			health += fmt.Sprintf(" (revision %d in the cluster)", r.ClusterRevision)
		}
		fmt.Fprintf(w, "release    %s/%s  chart %s %s  revision %d  %s\n", r.Namespace, r.Name, r.Chart, r.Version, r.Revision, health)
	}
}

// releasesError is errUnhealthy when a release is not ready.
func releasesError(rs []releaseStatus) error {
	var bad []string
	for _, r := range rs {
		if r.Health == "not ready" {
			bad = append(bad, r.Namespace+"/"+r.Name+" ("+r.NotReady+")")
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d release(s) not ready: %s", errUnhealthy, len(bad), strings.Join(bad, "; "))
}

// reportDiff is report for --plan --diff: the plan, then each changing
// release's manifest diff.
func (o *installOptions) reportDiff(ctx context.Context, g *globals, dep installer.Deployer, res installer.Result) error {
	var diffs []cluster.ReleaseDiff
	if d, ok := dep.(*cluster.Deployer); ok && res.Plan != nil {
		var err error
		if diffs, err = d.Diff(ctx, res.Plan.Releases); err != nil {
			return err
		}
	}
	if g.json() {
		if err := g.printJSON(installDiffOutput{Result: res, Diffs: diffs}); err != nil {
			return err
		}
	} else {
		renderPlan(g.stdout, res.Plan)
		renderDiffs(g.stdout, diffs)
	}
	if o.detailedExitCode && res.Plan.HasChanges() {
		return errPlanChanges
	}
	return nil
}

// renderDiffs prints each release's manifest diff. The deployed side was
// read from the cluster (Helm's release storage): its escapes are shown
// escaped, its line breaks kept.
func renderDiffs(w io.Writer, diffs []cluster.ReleaseDiff) {
	for _, df := range diffs {
		fmt.Fprintf(w, "\n# release %s/%s: %s\n%s", printable(df.Namespace), printable(df.Name), df.Action, terminalText(df.Diff))
	}
}
