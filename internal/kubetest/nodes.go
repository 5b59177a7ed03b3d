package kubetest

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// The identities of the components WithControllers and WithNodes start
// (system:masters, each its own name in the audit log).
const (
	ControllerManagerUser = "kubetest-controller-manager"
	SchedulerUser         = "kubetest-scheduler"
	KwokUser              = "kubetest-kwok"
)

// KwokAnnotation marks the nodes kwok keeps (WithNodes sets it); a node
// without it is left alone.
const KwokAnnotation = "kwok.x-k8s.io/node"

// Option configures Start.
type Option func(*options)

type options struct {
	controllers bool
	nodes       []string
}

// WithControllers also starts kube-controller-manager (every default
// controller: deployments, replica sets, garbage collection, disruption,
// node lifecycle, namespaces, ...) and kube-scheduler, from the same
// Kubernetes build. Start returns once the controller manager works (the
// default namespace has its ServiceAccount).
func WithControllers() Option {
	return func(o *options) { o.controllers = true }
}

// WithNodes registers fake nodes that kwok (sigs.k8s.io/kwok, built with
// the control plane) keeps as a kubelet would: each is "NAME" or
// "NAME:ROLE" (ROLE becomes the label node-role.kubernetes.io/ROLE, e.g.
// "cp-1:control-plane"; no taint is added). kwok keeps each node Ready
// (status, and a Lease in kube-node-lease renewed every 10 s), once the
// not-ready taint is lifted when WithControllers runs the node lifecycle
// controller, makes the
// pods bound to it Running and Ready (container statuses, a pod IP) and
// removes a pod once it is being deleted (an eviction, a scale-down) — its
// "containers" stop at once. Start returns once every node is Ready.
// Without WithControllers nothing schedules pods: a test binds them itself.
func WithNodes(nodes ...string) Option {
	return func(o *options) { o.nodes = append(o.nodes, nodes...) }
}

func (o options) binaries() []string {
	bins := []string{"etcd", "kube-apiserver"}
	if o.controllers {
		bins = append(bins, "kube-controller-manager", "kube-scheduler")
	}
	if len(o.nodes) > 0 {
		bins = append(bins, "kwok")
	}
	return bins
}

