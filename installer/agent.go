package installer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"
	"unicode"

	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/signing"
)

// AgentUnitName is the systemd unit of `zdt agent` that install writes
// with Options.Agent (at layout.SystemdUnit(AgentUnitName)).
const AgentUnitName = "zdt-agent.service"

// KindUnit is the kind of the plan line of the agent's unit.
const KindUnit = "unit"

// ErrAgentConfig is returned for agent options the unit cannot carry.
var ErrAgentConfig = errors.New("invalid zdt agent options")

// AgentConfig is what the unit of `zdt agent` runs it with (install
// --agent). It is recorded in generated.json and in each generation, so
// that every later install, rollback or uninstall writes the same unit
// from it: the unit is a generated file, regenerated from recorded
// state, never from guesses. Paths are as seen on the node.
type AgentConfig struct {
	// Node is the name of this node's Node object (--node).
	Node string `json:"node"`
	// Kubeconfig is the agent's kubeconfig (an absolute path, not
	// copied: it holds credentials).
	Kubeconfig string `json:"kubeconfig"`
	// Registries are the HOST[:PORT] of the registries the agent installs
	// bundles from (the agent's --registry, once each; none passes none).
	Registries []string `json:"registries,omitempty"`
	// RegistryConfig is the agent's --registry-config (an absolute path,
	// not copied: it may hold credentials; "" for none).
	RegistryConfig string `json:"registryConfig,omitempty"`
	// CA is the PEM of the registry's CA, written to layout.AgentCA and
	// passed as --ca ("" for none).
	CA string `json:"ca,omitempty"`
	// Trust is the verification policy of the install, made
	// self-contained (signing.Portable): written to layout.AgentPolicy
	// and passed as --policy.
	Trust AgentTrust `json:"trust"`
	// DrainTimeout and ReadyTimeout are the agent's flags of those names
	// (0: the agent's defaults).
	DrainTimeout time.Duration `json:"drainTimeout,omitempty"`
	ReadyTimeout time.Duration `json:"readyTimeout,omitempty"`
}

// AgentTrust is the trust policy the agent verifies bundles with.
type AgentTrust struct {
	// InsecureSkipSignature: the install was --insecure-skip-signature,
	// and so is the agent.
	InsecureSkipSignature bool `json:"insecureSkipSignature,omitempty"`
	// Policy is the self-contained policy (nil with InsecureSkipSignature).
	Policy *signing.PolicyFile `json:"policy,omitempty"`
	// TrustedRoot is the content of the keyless trusted root Policy
	// names (written to layout.AgentTrustedRoot).
	TrustedRoot string `json:"trustedRoot,omitempty"`
}

// MaxAgentNode bounds a Node name (a DNS subdomain).
const MaxAgentNode = 253

// Check refuses options the unit cannot carry faithfully: a node name
// that is no Kubernetes Node name, a relative path, a control character
// (a line break would end the ExecStart line), no trust policy.
func (c *AgentConfig) Check() error {
	if err := checkNodeName(c.Node); err != nil {
		return err
	}
	for _, p := range []struct{ flag, v string }{{"kubeconfig", c.Kubeconfig}, {"registry-config", c.RegistryConfig}} {
		if p.v == "" {
			if p.flag == "kubeconfig" {
				return fmt.Errorf("%w: the agent needs a kubeconfig (systemd gives it no KUBECONFIG, and a host no in-cluster configuration)", ErrAgentConfig)
			}
			continue
		}
		if !path.IsAbs(p.v) || strings.ContainsFunc(p.v, unicode.IsControl) {
			return fmt.Errorf("%w: --%s %q: want an absolute path without control characters", ErrAgentConfig, p.flag, p.v)
		}
	}
	for _, r := range c.Registries {
		if r == "" || strings.ContainsAny(r, "/ ") || strings.ContainsFunc(r, unicode.IsControl) {
			return fmt.Errorf("%w: registry %q: want HOST[:PORT]", ErrAgentConfig, r)
		}
	}
	if c.Trust.InsecureSkipSignature == (c.Trust.Policy != nil) {
		return fmt.Errorf("%w: give the agent a trust policy or --insecure-skip-signature, not both or neither", ErrAgentConfig)
	}
	if c.Trust.Policy != nil && (c.Trust.Policy.Keyless != nil) != (c.Trust.TrustedRoot != "") {
		return fmt.Errorf("%w: a keyless policy needs its trusted root (and only it)", ErrAgentConfig)
	}
	if c.DrainTimeout < 0 || c.ReadyTimeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrAgentConfig)
	}
	return nil
}

