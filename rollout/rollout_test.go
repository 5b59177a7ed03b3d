package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/internal/kubetest"
)

func digestOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(h[:])
}

// fakeNode is one node's --root and the install an agent of it runs: the
// "bundle" is a file naming the reference, and a generation counter; fail
// injects a failure.
type fakeNode struct {
	name, root string
	gen        atomic.Int32
	fail       atomic.Bool
}

func (n *fakeNode) install(ctx context.Context, ref string) (int, error) {
	if n.fail.Load() {
		return 0, errors.New("injected: kubelet binary does not start")
	}
	p := filepath.Join(n.root, "etc/platform/bundle")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return 0, err
	}
	if err := os.WriteFile(p, []byte(ref), 0o644); err != nil {
		return 0, err
	}
	return int(n.gen.Add(1)), nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// agentRun is an agent's goroutine that can be killed (its context
// cancelled) and started again.
type agentRun struct {
	a      *Agent
	cancel context.CancelFunc
	done   chan struct{}
}

func runAgent(t *testing.T, cs kubernetes.Interface, n *fakeNode) *agentRun {
	return runAgentWith(t, cs, n, nil)
}

// runAgentWith is runAgent with the test's options changed by edit.
func runAgentWith(t *testing.T, cs kubernetes.Interface, n *fakeNode, edit func(*AgentOptions)) *agentRun {
	t.Helper()
	o := AgentOptions{
		Node: n.name, Install: n.install, DrainTimeout: 30 * time.Second, ReadyTimeout: 20 * time.Second,
		LeaseDuration: 3 * time.Second, Poll: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&o)
	}
	a, err := NewAgent(cs, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{a: a, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); a.Run(ctx) }()
	t.Cleanup(r.kill)
	return r
}

func (r *agentRun) kill() { r.cancel(); <-r.done }

// observer watches Nodes and the Deployment from the start of a rollout
// and records what the test asserts afterwards.
type observer struct {
	mu           sync.Mutex
	cordoned     map[string]bool
	maxCordoned  int
	cordonOrder  []string
	minAvailable int32
	seenDeploy   bool
	errs         []string
}

func observe(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, deploy string) *observer {
	t.Helper()
	o := &observer{cordoned: map[string]bool{}, minAvailable: 1 << 30}
	nw, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := cs.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + deploy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	t.Cleanup(dw.Stop)
	go func() {
		for ev := range nw.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			o.mu.Lock()
			if n.Spec.Unschedulable && !o.cordoned[n.Name] {
				o.cordonOrder = append(o.cordonOrder, n.Name)
			}
			o.cordoned[n.Name] = n.Spec.Unschedulable
			c := 0
			for _, v := range o.cordoned {
				if v {
					c++
				}
			}
			o.maxCordoned = max(o.maxCordoned, c)
			o.mu.Unlock()
		}
	}()
	go func() {
		for ev := range dw.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok {
				continue
			}
			o.mu.Lock()
			o.seenDeploy = true
			o.minAvailable = min(o.minAvailable, d.Status.AvailableReplicas)
			o.mu.Unlock()
		}
	}()
	return o
}

func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
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

