package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/util/retry"
)

// InstallFunc installs the bundle ref (pinned to its digest) on this node
// and returns the generation now current (`zdt agent` calls
// installer.InstallFrom into its --root).
type InstallFunc func(ctx context.Context, ref string) (generation int, err error)

// InstalledFunc returns the root digests of the bundles installed on this
// node now (the current generation of each; `zdt agent` reads them from
// its --root with installer.CurrentGenerations).
type InstalledFunc func(ctx context.Context) (digests []string, err error)

// DefaultInstallTimeout bounds an install (AgentOptions.InstallTimeout).
const DefaultInstallTimeout = 30 * time.Minute

// AgentOptions configure an Agent.
type AgentOptions struct {
	// Node is the name of the Node this agent upgrades.
	Node    string
	Install InstallFunc
	// Registries are the registries (HOST[:PORT]) this agent installs
	// from (at least one is required): a rollout whose reference names
	// another one — anyone who may write the rollout ConfigMap could
	// point it anywhere — is refused before the node is cordoned (see
	// Admit).
	Registries []string
	// Admit, if set, is asked once per rollout reference, after the
	// registry check and before the node is cordoned, whether this node
	// installs it (`zdt agent` verifies the bundle's signature and
	// refuses another bundle or a downgrade). A refusal records the node
	// failed (step "admit") with the error and pauses the rollout;
	// nothing is cordoned, drained or installed.
	Admit func(ctx context.Context, ref string) error
	// Installed tells what the node has installed: the Node's digest
	// annotation alone is no proof (a reimaged node registering under its
	// old Node object, a local rollback, a node patching its own Node), so
	// the node is done only when both name the rollout's digest.
	Installed InstalledFunc
	// InstallTimeout bounds the install (a registry trickling bytes must
	// not keep a drained node waiting for days; default 30m). An install
	// not done by then fails the node's install step.
	InstallTimeout time.Duration
	// DrainTimeout bounds a drain (evictions a PodDisruptionBudget
	// refuses are retried until then; default 5m).
	DrainTimeout time.Duration
	// ReadyTimeout bounds the wait for the Node to be Ready after the
	// install (default 5m).
	ReadyTimeout time.Duration
	// LeaseDuration is a slot Lease's duration: a holder that stops
	// renewing it for that long loses it (default 30s).
	LeaseDuration time.Duration
	// Poll is the resync interval: the agent reacts to changes of the
	// rollout ConfigMap and of its Node through watches, and also reads
	// the rollout this often in case a change went unseen (default 30s).
	// A node waiting for its turn re-checks at least every third of
	// LeaseDuration (a slot whose holder died frees up without a change).
	Poll   time.Duration
	Logger *slog.Logger
}

// Agent upgrades one node when the rollout asks for it.
type Agent struct {
	cs kubernetes.Interface
	o  AgentOptions
	// watching is closed once Run's watches have listed what they watch
	// (tests wait for it).
	watching     chan struct{}
	watchingOnce sync.Once

	mu       sync.Mutex
	admitted string // the reference admit accepted
}

