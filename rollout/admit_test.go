package rollout

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/rollouttest"
)

func TestAllowedRegistry(t *testing.T) {
	dig := digestOf("x")
	allowed := []string{"registry.site:5000", "127.0.0.1:5000"}
	for _, tc := range []struct {
		ref, host string // host "" = allowed
	}{
		{"registry.site:5000/zdt/p@" + dig, ""},
		{"Registry.SITE:5000/zdt/p@" + dig, ""},
		{"127.0.0.1:5000/prefix/zdt/p@" + dig, ""},
		{"registry.site/zdt/p@" + dig, "registry.site"},
		{"registry.site:5001/zdt/p@" + dig, "registry.site:5001"},
		{"evil.example:5000/zdt/p@" + dig, "evil.example:5000"},
		{"registry.site:5000.evil.example/zdt/p@" + dig, "registry.site:5000.evil.example"},
		{"zdt/p@" + dig, "zdt"},
		{"p@" + dig, "p@" + dig},
		{"", ""},
	} {
		err := allowedRegistry(tc.ref, allowed)
		var re *RegistryError
		switch {
		case tc.host == "" && tc.ref != "" && err != nil:
			t.Errorf("%q: %v", tc.ref, err)
		case (tc.host != "" || tc.ref == "") && !errors.As(err, &re):
			t.Errorf("%q: allowed (%v)", tc.ref, err)
		case re != nil && (re.Host != tc.host || !errors.Is(err, ErrRegistryNotAllowed) || !strings.Contains(err.Error(), "registry.site:5000, 127.0.0.1:5000")):
			t.Errorf("%q: %v (host %q)", tc.ref, err, re.Host)
		}
	}
}

func TestNewAgentRegistries(t *testing.T) {
	install := func(context.Context, string) (int, error) { return 1, nil }
	for _, tc := range []struct {
		regs []string
		ok   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"https://registry.site"}, false},
		{[]string{"registry.site/zdt"}, false},
		{[]string{"registry.site 5000"}, false},
		{[]string{"registry.site:5000", "10.0.0.1"}, true},
	} {
		_, err := NewAgent(nil, AgentOptions{Node: "n", Install: install, Installed: func(context.Context) ([]string, error) { return nil, nil }, Registries: tc.regs})
		if (err == nil) != tc.ok {
			t.Errorf("registries %q: %v", tc.regs, err)
		}
	}
}

// FuzzAllowedRegistry: any reference from the rollout ConfigMap is
// either refused with a RegistryError or names an allowed registry as
// the part before its first slash.
func FuzzAllowedRegistry(f *testing.F) {
	f.Add("registry.site:5000/zdt/p@" + digestOf("x"))
	f.Add("evil/zdt/p")
	f.Add("REGISTRY.site:5000/a")
	f.Add("\x00/")
	f.Fuzz(func(t *testing.T, ref string) {
		err := allowedRegistry(ref, []string{"registry.site:5000"})
		if err == nil {
			host, _, _ := strings.Cut(ref, "/")
			if !strings.EqualFold(host, "registry.site:5000") || !strings.Contains(ref, "/") {
				t.Fatalf("%q allowed", ref)
			}
			return
		}
		var re *RegistryError
		if !errors.As(err, &re) || !errors.Is(err, ErrRegistryNotAllowed) {
			t.Fatalf("%q: %v", ref, err)
		}
	})
}

// forge writes the rollout ConfigMap as someone allowed to edit it
// would: straight through the API, not through Start.
func forge(ctx context.Context, t *testing.T, cs kubernetes.Interface, ref, digest string) {
	t.Helper()
	if _, err := update(ctx, cs, func(s *State) error {
		s.Reference, s.Digest, s.Phase, s.Since = ref, digest, PhaseProgressing, time.Now().UTC()
		for n := range s.Nodes {
			s.Nodes[n] = NodeState{Phase: NodePending}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAgentRefusesForgedRollout: after a rollout from the site registry,
// someone with write access to the rollout ConfigMap points it at
// another registry, then at an older bundle in the site registry (which
// the agents' Admit refuses, as `zdt agent` refuses a downgrade). Each
// time the control-plane node records failed at "admit" with an error
// naming what was refused, the rollout pauses, and nothing is cordoned
// (Node watch), holds a slot or is installed; resuming refuses again.
func TestAgentRefusesForgedRollout(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithNodes("cp-1:control-plane", "w-1"))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	old := digestOf("v0")
	admit := func(_ context.Context, ref string) error {
		if strings.HasSuffix(ref, "@"+old) {
			return errors.New("bundle platform 0.9.0 is older than the installed platform 1.0.0")
		}
		return nil
	}
	var nodes []*fakeNode
	for _, name := range []string{"cp-1", "w-1"} {
		n := &fakeNode{name: name, root: filepath.Join(t.TempDir(), name)}
		nodes = append(nodes, n)
		runAgentWith(t, cs, n, func(o *AgentOptions) { o.Admit = admit })
	}
	ref1, dig1 := "127.0.0.1:5000/zdt/platform@"+digestOf("v1"), digestOf("v1")
	if _, err := Start(ctx, cs, StartOptions{Reference: ref1, Digest: dig1, MaxUnavailable: 1}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "rollout to v1", func() error { return converged(ctx, cs, nodes, dig1, ref1) })

	for _, tc := range []struct {
		name, ref, digest string
		want              []string
	}{
		{"another registry", "evil.example:5000/zdt/platform@" + digestOf("evil"), digestOf("evil"),
			[]string{`registry "evil.example:5000"`, "allowed: 127.0.0.1:5000", "admit"}},
		{"an older bundle", "127.0.0.1:5000/zdt/platform@" + old, old,
			[]string{"older than the installed platform 1.0.0", "admit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := rollouttest.Observe(t, ctx, cs, "default", "none")
			for round := range 2 {
				if round == 0 {
					forge(ctx, t, cs, tc.ref, tc.digest)
				} else if _, err := Resume(ctx, cs); err != nil {
					t.Fatal(err)
				}
				eventually(t, 10*time.Second, "forged rollout refused", func() error {
					s, err := GetStatus(ctx, cs)
					if err != nil {
						return err
					}
					if s.State.Phase != PhasePaused {
						return fmt.Errorf("phase %s", s.State.Phase)
					}
					for _, n := range s.Nodes {
						if n.Name == "cp-1" && n.Phase == NodeFailed {
							for _, w := range tc.want {
								if !strings.Contains(n.Error, w) {
									t.Errorf("cp-1's error %q does not say %q", n.Error, w)
								}
							}
							return nil
						}
					}
					return fmt.Errorf("cp-1 not failed: %+v", s.Nodes)
				})
			}
			time.Sleep(500 * time.Millisecond) // what the agents would do next
			s, err := GetStatus(ctx, cs)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range s.Nodes {
				if n.Cordoned || n.Digest != dig1 || (n.Name == "w-1" && n.Phase == NodeFailed) {
					t.Errorf("node %s touched by a refused rollout: %+v", n.Name, n)
				}
			}
			leases, err := cs.CoordinationV1().Leases(Namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range leases.Items {
				if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
					t.Errorf("slot %s held by %s for a refused rollout", l.Name, *l.Spec.HolderIdentity)
				}
			}
			for _, n := range nodes {
				if n.gen.Load() != 1 {
					t.Errorf("node %s installed %d times, want only v1", n.name, n.gen.Load())
				}
			}
			if seen := obs.Seen(); seen.MaxCordoned != 0 {
				t.Errorf("%d nodes cordoned for a refused rollout (order %v)", seen.MaxCordoned, seen.CordonOrder)
			}
		})
	}
}
