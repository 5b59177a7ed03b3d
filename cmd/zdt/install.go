package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"zdt.dev/zdt/cloud/ec2"
	"zdt.dev/zdt/cluster"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/version"
	"zdt.dev/zdt/registry"
)

// installOptions are the flags of `zdt install`.
type installOptions struct {
	bundle           string
	root             string
	plan             bool
	detailedExitCode bool
	amiExport        string
	serveAddr        string
	copyBlobs        bool
	kubeconfig       string
	values           []string
	timeout          time.Duration
	diff             bool
	etcd             cluster.EtcdOptions
	keepBackups      int
	aws              awsOptions
	rewriteImages    string
	trust            trustOptions
	from             string
	ca               string
	replicate        bool
	registryConfig   string
	agent            agentOptions
}

// awsOptions are the flags registering AMIs in EC2.
type awsOptions struct {
	region    string
	endpoint  string
	kmsKey    string
	pruneAMIs bool
}

func (o *awsOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.region, "aws-region", "", "register each AMI in this EC2 region: its disk uploaded as an EBS snapshot (EBS direct APIs), then RegisterImage; an image already registered for the same item digest is reused (credentials: the standard AWS chain)")
	fs.StringVar(&o.endpoint, "aws-endpoint", "", "with --aws-region: the URL of the EC2 and EBS APIs (a private endpoint or an emulator)")
	fs.StringVar(&o.kmsKey, "aws-kms-key", "", "with --aws-region: encrypt the snapshots with this KMS key (ARN or id)")
	fs.BoolVar(&o.pruneAMIs, "prune-amis", false, "with --aws-region: deregister the images this bundle name registered that neither the new nor the previous generation uses, and delete their snapshots")
}

// AddUninstallFlags adds the flags with which uninstall deregisters the
// AMIs the bundle registered.
func (o *awsOptions) AddUninstallFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.region, "aws-region", "", "deregister the images the bundle's generations registered in this EC2 region and that are still tagged by zdt for this bundle name, and delete their snapshots (nothing else is touched; without it they are listed, left registered)")
	fs.StringVar(&o.endpoint, "aws-endpoint", "", "with --aws-region: the URL of the EC2 API (a private endpoint or an emulator)")
}

func (o *installOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bundle, "bundle", "", "bundle archive to install (this or --from)")
	fs.StringVar(&o.from, "from", "", "REGISTRY/[PREFIX/]zdt/NAME[:VERSION|@DIGEST]: install the bundle straight from a registry that holds it (another node's zdt serve, or where zdt push put it); its images stay there: the mirror configuration points at it")
	fs.StringVar(&o.ca, "ca", "", "with --from: PEM file of the registry's CA (e.g. the serving node's var/lib/zdt/tls/ca.crt); also written into every runtime's trust of it")
	fs.BoolVar(&o.replicate, "replicate", false, "with --from: also copy the bundle's layers into this node's registry storage, so that it serves all of it (the registry stays a fallback for digests)")
	fs.StringVar(&o.registryConfig, "registry-config", "", "with --from: YAML file of per-registry settings: CA, insecure, plain HTTP, credentials (default: the Docker config's credentials)")
	fs.StringVar(&o.root, "root", "/", "install everything under this directory (chroot-style images, tests); created if missing")
	fs.BoolVar(&o.plan, "plan", false, "print what would change and stop; writes nothing")
	fs.BoolVar(&o.detailedExitCode, "detailed-exitcode", false, "with --plan: exit 4 when the plan has changes")
	fs.BoolVar(&o.diff, "diff", false, "with --plan and a kubeconfig: also print a unified diff of each changing release's manifests (the cluster's against the bundle's; Secrets' values redacted)")
	fs.StringVar(&o.amiExport, "ami-export", "", "write each AMI's disk image (sparse: zero blocks are holes) and metadata to this directory")
	fs.StringVar(&o.serveAddr, "serve-addr", installer.DefaultServeAddr, "HOST:PORT the registry (zdt serve, started by the generated systemd unit) listens on; the mirror configuration, trust and certificate name it")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "deploy the bundle's charts into the cluster of this kubeconfig (default $KUBECONFIG; with neither, in a pod (KUBERNETES_SERVICE_HOST set) its service account's cluster; otherwise charts are only served)")
	fs.StringArrayVar(&o.values, "values", nil, "CHART=FILE (or COMPONENT/CHART=FILE): a values file merged over the bundle's values for that chart when deploying (repeatable; recorded as part of the values digest)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for one release to become ready")
	addBackupFlags(fs, &o.etcd, &o.keepBackups)
	o.aws.AddFlags(fs)
	fs.StringVar(&o.rewriteImages, "rewrite-images", "", "HOST[:PORT] of the registry serving the bundle (zdt serve), for clusters whose nodes zdt did not configure: every value in the rendered manifests that is one of the bundle's images (containers, init containers, custom resources, env values; matched whole after normalizing, never a substring) is rewritten to its name there (HOST/library/nginx:1.25, HOST/quay.io/cilium/cilium:v1); recorded in the generation, a changed HOST upgrades the releases")
	fs.BoolVar(&o.copyBlobs, "copy-blobs", false, "copy the blobs into the registry storage even when the bundle is on the same filesystem and could be kept there by a hard link")
	o.trust.AddFlags(fs)
	o.agent.AddFlags(fs)
}