// converged checks every node is Ready, uncordoned, annotated with
// digest, and its root holds ref.
func converged(ctx context.Context, cs kubernetes.Interface, nodes []*fakeNode, digest, ref string) error {
	for _, fn := range nodes {
		n, err := cs.CoreV1().Nodes().Get(ctx, fn.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if n.Annotations[AnnotationDigest] != digest || n.Spec.Unschedulable || !nodeReady(n) || n.Annotations[AnnotationCordoned] != "" {
			return fmt.Errorf("node %s: digest %q, unschedulable %v, ready %v", fn.name, n.Annotations[AnnotationDigest], n.Spec.Unschedulable, nodeReady(n))
		}
		if n.Annotations[AnnotationGeneration] != fmt.Sprint(fn.gen.Load()) {
			return fmt.Errorf("node %s: generation %q, installed %d", fn.name, n.Annotations[AnnotationGeneration], fn.gen.Load())
		}
		b, err := os.ReadFile(filepath.Join(fn.root, "etc/platform/bundle"))
		if err != nil || string(b) != ref {
			return fmt.Errorf("node %s: root holds %q (%v), want %q", fn.name, b, err, ref)
		}
	}
	return nil
}

// TestRollingUpgrade runs against a real kube-apiserver and etcd, with the
// real kube-controller-manager (deployments, disruption: PDB status, so
// evictions are refused) and kube-scheduler, and kwok keeping three fake
// nodes (1 control-plane, 2 workers) Ready and their pods running. Each
// node has an agent (a goroutine; its install writes the bundle reference
// into its own root). A Deployment of 3 replicas with a PDB minAvailable 2
// runs on them.
//
//   - upgrade: rollout to v2 with --max-unavailable 2: from a watch on the
//     Nodes, never more than 2 cordoned at once, the control-plane node
//     cordoned first and alone; from a watch on the Deployment, never fewer
//     than 2 available; every node ends Ready, uncordoned, annotated with
//     v2's digest and generation, its root holding v2.
//   - failure: rollout to v3 whose install fails on the control-plane node:
//     the rollout pauses with the node and its error in the status, the node
//     stays cordoned, the workers untouched. Fixed and resumed, the
//     control-plane node completes; a worker whose drain is blocked (a PDB
//     allowing no disruption) has its agent killed mid-drain and restarted,
//     and once the blocker is gone the rollout completes.
func TestRollingUpgrade(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithControllers(), kubetest.WithNodes("cp-1:control-plane", "w-1", "w-2"))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// The agents share this client here, where each is a process with its
	// own client on a real site: client-go's default limit (5 requests/s)
	// would throttle the three together, and the 3 s leases expire under it.
	cfg.QPS, cfg.Burst = 200, 400
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The workload.
	replicas := int32(3)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.com/web:1"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	minAvail := intstr.FromInt32(2)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets("default").Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "deployment available, PDB observed", func() error {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || d.Status.AvailableReplicas != 3 {
			return fmt.Errorf("available %d (%v)", d.Status.AvailableReplicas, err)
		}
		p, err := cs.PolicyV1().PodDisruptionBudgets("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || p.Status.ObservedGeneration < p.Generation || p.Status.CurrentHealthy != 3 {
			return fmt.Errorf("pdb not observed (%v)", err)
		}
		return nil
	})

	var nodes []*fakeNode
	agents := map[string]*agentRun{}
	for _, name := range []string{"cp-1", "w-1", "w-2"} {
		n := &fakeNode{name: name, root: filepath.Join(t.TempDir(), name)}
		nodes = append(nodes, n)
		agents[name] = runAgent(t, cs, n)
	}

	// Upgrade to v2, two at a time.
	ref2, dig2 := "127.0.0.1:5000/zdt/platform@"+digestOf("v2"), digestOf("v2")
	obs := observe(t, ctx, cs, "default", "web")
	begin := time.Now()
	st, err := Start(ctx, cs, StartOptions{Reference: ref2, Digest: dig2, MaxUnavailable: 2})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 45*time.Second, "rollout to v2", func() error {
		if err := converged(ctx, cs, nodes, dig2, ref2); err != nil {
			return err
		}
		s, err := GetStatus(ctx, cs)
		if err != nil || s.State.Phase != PhaseDone {
			return fmt.Errorf("rollout not done: %+v %v", s, err)
		}
		return nil
	})
	t.Logf("rollout %s to v2 over 3 nodes in %s", st.ID, time.Since(begin).Round(time.Millisecond))
	obs.mu.Lock()
	if obs.maxCordoned > 2 || obs.maxCordoned == 0 {
		t.Errorf("at most %d nodes were cordoned at once, want 1..2 (max-unavailable 2)", obs.maxCordoned)
	}
	if len(obs.cordonOrder) != 3 || obs.cordonOrder[0] != "cp-1" {
		t.Errorf("cordon order %v, want cp-1 first then both workers", obs.cordonOrder)
	}
	if !obs.seenDeploy || obs.minAvailable < 2 {
		t.Errorf("the Deployment had %d available replicas at one point (seen %v), PDB minAvailable 2", obs.minAvailable, obs.seenDeploy)
	}
	obs.mu.Unlock()
	for _, fn := range nodes {
		if fn.gen.Load() != 1 {
			t.Errorf("node %s installed %d times, want once", fn.name, fn.gen.Load())
		}
	}

	// v3: the control-plane node's install fails.
	ref3, dig3 := "127.0.0.1:5000/zdt/platform@"+digestOf("v3"), digestOf("v3")
	nodes[0].fail.Store(true)
	if _, err := Start(ctx, cs, StartOptions{Reference: ref3, Digest: dig3, MaxUnavailable: 1}); err != nil {
		t.Fatal(err)
	}
	var paused *Status
	eventually(t, 20*time.Second, "rollout paused", func() error {
		s, err := GetStatus(ctx, cs)
		if err != nil {
			return err
		}
		if s.State.Phase != PhasePaused {
			return fmt.Errorf("phase %s", s.State.Phase)
		}
		paused = s
		return nil
	})
	// Agents keep polling: the others must stay untouched for a while.
	time.Sleep(time.Second)
	if s, err := GetStatus(ctx, cs); err != nil {
		t.Fatal(err)
	} else {
		paused = s
	}
	for _, n := range paused.Nodes {
		switch n.Name {
		case "cp-1":
			if n.Phase != NodeFailed || !n.Cordoned || !strings.Contains(n.Error, "injected: kubelet binary does not start") || !strings.Contains(n.Error, "install") {
				t.Errorf("failed node's status: %+v", n)
			}
		default:
			if n.Cordoned || n.Digest != dig2 || n.Phase == NodeFailed {
				t.Errorf("worker %s touched by a paused rollout: %+v", n.Name, n)
			}
		}
	}
	if nodes[1].gen.Load() != 1 || nodes[2].gen.Load() != 1 {
		t.Errorf("workers installed during a paused rollout")
	}

	// A blocker on w-1: a bare pod whose PDB allows no disruption.
	blocker := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "blocker", Namespace: "default", Labels: map[string]string{"app": "blocker"}},
		Spec:       corev1.PodSpec{NodeName: "w-1", Containers: []corev1.Container{{Name: "b", Image: "example.com/b:1"}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, blocker, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	one := intstr.FromInt32(1)
	bpdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "blocker", Namespace: "default"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "blocker"}}},
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets("default").Create(ctx, bpdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "blocker PDB observed", func() error {
		p, err := cs.PolicyV1().PodDisruptionBudgets("default").Get(ctx, "blocker", metav1.GetOptions{})
		if err != nil || p.Status.ObservedGeneration < p.Generation || p.Status.CurrentHealthy != 1 {
			return fmt.Errorf("not observed (%v)", err)
		}
		return nil
	})
	// w-2 goes after w-1: its agent waits until w-1 is done (stopped now,
	// started again below) so the kill lands while w-1 drains.
	agents["w-2"].kill()

	// Fixed, resumed.
	nodes[0].fail.Store(false)
	obs3 := observe(t, ctx, cs, "default", "web")
	if _, err := Resume(ctx, cs); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "w-1 draining", func() error {
		s, err := GetStatus(ctx, cs)
		if err != nil {
			return err
		}
		for _, n := range s.Nodes {
			if n.Name == "w-1" && n.Phase == NodeDraining && n.Cordoned {
				return nil
			}
		}
		return fmt.Errorf("w-1 not draining: %+v", s.Nodes)
	})
	agents["w-1"].kill()
	time.Sleep(500 * time.Millisecond)
	if n, _ := cs.CoreV1().Nodes().Get(ctx, "w-1", metav1.GetOptions{}); !n.Spec.Unschedulable {
		t.Fatalf("w-1 uncordoned by a killed agent")
	}
	agents["w-1"] = runAgent(t, cs, nodes[1])
	agents["w-2"] = runAgent(t, cs, nodes[2])
	time.Sleep(time.Second)
	if err := cs.PolicyV1().PodDisruptionBudgets("default").Delete(ctx, "blocker", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 45*time.Second, "rollout to v3 after resume", func() error {
		if err := converged(ctx, cs, nodes, dig3, ref3); err != nil {
			return err
		}
		s, err := GetStatus(ctx, cs)
		if err != nil || s.State.Phase != PhaseDone {
			return fmt.Errorf("rollout not done: %+v %v", s, err)
		}
		return nil
	})
	obs3.mu.Lock()
	defer obs3.mu.Unlock()
	if obs3.maxCordoned > 1 {
		t.Errorf("%d nodes cordoned at once with max-unavailable 1", obs3.maxCordoned)
	}
	if !obs3.seenDeploy || obs3.minAvailable < 2 {
		t.Errorf("the Deployment had %d available replicas at one point, PDB minAvailable 2", obs3.minAvailable)
	}
}

