// Package rollouttest holds what the rolling-upgrade tests share (the
// agents as goroutines in rollout, as `zdt agent` processes in
// internal/e2e): the workload whose PodDisruptionBudget a rollout must
// respect, a pod whose PDB holds a node's drain, and an Observer that
// watches Nodes, the Deployment and its PDB and records what the tests
// assert afterwards.
package rollouttest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// ControlPlaneLabel marks control-plane nodes (as rollout.ControlPlaneLabel;
// this package imports no zdt package).
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// Eventually calls cond every 100 ms until it returns nil, failing the
// test with cond's last error after d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Workload creates Deployment ns/name of replicas pods spread over the
// nodes (a topology spread constraint on the host name, ScheduleAnyway so
// that evicted pods still find a node while others are cordoned) and a
// PodDisruptionBudget of the same name with minAvailable, and waits until
// every replica is available, on as many nodes as there are replicas
// (nodes permitting), and the disruption controller has observed the PDB.
// A failed test logs the nodes, pods and PDBs of ns (Describe) when it ends.
func Workload(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, name string, replicas, minAvailable int32, nodes int) {
	t.Helper()
	labels := map[string]string{"app": name}
	sel := &metav1.LabelSelector{MatchLabels: labels}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: sel,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: name, Image: "example.com/" + name + ":1"}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: sel,
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			t.Logf("when the test ended:\n%s", Describe(ctx, cs, ns))
		}
	})
	minAvail := intstr.FromInt32(minAvailable)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: sel},
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spread := min(int(replicas), nodes)
	Eventually(t, 60*time.Second, "deployment "+name+" available and spread, PDB observed", func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || d.Status.AvailableReplicas != replicas {
			return fmt.Errorf("available %d (%v)", d.Status.AvailableReplicas, err)
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		on := map[string]bool{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
				on[p.Spec.NodeName] = true
			}
		}
		if len(on) < spread {
			return fmt.Errorf("pods on %d nodes, want %d", len(on), spread)
		}
		p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.Status.ObservedGeneration < p.Generation || p.Status.CurrentHealthy != replicas {
			return fmt.Errorf("pdb not observed (%v)", err)
		}
		return nil
	})
}

