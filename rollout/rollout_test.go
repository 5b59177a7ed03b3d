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
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/rollouttest"
)

func digestOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(h[:])
}

// fakeNode is one node's --root and the install an agent of it runs: the
// "bundle" is a file naming the reference, and a generation counter; fail
// injects a failure, block an install that never ends by itself (a
// registry trickling bytes).
type fakeNode struct {
	name, root string
	gen        atomic.Int32
	fail       atomic.Bool
	block      atomic.Bool
}

func (n *fakeNode) install(ctx context.Context, ref string) (int, error) {
	if n.fail.Load() {
		return 0, errors.New("injected: kubelet binary does not start")
	}
	if n.block.Load() {
		<-ctx.Done()
		return 0, fmt.Errorf("reading blob: %w", ctx.Err())
	}
	p := n.bundleFile()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return 0, err
	}
	if err := os.WriteFile(p, []byte(ref), 0o644); err != nil {
		return 0, err
	}
	return int(n.gen.Add(1)), nil
}

func (n *fakeNode) bundleFile() string { return filepath.Join(n.root, "etc/platform/bundle") }

// installed is the digest of the reference the root holds (none before
// the first install).
func (n *fakeNode) installed(ctx context.Context) ([]string, error) {
	b, err := os.ReadFile(n.bundleFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	_, dig, _ := strings.Cut(string(b), "@")
	return []string{dig}, nil
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
		Node: n.name, Install: n.install, Installed: n.installed, DrainTimeout: 30 * time.Second, ReadyTimeout: 20 * time.Second,
		LeaseDuration: 3 * time.Second, Poll: 200 * time.Millisecond, Registries: []string{"127.0.0.1:5000"},
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

var eventually = rollouttest.Eventually

// converged checks every node is Ready, uncordoned, annotated with
// digest, and its root holds ref.
func converged(ctx context.Context, cs kubernetes.Interface, nodes []*fakeNode, digest, ref string) error {
	for _, fn := range nodes {
		n, err := upgraded(ctx, cs, fn, digest, ref)
		if err != nil {
			return err
		}
		if n.Spec.Unschedulable || n.Annotations[AnnotationCordoned] != "" {
			return fmt.Errorf("node %s: unschedulable %v, cordoned by rollout %q", fn.name, n.Spec.Unschedulable, n.Annotations[AnnotationCordoned])
		}
	}
	return nil
}

// upgraded checks the node is Ready, annotated with digest and the
// generation it installed last, and its root holds ref.
func upgraded(ctx context.Context, cs kubernetes.Interface, fn *fakeNode, digest, ref string) (*corev1.Node, error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, fn.name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if n.Annotations[AnnotationDigest] != digest || !nodeReady(n) {
		return nil, fmt.Errorf("node %s: digest %q, ready %v", fn.name, n.Annotations[AnnotationDigest], nodeReady(n))
	}
	if n.Annotations[AnnotationGeneration] != fmt.Sprint(fn.gen.Load()) {
		return nil, fmt.Errorf("node %s: generation %q, installed %d", fn.name, n.Annotations[AnnotationGeneration], fn.gen.Load())
	}
	b, err := os.ReadFile(fn.bundleFile())
	if err != nil || string(b) != ref {
		return nil, fmt.Errorf("node %s: root holds %q (%v), want %q", fn.name, b, err, ref)
	}
	return n, nil
}

// untilDone waits until the rollout is done and check passes.
func untilDone(t *testing.T, ctx context.Context, cs kubernetes.Interface, d time.Duration, what string, check func() error) {
	t.Helper()
	eventually(t, d, what, func() error {
		if err := check(); err != nil {
			return err
		}
		s, err := GetStatus(ctx, cs)
		if err != nil || s.State.Phase != PhaseDone {
			return fmt.Errorf("rollout not done: %+v %v", s, err)
		}
		return nil
	})
}

// clientOf is a client of c. The agents share it in these tests, where
// each is a process with its own client on a real site: client-go's
// default limit (5 requests/s) would throttle them together, and the 3 s
// leases expire under it.
func clientOf(t *testing.T, c *kubetest.Cluster) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	return kubernetes.NewForConfigOrDie(cfg)
}

// TestRollingUpgrade runs against a real kube-apiserver and etcd, with the
// real kube-controller-manager (deployments, disruption: PDB status, so
// evictions are refused) and kube-scheduler, and kwok keeping three fake
// nodes (1 control-plane, 2 workers) Ready and their pods running. Each
// node has an agent (a goroutine; its install writes the bundle reference
// into its own root). A Deployment of 3 replicas spread over them with a
// PDB minAvailable 2 runs on them (rollouttest.Workload).
//
//   - upgrade: rollout to v2 with --max-unavailable 2: from a watch on the
//     Nodes, never more than 2 cordoned at once, the control-plane node
//     cordoned first and alone; from watches on the Deployment and its PDB,
//     never fewer than 2 available nor 2 healthy; every node ends Ready, uncordoned, annotated with
//     v2's digest and generation, its root holding v2.
//   - failure: rollout to v3 whose install fails on the control-plane node:
//     the rollout pauses with the node and its error in the status, the node
//     stays cordoned, the workers untouched. Fixed and resumed, the
//     control-plane node completes; a worker whose drain is blocked (a PDB
//     allowing no disruption) has its agent killed mid-drain (only the
//     blocker left on it, no eviction on its way) and restarted,
//     and once the blocker is gone the rollout completes.
func TestRollingUpgrade(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithControllers(), kubetest.WithNodes("cp-1:control-plane", "w-1", "w-2"))
	cs := clientOf(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The workload, spread over the three nodes.
	rollouttest.Workload(t, ctx, cs, "default", "web", 3, 2, 3)

	var nodes []*fakeNode
	agents := map[string]*agentRun{}
	for _, name := range []string{"cp-1", "w-1", "w-2"} {
		n := &fakeNode{name: name, root: filepath.Join(t.TempDir(), name)}
		nodes = append(nodes, n)
		agents[name] = runAgent(t, cs, n)
	}

	// Upgrade to v2, two at a time.
	ref2, dig2 := "127.0.0.1:5000/zdt/platform@"+digestOf("v2"), digestOf("v2")
	obs := rollouttest.Observe(t, ctx, cs, "default", "web")
	begin := time.Now()
	st, err := Start(ctx, cs, StartOptions{Reference: ref2, Digest: dig2, MaxUnavailable: 2})
	if err != nil {
		t.Fatal(err)
	}
	untilDone(t, ctx, cs, 45*time.Second, "rollout to v2", func() error { return converged(ctx, cs, nodes, dig2, ref2) })
	t.Logf("rollout %s to v2 over 3 nodes in %s", st.ID, time.Since(begin).Round(time.Millisecond))
	seen := obs.Reset()
	for _, e := range seen.Check(2, "cp-1", 2) {
		t.Error(e)
	}
	if len(seen.CordonOrder) != 3 {
		t.Errorf("cordon order %v, want cp-1 first then both workers", seen.CordonOrder)
	}
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
	unblock := rollouttest.Block(t, ctx, cs, "default", "blocker", "w-1")
	// w-2 goes after w-1: its agent waits until w-1 is done (stopped now,
	// started again below) so the kill lands while w-1 drains.
	agents["w-2"].kill()

	// Fixed, resumed.
	nodes[0].fail.Store(false)
	obs.Reset()
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
	rollouttest.HeldBy(t, ctx, cs, "w-1", "default", "blocker")
	agents["w-1"].kill()
	time.Sleep(500 * time.Millisecond)
	if n, _ := cs.CoreV1().Nodes().Get(ctx, "w-1", metav1.GetOptions{}); !n.Spec.Unschedulable {
		t.Fatalf("w-1 uncordoned by a killed agent")
	}
	agents["w-1"] = runAgent(t, cs, nodes[1])
	agents["w-2"] = runAgent(t, cs, nodes[2])
	time.Sleep(time.Second)
	unblock()
	untilDone(t, ctx, cs, 45*time.Second, "rollout to v3 after resume", func() error { return converged(ctx, cs, nodes, dig3, ref3) })
	for _, e := range obs.Seen().Check(1, "", 2) {
		t.Error(e)
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
