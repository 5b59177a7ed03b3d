package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/cluster"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/version"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/remote"
	"zdt.dev/zdt/rollout"
)

// kubeOptions is the cluster of rollout and agent.
type kubeOptions struct{ kubeconfig string }

func (o *kubeOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "the cluster's kubeconfig (default $KUBECONFIG; with neither, in a pod, its service account)")
}

func (o *kubeOptions) client() (kubernetes.Interface, error) {
	tgt, ok := cluster.SelectTarget(o.kubeconfig, os.Getenv)
	if !ok {
		return nil, usageError{fmt.Errorf("no cluster: --kubeconfig, KUBECONFIG or the in-cluster configuration is required")}
	}
	var cfg *rest.Config
	var err error
	if tgt.InCluster {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", tgt.Kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tgt, err)
	}
	return kubernetes.NewForConfig(cfg)
}

// fromRegistry is the trust and registry configuration of a bundle read
// from a registry (rollout start, agent), as install --from has them.
type fromRegistry struct {
	trust          trustOptions
	ca             string
	registryConfig string
}

func (o *fromRegistry) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ca, "ca", "", "PEM file of the registry's CA (e.g. the serving node's var/lib/zdt/tls/ca.crt)")
	fs.StringVar(&o.registryConfig, "registry-config", "", "YAML file of per-registry settings: CA, insecure, plain HTTP, credentials")
	o.trust.AddFlags(fs)
}

func (o *fromRegistry) remotes(ref registry.BundleRef) (*remote.Remotes, error) {
	return bundleRemotes(ref, o.registryConfig, o.ca)
}

// bundleRemotes is the registry client of a bundle read from a registry
// (install --from, rollout start, agent): the --registry-config file, with
// --ca as the CA of the bundle's registry.
func bundleRemotes(ref registry.BundleRef, registryConfig, ca string) (*remote.Remotes, error) {
	cfg := &remote.RegistryConfig{}
	if registryConfig != "" {
		var err error
		if cfg, err = remote.LoadRegistryConfig(registryConfig); err != nil {
			return nil, err
		}
	}
	if ca != "" {
		if cfg.Registries == nil {
			cfg.Registries = map[string]remote.RegistryHost{}
		}
		h := cfg.Registries[ref.Host]
		h.CA = ca
		cfg.Registries[ref.Host] = h
	}
	return remote.New(cfg, 4), nil
}

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Upgrade every node of a cluster to a bundle, node by node (with zdt agent on each node)",
	}
	cmd.AddCommand(newRolloutStartCmd(g), newRolloutStatusCmd(g), newRolloutResumeCmd(g))
	return cmd
}

func newRolloutStartCmd(g *globals) *cobra.Command {
	var k kubeOptions
	var from fromRegistry
	maxUnavailable := 1
	cmd := &cobra.Command{
		Use:   "start REGISTRY/[PREFIX/]zdt/NAME[:VERSION|@DIGEST] [--max-unavailable N]",
		Short: "Verify a bundle in a registry and make it the cluster's desired bundle",
		Long: `Start checks the bundle's signature and attestations against the trust
policy (--key, --policy) exactly as 'zdt install --from' does, then records
the bundle, pinned to its digest, in the ConfigMap zdt-system/zdt-rollout.
The zdt agent of each node then upgrades its node: control-plane nodes
first and one at a time, then at most --max-unavailable workers at once,
each cordoned, drained through the eviction API, installed, waited Ready,
uncordoned and annotated with zdt.dev/bundle-digest.`,
		Example: `  zdt rollout start node1.site:5000/zdt/platform:1.5.0 --ca node1-ca.crt --key cosign.pub --kubeconfig admin.conf`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, err := registry.ParseBundleRef(args[0])
			if err != nil {
				return usageError{err}
			}
			if maxUnavailable < 1 {
				return usageError{fmt.Errorf("--max-unavailable must be at least 1")}
			}
			cs, err := k.client()
			if err != nil {
				return err
			}
			policy, err := from.trust.load(ctx)
			if err != nil {
				return err
			}
			remotes, err := from.remotes(ref)
			if err != nil {
				return err
			}
			v, _, err := installer.OpenVerifiedFrom(ctx, args[0], &policy, remotes)
			if err != nil {
				return err
			}
			dig := v.Root.Digest
			v.Close()
			st, err := rollout.Start(ctx, cs, rollout.StartOptions{Reference: ref.Pinned(dig).String(), Digest: dig.String(), MaxUnavailable: maxUnavailable})
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(st)
			}
			fmt.Fprintf(g.stdout, "rollout %s: %s (max unavailable %d)\n", printable(st.ID), printable(st.Reference), st.MaxUnavailable)
			return nil
		},
	}
	k.AddFlags(cmd.Flags())
	from.AddFlags(cmd.Flags())
	cmd.Flags().IntVar(&maxUnavailable, "max-unavailable", 1, "how many worker nodes may be upgraded (cordoned) at once; control-plane nodes go one at a time")
	return cmd
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var k kubeOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the rollout and every node: bundle digest, phase, since, error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := k.client()
			if err != nil {
				return err
			}
			st, err := rollout.GetStatus(cmd.Context(), cs)
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(st)
			}
			if err := printRolloutStatus(g.stdout, st); err != nil {
				return err
			}
			s := st.State
			if s.Phase == rollout.PhasePaused {
				return fmt.Errorf("rollout %s paused: fix the failed node, then zdt rollout resume", s.ID)
			}
			return nil
		},
	}
	k.AddFlags(cmd.Flags())
	return cmd
}

