package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/rollouttest"
)

// lockedBuffer is a bytes.Buffer several processes' output goes to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentProcess is one node's `zdt agent` process, which the test can kill
// with SIGKILL (as a crash or a power cut would: no cleanup) and start
// again with the same arguments.
type agentProcess struct {
	t    *testing.T
	node string
	args []string
	out  lockedBuffer // the output of every run
	runs int
	cmd  *exec.Cmd
	done chan struct{}
}

// startAgent starts `zdt agent --node NODE ARGS...`; it is killed when
// the test ends, and its output logged if the test failed.
func startAgent(t *testing.T, node string, args ...string) *agentProcess {
	t.Helper()
	a := &agentProcess{t: t, node: node, args: append([]string{"agent", "--node", node}, args...)}
	a.start()
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			t.Logf("agent %s (%d runs):\n%s", node, a.runs, a.out.String())
		}
	})
	return a
}

func (a *agentProcess) start() {
	a.t.Helper()
	a.runs++
	fmt.Fprintf(&a.out, "--- run %d\n", a.runs)
	cmd := exec.Command(zdtBin, a.args...)
	cmd.Stdout, cmd.Stderr = &a.out, &a.out
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	a.cmd, a.done = cmd, done
}

// kill sends SIGKILL and waits for the process to be gone.
func (a *agentProcess) kill() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Kill()
	<-a.done
	a.cmd = nil
}

// rolloutStatus is `zdt rollout status --output json`.
type rolloutStatus struct {
	Rollout struct {
		ID, Reference, Digest, Phase string
		MaxUnavailable               int
	}
	Nodes []struct {
		Name, Digest, Generation, Phase, Error string
		ControlPlane, Cordoned, Ready          bool
	}
}

func (s rolloutStatus) node(name string) (n struct {
	Name, Digest, Generation, Phase, Error string
	ControlPlane, Cordoned, Ready          bool
}) {
	for _, x := range s.Nodes {
		if x.Name == name {
			return x
		}
	}
	return n
}

// waitRollout runs `zdt rollout status --output json` until cond accepts
// it (generous deadline: CI runs this beside other tests).
func waitRollout(t *testing.T, dir, kubeconfig, what string, cond func(rolloutStatus) error) rolloutStatus {
	t.Helper()
	var st rolloutStatus
	rollouttest.Eventually(t, 120*time.Second, what, func() error {
		r := zdt(t, dir, "rollout", "status", "--kubeconfig", kubeconfig, "--output", "json")
		st = rolloutStatus{}
		if r.code != 0 {
			return fmt.Errorf("rollout status: exit %d: %s", r.code, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			return fmt.Errorf("rollout status: %v\n%s", err, r.stdout)
		}
		if err := cond(st); err != nil {
			return fmt.Errorf("%w\n%s", err, r.stdout)
		}
		return nil
	})
	return st
}

// rolloutDone accepts a done rollout to digest in which every node
// recorded itself done, at the digest, Ready and uncordoned.
func rolloutDone(digest string) func(rolloutStatus) error {
	return func(s rolloutStatus) error {
		if s.Rollout.Digest != digest || s.Rollout.Phase != "done" {
			return fmt.Errorf("rollout to %s: %s", s.Rollout.Digest, s.Rollout.Phase)
		}
		for _, n := range s.Nodes {
			if n.Digest != digest || n.Phase != "done" || n.Cordoned || !n.Ready || n.Error != "" {
				return fmt.Errorf("rollout done but node %s: %+v", n.Name, n)
			}
		}
		return nil
	}
}

// nodeAt reports how node differs from: annotated with digest and
// generation, uncordoned (and not marked cordoned by a rollout), Ready,
// its root's /usr/local/bin/zdt-hello holding script.
func nodeAt(ctx context.Context, cs kubernetes.Interface, node, root, digest, generation string, script []byte) error {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			ready = c.Status == "True"
		}
	}
	if n.Annotations["zdt.dev/bundle-digest"] != digest || n.Annotations["zdt.dev/generation"] != generation ||
		n.Spec.Unschedulable || n.Annotations["zdt.dev/cordoned-by-rollout"] != "" || !ready {
		return fmt.Errorf("node %s: unschedulable %v, ready %v, annotations %v; want %s generation %s", node, n.Spec.Unschedulable, ready, n.Annotations, digest, generation)
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/local/bin/zdt-hello")); err != nil || !bytes.Equal(b, script) {
		return fmt.Errorf("node %s: /usr/local/bin/zdt-hello = %q (%v), want %q", node, b, err, script)
	}
	return nil
}