func newInstallCmd(g *globals) *cobra.Command {
	o := &installOptions{}
	cmd := &cobra.Command{
		Use:   "install (--bundle BUNDLE | --from REGISTRY/zdt/NAME[:VERSION|@DIGEST] [--ca FILE] [--replicate]) [--root DIR] [--plan]",
		Short: "Verify a bundle and install it; the same command upgrades",
		Long: `Verify a bundle and install it: the same command upgrades.

Before anything is written the bundle's signature is checked against the
trust policy (--key, --policy; an unsigned bundle is refused unless
--insecure-skip-signature) and its structure is checked; every byte that is
written is hashed while it is copied. The plan compares the bundle
with what is installed (add / change / unchanged / remove per item);
--plan prints it and stops. Applying it makes the images, charts and
artifacts part of the registry storage that 'zdt serve' serves: when the
bundle is on the same filesystem as ROOT the archive itself is kept there
(a hard link, made after every blob of it was hashed; nothing is copied, so
do not overwrite the bundle file in place afterwards: replace it), otherwise
(or with --copy-blobs) the blobs the storage lacks are copied. It then
places files atomically (keeping the previous version for rollback), writes
the containerd and containers mirror configuration and the systemd unit of
'zdt serve', places this zdt binary at /usr/local/bin/zdt (which the unit
runs; hashed, its digest recorded, the previous one kept for rollback),
exports AMIs, removes what the bundle no longer has, and records
a new generation — only when every step succeeded. Installing the same
bundle again changes nothing. State lives under ROOT/var/lib/zdt.

A delta bundle (bundle create --base) is installed over its base: the blobs
it leaves out are read from what is installed (the base's kept archive or
its copied blobs); where the base is not installed it is refused, naming it.

--from installs a bundle from a registry that holds it instead of a file:
another node's 'zdt serve' (REGISTRY is its HOST:PORT, --ca its
var/lib/zdt/tls/ca.crt) or the site registry 'zdt push --to REGISTRY/PREFIX'
filled (REGISTRY/PREFIX/zdt/NAME). The root is resolved to a digest once and
everything is read by digest; the signature and attestations are read from
the registry and checked against the same trust policy before anything is
written (refused the same way, exit 3). Files are read from the registry,
every byte checked. Of the images only the metadata is copied (manifests,
configs, tags; checked against the signed digests): this node's 'zdt serve'
answers their tags from the signed bundle and is the only host the mirror
configuration lets resolve tags; the registry follows it for content by
digest only (trusting --ca), so whoever can push to it can't change what a
tag runs. --replicate copies the whole bundle into this node's registry
storage too, so that its 'zdt serve' serves all of it (CRI-O and podman
need that to pull by tag from signed data: without it they resolve a tag
at the image's own registry, unsigned, or fail when it is unreachable). Plan, re-runs, generations and rollback are
those of --bundle.
Credentials come from the Docker config and credential helpers, or
--registry-config.

--agent also writes /etc/systemd/system/zdt-agent.service, which runs 'zdt
agent' on this node (--agent-node, default the host name) with the cluster
of --agent-kubeconfig (default --kubeconfig), the registry's --ca and
--registry-config, and this install's trust policy made self-contained in
/etc/zdt/agent/policy.yaml. The options are recorded: the same install again
changes nothing, a later install without --agent (the agent's own, during a
rollout) keeps the unit, rollback restores the previous one, --agent=false
removes it. Enable it with 'systemctl enable --now zdt-agent.service'.`,
		Example: `  zdt install --bundle platform-1.4.0.zdt --key cosign.pub --plan
  zdt install --bundle platform-1.4.0.zdt --key cosign.pub --root /mnt/image
  zdt install --from node1.site:5000/zdt/platform:1.4.0 --ca node1-ca.crt --key cosign.pub
  zdt install --from harbor.site/platform/zdt/platform@sha256:… --key cosign.pub --replicate
  zdt install --from node1.site:5000/zdt/platform:1.4.0 --ca node1-ca.crt --key cosign.pub --agent --agent-kubeconfig /etc/kubernetes/admin.conf`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.agent.set = cmd.Flags().Changed("agent")
			return o.run(cmd.Context(), g)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

var planSigns = map[installer.Action]string{
	installer.ActionAdd: "+", installer.ActionChange: "~", installer.ActionRepair: "!",
	installer.ActionRemove: "-", installer.ActionUnchanged: "=",
}

var amiSigns = map[installer.Action]string{
	installer.AMIRegister: "+", installer.AMIReuse: "=", installer.AMIDeregister: "-",
}

var releaseSigns = map[installer.Action]string{
	installer.ReleaseInstall: "+", installer.ReleaseUpgrade: "~", installer.ReleaseUnchanged: "=", installer.ReleaseUninstall: "-",
}

func renderPlan(w io.Writer, p *installer.Plan) {
	if p == nil {
		return
	}
	if p.Installed != nil {
		fmt.Fprintf(w, "plan: %s (%s) over generation %d (%s %s)\n", p.Bundle, shortDigest(p.BundleDigest), p.Installed.Number, p.Installed.Name, p.Installed.Version)
	} else {
		fmt.Fprintf(w, "plan: %s (%s), nothing installed yet\n", p.Bundle, shortDigest(p.BundleDigest))
	}
	for _, b := range p.Beside {
		fmt.Fprintf(w, "  beside %s %s (generation %d), left as it is\n", b.Name, b.Version, b.Number)
	}
	for _, c := range p.Changes {
		name := c.Name
		if c.Target != "" {
			name += " -> " + c.Target
		}
		fmt.Fprintf(w, "  %s %-6s %-50s %s\n", planSigns[c.Action], c.Kind, name, humanBytes(c.Size))
	}
	for _, r := range p.Releases {
		why := ""
		if len(r.Reasons) > 0 {
			why = " (" + strings.Join(r.Reasons, ", ") + ")"
		}
		fmt.Fprintf(w, "  %s release %-42s %s %s%s\n", releaseSigns[r.Action], r.Namespace+"/"+r.Name, r.Chart, r.Version, why)
	}
	// An image's id, name and tags were read back from EC2.
	for _, a := range p.AMIs {
		id := printable(a.ImageID)
		if id == "" {
			id = "(new)"
		}
		fmt.Fprintf(w, "  %s %-10s %-21s %-40s %s %s\n", amiSigns[a.Action], string(a.Action), id, printable(a.Name), printable(a.Region), printable(shortDigest(a.ItemDigest)))
	}
	for _, a := range p.Actions {
		cmd := strings.Join(a.Command, " ")
		if len(cmd) > 60 {
			cmd = cmd[:57] + "..."
		}
		fmt.Fprintf(w, "  ! action  %-42s %s (%s)\n", fmt.Sprintf("%s/%s[%d] %s", a.Component, a.Phase, a.Index, a.Name), cmd, a.Reason)
	}
	counts := p.Counts()
	keys := make([]string, 0, len(counts))
	for a := range counts {
		keys = append(keys, string(a))
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "%d to add, %d to change, %d to repair, %d to remove, %d unchanged\n",
		counts[installer.ActionAdd], counts[installer.ActionChange], counts[installer.ActionRepair], counts[installer.ActionRemove], counts[installer.ActionUnchanged])
}

type rootOptions struct{ root string }

func (o *rootOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.root, "root", "/", "the root zdt installed under")
}

// nameOptions are the flags of a command acting on one installed bundle.
type nameOptions struct {
	rootOptions
	name string
}

func (o *nameOptions) AddFlags(fs *pflag.FlagSet) {
	o.rootOptions.AddFlags(fs)
	fs.StringVar(&o.name, "name", "", "the installed bundle to act on (needed when several are installed side by side)")
}

func newStatusCmd(g *globals) *cobra.Command {
	o := &nameOptions{}
	co := &clusterOptions{}
	cmd := &cobra.Command{
		Use:   "status [--root DIR] [--name NAME]",
		Short: "Show what is installed, whether installed files drifted, and the registry's health",
		Long: `Show what is installed, whether installed files drifted, and the registry's health.

Every bundle installed side by side under ROOT is listed (--name: only
that one). It exits 5 when an installed or generated file drifted or the
registry storage does not serve an installed bundle whole; installing the
same bundle again repairs both.

The Helm releases install deployed are listed with their namespace, chart
and revision; with --kubeconfig (or $KUBECONFIG) also their health: ready,
or not ready with the first object that is not (kstatus, read without
waiting), and exit 5 when one is not ready.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := installer.GetStatusOf(cmd.Context(), o.root, o.name)
			if err != nil {
				return err
			}
			rels, err := co.releaseStatuses(cmd.Context(), g, s)
			if err != nil {
				return err
			}
			if g.json() {
				out := newStatusOutput(s)
				out.Releases = rels
				if err := g.printJSON(out); err != nil {
					return err
				}
				return cmp.Or(statusError(s), releasesError(rels))
			}
			if !s.Installed {
				fmt.Fprintln(g.stdout, "nothing installed")
				renderBackups(g.stdout, o.root, s.Backups)
				return nil
			}
			if c := s.Generation; c != nil {
				fmt.Fprintf(g.stdout, "generation %d: %s %s\nbundle     %s\ninstalled by zdt %s\nitems      %d images, %d charts, %d files, %d amis\ngenerations %v\n",
					c.Number, c.Name, c.Version, c.BundleDigest, c.ToolVersion, s.Counts["image"], s.Counts["chart"], s.Counts["file"], s.Counts["ami"], s.History)
				renderReleaseStatuses(g.stdout, rels)
				for _, a := range c.AMIs {
					fmt.Fprintf(g.stdout, "ami        %s  %s  %s  item %s %s\n", printable(a.ImageID), printable(a.Name), printable(a.Region), printable(a.Item), printable(a.ItemDigest))
				}
			} else {
				fmt.Fprintf(g.stdout, "%d bundles installed side by side\n", len(s.Bundles))
				for _, b := range s.Bundles {
					c := b.Generation
					health := "registry healthy"
					if b.Registry == nil {
						health = "nothing in the registry"
					} else if n := len(b.Registry.Problems); n > 0 {
						health = fmt.Sprintf("registry: %d problem(s)", n)
					}
					fmt.Fprintf(g.stdout, "%-20s %s  generation %d  %s  %d images, %d charts, %d files, %d amis  generations %v  drift %d  %s\n",
						b.Name, c.Version, c.Number, shortDigest(c.BundleDigest), b.Counts["image"], b.Counts["chart"], b.Counts["file"], b.Counts["ami"], b.History, len(b.Drift), health)
				}
				renderReleaseStatuses(g.stdout, rels)
			}
			renderBackups(g.stdout, o.root, s.Backups)
			if len(s.Drift) > 0 {
				fmt.Fprintf(g.stdout, "drift      %d file(s) differ from what zdt installed: %v (re-run zdt install to repair)\n", len(s.Drift), s.Drift)
			} else {
				fmt.Fprintln(g.stdout, "drift      none")
			}
			if r := s.Registry; r != nil {
				where := fmt.Sprintf("%d kept archive(s), %d copied blob(s) (%s)", len(r.KeptArchives), r.CopiedBlobs, humanBytes(r.CopiedBytes))
				if len(r.Problems) == 0 {
					fmt.Fprintf(g.stdout, "registry   healthy: %d placements served from %s\n", r.Served, where)
				} else {
					fmt.Fprintf(g.stdout, "registry   %d problem(s), %d placements served from %s:\n", len(r.Problems), r.Served, where)
					for _, p := range r.Problems {
						fmt.Fprintf(g.stdout, "           %s\n", p)
					}
					fmt.Fprintln(g.stdout, "           (re-run zdt install to repair)")
				}
			}
			return cmp.Or(statusError(s), releasesError(rels))
		},
	}
	o.AddFlags(cmd.Flags())
	co.AddReadFlags(cmd.Flags(), "read the health of the Helm releases in the cluster of this kubeconfig")
	return cmd
}

// statusError is the error (exit 5, exitUnhealthy) of a status that found
// drifted files or registry problems, nil for a healthy one.
func statusError(s installer.Status) error {
	if s.Healthy() {
		return nil
	}
	var what []string
	if len(s.Drift) > 0 {
		what = append(what, fmt.Sprintf("%d file(s) drifted", len(s.Drift)))
	}
	if s.Registry != nil && len(s.Registry.Problems) > 0 {
		what = append(what, fmt.Sprintf("the registry storage has %d problem(s)", len(s.Registry.Problems)))
	}
	return fmt.Errorf("%w: %s; re-run zdt install with the installed bundle to repair", errUnhealthy, strings.Join(what, " and "))
}

func newRollbackCmd(g *globals) *cobra.Command {
	o := &nameOptions{}
	co := &clusterOptions{}
	cmd := &cobra.Command{
		Use:   "rollback [--root DIR] [--name NAME]",
		Short: "Return to the previous generation (files, configuration and registry tags)",
		Long: `Return an installed bundle to its previous generation: its files,
configuration and registry tags. Other bundles installed side by side are
not touched; with several installed, --name says which one.

The Helm releases install deployed (--kubeconfig) go back to the revisions
the previous generation recorded: a release at another revision is rolled
back with Helm (a new revision), one the previous generation did not have is
uninstalled, one it had that the current generation pruned is installed
again from the previous bundle (its kept archive). CRDs stay as they are.
Without a kubeconfig a rollback that would change releases is refused
before anything is written. Before anything is written the cluster is
backed up as install does (an etcd snapshot with --etcd-endpoints, else an
export of the releases' objects, into ROOT/var/lib/zdt/backups, recorded in
the new generation; --keep-backups prunes them); a failed backup stops the
rollback with nothing changed.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimple(cmd.Context(), g, o.root, "rolled back", func(ctx context.Context) (installer.Result, error) {
				store, err := registry.OpenStore(o.root, registry.StoreOptions{Logger: g.logger()})
				if err != nil {
					return installer.Result{}, err
				}
				defer store.Close()
				opts := installer.Options{Root: o.root, Name: o.name, ToolVersion: version.String(), Logger: g.logger(), Registry: store, KeepBackups: co.keepBackups}
				if d, err := co.deployer(g); err != nil {
					return installer.Result{}, err
				} else if d != nil {
					opts.Deployer = d
				}
				return installer.Rollback(ctx, opts)
			})
		},
	}
	o.AddFlags(cmd.Flags())
	co.AddFlags(cmd.Flags(), "roll the Helm releases back in the cluster of this kubeconfig")
	co.AddBackupFlags(cmd.Flags())
	return cmd
}