// printRolloutStatus writes the status as text. Every string of it was
// read from the cluster (the ConfigMap, Node annotations) where anyone able
// to write them may have planted escapes or line breaks: each is printed
// through printable.
func printRolloutStatus(w io.Writer, st *rollout.Status) error {
	s := st.State
	fmt.Fprintf(w, "rollout %s: %s, %s since %s (max unavailable %d)\n", printable(s.ID), printable(s.Reference), printable(s.Phase), s.Since.Format(time.RFC3339), s.MaxUnavailable)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tBUNDLE\tPHASE\tSINCE\tREADY\tCORDONED\tERROR")
	for _, n := range st.Nodes {
		role, since, dig := "worker", "-", "-"
		if n.ControlPlane {
			role = "control-plane"
		}
		if !n.Since.IsZero() {
			since = n.Since.Format(time.RFC3339)
		}
		if n.Digest != "" {
			dig = shortDigest(n.Digest)
		}
		cordoned := fmt.Sprint(n.Cordoned)
		if n.CordonedBy == rollout.CordonedByOther {
			cordoned += " (not by the rollout: kept)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\t%s\n", printable(n.Name), role, printable(dig), printable(n.Phase), since, n.Ready, cordoned, printable(n.Error))
	}
	return tw.Flush()
}

func newRolloutResumeCmd(g *globals) *cobra.Command {
	var k kubeOptions
	cmd := &cobra.Command{
		Use:   "resume",
		Short: "Continue a paused rollout (the failed nodes' agents retry from where they stopped)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := k.client()
			if err != nil {
				return err
			}
			st, err := rollout.Resume(cmd.Context(), cs)
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(st)
			}
			fmt.Fprintf(g.stdout, "rollout %s: %s\n", printable(st.ID), printable(st.Phase))
			return nil
		},
	}
	k.AddFlags(cmd.Flags())
	return cmd
}