// NewAgent returns the agent of o.Node.
func NewAgent(cs kubernetes.Interface, o AgentOptions) (*Agent, error) {
	if o.Node == "" || o.Install == nil || o.Installed == nil {
		return nil, errors.New("rollout agent: a node name, an install function and a reader of what is installed are required")
	}
	if o.InstallTimeout <= 0 {
		o.InstallTimeout = DefaultInstallTimeout
	}
	if len(o.Registries) == 0 {
		return nil, errors.New("rollout agent: the registries it may install from are required")
	}
	for _, r := range o.Registries {
		if err := CheckRegistry(r); err != nil {
			return nil, fmt.Errorf("rollout agent: %w", err)
		}
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 5 * time.Minute
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Minute
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = DefaultResync
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{cs: cs, o: o, watching: make(chan struct{})}, nil
}

// StepError is a failed step of a node's upgrade.
type StepError struct {
	Node, Step string
	Err        error
}

func (e *StepError) Error() string { return fmt.Sprintf("node %s: %s: %v", e.Node, e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// Step does one pass: it returns when the node is done, waits its turn,
// or has failed (the failure recorded).
func (a *Agent) Step(ctx context.Context) error {
	_, err := a.step(ctx)
	return err
}

// step is Step, also reporting whether the node waits for its turn (for
// other nodes' progress or a free slot), which Run re-checks soon.
func (a *Agent) step(ctx context.Context) (waiting bool, err error) {
	_, s, err := getState(ctx, a.cs)
	if errors.Is(err, ErrNoRollout) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	node, err := a.cs.CoreV1().Nodes().Get(ctx, a.o.Node, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("reading node %s: %w", a.o.Node, err)
	}
	if node.Annotations[AnnotationDigest] == s.Digest && a.installed(ctx, s.Digest) {
		// Done, perhaps killed after the annotation: finish the cleanup.
		if node.Annotations[AnnotationCordoned] == s.ID {
			if err := a.uncordon(ctx, s.ID, nil); err != nil {
				return false, err
			}
		}
		if err := a.release(ctx); err != nil {
			return false, err
		}
		if ns := s.Nodes[a.o.Node]; ns.Phase != NodeDone || ns.Digest != s.Digest {
			return false, a.setNode(ctx, s, NodeDone, "")
		}
		return false, nil
	}
	if s.Phase != PhaseProgressing {
		return false, nil
	}
	if ns := s.Nodes[a.o.Node]; ns.Phase == NodeFailed {
		return false, nil
	}
	// Whose turn it is is decided whatever slot this node holds: a Lease
	// is no proof of a turn (any agent can write Leases in the namespace).
	ok, why, err := a.mayGo(ctx, s, node)
	if err != nil {
		return false, err
	}
	if !ok {
		// A slot in this node's name (forged, or left by an earlier
		// rollout) must not keep the nodes whose turn it is waiting; one
		// this rollout cordoned the node with stays held.
		if node.Annotations[AnnotationCordoned] != s.ID {
			if err := a.release(ctx); err != nil {
				return false, err
			}
		}
		if s.Nodes[a.o.Node].Phase != NodeWaiting {
			a.o.Logger.Debug("rollout waiting", "node", a.o.Node, "why", why)
			err = a.setNode(ctx, s, NodeWaiting, "")
		}
		return true, err
	}
	limit := s.MaxUnavailable
	if isControlPlane(node) {
		limit = 1
	}
	held, err := a.heldSlot(ctx, s.ID, limit)
	if err != nil {
		return false, err
	}
	// Its turn: is this a bundle this node installs at all?
	if err := a.admit(ctx, s.Reference); err != nil {
		return false, a.fail(ctx, s, "admit", err)
	}
	if !held {
		ok, err = a.acquire(ctx, s.ID, limit)
		if err != nil || !ok {
			return err == nil, err
		}
	}
	return false, a.upgrade(ctx, s)
}

// installed reports whether the node has installed digest (a failure to
// tell counts as not installed: the install, idempotent, then either
// finds it installed or fails the node with the reason).
func (a *Agent) installed(ctx context.Context, digest string) bool {
	got, err := a.o.Installed(ctx)
	if err != nil {
		a.o.Logger.Warn("reading what the node has installed", "node", a.o.Node, "error", err)
		return false
	}
	for _, d := range got {
		if d == digest {
			return true
		}
	}
	a.o.Logger.Debug("node annotated with the rollout's digest but not installed: upgrading", "node", a.o.Node, "digest", digest, "installed", got)
	return false
}

// mayGo reports whether this node's turn has come: control-plane nodes
// first (only one of them upgrades at a time: its slot limit is 1),
// workers once every control-plane node is at the digest and has recorded
// itself done (it does so after its uncordon; a control-plane node an
// operator cordoned stays cordoned, and counts as done).
func (a *Agent) mayGo(ctx context.Context, s *State, node *corev1.Node) (bool, string, error) {
	if isControlPlane(node) {
		return true, "", nil
	}
	nodes, err := a.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: ControlPlaneLabel})
	if err != nil {
		return false, "", fmt.Errorf("listing control-plane nodes: %w", err)
	}
	for _, n := range nodes.Items {
		rec := s.Nodes[n.Name]
		if n.Annotations[AnnotationDigest] != s.Digest || rec.Phase != NodeDone || rec.Digest != s.Digest {
			return false, "control-plane node " + n.Name + " not upgraded yet", nil
		}
	}
	return true, "", nil
}

// upgrade runs the steps; each is idempotent, keyed on the node's state.
func (a *Agent) upgrade(ctx context.Context, s *State) error {
	fail := func(step string, err error) error { return a.fail(ctx, s, step, err) }
	a.o.Logger.Info("upgrading", "node", a.o.Node)
	if err := a.setNode(ctx, s, NodeCordoned, ""); err != nil {
		return err
	}
	if err := a.cordon(ctx, s.ID); err != nil {
		return fail("cordon", err)
	}
	a.o.Logger.Info("step", "node", a.o.Node, "phase", NodeDraining)
	if err := a.setNode(ctx, s, NodeDraining, ""); err != nil {
		return err
	}
	if err := a.drain(ctx); err != nil {
		return fail("drain", err)
	}
	a.o.Logger.Info("step", "node", a.o.Node, "phase", NodeInstalling)
	if err := a.setNode(ctx, s, NodeInstalling, ""); err != nil {
		return err
	}
	gen, err := a.install(ctx, s.Reference)
	if err != nil {
		return fail("install", err)
	}
	a.o.Logger.Info("step", "node", a.o.Node, "phase", NodeWaitReady)
	if err := a.setNode(ctx, s, NodeWaitReady, ""); err != nil {
		return err
	}
	if err := a.waitReady(ctx); err != nil {
		return fail("wait ready", err)
	}
	if err := a.uncordon(ctx, s.ID, map[string]any{AnnotationDigest: s.Digest, AnnotationGeneration: strconv.Itoa(gen)}); err != nil {
		return fail("uncordon", err)
	}
	if err := a.release(ctx); err != nil {
		return err
	}
	return a.setNode(ctx, s, NodeDone, "")
}

// fail records the node failed at step with err and pauses the rollout
// (unless ctx ended: killed, not failed, a restart resumes).
func (a *Agent) fail(ctx context.Context, s *State, step string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	se := &StepError{Node: a.o.Node, Step: step, Err: err}
	a.o.Logger.Error("rollout step failed", "node", a.o.Node, "step", step, "error", err)
	now := time.Now().UTC()
	if _, uerr := update(ctx, a.cs, func(st *State) error {
		if st.Digest != s.Digest {
			return nil
		}
		st.Phase, st.Since = PhasePaused, now
		st.Nodes[a.o.Node] = NodeState{Digest: st.Nodes[a.o.Node].Digest, Phase: NodeFailed, Since: now, Error: recordedError(se.Error())}
		return nil
	}); uerr != nil {
		return errors.Join(se, uerr)
	}
	return se
}

// setNode records this node's phase (and whether the whole rollout is done).
func (a *Agent) setNode(ctx context.Context, s *State, phase, msg string) error {
	now := time.Now().UTC()
	_, err := update(ctx, a.cs, func(st *State) error {
		if st.Digest != s.Digest {
			return nil
		}
		ns := st.Nodes[a.o.Node]
		ns.Phase, ns.Since, ns.Error = phase, now, msg
		if phase == NodeDone {
			ns.Digest = st.Digest
		}
		st.Nodes[a.o.Node] = ns
		if phase == NodeDone {
			nodes, err := a.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			// Done when every node is annotated and has recorded itself
			// done: the last one to record flips the rollout, so status
			// never shows a done rollout with a node still mid-step.
			done := true
			for _, n := range nodes.Items {
				rec := st.Nodes[n.Name]
				if n.Annotations[AnnotationDigest] != st.Digest || rec.Phase != NodeDone || rec.Digest != st.Digest {
					done = false
				}
			}
			if done && st.Phase == PhaseProgressing {
				st.Phase, st.Since = PhaseDone, now
			}
		}
		return nil
	})
	return err
}

func (a *Agent) patchNode(ctx context.Context, patch map[string]any) error {
	raw, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = a.cs.CoreV1().Nodes().Patch(ctx, a.o.Node, types.MergePatchType, raw, metav1.PatchOptions{})
	return err
}

// install runs the install within InstallTimeout.
func (a *Agent) install(ctx context.Context, ref string) (int, error) {
	ictx, cancel := context.WithTimeout(ctx, a.o.InstallTimeout)
	defer cancel()
	gen, err := a.o.Install(ictx, ref)
	if err != nil && ctx.Err() == nil && errors.Is(ictx.Err(), context.DeadlineExceeded) {
		return 0, fmt.Errorf("not installed within %s: %w", a.o.InstallTimeout, err)
	}
	return gen, err
}

// cordon makes the node unschedulable for rollout id, marked with
// AnnotationCordoned. A node unschedulable without that mark was cordoned
// by someone else (an operator): the rollout does not claim that cordon,
// so it never lifts it. A cordon an earlier rollout left is taken over.
// The patch is conditional on the Node read (resourceVersion), so a
// cordon set in between is not claimed either.
func (a *Agent) cordon(ctx context.Context, id string) error {
	return retry.RetryOnConflict(updateBackoff, func() error {
		node, err := a.cs.CoreV1().Nodes().Get(ctx, a.o.Node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Spec.Unschedulable {
			switch by := node.Annotations[AnnotationCordoned]; by {
			case id:
				return nil
			case "":
				a.o.Logger.Info("node cordoned by someone else: it stays cordoned after its upgrade", "node", a.o.Node)
				return nil
			}
		}
		return a.patchNode(ctx, map[string]any{
			"metadata": map[string]any{"resourceVersion": node.ResourceVersion, "annotations": map[string]any{AnnotationCordoned: id}},
			"spec":     map[string]any{"unschedulable": true},
		})
	})
}

// uncordon sets the given annotations and, only when rollout id cordoned
// the node, makes it schedulable again (conditional on the Node read).
func (a *Agent) uncordon(ctx context.Context, id string, annotations map[string]any) error {
	return retry.RetryOnConflict(updateBackoff, func() error {
		node, err := a.cs.CoreV1().Nodes().Get(ctx, a.o.Node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ann := map[string]any{}
		for k, v := range annotations {
			ann[k] = v
		}
		patch := map[string]any{"metadata": map[string]any{"resourceVersion": node.ResourceVersion, "annotations": ann}}
		if node.Annotations[AnnotationCordoned] == id {
			ann[AnnotationCordoned] = nil
			patch["spec"] = map[string]any{"unschedulable": nil}
		}
		return a.patchNode(ctx, patch)
	})
}

// drain evicts every pod on the node except DaemonSets' and mirror pods,
// retrying evictions a PodDisruptionBudget refuses (429) with backoff,
// and waits until they are gone; all within DrainTimeout.
func (a *Agent) drain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.o.DrainTimeout)
	defer cancel()
	backoff := 200 * time.Millisecond
	for {
		pods, err := a.cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + a.o.Node})
		if err != nil {
			return a.drainErr(ctx, fmt.Errorf("listing pods: %w", err), nil)
		}
		var left []string
		for i := range pods.Items {
			p := &pods.Items[i]
			if ignoredByDrain(p) {
				continue
			}
			left = append(left, p.Namespace+"/"+p.Name)
			if p.DeletionTimestamp != nil {
				continue
			}
			ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}}
			err := a.evict(ctx, ev)
			switch {
			case err == nil, apierrors.IsNotFound(err):
			case apierrors.IsTooManyRequests(err):
				a.o.Logger.Debug("eviction refused, retrying", "pod", p.Namespace+"/"+p.Name, "error", err)
			default:
				return a.drainErr(ctx, fmt.Errorf("evicting %s/%s: %w", p.Namespace, p.Name, err), left)
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return a.drainErr(ctx, ctx.Err(), left)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// evictTimeout bounds one eviction request, which an agent being stopped
// lets finish.
const evictTimeout = 30 * time.Second

// evict asks the API server to evict a pod, not cancelled with ctx: the
// API server records the disruption in the PDB before it deletes the pod,
// and a request cut off between the two leaves the PDB counting a pod as
// disrupted that is still there, refusing every eviction under it for the
// disruption controller's 2 minutes (every other node's drain stalls).
func (a *Agent) evict(ctx context.Context, ev *policyv1.Eviction) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), evictTimeout)
	defer cancel()
	return a.cs.PolicyV1().Evictions(ev.Namespace).Evict(ctx, ev)
}

