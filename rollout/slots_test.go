package rollout

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestLapsedSlotOfCordonedNode: w-1's agent was killed mid-drain (or
// w-1 is rebooting) for longer than the slot Lease's duration, so its
// Lease lapsed while w-1 stays cordoned by the rollout. w-2's agent must
// not take the slot (with max-unavailable 1 that made two nodes cordoned
// at once, the agent upgrading w-2 while w-1 was still down); once w-1's
// agent is back it finishes w-1 (it still holds the slot), and then w-2
// goes.
func TestLapsedSlotOfCordonedNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dig, old := digestOf("v2"), digestOf("v1")
	ready := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	node := func(name string, cordoned bool, digest string, labels map[string]string) *corev1.Node {
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{AnnotationDigest: digest}},
			Spec:       corev1.NodeSpec{Unschedulable: cordoned},
			Status:     corev1.NodeStatus{Conditions: ready},
		}
		if cordoned {
			n.Annotations[AnnotationCordoned] = "r1"
		}
		return n
	}
	state, err := json.Marshal(State{
		ID: "r1", Reference: "site:5000/zdt/platform@" + dig, Digest: dig, MaxUnavailable: 1,
		Phase: PhaseProgressing, Since: time.Now().UTC(),
		Nodes: map[string]NodeState{"cp-1": {Digest: dig, Phase: NodeDone}, "w-1": {Digest: old, Phase: NodeDraining}, "w-2": {Digest: old, Phase: NodeWaiting}},
	})
	if err != nil {
		t.Fatal(err)
	}
	holder, dur := "w-1", int32(3)
	lapsed := metav1.NewMicroTime(time.Now().Add(-time.Minute))
	cs := fake.NewClientset(
		node("cp-1", false, dig, map[string]string{ControlPlaneLabel: ""}),
		node("w-1", true, old, nil),
		node("w-2", false, old, nil),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: Namespace}, Data: map[string]string{StateKey: string(state)}},
		&coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: slotName(0), Namespace: Namespace},
			Spec:       coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &lapsed, RenewTime: &lapsed},
		},
	)
	installs := map[string]*atomic.Int32{"w-1": {}, "w-2": {}}
	agent := func(name string) *Agent {
		a, err := NewAgent(cs, AgentOptions{Node: name, LeaseDuration: 3 * time.Second, Poll: 10 * time.Millisecond, Registries: []string{"site:5000"},
			Install: func(context.Context, string) (int, error) { return int(installs[name].Add(1)), nil },
			Installed: func(context.Context) ([]string, error) {
				if installs[name].Load() > 0 {
					return []string{dig}, nil
				}
				return []string{old}, nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	get := func(name string) *corev1.Node {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// w-2 while w-1's agent is away: it waits.
	if err := agent("w-2").Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n := get("w-2"); n.Spec.Unschedulable || installs["w-2"].Load() != 0 {
		t.Fatalf("w-2 cordoned (%v) or installed (%d times) while w-1 is still cordoned by the rollout: 2 nodes down with max-unavailable 1", n.Spec.Unschedulable, installs["w-2"].Load())
	}
	l, err := cs.CoordinationV1().Leases(Namespace).Get(ctx, slotName(0), metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "w-1" {
		t.Fatalf("slot taken from w-1: %+v (%v)", l.Spec, err)
	}

	// w-1's agent is back: it finishes w-1, and releases the slot.
	if err := agent("w-1").Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n := get("w-1"); n.Spec.Unschedulable || n.Annotations[AnnotationDigest] != dig || installs["w-1"].Load() != 1 {
		t.Fatalf("w-1 not finished by its agent: unschedulable %v, annotations %v, %d installs", n.Spec.Unschedulable, n.Annotations, installs["w-1"].Load())
	}
	// Then w-2 goes.
	if err := agent("w-2").Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n := get("w-2"); n.Spec.Unschedulable || n.Annotations[AnnotationDigest] != dig || installs["w-2"].Load() != 1 {
		t.Fatalf("w-2 not upgraded after w-1: unschedulable %v, annotations %v, %d installs", n.Spec.Unschedulable, n.Annotations, installs["w-2"].Load())
	}
	s, err := GetStatus(ctx, cs)
	if err != nil || s.State.Phase != PhaseDone {
		t.Fatalf("rollout not done: %+v (%v)", s, err)
	}
}