func newAgentCmd(g *globals) *cobra.Command {
	var k kubeOptions
	var from fromRegistry
	var node, root, serveAddr string
	var opts rollout.AgentOptions
	var registries []string
	var allowDowngrade bool
	cmd := &cobra.Command{
		Use:   "agent --node NAME --registry HOST[:PORT] [--root DIR] [--kubeconfig K]",
		Short: "Upgrade this node when the cluster's rollout asks (long-running)",
		Long: `The agent watches the rollout that 'zdt rollout start' records (the
ConfigMap zdt-system/zdt-rollout) and its own Node through the API
server's watch, re-reading both every --poll as a safety net, and, when
its node is not at the desired bundle, takes a slot (a Lease
zdt-rollout-slot-N in zdt-system), cordons the node, drains it through the
eviction API (PodDisruptionBudgets respected, DaemonSet and mirror pods
left), installs the bundle from its registry into --root as 'zdt install
--from' does (same trust flags), waits for the Node to be Ready,
uncordons it, annotates it with zdt.dev/bundle-digest and
zdt.dev/generation and releases the slot. A failed step leaves the node
cordoned and pauses the rollout with the error. A node is done only when
its annotation and what --root has installed both name the bundle; a node
someone else cordoned is upgraded but left cordoned.

Whoever may write the ConfigMap must not be able to point the agents at
any registry: the agent installs only from the registries given with
--registry (HOST[:PORT], repeatable, at least one). A rollout naming
another registry is refused before the node is cordoned: the node records
failed (step "admit") with the refused and the allowed registries, the
rollout pauses, nothing is installed.

Nor can a rollout downgrade the node silently: when its turn comes, the
agent verifies the bundle's signature (as install does) and refuses,
again before the cordon, a bundle of another name than the one installed
under --root or of a lower version (semantic versions compared when both
are; otherwise only the same version passes), unless the agent runs with
--allow-downgrade. The install itself checks again after verifying the
signature and before writing anything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if node == "" {
				return usageError{fmt.Errorf("--node is required")}
			}
			if len(registries) == 0 {
				return usageError{fmt.Errorf("--registry is required: the registries (HOST[:PORT]) this agent installs from")}
			}
			for _, r := range registries {
				if err := rollout.CheckRegistry(r); err != nil {
					return usageError{fmt.Errorf("--registry: %w", err)}
				}
			}
			cs, err := k.client()
			if err != nil {
				return err
			}
			policy, err := from.trust.load(ctx)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the zdt binary to install: %w", err)
			}
			logger := g.logger()
			opts.Node, opts.Logger, opts.Registries = node, logger, registries
			// Asked before the node is cordoned: a bundle this node would
			// refuse is refused before anything is disturbed.
			opts.Admit = func(ctx context.Context, ref string) error {
				r, err := registry.ParseBundleRef(ref)
				if err != nil {
					return err
				}
				remotes, err := from.remotes(r)
				if err != nil {
					return err
				}
				v, _, err := installer.OpenVerifiedFrom(ctx, ref, &policy, remotes)
				if err != nil {
					return err
				}
				defer v.Close()
				if allowDowngrade {
					return nil
				}
				if err := installer.CheckUpgrade(root, v.Config.Name, v.Config.Version); err != nil {
					return fmt.Errorf("%w (an agent started with --allow-downgrade installs it)", err)
				}
				return nil
			}
			opts.Install = func(ctx context.Context, ref string) (int, error) {
				r, err := registry.ParseBundleRef(ref)
				if err != nil {
					return 0, err
				}
				remotes, err := from.remotes(r)
				if err != nil {
					return 0, err
				}
				// A node that serves the bundle whole (installed from its
				// file, or --from with --replicate) goes on serving it.
				whole, err := installer.ServesWhole(root, r.Name)
				if err != nil {
					return 0, err
				}
				res, err := installer.InstallFrom(ctx, ref, installer.FromOptions{
					Options: installer.Options{Root: root, ServeAddr: serveAddr, ToolVersion: version.String(), Logger: logger, Binary: self, NodeName: node, RefuseDowngrade: !allowDowngrade},
					Policy:  policy, CA: from.ca, Remotes: remotes, Replicate: whole,
				})
				return res.Generation, err
			}
			opts.Installed = func(ctx context.Context) ([]string, error) {
				gens, err := installer.CurrentGenerations(root)
				if err != nil {
					return nil, err
				}
				var out []string
				for _, g := range gens {
					out = append(out, g.BundleDigest)
				}
				return out, nil
			}
			a, err := rollout.NewAgent(cs, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "agent of node %s started\n", node)
			return a.Run(ctx)
		},
	}
	k.AddFlags(cmd.Flags())
	from.AddFlags(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVar(&node, "node", "", "the name of this node's Node object")
	fs.BoolVar(&allowDowngrade, "allow-downgrade", false, "install a rollout's bundle even when it is another bundle than the one installed or an older version (refused by default)")
	fs.StringArrayVar(&registries, "registry", nil, "a registry (HOST[:PORT]) this agent installs from (repeatable, required): a rollout naming another is refused")
	fs.StringVar(&root, "root", "/", "install under this directory")
	fs.StringVar(&serveAddr, "serve-addr", installer.DefaultServeAddr, "as for zdt install")
	fs.DurationVar(&opts.DrainTimeout, "drain-timeout", 5*time.Minute, "how long a drain may take (evictions a PodDisruptionBudget refuses are retried until then)")
	fs.DurationVar(&opts.InstallTimeout, "install-timeout", rollout.DefaultInstallTimeout, "how long the install may take (download included); a slower one fails the node's install step")
	fs.DurationVar(&opts.ReadyTimeout, "ready-timeout", 5*time.Minute, "how long to wait for the Node to be Ready after the install")
	fs.DurationVar(&opts.LeaseDuration, "lease-duration", 30*time.Second, "a slot Lease's duration (an agent that stops renewing it loses it)")
	fs.DurationVar(&opts.Poll, "poll", rollout.DefaultResync, "the resync interval: the agent watches the rollout and its Node and reacts to each change, and also re-reads the rollout this often")
	return cmd
}