// releaseSpec rewrites the quickstart spec in dir as VERSION with script
// as its zdt-hello, plus extra inserted after the file's entry (the
// runtime component's actions), and creates it signed with k.key.
func releaseSpec(t *testing.T, dir, version string, script []byte, extra string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "files/zdt-hello.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile(filepath.Join(moduleRoot, "examples/quickstart/zdt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(script)
	s := strings.Replace(string(spec), "  version: 0.1.0\n", "  version: "+version+"\n", 1)
	s = strings.Replace(s, "21282e868775aad07a944e8e292bbab99ac85d27e439a32cb5d03dbbf006c7f1", hex.EncodeToString(sum[:]), 1)
	s = strings.Replace(s, "        mode: \"0755\"\n", "        mode: \"0755\"\n"+extra, 1)
	if err := os.WriteFile(filepath.Join(dir, "zdt.yaml"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	out := "q-" + version + ".zdt"
	runIn(t, dir, []string{"COSIGN_PASSWORD=test"}, zdtBin, "bundle", "create", "--key", "k.key", "-o", out).must(t, "create "+version)
	return out
}

// TestRolloutAgentsCLI: issue 15's rolling upgrade end to end with the
// CLI, on a real kube-apiserver + etcd with the real controller manager
// and scheduler and kwok nodes (cp-1 control-plane, w-1, w-2) running a
// Deployment web (3 replicas spread over the nodes, PDB minAvailable 2).
// A site node installs signed quickstart releases from their files and
// serves them over TLS; each node runs `zdt agent` as its own process
// with its own --root, installing `--from` the site node. A Node, a
// Deployment and a PDB watch run throughout.
//
//   - `zdt rollout start` with another key is refused (exit 3) and
//     records nothing.
//   - 0.2.0 (a changed file), --max-unavailable 2: cp-1 cordoned first
//     and alone, then both workers at once, never more than 2; the
//     Deployment never below 2 available and the PDB never below 2
//     healthy; each node Ready, uncordoned, annotated with the digest and
//     generation 1, its root holding 0.2.0's file.
//   - 0.3.0 (the file changed again, and the runtime component's after
//     action checking it, which fails on cp-1 until a marker file exists
//     in its root): the rollout pauses with cp-1 failed and cordoned, the
//     action's exit status and output in `rollout status` (JSON, and text
//     exiting 1); the workers untouched (not cordoned, still at 0.2.0,
//     their files unchanged, the action run on cp-1 only). With the
//     marker, `rollout resume`: cp-1 completes; w-1's drain is held by a
//     bare pod whose PDB allows no disruption, and its agent is SIGKILLed
//     while the status says draining; w-1 stays cordoned, and w-2's agent
//     (stopped until then) does not take w-1's slot even once w-1's Lease
//     has lapsed; w-1's agent restarted and the blocker gone, the rollout
//     completes: never more than 1 cordoned, the PDB respected, every node
//     at 0.3.0 (generation 2, its files, the action run once more on cp-1
//     and once on each worker, in that order).
func TestRolloutAgentsCLI(t *testing.T) {
	dir := quickstart(t)
	env := []string{"COSIGN_PASSWORD=test"}
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "other").must(t, "key generate other")
	script2 := []byte("#!/bin/sh\necho hello from 0.2.0\n")
	q2 := releaseSpec(t, dir, "0.2.0", script2, "")
	// 0.3.0's check of zdt-hello fails on cp-1 until the marker is there.
	script3 := []byte("#!/bin/sh\necho hello from 0.3.0\n")
	actionLog := filepath.Join(dir, "actions.log")
	q3 := releaseSpec(t, dir, "0.3.0", script3, fmt.Sprintf(`    actions:
      after:
        - name: check-hello
          command: sh
          args: [-c, 'echo "$ZDT_NODE_NAME $ZDT_BUNDLE_VERSION" >> "$LOG"; if [ "$ZDT_NODE_NAME" = cp-1 ] && [ ! -e "$ZDT_ROOT/etc/hello-fixed" ]; then echo "zdt-hello on $ZDT_NODE_NAME does not start: no $ZDT_ROOT/etc/hello-fixed" >&2; exit 7; fi; "$ZDT_ROOT/usr/local/bin/zdt-hello"']
          env: {LOG: %q}
          timeout: 30s
`, actionLog))

	site := filepath.Join(dir, "site")
	addr := freeAddr(t, "127.0.0.1")
	zdt(t, dir, "install", "--bundle", q2, "--key", "k.pub", "--root", site, "--serve-addr", addr).must(t, "site install")
	startServeStoppable(t, "--root", site, "--addr", addr)
	ca := filepath.Join(site, "var/lib/zdt/tls/ca.crt")
	ref := addr + "/zdt/quickstart:0.2.0"

	c := kubetest.Start(t, kubetest.WithControllers(), kubetest.WithNodes("cp-1:control-plane", "w-1", "w-2"))
	kc := c.Kubeconfig
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rollouttest.Workload(t, ctx, cs, "default", "web", 3, 2, 3)

	// Another key: refused before anything is recorded.
	bad := zdt(t, dir, "rollout", "start", ref, "--ca", ca, "--key", "other.pub", "--kubeconfig", kc)
	if bad.code != 3 {
		t.Fatalf("rollout start with another key: exit %d, want 3\n%s", bad.code, bad.stderr)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "zdt-system", metav1.GetOptions{}); err == nil {
		t.Fatal("a refused rollout created namespace zdt-system")
	}

	// Watch the nodes, the Deployment and its PDB from before the agents start.
	obs := rollouttest.Observe(t, ctx, cs, "default", "web")
	nodes := []string{"cp-1", "w-1", "w-2"}
	roots := map[string]string{}
	agents := map[string]*agentProcess{}
	for _, node := range nodes {
		roots[node] = filepath.Join(dir, "node-"+node)
		agents[node] = startAgent(t, node, "--kubeconfig", kc, "--root", roots[node], "--ca", ca, "--key", filepath.Join(dir, "k.pub"),
			"--serve-addr", freeAddr(t, "127.0.0.1"), "--registry", addr, "--poll", "1s", "--lease-duration", "3s", "--drain-timeout", "60s", "--ready-timeout", "30s")
	}

	// 0.2.0, two workers at a time.
	begin := time.Now()
	started := zdt(t, dir, "rollout", "start", ref, "--ca", ca, "--key", "k.pub", "--kubeconfig", kc, "--max-unavailable", "2", "--output", "json").must(t, "rollout start")
	var st struct {
		ID, Reference, Digest string
		MaxUnavailable        int
	}
	if err := json.Unmarshal([]byte(started.stdout), &st); err != nil || !strings.HasPrefix(st.Digest, "sha256:") || st.Reference != addr+"/zdt/quickstart@"+st.Digest || st.MaxUnavailable != 2 {
		t.Fatalf("rollout start --output json: %v\n%s", err, started.stdout)
	}
	if want, err := os.ReadFile(filepath.Join(site, "usr/local/bin/zdt-hello")); err != nil || !bytes.Equal(want, script2) {
		t.Fatalf("site's file: %q %v", want, err)
	}
	status := waitRollout(t, dir, kc, "rollout to 0.2.0", rolloutDone(st.Digest))
	tookA := time.Since(begin)
	t.Logf("rollout to 0.2.0 over 3 agent processes (max-unavailable 2) in %s", tookA.Round(time.Millisecond))
	if len(status.Nodes) != 3 {
		t.Fatalf("status lists %d nodes: %+v", len(status.Nodes), status.Nodes)
	}
	text := zdt(t, dir, "rollout", "status", "--kubeconfig", kc).must(t, "rollout status")
	if !strings.Contains(text.stdout, "cp-1") || !strings.Contains(text.stdout, "control-plane") || !strings.Contains(text.stdout, "done") {
		t.Errorf("rollout status says:\n%s", text.stdout)
	}
	for _, node := range nodes {
		if err := nodeAt(ctx, cs, node, roots[node], st.Digest, "1", script2); err != nil {
			t.Error(err)
		}
	}
	seen := obs.Reset()
	t.Logf("0.2.0: %+v", seen)
	for _, e := range seen.Check(2, "cp-1", 2) {
		t.Error(e)
	}
	if seen.MaxCordoned != 2 || len(seen.CordonOrder) != 3 {
		t.Errorf("cordoned: at most %d at once, in order %v; want both workers at once after cp-1, each once", seen.MaxCordoned, seen.CordonOrder)
	}

	// 0.3.0: the site node installs it (its node name is not cp-1: the
	// check passes there) and serves it too.
	zdt(t, dir, "install", "--bundle", q3, "--key", "k.pub", "--root", site, "--serve-addr", addr).must(t, "site install 0.3.0")
	if err := os.Remove(actionLog); err != nil {
		t.Fatal(err)
	}
	ranOn := func() []string {
		b, err := os.ReadFile(actionLog)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return strings.Fields(strings.ReplaceAll(string(b), " 0.3.0", ""))
	}
	begin = time.Now()
	started = zdt(t, dir, "rollout", "start", addr+"/zdt/quickstart:0.3.0", "--ca", ca, "--key", "k.pub", "--kubeconfig", kc, "--output", "json").must(t, "rollout start 0.3.0")
	var st3 struct {
		ID, Digest     string
		MaxUnavailable int
	}
	if err := json.Unmarshal([]byte(started.stdout), &st3); err != nil || st3.Digest == st.Digest || st3.MaxUnavailable != 1 {
		t.Fatalf("rollout start 0.3.0 --output json: %v\n%s", err, started.stdout)
	}
	paused := waitRollout(t, dir, kc, "rollout to 0.3.0 paused", func(s rolloutStatus) error {
		if s.Rollout.Digest != st3.Digest || s.Rollout.Phase != "paused" {
			return fmt.Errorf("rollout to %s: %s", s.Rollout.Digest, s.Rollout.Phase)
		}
		return nil
	})
	cp := paused.node("cp-1")
	for _, want := range []string{"node cp-1: install:", `component runtime: after action "check-hello"`, "exit status 7", "zdt-hello on cp-1 does not start: no " + roots["cp-1"] + "/etc/hello-fixed"} {
		if !strings.Contains(cp.Error, want) {
			t.Errorf("cp-1's error in rollout status lacks %q: %+v", want, cp)
		}
	}
	if cp.Phase != "failed" || !cp.Cordoned || cp.Digest != st.Digest {
		t.Errorf("cp-1 in a paused rollout: %+v", cp)
	}
	text = zdt(t, dir, "rollout", "status", "--kubeconfig", kc)
	if text.code != 1 || !strings.Contains(text.stderr, "rollout "+st3.ID+" paused") || !regexpMatch(`(?m)^cp-1 +control-plane +.* failed +.*zdt-hello on cp-1 does not start`, text.stdout) {
		t.Errorf("rollout status of a paused rollout: exit %d\n%s%s", text.code, text.stdout, text.stderr)
	}
	// The workers wait for cp-1: untouched (and, from the Node watch, never
	// cordoned while cp-1 is: checked at the end).
	for _, node := range []string{"w-1", "w-2"} {
		if n := paused.node(node); n.Cordoned || n.Phase == "failed" || n.Digest != st.Digest {
			t.Errorf("worker %s touched by a paused rollout: %+v", node, n)
		}
		if err := nodeAt(ctx, cs, node, roots[node], st.Digest, "1", script2); err != nil {
			t.Errorf("worker touched by a paused rollout: %v", err)
		}
	}
	if got := ranOn(); !slices.Equal(got, []string{"cp-1"}) {
		t.Errorf("0.3.0's action ran on %q before the resume, want cp-1 once", got)
	}

	// w-1's drain will be held; w-2's agent is stopped so that w-1 goes
	// first.
	unblock := rollouttest.Block(t, ctx, cs, "default", "blocker", "w-1")
	agents["w-2"].kill()
	// Fixed, resumed.
	if err := os.WriteFile(filepath.Join(roots["cp-1"], "etc/hello-fixed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := zdt(t, dir, "rollout", "resume", "--kubeconfig", kc).must(t, "rollout resume"); !strings.Contains(r.stdout, "progressing") {
		t.Errorf("rollout resume said %q", r.stdout)
	}
	waitRollout(t, dir, kc, "cp-1 done, w-1 draining", func(s rolloutStatus) error {
		if n := s.node("cp-1"); n.Phase != "done" || n.Digest != st3.Digest {
			return fmt.Errorf("cp-1 %s", n.Phase)
		}
		if n := s.node("w-1"); n.Phase != "draining" || !n.Cordoned {
			return fmt.Errorf("w-1 %s", n.Phase)
		}
		return nil
	})
	rollouttest.HeldBy(t, ctx, cs, "w-1", "default", "blocker")
	agents["w-1"].kill()
	if n, err := cs.CoreV1().Nodes().Get(ctx, "w-1", metav1.GetOptions{}); err != nil || !n.Spec.Unschedulable {
		t.Fatalf("w-1 uncordoned by a killed agent (%v)", err)
	}
	// w-2's agent back while w-1's is away: it must wait, also once w-1's
	// slot Lease lapsed (w-2 re-checks every second).
	agents["w-2"].start()
	rollouttest.Eventually(t, 60*time.Second, "w-1's slot lapsed 2 s ago", func() error {
		leases, err := cs.CoordinationV1().Leases("zdt-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, l := range leases.Items {
			if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "w-1" {
				continue
			}
			if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
				return fmt.Errorf("lease %s: no renew time or duration", l.Name)
			}
			if lapsed := time.Since(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)); lapsed < 2*time.Second {
				return fmt.Errorf("lease %s lapsed %s ago", l.Name, lapsed)
			}
			return nil
		}
		return fmt.Errorf("no slot held by w-1 (taken over?)")
	})
	if n, err := cs.CoreV1().Nodes().Get(ctx, "w-2", metav1.GetOptions{}); err != nil || n.Spec.Unschedulable {
		t.Fatalf("w-2 cordoned while w-1 is down (%v)", err)
	}
	agents["w-1"].start()
	unblock()
	status = waitRollout(t, dir, kc, "rollout to 0.3.0 after the resume", rolloutDone(st3.Digest))
	tookB := time.Since(begin)
	t.Logf("rollout to 0.3.0 (paused, resumed, an agent killed mid-drain) in %s; both rollouts %s", tookB.Round(time.Millisecond), (tookA + tookB).Round(time.Millisecond))
	for _, node := range nodes {
		if err := nodeAt(ctx, cs, node, roots[node], st3.Digest, "2", script3); err != nil {
			t.Error(err)
		}
	}
	if got, want := ranOn(), []string{"cp-1", "cp-1", "w-1", "w-2"}; !slices.Equal(got, want) {
		t.Errorf("0.3.0's action ran on %q, want %q", got, want)
	}
	seen = obs.Reset()
	t.Logf("0.3.0: %+v", seen)
	for _, e := range seen.Check(1, "cp-1", 2) {
		t.Error(e)
	}
	if want := []string{"cp-1", "w-1", "w-2"}; !slices.Equal(seen.CordonOrder, want) {
		t.Errorf("cordon order %v, want %v (each once: w-1 stayed cordoned while its agent was down)", seen.CordonOrder, want)
	}
	if agents["w-1"].runs != 2 || agents["w-2"].runs != 2 {
		t.Errorf("agent runs: w-1 %d, w-2 %d, want 2 each", agents["w-1"].runs, agents["w-2"].runs)
	}
}