func (o options) describe() string {
	var parts []string
	if o.controllers {
		parts = append(parts, "controllers and scheduler")
	}
	if len(o.nodes) > 0 {
		parts = append(parts, fmt.Sprintf("%d kwok nodes", len(o.nodes)))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (with " + strings.Join(parts, ", ") + ")"
}

type nodeSpec struct{ name, role string }

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func parseNodes(specs []string) ([]nodeSpec, error) {
	var nodes []nodeSpec
	seen := map[string]bool{}
	for _, s := range specs {
		name, role, _ := strings.Cut(s, ":")
		if !dnsLabel.MatchString(name) || role != "" && !dnsLabel.MatchString(role) {
			return nil, fmt.Errorf("node %q: want NAME or NAME:ROLE (DNS labels)", s)
		}
		if seen[name] {
			return nil, fmt.Errorf("node %q given twice", name)
		}
		seen[name] = true
		nodes = append(nodes, nodeSpec{name, role})
	}
	return nodes, nil
}

// startControllers starts kube-controller-manager and kube-scheduler
// (serving nothing: --secure-port=0; no leader election).
func (c *Cluster) startControllers(ctx context.Context, tools string) error {
	kcmConfig, err := c.writeKubeconfig("controller-manager", ControllerManagerUser, c.certs.controllerManager)
	if err != nil {
		return err
	}
	schedConfig, err := c.writeKubeconfig("scheduler", SchedulerUser, c.certs.scheduler)
	if err != nil {
		return err
	}
	kcm, err := c.spawn("kube-controller-manager", filepath.Join(tools, "kube-controller-manager"),
		"--kubeconfig="+kcmConfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--bind-address=127.0.0.1",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+filepath.Join(c.Dir, "sa.key"),
		"--root-ca-file="+filepath.Join(c.Dir, "ca.crt"),
		"--cluster-name=kubetest",
		// A node whose kwok stops renewing its lease is NotReady after 20 s.
		"--node-monitor-grace-period=20s",
		"--v=0")
	if err != nil {
		return err
	}
	if _, err := c.spawn("kube-scheduler", filepath.Join(tools, "kube-scheduler"),
		"--kubeconfig="+schedConfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--bind-address=127.0.0.1",
		"--v=0"); err != nil {
		return err
	}
	// The service account controller creating "default" in "default" shows
	// the controller manager has synced its informers and is working.
	return waitFor(ctx, kcm, func() bool {
		code, _, err := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/default/serviceaccounts/default", nil)
		return err == nil && code == http.StatusOK
	})
}

// kwokStages is the stage configuration kwok plays (see kwok.yaml).
//
//go:embed kwok.yaml
var kwokStages []byte

// startNodes registers the nodes, starts kwok for them and waits until
// every one is Ready (and, with controllers, schedulable).
func (c *Cluster) startNodes(ctx context.Context, tools string, nodes []nodeSpec, controllers bool) error {
	for _, n := range nodes {
		labels := map[string]string{
			"kubernetes.io/hostname": n.name,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     "amd64",
			"type":                   "kwok",
		}
		if n.role != "" {
			labels["node-role.kubernetes.io/"+n.role] = ""
		}
		body, err := json.Marshal(map[string]any{
			"apiVersion": "v1", "kind": "Node",
			"metadata": map[string]any{
				"name":        n.name,
				"labels":      labels,
				"annotations": map[string]string{KwokAnnotation: "fake"},
			},
		})
		if err != nil {
			return err
		}
		code, out, err := c.Do(ctx, http.MethodPost, "/api/v1/nodes", body)
		if err != nil || code != http.StatusCreated {
			return fmt.Errorf("create node %s: %d %v: %s", n.name, code, err, out)
		}
		c.Nodes = append(c.Nodes, n.name)
	}
	cfg, err := c.writeKubeconfig("kwok", KwokUser, c.certs.kwok)
	if err != nil {
		return err
	}
	stages := filepath.Join(c.Dir, "kwok.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o600); err != nil {
		return err
	}
	kwok, err := c.spawn("kwok", filepath.Join(tools, "kwok"),
		"--kubeconfig="+cfg,
		"--config="+stages,
		"--manage-nodes-with-annotation-selector="+KwokAnnotation+"=fake",
		"--node-ip=127.0.0.1",
		"--cidr=10.244.0.0/16",
		"--node-lease-duration-seconds=40",
		"--server-address=",
		"--v=0")
	if err != nil {
		return err
	}
	// With the controllers, a node is also waited free of the not-ready
	// taint the API server put on it when it was created (the node
	// lifecycle controller lifts it once the node is Ready): until then
	// the scheduler would pass it over. Without them nobody lifts it.
	return waitFor(ctx, kwok, func() bool {
		for _, n := range c.Nodes {
			if !c.nodeReady(ctx, n, controllers) {
				return false
			}
		}
		return true
	})
}

// nodeReady reports whether node name is Ready and, with untainted, has
// none of the node.kubernetes.io/ taints (not-ready, unreachable, ...).
func (c *Cluster) nodeReady(ctx context.Context, name string, untainted bool) bool {
	code, out, err := c.Do(ctx, http.MethodGet, "/api/v1/nodes/"+name, nil)
	if err != nil || code != http.StatusOK {
		return false
	}
	var n struct {
		Spec struct {
			Taints []struct{ Key string }
		}
		Status struct {
			Conditions []struct{ Type, Status string }
		}
	}
	if json.Unmarshal(out, &n) != nil {
		return false
	}
	if untainted {
		for _, t := range n.Spec.Taints {
			if strings.HasPrefix(t.Key, "node.kubernetes.io/") {
				return false
			}
		}
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == "Ready" {
			return cond.Status == "True"
		}
	}
	return false
}

// writeKubeconfig writes NAME.kubeconfig for user's certificate.
func (c *Cluster) writeKubeconfig(name, user string, kp keyPair) (string, error) {
	path := filepath.Join(c.Dir, name+".kubeconfig")
	return path, os.WriteFile(path, kubeconfig(c.URL, c.certs.ca.cert, user, kp), 0o600)
}
