package rollout

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/rollouttest"
)

// TestAgentUnderAttack: what an operator, a node or any agent can write in
// the cluster makes no agent lift a cordon it did not set, skip an
// install or exceed max-unavailable, and an install that never ends is
// bounded. kwok nodes cp-1 (control-plane), w-1, w-2 without controllers
// (no pods to drain); four rollouts in a row, the agents started for each
// once its forgery is in place:
//
//   - v1: w-1 cordoned by an operator before: it is upgraded and stays
//     cordoned, the status saying the cordon is not the rollout's.
//   - v2: every Node already annotated with v2's digest (a node patching
//     its own Node, a reimaged node registering under its old object), the
//     roots at v1: every node installs v2.
//   - v3, max-unavailable 1: slot Leases forged in every node's name
//     (beyond the limit, with and without the rollout id; slot 0 for a
//     worker): never more than one node cordoned, cp-1 first, all done.
//   - v4 with an install timeout of 300ms and cp-1's install stuck (a
//     registry trickling bytes): cp-1 fails its install step with the
//     timeout, cordoned; the rollout pauses, the workers untouched.
func TestAgentUnderAttack(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithNodes("cp-1:control-plane", "w-1", "w-2"))
	cs := clientOf(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var nodes []*fakeNode
	for _, name := range []string{"cp-1", "w-1", "w-2"} {
		nodes = append(nodes, &fakeNode{name: name, root: filepath.Join(t.TempDir(), name)})
	}
	cp1, w1 := nodes[0], nodes[1]
	agents := func(edit func(*AgentOptions)) (stop func()) {
		var runs []*agentRun
		for _, n := range nodes {
			runs = append(runs, runAgentWith(t, cs, n, edit))
		}
		return func() {
			for _, r := range runs {
				r.kill()
			}
		}
	}
	bundle := func(v string) (ref, dig string) {
		return "127.0.0.1:5000/zdt/platform@" + digestOf(v), digestOf(v)
	}
	start := func(t *testing.T, v string, maxUnavailable int) *State {
		t.Helper()
		ref, dig := bundle(v)
		st, err := Start(ctx, cs, StartOptions{Reference: ref, Digest: dig, MaxUnavailable: maxUnavailable})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	t.Run("operator cordon kept", func(t *testing.T) {
		patchNodeAs(t, ctx, cs, w1.name, `{"spec":{"unschedulable":true}}`) // kubectl cordon w-1
		stop := agents(nil)
		defer stop()
		start(t, "v1", 2)
		ref, dig := bundle("v1")
		untilDone(t, ctx, cs, 20*time.Second, "rollout to v1", func() error {
			if err := converged(ctx, cs, []*fakeNode{cp1, nodes[2]}, dig, ref); err != nil {
				return err
			}
			_, err := upgraded(ctx, cs, w1, dig, ref)
			return err
		})
		n, err := upgraded(ctx, cs, w1, dig, ref)
		if err != nil {
			t.Fatal(err)
		}
		if !n.Spec.Unschedulable || n.Annotations[AnnotationCordoned] != "" {
			t.Errorf("w-1, cordoned by an operator: unschedulable %v, cordoned-by-rollout %q after the rollout", n.Spec.Unschedulable, n.Annotations[AnnotationCordoned])
		}
		st, err := GetStatus(ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range st.Nodes {
			if want := ns.Name == w1.name; ns.Cordoned != want || (ns.CordonedBy == CordonedByOther) != want || ns.Phase != NodeDone {
				t.Errorf("status of %s: %+v", ns.Name, ns)
			}
		}
		patchNodeAs(t, ctx, cs, w1.name, `{"spec":{"unschedulable":null}}`) // the operator is done with w-1
	})

	t.Run("digest annotation is no install", func(t *testing.T) {
		ref, dig := bundle("v2")
		for _, n := range nodes {
			patchNodeAs(t, ctx, cs, n.name, fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:"7"}}}`, AnnotationDigest, dig, AnnotationGeneration))
		}
		stop := agents(nil)
		defer stop()
		start(t, "v2", 2)
		untilDone(t, ctx, cs, 20*time.Second, "rollout to v2", func() error { return converged(ctx, cs, nodes, dig, ref) })
		for _, n := range nodes {
			if n.gen.Load() != 2 {
				t.Errorf("node %s installed %d times, want twice (v1, v2)", n.name, n.gen.Load())
			}
		}
	})

	t.Run("forged slot leases", func(t *testing.T) {
		obs := rollouttest.Observe(t, ctx, cs, "default", "none")
		st := start(t, "v3", 1)
		for i, n := range nodes {
			forgeLease(t, ctx, cs, 99+i, n.name, "")     // as the review found it
			forgeLease(t, ctx, cs, 199+i, n.name, st.ID) // knowing the rollout
		}
		forgeLease(t, ctx, cs, 0, "w-2", st.ID) // a worker's turn before the control plane
		stop := agents(nil)
		defer stop()
		ref, dig := bundle("v3")
		untilDone(t, ctx, cs, 30*time.Second, "rollout to v3", func() error { return converged(ctx, cs, nodes, dig, ref) })
		if seen := obs.Seen(); seen.MaxCordoned != 1 || len(seen.CordonOrder) != 3 || seen.CordonOrder[0] != cp1.name {
			t.Errorf("with forged leases: %d nodes cordoned at once (max-unavailable 1), in order %v (want cp-1 first, each once)", seen.MaxCordoned, seen.CordonOrder)
		}
	})

	t.Run("install timeout", func(t *testing.T) {
		cp1.block.Store(true)
		stop := agents(func(o *AgentOptions) { o.InstallTimeout = 300 * time.Millisecond })
		defer stop()
		start(t, "v4", 1)
		_, dig3 := bundle("v3")
		eventually(t, 20*time.Second, "rollout paused", func() error {
			s, err := GetStatus(ctx, cs)
			if err != nil || s.State.Phase != PhasePaused {
				return fmt.Errorf("not paused: %+v %v", s, err)
			}
			return nil
		})
		time.Sleep(500 * time.Millisecond) // the workers must stay untouched
		st, err := GetStatus(ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.Nodes {
			if n.Name == cp1.name {
				if n.Phase != NodeFailed || !n.Cordoned || !strings.Contains(n.Error, "install: not installed within 300ms") || !strings.Contains(n.Error, "deadline exceeded") {
					t.Errorf("stuck node's status: %+v", n)
				}
			} else if n.Cordoned || n.Digest != dig3 || n.Phase == NodeFailed {
				t.Errorf("worker %s touched by a paused rollout: %+v", n.Name, n)
			}
		}
		for _, n := range nodes {
			if n.gen.Load() != 3 {
				t.Errorf("node %s installed %d times, want 3 (v1..v3)", n.name, n.gen.Load())
			}
		}
	})
}

func patchNodeAs(t *testing.T, ctx context.Context, cs kubernetes.Interface, node, patch string) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// forgeLease writes slot i held by node for an hour from now, for rollout
// id (none when empty), as any agent can.
func forgeLease(t *testing.T, ctx context.Context, cs kubernetes.Interface, i int, node, id string) {
	t.Helper()
	now, dur := metav1.NewMicroTime(time.Now()), int32(3600)
	l := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: slotName(i), Namespace: Namespace},
		Spec:       coordv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now},
	}
	if id != "" {
		l.Annotations = map[string]string{AnnotationSlotRollout: id}
	}
	leases := cs.CoordinationV1().Leases(Namespace)
	if _, err := leases.Create(ctx, l, metav1.CreateOptions{}); err == nil {
		return
	}
	cur, err := leases.Get(ctx, l.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.ResourceVersion = cur.ResourceVersion
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
