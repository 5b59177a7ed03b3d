package kubetest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestParseNodes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []nodeSpec
		err  bool
	}{
		{in: []string{"cp-1:control-plane", "w-1"}, want: []nodeSpec{{"cp-1", "control-plane"}, {"w-1", ""}}},
		{in: []string{"W1"}, err: true},
		{in: []string{"w-1:"}, want: []nodeSpec{{"w-1", ""}}},
		{in: []string{"w-1", "w-1:worker"}, err: true},
		{in: []string{"a/b"}, err: true},
		{in: []string{"w:Bad Role"}, err: true},
	} {
		got, err := parseNodes(tc.in)
		if (err != nil) != tc.err || !tc.err && !slices.Equal(got, tc.want) {
			t.Errorf("parseNodes(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func clientset(t *testing.T, c *Cluster) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// eventually polls cond every 100 ms until it returns nil or d passed.
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

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if !cs.Ready || cs.State.Running == nil {
			return false
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && len(p.Status.ContainerStatuses) == len(p.Spec.Containers)
		}
	}
	return false
}

// TestControllersAndNodes: with the controller manager, the scheduler and
// three kwok nodes, a Deployment of three replicas gets a ReplicaSet and
// pods spread over the three nodes that become Running and Ready, and the
// Deployment Available; the disruption controller gives a PDB its status,
// so an eviction the PDB forbids is refused (429); after a cordon an
// allowed eviction removes the pod and its replacement runs on another
// node.
func TestControllersAndNodes(t *testing.T) {
	c := Start(t, WithControllers(), WithNodes("cp-1:control-plane", "w-1", "w-2"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := clientset(t, c)
	if !slices.Equal(c.Nodes, []string{"cp-1", "w-1", "w-2"}) {
		t.Fatalf("Nodes = %v", c.Nodes)
	}

	// Nodes: Ready, the control-plane role label, a Lease kwok renews.
	for _, name := range c.Nodes {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, isCP := n.Labels["node-role.kubernetes.io/control-plane"]
		if isCP != (name == "cp-1") {
			t.Errorf("node %s labels %v: control-plane role %v", name, n.Labels, isCP)
		}
		if !c.nodeReady(ctx, name, true) {
			t.Errorf("node %s not Ready (or still tainted) after Start: %+v %+v", name, n.Spec.Taints, n.Status.Conditions)
		}
		var lease *coordinationv1.Lease
		eventually(t, 30*time.Second, "lease of "+name, func() error {
			lease, err = cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, name, metav1.GetOptions{})
			return err
		})
		if lease.Spec.HolderIdentity == nil || lease.Spec.RenewTime == nil || time.Since(lease.Spec.RenewTime.Time) > time.Minute {
			t.Errorf("lease of %s: %+v", name, lease.Spec)
		} else {
			t.Logf("lease of %s held by %q, renewed %s", name, *lease.Spec.HolderIdentity, lease.Spec.RenewTime)
		}
	}

	ns := "kubetest-nodes"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "web"}
	honor := corev1.NodeInclusionPolicyHonor
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1"}},
					// One pod per node; a cordoned (tainted) node is no domain.
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
						NodeTaintsPolicy:  &honor,
					}},
				},
			},
		},
	}
	start := time.Now()
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	available := func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range d.Status.Conditions {
			if cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionTrue &&
				d.Status.ReadyReplicas == 3 && d.Status.AvailableReplicas == 3 && d.Status.UpdatedReplicas == 3 &&
				d.Status.ObservedGeneration == d.Generation {
				return nil
			}
		}
		return fmt.Errorf("status %+v", d.Status)
	}
	eventually(t, 90*time.Second, "deployment available", available)
	t.Logf("deployment of 3 replicas Available in %s", time.Since(start).Round(time.Millisecond))

	rs, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(rs.Items) != 1 || rs.Items[0].OwnerReferences[0].Name != "web" {
		t.Fatalf("replica sets: %v %v", rs, err)
	}
	pods := func() []corev1.Pod {
		t.Helper()
		l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	placed := map[string]corev1.Pod{} // node -> pod
	for _, p := range pods() {
		if _, dup := placed[p.Spec.NodeName]; dup {
			t.Fatalf("two pods on node %q", p.Spec.NodeName)
		}
		placed[p.Spec.NodeName] = p
	}
	for _, node := range c.Nodes {
		p, ok := placed[node]
		if !ok || !podReady(&p) || p.Status.PodIP == "" || p.OwnerReferences[0].Name != rs.Items[0].Name {
			t.Fatalf("node %s: pod %+v, want one Running and Ready pod of the replica set", node, p.Status)
		}
	}

	// A PDB that allows no disruption: the eviction API refuses.
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: new(intstr.FromInt32(3)),
			Selector:     &metav1.LabelSelector{MatchLabels: labels},
		},
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pdbStatus := func(allowed int32) func() error {
		return func() error {
			p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.ObservedGeneration != p.Generation || p.Status.CurrentHealthy != 3 || p.Status.DisruptionsAllowed != allowed {
				return fmt.Errorf("status %+v", p.Status)
			}
			return nil
		}
	}
	eventually(t, 60*time.Second, "pdb status (disruption controller)", pdbStatus(0))
	victim := placed["w-1"]
	evict := func() error {
		return cs.CoreV1().Pods(ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: victim.Name, Namespace: ns}})
	}
	err = evict()
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("eviction against a PDB with no disruption allowed: %v, want 429", err)
	}
	if se, ok := err.(apierrors.APIStatus); !ok || se.Status().Code != http.StatusTooManyRequests {
		t.Fatalf("eviction error %v is not a 429", err)
	}
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("refused eviction touched the pod: %v %v", p.DeletionTimestamp, err)
	}

	// Allow one disruption; cordon w-1 and evict its pod (a drain).
	p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.MinAvailable = new(intstr.FromInt32(2))
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "pdb allows one disruption", pdbStatus(1))
	n, err := cs.CoreV1().Nodes().Get(ctx, "w-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Unschedulable = true
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := evict(); err != nil {
		t.Fatalf("eviction the PDB allows: %v", err)
	}
	eventually(t, 30*time.Second, "evicted pod removed", func() error {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("pod %s still there (%v)", victim.Name, err)
	})
	eventually(t, 90*time.Second, "replacement ready elsewhere", func() error {
		if err := available(); err != nil {
			return err
		}
		now := pods()
		if len(now) != 3 {
			return fmt.Errorf("%d pods", len(now))
		}
		for _, p := range now {
			if p.Spec.NodeName == "w-1" {
				return fmt.Errorf("pod %s is on the cordoned node w-1", p.Name)
			}
			if !podReady(&p) {
				return fmt.Errorf("pod %s on %q not ready: %+v", p.Name, p.Spec.NodeName, p.Status)
			}
		}
		return nil
	})
	t.Logf("evicted pod replaced on another node in %s", time.Since(start).Round(time.Millisecond))
}