func (a *Agent) drainErr(ctx context.Context, err error, left []string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("not drained within %s (pods left: %s): %w", a.o.DrainTimeout, strings.Join(left, ", "), err)
	}
	return err
}

func ignoredByDrain(p *corev1.Pod) bool {
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return true
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return true
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

// waitReady waits, through a watch of the Node, until it is Ready (at
// most ReadyTimeout).
func (a *Agent) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.o.ReadyTimeout)
	defer cancel()
	_, err := watchtools.UntilWithSync(ctx, a.nodeLW(), &corev1.Node{}, nil, func(ev watch.Event) (bool, error) {
		n, ok := ev.Object.(*corev1.Node)
		return ok && n.Name == a.o.Node && ev.Type != watch.Deleted && nodeReady(n), nil
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("node not Ready within %s", a.o.ReadyTimeout)
	default: // refused (RBAC), or the agent stopping: not a timeout
		return fmt.Errorf("waiting for the node to be Ready: %w", err)
	}
}

// Slots: Leases SlotPrefix0..limit-1 in Namespace; holderIdentity is the
// node, AnnotationSlotRollout the rollout it took the slot for. A Lease
// whose holder stopped renewing it is taken over. Leases are no proof of a
// turn (any agent can write them): a node counts a slot as its own only
// below the limit, for this rollout and unexpired, and still waits for its
// turn (mayGo) while holding one.

