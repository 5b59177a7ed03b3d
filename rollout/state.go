// Package rollout upgrades the nodes of a cluster to one bundle, node by
// node, through the Kubernetes API: `zdt rollout start` records the desired
// bundle in a ConfigMap in namespace zdt-system, and one Agent per node
// (`zdt agent`) takes a slot through coordination/v1 Leases, cordons its
// node, drains it through the eviction API, installs the bundle, waits for
// the node to be Ready, uncordons it and annotates it with the installed
// digest. Every step is keyed on state the API server holds (the node's
// annotations and cordon flag, the Leases, the ConfigMap), so an agent
// killed anywhere resumes where it was.
package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Where the rollout is recorded, and the names it gives.
const (
	Namespace = "zdt-system"
	// ConfigMapName holds the desired bundle and each node's status (key
	// StateKey, JSON State).
	ConfigMapName = "zdt-rollout"
	StateKey      = "state.json"
	// SlotPrefix names the Leases that bound how many nodes are upgraded
	// at once: SlotPrefix0 .. SlotPrefix(max-unavailable-1).
	SlotPrefix = "zdt-rollout-slot-"

	// Node annotations.
	AnnotationDigest     = "zdt.dev/bundle-digest"
	AnnotationGeneration = "zdt.dev/generation"
	// AnnotationCordoned marks a node the rollout cordoned (with the
	// rollout id), so that it never uncordons a node an operator cordoned.
	AnnotationCordoned = "zdt.dev/cordoned-by-rollout"
	// AnnotationSlotRollout on a slot Lease is the id of the rollout its
	// holder took it for.
	AnnotationSlotRollout = "zdt.dev/rollout-id"

	ControlPlaneLabel = "node-role.kubernetes.io/control-plane"
)

// Rollout phases.
const (
	PhaseProgressing = "progressing"
	PhasePaused      = "paused"
	PhaseDone        = "done"
)

// Node phases.
const (
	NodePending    = "pending"
	NodeWaiting    = "waiting"
	NodeCordoned   = "cordoned"
	NodeDraining   = "draining"
	NodeInstalling = "installing"
	NodeWaitReady  = "waiting-ready"
	NodeDone       = "done"
	NodeFailed     = "failed"
)

// MaxStateSize bounds the ConfigMap's state (a ConfigMap holds at most 1 MiB).
const MaxStateSize = 1 << 20

// State is the rollout recorded in the ConfigMap.
type State struct {
	ID             string               `json:"id"`
	Reference      string               `json:"reference"`
	Digest         string               `json:"digest"`
	MaxUnavailable int                  `json:"maxUnavailable"`
	Phase          string               `json:"phase"`
	Since          time.Time            `json:"since"`
	Nodes          map[string]NodeState `json:"nodes,omitempty"`
}

// NodeState is one node's progress in the rollout.
type NodeState struct {
	Digest string    `json:"digest,omitempty"`
	Phase  string    `json:"phase"`
	Since  time.Time `json:"since"`
	Error  string    `json:"error,omitempty"`
}

// ErrNoRollout is returned when no rollout was started.
var ErrNoRollout = errors.New("no rollout started (no ConfigMap " + Namespace + "/" + ConfigMapName + ")")

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// parseState reads the ConfigMap's state: it is cluster data, checked
// before use.
func parseState(cm *corev1.ConfigMap) (*State, error) {
	raw, ok := cm.Data[StateKey]
	if !ok {
		return nil, fmt.Errorf("configmap %s/%s: no %s", Namespace, ConfigMapName, StateKey)
	}
	return ParseState([]byte(raw))
}

// ParseState parses and checks a rollout state.
func ParseState(raw []byte) (*State, error) {
	if len(raw) > MaxStateSize {
		return nil, fmt.Errorf("rollout state: %d bytes, more than %d", len(raw), MaxStateSize)
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("rollout state: %w", err)
	}
	if !digestRE.MatchString(s.Digest) {
		return nil, fmt.Errorf("rollout state: digest %q is not sha256:<64 hex>", s.Digest)
	}
	// The agents install Reference and annotate Digest: they must be
	// the same bundle (the install checks the signature of what it reads).
	if !strings.HasSuffix(s.Reference, "@"+s.Digest) {
		return nil, fmt.Errorf("rollout state: reference %q is not pinned to %s", s.Reference, s.Digest)
	}
	if s.MaxUnavailable < 1 || s.MaxUnavailable > 1000 {
		return nil, fmt.Errorf("rollout state: maxUnavailable %d not in 1..1000", s.MaxUnavailable)
	}
	switch s.Phase {
	case PhaseProgressing, PhasePaused, PhaseDone:
	default:
		return nil, fmt.Errorf("rollout state: unknown phase %q", s.Phase)
	}
	if s.Nodes == nil {
		s.Nodes = map[string]NodeState{}
	}
	return &s, nil
}

func getState(ctx context.Context, cs kubernetes.Interface) (*corev1.ConfigMap, *State, error) {
	cm, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, ErrNoRollout
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the rollout: %w", err)
	}
	s, err := parseState(cm)
	return cm, s, err
}

// updateBackoff is patient enough for every agent of a site writing the
// one ConfigMap at once (client-go's DefaultBackoff gives up after 4 tries).
var updateBackoff = wait.Backoff{Steps: 12, Duration: 10 * time.Millisecond, Factor: 2, Jitter: 0.5, Cap: 2 * time.Second}