// TestAgentWatchesRollout: agents whose resync is a minute pick up a
// rollout started while they run within seconds, through their watches
// of the rollout ConfigMap and their Node: the control-plane node first,
// then the worker (woken by the control-plane agent recording itself
// done), twice in a row. A polling agent would start a minute later.
func TestAgentWatchesRollout(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithNodes("cp-1:control-plane", "w-1"))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const resync = time.Minute
	var nodes []*fakeNode
	for _, name := range []string{"cp-1", "w-1"} {
		n := &fakeNode{name: name, root: filepath.Join(t.TempDir(), name)}
		nodes = append(nodes, n)
		r := runAgentWith(t, cs, n, func(o *AgentOptions) { o.Poll = resync })
		select {
		case <-r.a.watching:
		case <-time.After(20 * time.Second):
			t.Fatalf("agent of %s: watches not synced after 20 s", name)
		}
	}
	// Each agent's first pass (no rollout yet) ran before its watches
	// listed; from now on only a change or the resync a minute away wakes it.
	time.Sleep(300 * time.Millisecond)
	for i, v := range []string{"v1", "v2"} {
		ref, dig := "127.0.0.1:5000/zdt/platform@"+digestOf(v), digestOf(v)
		begin := time.Now()
		if _, err := Start(ctx, cs, StartOptions{Reference: ref, Digest: dig, MaxUnavailable: 1}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "rollout to "+v, func() error {
			if err := converged(ctx, cs, nodes, dig, ref); err != nil {
				return err
			}
			s, err := GetStatus(ctx, cs)
			if err != nil || s.State.Phase != PhaseDone {
				return fmt.Errorf("rollout not done: %+v %v", s, err)
			}
			return nil
		})
		took := time.Since(begin)
		t.Logf("rollout to %s over 2 nodes in %s with a resync of %s", v, took.Round(time.Millisecond), resync)
		if took > resync/4 {
			t.Errorf("rollout to %s took %s: the agents did not react to the change (resync %s)", v, took, resync)
		}
		for _, n := range nodes {
			if int(n.gen.Load()) != i+1 {
				t.Errorf("node %s installed %d times after rollout %d", n.name, n.gen.Load(), i+1)
			}
		}
	}
}

// TestAgentBacksOffWithoutAPIServer: an agent whose API server answers
// every request with 500 backs off (its watches re-list with client-go's
// backoff, its passes from 0.5 s doubling): a handful of requests in 3 s,
// not a busy loop, and it stops at once when cancelled.
func TestAgentBacksOffWithoutAPIServer(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is down","code":500}`)
	}))
	defer srv.Close()
	cs := kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL})
	n := &fakeNode{name: "w-1", root: t.TempDir()}
	r := runAgentWith(t, cs, n, func(o *AgentOptions) { o.Poll, o.LeaseDuration = time.Minute, 30*time.Second })
	time.Sleep(3 * time.Second)
	got := requests.Load()
	start := time.Now()
	r.kill()
	t.Logf("%d requests in 3 s to an API server answering 500; stopped in %s", got, time.Since(start).Round(time.Millisecond))
	if got == 0 || got > 30 {
		t.Errorf("%d requests in 3 s, want 1..30 (backoff, no busy loop)", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the agent took %s to stop", d)
	}
	if n.gen.Load() != 0 {
		t.Errorf("installed without a rollout")
	}
}