// Block puts a bare pod ns/name on node with a PodDisruptionBudget that
// allows no disruption, so a drain of node waits, and returns once the
// PDB is observed. release deletes the PDB (the drain then goes on).
func Block(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, name, node string) (release func()) {
	t.Helper()
	labels := map[string]string{"app": name}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: name, Image: "example.com/" + name + ":1"}}},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	one := intstr.FromInt32(1)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &one, Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "blocker PDB observed", func() error {
		p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.Status.ObservedGeneration < p.Generation || p.Status.CurrentHealthy != 1 {
			return fmt.Errorf("not observed (%v)", err)
		}
		return nil
	})
	return func() {
		t.Helper()
		if err := cs.PolicyV1().PodDisruptionBudgets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// Observed is what an Observer saw since it started or was last Reset.
type Observed struct {
	// MaxCordoned is the most nodes cordoned at once.
	MaxCordoned int
	// MaxWithControlPlane is the most nodes cordoned at once while a
	// control-plane node was (1: it went alone).
	MaxWithControlPlane int
	// CordonOrder lists the nodes in the order they were cordoned (a
	// node cordoned twice is listed twice).
	CordonOrder []string
	// MinAvailable is the fewest available replicas of the Deployment;
	// MinHealthy the fewest healthy pods the disruption controller
	// counted for the PDB (once it observed the PDB's generation), and
	// DesiredHealthy what the PDB asked for then. A window starts from
	// the last values seen before it.
	MinAvailable, MinHealthy, DesiredHealthy int32
	// DeployEvents and PDBEvents count the watch events of the window;
	// SeenDeploy and SeenPDB say whether the Deployment and the observed
	// PDB were ever seen (their first events come with the watch).
	DeployEvents, PDBEvents int
	SeenDeploy, SeenPDB     bool
}

// Observer watches the Nodes, one Deployment and its PDB (same name).
type Observer struct {
	mu       sync.Mutex
	cordoned map[string]bool
	cp       map[string]bool
	// the last values seen, where a window starts from
	available, healthy, desired int32
	seen                        Observed
	stopped                     bool // the test is over: its watches stop
}

// Observe starts the watches (stopped when the test ends or ctx does).
// The first events (the state when the watches start) are part of the
// first window.
func Observe(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, deploy string) *Observer {
	t.Helper()
	o := &Observer{cordoned: map[string]bool{}, cp: map[string]bool{}}
	o.reset()
	sel := metav1.ListOptions{FieldSelector: "metadata.name=" + deploy}
	nw, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := cs.AppsV1().Deployments(ns).Watch(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := cs.PolicyV1().PodDisruptionBudgets(ns).Watch(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []watch.Interface{nw, dw, pw} {
		what := []string{"Nodes", "Deployment " + deploy, "PDB " + deploy}[i]
		t.Cleanup(func() {
			o.mu.Lock()
			o.stopped = true
			o.mu.Unlock()
			w.Stop()
		})
		go func() {
			defer func() {
				// A watch the API server closed early would let the
				// maxima and minima pass on the events they missed.
				o.mu.Lock()
				defer o.mu.Unlock()
				if !o.stopped && ctx.Err() == nil {
					t.Errorf("the watch of %s closed before the test ended: what it would have seen is unknown", what)
				}
			}()
			for ev := range w.ResultChan() {
				if ev.Type == watch.Deleted {
					continue
				}
				o.mu.Lock()
				switch x := ev.Object.(type) {
				case *corev1.Node:
					o.node(x)
				case *appsv1.Deployment:
					o.available = x.Status.AvailableReplicas
					o.seen.SeenDeploy = true
					o.seen.DeployEvents++
					o.seen.MinAvailable = min(o.seen.MinAvailable, o.available)
				case *policyv1.PodDisruptionBudget:
					if x.Status.ObservedGeneration >= x.Generation {
						o.healthy, o.desired = x.Status.CurrentHealthy, x.Status.DesiredHealthy
						o.seen.SeenPDB = true
						o.seen.PDBEvents++
						if o.healthy < o.seen.MinHealthy {
							o.seen.MinHealthy, o.seen.DesiredHealthy = o.healthy, o.desired
						}
					}
				}
				o.mu.Unlock()
			}
		}()
	}
	return o
}

func (o *Observer) node(n *corev1.Node) {
	if _, ok := n.Labels[ControlPlaneLabel]; ok {
		o.cp[n.Name] = true
	}
	if n.Spec.Unschedulable && !o.cordoned[n.Name] {
		o.seen.CordonOrder = append(o.seen.CordonOrder, n.Name)
	}
	o.cordoned[n.Name] = n.Spec.Unschedulable
	o.count()
}

// count updates the maxima with the nodes cordoned now.
func (o *Observer) count() {
	c, cp := 0, false
	for name, v := range o.cordoned {
		if v {
			c++
			cp = cp || o.cp[name]
		}
	}
	o.seen.MaxCordoned = max(o.seen.MaxCordoned, c)
	if cp {
		o.seen.MaxWithControlPlane = max(o.seen.MaxWithControlPlane, c)
	}
}

func (o *Observer) reset() {
	ever := o.seen.SeenDeploy || o.seen.SeenPDB
	o.seen = Observed{MinAvailable: 1 << 30, MinHealthy: 1 << 30, SeenDeploy: o.seen.SeenDeploy, SeenPDB: o.seen.SeenPDB}
	if ever {
		o.seen.MinAvailable, o.seen.MinHealthy, o.seen.DesiredHealthy = o.available, o.healthy, o.desired
	}
	o.count()
}

// Reset starts a new window (the nodes cordoned now, the Deployment's
// availability and the PDB's health now count at once) and returns what
// the previous one saw.
func (o *Observer) Reset() Observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	prev := o.snapshot()
	o.reset()
	return prev
}

// Seen returns what the current window saw so far.
func (o *Observer) Seen() Observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.snapshot()
}

func (o *Observer) snapshot() Observed {
	s := o.seen
	s.CordonOrder = slices.Clone(s.CordonOrder)
	return s
}

// Check reports what in s breaks a rollout's promises: more than limit
// nodes cordoned at once (or none), a control-plane node cordoned
// together with another, the first node cordoned not firstCordoned (when
// given), fewer than minAvailable replicas available or the PDB's healthy
// pods below minAvailable (or the Deployment or the PDB never seen).
func (s Observed) Check(limit int, firstCordoned string, minAvailable int32) []string {
	var errs []string
	if s.MaxCordoned > limit || s.MaxCordoned == 0 {
		errs = append(errs, fmt.Sprintf("at most %d nodes cordoned at once, want 1..%d (max-unavailable)", s.MaxCordoned, limit))
	}
	if s.MaxWithControlPlane > 1 {
		errs = append(errs, fmt.Sprintf("%d nodes cordoned at once with a control-plane node, want it alone", s.MaxWithControlPlane))
	}
	if firstCordoned != "" && (len(s.CordonOrder) == 0 || s.CordonOrder[0] != firstCordoned) {
		errs = append(errs, fmt.Sprintf("cordon order %v, want %s first", s.CordonOrder, firstCordoned))
	}
	if !s.SeenDeploy || s.MinAvailable < minAvailable {
		errs = append(errs, fmt.Sprintf("the Deployment had %d available replicas at one point (seen %v), PDB minAvailable %d", s.MinAvailable, s.SeenDeploy, minAvailable))
	}
	if !s.SeenPDB || s.MinHealthy < minAvailable {
		errs = append(errs, fmt.Sprintf("the PDB counted %d healthy pods at one point (desired %d, seen %v), minAvailable %d", s.MinHealthy, s.DesiredHealthy, s.SeenPDB, minAvailable))
	}
	return errs
}

// Describe returns the nodes, the pods of ns and its PDBs as a failing
// test logs them: where each pod runs, whether it is ready or going, and
// what each PDB allows.
func Describe(ctx context.Context, cs kubernetes.Interface, ns string) string {
	var b strings.Builder
	if nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "nodes: %v\n", err)
	} else {
		for _, n := range nodes.Items {
			ready := ""
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					ready = string(c.Status)
				}
			}
			fmt.Fprintf(&b, "node %s: unschedulable %v, ready %s, annotations %v\n", n.Name, n.Spec.Unschedulable, ready, n.Annotations)
		}
	}
	if pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "pods: %v\n", err)
	} else {
		for _, p := range pods.Items {
			ready := ""
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					ready = string(c.Status)
				}
			}
			fmt.Fprintf(&b, "pod %s on %q: %s, ready %s, deleting %v\n", p.Name, p.Spec.NodeName, p.Status.Phase, ready, p.DeletionTimestamp != nil)
		}
	}
	if pdbs, err := cs.PolicyV1().PodDisruptionBudgets(ns).List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "pdbs: %v\n", err)
	} else {
		for _, p := range pdbs.Items {
			fmt.Fprintf(&b, "pdb %s: healthy %d/%d desired, %d disruptions allowed, disrupted %v, observed %d/%d\n", p.Name, p.Status.CurrentHealthy, p.Status.ExpectedPods, p.Status.DisruptionsAllowed, p.Status.DisruptedPods, p.Status.ObservedGeneration, p.Generation)
		}
	}
	return b.String()
}

// PodsOn lists the pods bound to node (namespace/name), those being
// deleted left out.
func PodsOn(ctx context.Context, cs kubernetes.Interface, node string) ([]string, error) {
	pods, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p.Namespace+"/"+p.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// HeldBy waits until node is draining with only the pod ns/name left on
// it (what Block put there): no eviction is then on its way, so killing
// the agent cannot leave the API server's eviction half done (a PDB
// counting a pod as disrupted that was never deleted refuses every
// eviction for two minutes).
func HeldBy(t testing.TB, ctx context.Context, cs kubernetes.Interface, node, ns, name string) {
	t.Helper()
	Eventually(t, 60*time.Second, node+" drained but for "+name, func() error {
		pods, err := PodsOn(ctx, cs, node)
		if err != nil {
			return err
		}
		if !slices.Equal(pods, []string{ns + "/" + name}) {
			return fmt.Errorf("pods on %s: %v", node, pods)
		}
		return nil
	})
}