// checkNodeName accepts a Kubernetes Node name: a DNS-1123 subdomain
// (lower-case alphanumerics, '-' and '.', starting and ending with an
// alphanumeric, at most 253 characters).
func checkNodeName(n string) error {
	ok := n != "" && len(n) <= MaxAgentNode
	for i := 0; ok && i < len(n); i++ {
		c := n[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case (c == '-' || c == '.') && i > 0 && i < len(n)-1:
		default:
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%w: node name %q: want a Kubernetes Node name (lower-case letters, digits, '-' and '.')", ErrAgentConfig, n)
	}
	return nil
}

// agentFiles are the files of the agent unit: the unit, its trust policy
// (and keyless trusted root) and the registry's CA, by path.
func agentFiles(g genContext) map[string][]byte {
	c := g.agent
	if c == nil {
		return nil
	}
	out := map[string][]byte{}
	onNode := func(p string) string { return strings.TrimSuffix(g.rootDir, "/") + "/" + p }
	args := []string{BinaryTarget, "agent", "--root", g.rootDir, "--node", c.Node, "--kubeconfig", c.Kubeconfig, "--serve-addr", g.serveAddr}
	for _, r := range c.Registries {
		args = append(args, "--registry", r)
	}
	if c.Trust.InsecureSkipSignature {
		args = append(args, "--insecure-skip-signature")
	} else {
		pf := *c.Trust.Policy
		if pf.Keyless != nil {
			kl := *pf.Keyless
			kl.TrustedRoot = path.Base(layout.AgentTrustedRoot) // beside the policy
			pf.Keyless = &kl
			out[layout.AgentTrustedRoot] = []byte(c.Trust.TrustedRoot)
		}
		out[layout.AgentPolicy] = append([]byte(g.header+"# The trust policy of `zdt agent`: the one this node was installed with.\n"), pf.Encode()...)
		args = append(args, "--policy", onNode(layout.AgentPolicy))
	}
	if c.CA != "" {
		out[layout.AgentCA] = []byte(c.CA)
		args = append(args, "--ca", onNode(layout.AgentCA))
	}
	if c.RegistryConfig != "" {
		args = append(args, "--registry-config", c.RegistryConfig)
	}
	if c.DrainTimeout > 0 {
		args = append(args, "--drain-timeout", c.DrainTimeout.String())
	}
	if c.ReadyTimeout > 0 {
		args = append(args, "--ready-timeout", c.ReadyTimeout.String())
	}
	// The agent installs into the root (files, units, /usr/local/bin/zdt)
	// and runs component actions (systemctl, kubeadm): no ProtectSystem,
	// no NoNewPrivileges. Killed anywhere, it resumes where it was.
	out[layout.SystemdUnit(AgentUnitName)] = renderUnit(unitSpec{
		toolVersion: oneLine(g.toolVersion), bundleDigest: string(g.bundleDigest),
		description: "zdt agent: upgrades this node when the cluster's rollout asks",
		args:        args,
		restartSec:  "5s",
	})
	return out
}

// agentFor is the agent the generated files of this install carry:
// Options.Agent when given, none with Options.NoAgent, otherwise the one
// recorded (an install without --agent keeps it: the agent's own
// installs are such installs). It also returns the agent's files the
// record lists (path → sha256), which a plan without the agent removes.
func (r *run) agentFor() (*AgentConfig, map[string]string, error) {
	var rec generatedRecord
	if r.root != nil { // nil: --plan of a root not created yet
		var err error
		if rec, _, err = readGenerated(r.root, r.all); err != nil {
			return nil, nil, err
		}
	}
	recorded := map[string]string{}
	for p, h := range rec.Files {
		if p == layout.SystemdUnit(AgentUnitName) || strings.HasPrefix(p, layout.AgentDir+"/") {
			recorded[p] = h
		}
	}
	switch {
	case r.opts.NoAgent:
		return nil, recorded, nil
	case r.opts.Agent != nil:
		if err := r.opts.Agent.Check(); err != nil {
			return nil, nil, err
		}
		return r.opts.Agent, recorded, nil
	}
	return rec.Agent, recorded, nil
}

// planAgent adds the plan line of the agent's unit: add (no unit yet),
// change (one of its files — unit, policy, trusted root, CA — differs
// from what is on disk, or one recorded is not generated any more),
// unchanged, or remove (a unit zdt wrote, not generated any more).
// From and To are the sha256 of the unit on disk and as generated.
func (r *run) planAgent(p *Plan, g genContext, recorded map[string]string) error {
	unitPath := layout.SystemdUnit(AgentUnitName)
	read := func(rel string) ([]byte, error) {
		if r.root == nil {
			return nil, nil
		}
		b, err := r.root.ReadFile(rel)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", rel, err)
		}
		return b, nil
	}
	onDisk, err := read(unitPath)
	if err != nil {
		return err
	}
	c := Change{Kind: KindUnit, Name: AgentUnitName, Target: "/" + unitPath}
	if onDisk != nil {
		c.From = sha256Hex(onDisk)
	}
	if g.agent == nil {
		if _, ok := recorded[unitPath]; !ok || onDisk == nil {
			return nil // no agent, or a unit zdt did not write
		}
		c.Action, c.Size = ActionRemove, int64(len(onDisk))
		p.Changes = append(p.Changes, c)
		return nil
	}
	want := agentFiles(g)
	unit := want[unitPath]
	c.To, c.Size = sha256Hex(unit), int64(len(unit))
	c.Action = ActionUnchanged
	if onDisk == nil {
		c.Action = ActionAdd
	}
	for rel, b := range want {
		got, err := read(rel)
		if err != nil {
			return err
		}
		if c.Action == ActionUnchanged && (got == nil || !bytes.Equal(got, b)) {
			c.Action = ActionChange
		}
	}
	for rel := range recorded {
		if _, ok := want[rel]; !ok && c.Action == ActionUnchanged {
			c.Action = ActionChange
		}
	}
	p.Changes = append(p.Changes, c)
	return nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// AgentUnit is the agent's unit in a Result: where it is and what the
// install did to it.
type AgentUnit struct {
	// Unit is its name, Path where it is (under the root).
	Unit string `json:"unit"`
	Path string `json:"path"`
	// Node is the Node it upgrades.
	Node string `json:"node"`
	// Action is what the install did (or, with --plan, would do):
	// add, change, unchanged or remove.
	Action Action `json:"action"`
}

// ReadCA reads a PEM file of CA certificates as --ca is read (bounded,
// certificates only), for AgentConfig.CA.
func ReadCA(file string) ([]byte, error) { return readCA(file) }
