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

	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/rollout"
	"zdt.dev/zdt/signing"
)

// agentOptions are the flags of `zdt install --agent`: the unit of `zdt
// agent` that install writes beside that of `zdt serve`.
type agentOptions struct {
	enable       bool
	set          bool // --agent was given (true or false)
	node         string
	kubeconfig   string
	registries   []string
	drainTimeout time.Duration
	readyTimeout time.Duration
}

func (o *agentOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.enable, "agent", false, "also write the systemd unit of zdt agent (/etc/systemd/system/zdt-agent.service), which upgrades this node when 'zdt rollout start' asks; it verifies with this install's trust policy (recorded: --key files and --policy made self-contained under /etc/zdt/agent), --ca and --registry-config. Recorded: later installs without --agent keep it; --agent=false removes it")
	fs.StringVar(&o.node, "agent-node", "", "with --agent: this node's Node name (default: the host name, lower-cased)")
	fs.StringVar(&o.kubeconfig, "agent-kubeconfig", "", "with --agent: the kubeconfig the agent uses, a path on the node, not copied (default: --kubeconfig; one of them is required)")
	fs.StringArrayVar(&o.registries, "agent-registry", nil, "with --agent: a registry (HOST[:PORT]) the agent may install bundles from, its --registry (repeatable; default with --from: the registry of its reference; required with --bundle)")
	fs.DurationVar(&o.drainTimeout, "agent-drain-timeout", 0, "with --agent: the agent's --drain-timeout (default: the agent's)")
	fs.DurationVar(&o.readyTimeout, "agent-ready-timeout", 0, "with --agent: the agent's --ready-timeout (default: the agent's)")
}

// check refuses --agent-* flags without --agent.
func (o *agentOptions) check() error {
	if !o.enable && (o.node != "" || o.kubeconfig != "" || len(o.registries) > 0 || o.drainTimeout != 0 || o.readyTimeout != 0) {
		return usageError{fmt.Errorf("--agent-node, --agent-kubeconfig, --agent-registry, --agent-drain-timeout and --agent-ready-timeout go with --agent")}
	}
	if o.drainTimeout < 0 || o.readyTimeout < 0 {
		return usageError{fmt.Errorf("--agent-drain-timeout and --agent-ready-timeout must not be negative")}
	}
	return nil
}

// apply sets the agent of an install: the options --agent gives (nil
// Agent without --agent: the recorded ones are kept), none with
// --agent=false.
func (o *installOptions) applyAgent(ctx context.Context, opts *installer.Options) error {
	a := &o.agent
	if err := a.check(); err != nil {
		return err
	}
	if !a.enable {
		opts.NoAgent = a.set
		return nil
	}
	node := a.node
	if node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--agent: the host name for --agent-node: %w", err)
		}
		node = strings.ToLower(h)
	}
	kc := a.kubeconfig
	if kc == "" {
		kc = o.kubeconfig
	}
	if kc == "" {
		return usageError{fmt.Errorf("--agent needs a kubeconfig for the agent (--agent-kubeconfig FILE, or --kubeconfig): systemd gives it no KUBECONFIG, and a host has no in-cluster configuration")}
	}
	abs := func(p string) (string, error) {
		if p == "" {
			return "", nil
		}
		return filepath.Abs(p)
	}
	// The registries the agent may install from: given, or the one this
	// node is installed from.
	regs := a.registries
	if len(regs) == 0 && o.from != "" {
		ref, err := registry.ParseBundleRef(o.from)
		if err != nil {
			return usageError{fmt.Errorf("--from: %w", err)}
		}
		regs = []string{ref.Host}
	}
	if len(regs) == 0 {
		return usageError{fmt.Errorf("--agent with --bundle needs --agent-registry HOST[:PORT]: the registries the agent may install bundles from (with --from, its registry)")}
	}
	for _, r := range regs {
		if err := rollout.CheckRegistry(r); err != nil {
			return usageError{fmt.Errorf("--agent-registry: %w", err)}
		}
	}
	c := &installer.AgentConfig{Node: node, Registries: regs, DrainTimeout: a.drainTimeout, ReadyTimeout: a.readyTimeout}
	var err error
	if c.Kubeconfig, err = abs(kc); err != nil {
		return err
	}
	if c.RegistryConfig, err = abs(o.registryConfig); err != nil {
		return err
	}
	if o.ca != "" {
		b, err := installer.ReadCA(o.ca)
		if err != nil {
			return err
		}
		c.CA = string(b)
	}
	// The agent verifies with the policy this install verified with, made
	// self-contained: the files --key and --policy named may be gone by
	// the time the agent upgrades the node.
	if o.trust.insecure {
		c.Trust.InsecureSkipSignature = true
	} else {
		pf, root, err := signing.Portable(ctx, signing.PolicyOptions{Keys: o.trust.keys, File: o.trust.policy})
		if err != nil {
			return fmt.Errorf("--agent: the agent's trust policy: %w", err)
		}
		c.Trust.Policy, c.Trust.TrustedRoot = &pf, string(root)
	}
	if err := c.Check(); err != nil {
		return usageError{fmt.Errorf("--agent: %w", err)}
	}
	opts.Agent = c
	return nil
}

// renderAgentUnit says what install did to the agent's unit.
func renderAgentUnit(w io.Writer, plan bool, u *installer.AgentUnit) {
	if u == nil || plan {
		return // --plan: the plan's unit line says it
	}
	switch u.Action {
	case installer.ActionRemove:
		fmt.Fprintf(w, "agent unit: removed %s (stop it: systemctl disable --now %s)\n", u.Path, u.Unit)
	case installer.ActionUnchanged:
		fmt.Fprintf(w, "agent unit: %s unchanged (node %s)\n", u.Path, u.Node)
	default:
		fmt.Fprintf(w, "agent unit: wrote %s (node %s; start it: systemctl daemon-reload && systemctl enable --now %s)\n", u.Path, u.Node, u.Unit)
	}
}