func newUninstallCmd(g *globals) *cobra.Command {
	o := &nameOptions{}
	co := &clusterOptions{}
	aws := &awsOptions{}
	cmd := &cobra.Command{
		Use:   "uninstall [--root DIR] [--name NAME]",
		Short: "Remove an installed bundle: its files, and with the last one every generated file and zdt's state",
		Long: `Remove an installed bundle: its files and what only it holds in the
registry storage. With several bundles installed side by side, --name says
which one, and the generated files are written for those that stay; the
last one takes every generated file and zdt's state (registry storage
included) with it.

The Helm releases install deployed (--kubeconfig) are uninstalled first, in
reverse component order; the CRDs their charts shipped are kept (deleting a
CRD deletes every object of it) and named. Without a kubeconfig, uninstall
of a bundle that deployed releases is refused before anything is removed.
Before any release changes the cluster is backed up as install does (an
etcd snapshot with --etcd-endpoints, else an export of the releases'
objects, into ROOT/var/lib/zdt/backups; --keep-backups prunes them); a
failed backup stops the uninstall. The backups stay after the last bundle
is uninstalled (status lists them).

The AMIs its generations registered (install --aws-region) are left
registered and listed, unless --aws-region is given: then the images in
that region that a generation recorded and that are still tagged by zdt
for this bundle name are deregistered and their snapshots deleted;
nothing else is touched.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := registry.OpenStore(o.root, registry.StoreOptions{Logger: g.logger()})
			if err != nil {
				return err
			}
			defer store.Close()
			opts := installer.Options{Root: o.root, Name: o.name, ToolVersion: version.String(), Logger: g.logger(), Registry: store, KeepBackups: co.keepBackups}
			if d, err := co.deployer(g); err != nil {
				return err
			} else if d != nil {
				opts.Deployer = d
			}
			if aws.region != "" {
				reg, err := ec2.New(cmd.Context(), ec2.Options{Region: aws.region, Endpoint: aws.endpoint, Logger: g.logger()})
				if err != nil {
					return err
				}
				opts.AMIs = reg
			} else if aws.endpoint != "" {
				return usageError{fmt.Errorf("--aws-endpoint needs --aws-region")}
			}
			res, err := installer.Uninstall(cmd.Context(), opts)
			if err != nil {
				return err
			}
			// installer.Result counts the files uninstall removed in
			// FilesWritten: say what they are.
			if g.json() {
				return g.printJSON(uninstallOutput{Plan: res.Plan, Generation: res.Generation, Applied: res.Applied, FilesRemoved: res.FilesWritten, Releases: res.Releases, Backup: res.Backup,
					AMIsDeregistered: res.AMIsDeregistered, AMIsLeft: res.AMIsLeft})
			}
			renderBackup(g.stdout, o.root, res.Backup)
			renderReleaseChanges(g.stdout, res.Releases)
			for _, a := range res.AMIsDeregistered {
				fmt.Fprintf(g.stdout, "ami: deregistered %s %s (%s), deleted snapshot %s\n", a.ImageID, a.Name, a.Region, cmp.Or(a.SnapshotID, "(none recorded)"))
			}
			for _, a := range res.AMIsLeft {
				fmt.Fprintf(g.stdout, "ami: left registered %s %s in %s, item %s (zdt uninstall --aws-region %s deregisters it)\n", a.ImageID, a.Name, cmp.Or(a.Region, "its region"), a.Item, cmp.Or(a.Region, "REGION"))
			}
			fmt.Fprintf(g.stdout, "uninstalled (%d files removed)\n", res.FilesWritten)
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	co.AddFlags(cmd.Flags(), "uninstall the Helm releases from the cluster of this kubeconfig")
	co.AddBackupFlags(cmd.Flags())
	aws.AddUninstallFlags(cmd.Flags())
	return cmd
}

func runSimple(ctx context.Context, g *globals, root, what string, f func(context.Context) (installer.Result, error)) error {
	res, err := f(ctx)
	if err != nil {
		return err
	}
	if g.json() {
		return g.printJSON(res)
	}
	renderBackup(g.stdout, root, res.Backup)
	renderReleaseChanges(g.stdout, res.Releases)
	fmt.Fprintf(g.stdout, "%s: generation %d (%d files written)\n", what, res.Generation, res.FilesWritten)
	return nil
}