// TestProcessesDieWithTestBinary: a test binary killed outright (SIGKILL:
// no cleanup runs) takes every process of its control plane with it —
// etcd, kube-apiserver, the controller manager, the scheduler and kwok.
// The test re-runs itself as that binary (KUBETEST_DIE_HELPER), which
// starts a full cluster, writes the processes' ids and waits to be killed.
func TestProcessesDieWithTestBinary(t *testing.T) {
	if os.Getenv("KUBETEST_DIE_HELPER") != "" {
		return // only the helper run below does something
	}
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux's")
	}
	for _, bin := range (options{controllers: true, nodes: []string{"n"}}).binaries() {
		if _, err := os.Stat(filepath.Join(ToolsDir(), bin)); err != nil {
			t.Skipf("%s not built", bin)
		}
	}
	pids := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command(os.Args[0], "-test.run=^TestDieHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KUBETEST_DIE_HELPER="+pids)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var list []int
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, err := os.ReadFile(pids)
		if err == nil && bytes.HasSuffix(b, []byte("\n")) {
			for _, f := range strings.Fields(string(b)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				list = append(list, pid)
			}
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("helper wrote no pids:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(list) != 5 {
		t.Fatalf("helper started %d processes, want 5", len(list))
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	eventually(t, 15*time.Second, "control plane gone with the test binary", func() error {
		for _, pid := range list {
			// Gone, or a zombie init has yet to reap, is dead.
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
				continue
			}
			return fmt.Errorf("process %d still running", pid)
		}
		return nil
	})
}

// TestDieHelper is the killed binary of TestProcessesDieWithTestBinary.
func TestDieHelper(t *testing.T) {
	path := os.Getenv("KUBETEST_DIE_HELPER")
	if path == "" {
		t.Skip("run by TestProcessesDieWithTestBinary")
	}
	c := Start(t, WithControllers(), WithNodes("n"))
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "%d ", p.cmd.Process.Pid)
	}
	b.WriteString("\n")
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Minute) // killed long before
}