// update applies f to the state and writes it back, retrying when another
// agent wrote in between (optimistic concurrency on the resourceVersion).
func update(ctx context.Context, cs kubernetes.Interface, f func(*State) error) (*State, error) {
	var out *State
	err := retry.RetryOnConflict(updateBackoff, func() error {
		cm, s, err := getState(ctx, cs)
		if err != nil {
			return err
		}
		if err := f(s); err != nil {
			return err
		}
		raw, err := json.Marshal(s)
		if err != nil {
			return err
		}
		cm.Data[StateKey] = string(raw)
		_, err = cs.CoreV1().ConfigMaps(Namespace).Update(ctx, cm, metav1.UpdateOptions{})
		out = s
		return err
	})
	return out, err
}

// StartOptions are what Start records. Reference must be pinned to Digest
// and the bundle's signature checked by the caller (`zdt rollout start`
// does with installer.OpenVerifiedFrom) before Start.
type StartOptions struct {
	Reference      string
	Digest         string
	MaxUnavailable int
	Now            func() time.Time
}

// Start records the desired bundle (namespace and ConfigMap created if
// missing) as a new rollout in phase progressing, and returns it. A
// rollout to the same digest already recorded is returned unchanged.
func Start(ctx context.Context, cs kubernetes.Interface, o StartOptions) (*State, error) {
	if !digestRE.MatchString(o.Digest) {
		return nil, fmt.Errorf("digest %q is not sha256:<64 hex>", o.Digest)
	}
	if !strings.HasSuffix(o.Reference, "@"+o.Digest) {
		return nil, fmt.Errorf("reference %q is not pinned to %s", o.Reference, o.Digest)
	}
	if o.MaxUnavailable < 1 {
		o.MaxUnavailable = 1
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating namespace %s: %w", Namespace, err)
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	s := &State{
		ID: hex.EncodeToString(id), Reference: o.Reference, Digest: o.Digest,
		MaxUnavailable: o.MaxUnavailable, Phase: PhaseProgressing, Since: now().UTC(),
		Nodes: map[string]NodeState{},
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: Namespace},
		Data:       map[string]string{StateKey: string(raw)},
	}
	if _, err := cs.CoreV1().ConfigMaps(Namespace).Create(ctx, cm, metav1.CreateOptions{}); err == nil {
		return s, nil
	} else if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("recording the rollout: %w", err)
	}
	return update(ctx, cs, func(old *State) error {
		if old.Digest == o.Digest && old.MaxUnavailable == o.MaxUnavailable {
			*s = *old
			return nil
		}
		nodes := old.Nodes
		*old = *s
		// Nodes keep what they installed; their phase starts over.
		for n, st := range nodes {
			old.Nodes[n] = NodeState{Digest: st.Digest, Phase: NodePending, Since: s.Since}
		}
		return nil
	})
}

// Resume sets a paused rollout progressing again and clears the failed
// nodes' errors: their agents retry from where they stopped.
func Resume(ctx context.Context, cs kubernetes.Interface) (*State, error) {
	now := time.Now().UTC()
	return update(ctx, cs, func(s *State) error {
		if s.Phase == PhaseDone {
			return nil
		}
		s.Phase, s.Since = PhaseProgressing, now
		for n, st := range s.Nodes {
			if st.Phase == NodeFailed {
				s.Nodes[n] = NodeState{Digest: st.Digest, Phase: NodePending, Since: now}
			}
		}
		return nil
	})
}

// NodeStatus is one node as `zdt rollout status` shows it: from the Node
// (its annotation, cordon flag and Ready condition) and the recorded state.
type NodeStatus struct {
	Name         string    `json:"name"`
	ControlPlane bool      `json:"controlPlane,omitempty"`
	Digest       string    `json:"digest,omitempty"`
	Generation   string    `json:"generation,omitempty"`
	Phase        string    `json:"phase"`
	Since        time.Time `json:"since,omitzero"`
	Error        string    `json:"error,omitempty"`
	Cordoned     bool      `json:"cordoned,omitempty"`
	Ready        bool      `json:"ready"`
	// CordonedBy says whose cordon it is: CordonedByRollout (this
	// rollout's, lifted once the node is upgraded), CordonedByOther (an
	// operator's, or an earlier rollout's: the rollout leaves it).
	CordonedBy string `json:"cordonedBy,omitempty"`
}

// NodeStatus.CordonedBy values.
const (
	CordonedByRollout = "rollout"
	CordonedByOther   = "other"
)

// Status is the rollout and every node of the cluster.
type Status struct {
	State *State       `json:"rollout"`
	Nodes []NodeStatus `json:"nodes"`
}

// GetStatus reads the rollout and every node. A node the state does not
// name yet is pending (done when it is at the digest already).
func GetStatus(ctx context.Context, cs kubernetes.Interface) (*Status, error) {
	_, s, err := getState(ctx, cs)
	if err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	st := &Status{State: s}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		ns := s.Nodes[n.Name]
		out := NodeStatus{
			Name: n.Name, ControlPlane: isControlPlane(n),
			Digest: n.Annotations[AnnotationDigest], Generation: n.Annotations[AnnotationGeneration],
			Phase: ns.Phase, Since: ns.Since, Error: ns.Error,
			Cordoned: n.Spec.Unschedulable, Ready: nodeReady(n),
		}
		if out.Cordoned {
			out.CordonedBy = CordonedByOther
			if n.Annotations[AnnotationCordoned] == s.ID {
				out.CordonedBy = CordonedByRollout
			}
		}
		if out.Phase == "" {
			out.Phase = NodePending
			if out.Digest == s.Digest {
				out.Phase = NodeDone
			}
		}
		st.Nodes = append(st.Nodes, out)
	}
	sort.Slice(st.Nodes, func(i, j int) bool {
		a, b := st.Nodes[i], st.Nodes[j]
		if a.ControlPlane != b.ControlPlane {
			return a.ControlPlane
		}
		return a.Name < b.Name
	})
	return st, nil
}

func isControlPlane(n *corev1.Node) bool {
	_, ok := n.Labels[ControlPlaneLabel]
	return ok
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