func slotName(i int) string { return SlotPrefix + strconv.Itoa(i) }

// slotIndex is i when name is slotName(i), else -1.
func slotIndex(name string) int {
	rest, ok := strings.CutPrefix(name, SlotPrefix)
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || slotName(i) != name {
		return -1
	}
	return i
}

func (a *Agent) listSlots(ctx context.Context) ([]coordv1.Lease, error) {
	l, err := a.cs.CoordinationV1().Leases(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing slot leases: %w", err)
	}
	var out []coordv1.Lease
	for _, x := range l.Items {
		if strings.HasPrefix(x.Name, SlotPrefix) {
			out = append(out, x)
		}
	}
	return out, nil
}

func holder(l *coordv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// heldSlot reports whether this node holds one of the slots 0..limit-1
// for rollout id, unexpired.
func (a *Agent) heldSlot(ctx context.Context, id string, limit int) (bool, error) {
	slots, err := a.listSlots(ctx)
	if err != nil {
		return false, err
	}
	now := time.Now()
	for i := range slots {
		l := &slots[i]
		if holder(l) != a.o.Node || l.Annotations[AnnotationSlotRollout] != id || leaseFree(l, now) {
			continue
		}
		if n := slotIndex(l.Name); n >= 0 && n < limit {
			return true, nil
		}
	}
	return false, nil
}

func leaseFree(l *coordv1.Lease, now time.Time) bool {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return true
	}
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	return now.After(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// acquire takes a slot among the first limit ones for rollout id: one
// that is missing (created), free, or already in this node's name (left
// by an earlier rollout, or forged: either way this node's turn has come),
// so that at most limit nodes hold one. Busy besides the held slots: a
// slot beyond limit whose holder is under a rollout's cordon (a larger
// max-unavailable before, still upgrading; other Leases beyond limit are
// ignored), and another node this rollout cordoned: its Lease lapses
// while its agent is gone (killed, the node rebooting), but the node is
// still unavailable until its agent is back and finishes it. (A node an
// earlier rollout left cordoned counts once this rollout takes it over at
// its turn: counting it before would keep the control plane, which goes
// first, waiting for it.)
func (a *Agent) acquire(ctx context.Context, id string, limit int) (bool, error) {
	slots, err := a.listSlots(ctx)
	if err != nil {
		return false, err
	}
	nodes, err := a.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, fmt.Errorf("listing nodes: %w", err)
	}
	upgrading := map[string]bool{} // under a rollout's cordon
	busy := map[string]bool{}      // nodes, each counted once
	for _, n := range nodes.Items {
		if n.Name == a.o.Node || !n.Spec.Unschedulable || n.Annotations[AnnotationCordoned] == "" {
			continue
		}
		upgrading[n.Name] = true
		if n.Annotations[AnnotationCordoned] == id {
			busy[n.Name] = true
		}
	}
	now := time.Now()
	byName := map[string]*coordv1.Lease{}
	for i := range slots {
		l := &slots[i]
		n := slotIndex(l.Name)
		if n < 0 {
			continue
		}
		if n < limit {
			byName[l.Name] = l
		}
		if leaseFree(l, now) || holder(l) == a.o.Node {
			continue
		}
		if n < limit || upgrading[holder(l)] {
			busy[holder(l)] = true
		}
	}
	if len(busy) >= limit {
		return false, nil
	}
	me := a.o.Node
	dur := int32(a.o.LeaseDuration / time.Second)
	if dur < 1 {
		dur = 1
	}
	mt := metav1.NewMicroTime(now)
	for i := 0; i < limit; i++ {
		l, ok := byName[slotName(i)]
		if !ok {
			nl := &coordv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: slotName(i), Namespace: Namespace, Annotations: map[string]string{AnnotationSlotRollout: id}},
				Spec:       coordv1.LeaseSpec{HolderIdentity: &me, LeaseDurationSeconds: &dur, AcquireTime: &mt, RenewTime: &mt},
			}
			_, err := a.cs.CoordinationV1().Leases(Namespace).Create(ctx, nl, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return false, nil // raced: next poll
			}
			return err == nil, err
		}
		if !leaseFree(l, now) && holder(l) != me {
			continue
		}
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[AnnotationSlotRollout] = id
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.AcquireTime, l.Spec.RenewTime = &me, &dur, &mt, &mt
		_, err := a.cs.CoordinationV1().Leases(Namespace).Update(ctx, l, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return err == nil, err
	}
	return false, nil
}

// renewLoop renews the slots this node holds every third of their
// duration, for as long as the agent runs (a failed node keeps its slot).
func (a *Agent) renewLoop(ctx context.Context) {
	t := time.NewTicker(a.o.LeaseDuration / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		slots, err := a.listSlots(ctx)
		if err != nil {
			continue
		}
		for i := range slots {
			l := &slots[i]
			if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != a.o.Node {
				continue
			}
			mt := metav1.NewMicroTime(time.Now())
			l.Spec.RenewTime = &mt
			if _, err := a.cs.CoordinationV1().Leases(Namespace).Update(ctx, l, metav1.UpdateOptions{}); err != nil {
				a.o.Logger.Debug("renewing slot", "lease", l.Name, "error", err)
			}
		}
	}
}

// release gives up the slots this node holds.
func (a *Agent) release(ctx context.Context) error {
	slots, err := a.listSlots(ctx)
	if err != nil {
		return err
	}
	for i := range slots {
		l := &slots[i]
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != a.o.Node {
			continue
		}
		// The renew loop may update the Lease between the list and this
		// update: on a conflict, read it again and retry, or the slot stays
		// held and the node looks mid-upgrade to the next rollout.
		leases := a.cs.CoordinationV1().Leases(Namespace)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := leases.Get(ctx, l.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != a.o.Node {
				return nil
			}
			cur.Spec.HolderIdentity = nil
			_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("releasing slot %s: %w", l.Name, err)
		}
	}
	return nil
}

// maxRecordedError bounds a node's error in the rollout ConfigMap: the
// error may carry an action's output, and many failed nodes together must
// stay well under the API server's 1 MiB object limit.
const maxRecordedError = 2048

// recordedError is msg as the ConfigMap keeps it: valid UTF-8, no control
// characters but newlines and tabs (rollout status prints it on terminals),
// at most maxRecordedError bytes, keeping the end where the cause is.
func recordedError(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(msg, "?"))
	if len(msg) <= maxRecordedError {
		return msg
	}
	head := msg[:maxRecordedError/4]
	tail := msg[len(msg)-(maxRecordedError*3/4):]
	return strings.ToValidUTF8(head, "") + " … " + strings.ToValidUTF8(tail, "")
}
