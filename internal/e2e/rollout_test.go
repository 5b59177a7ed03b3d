package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/internal/kubetest"
)

// TestRolloutAgentsCLI: the rolling upgrade end to end with the CLI, on a
// real kube-apiserver + etcd with the real controller manager and
// scheduler and kwok nodes (cp-1 control-plane, w-1, w-2). A site node
// installs the quickstart 0.2.0 (a changed file) from its signed file and
// serves it over TLS; each node runs `zdt agent` as its own process with
// its own --root. `zdt rollout start` with another key is refused (exit 3)
// and records nothing; with the right key it records the bundle pinned to
// its digest, and the agents bring every node to it: never more than one
// cordoned at once (from a Node watch), cp-1 first, each node Ready,
// uncordoned, annotated with the digest, its root holding 0.2.0's file
// (installed --from the site node).
func TestRolloutAgentsCLI(t *testing.T) {
	dir := quickstart(t)
	env := []string{"COSIGN_PASSWORD=test"}
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "other").must(t, "key generate other")
	// 0.2.0: another version and another script.
	script := []byte("#!/bin/sh\necho hello from 0.2.0\n")
	if err := os.WriteFile(filepath.Join(dir, "files/zdt-hello.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile(filepath.Join(dir, "zdt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(script)
	s := strings.Replace(string(spec), "  version: 0.1.0\n", "  version: 0.2.0\n", 1)
	s = strings.Replace(s, "21282e868775aad07a944e8e292bbab99ac85d27e439a32cb5d03dbbf006c7f1", hex.EncodeToString(sum[:]), 1)
	if err := os.WriteFile(filepath.Join(dir, "zdt.yaml"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	runIn(t, dir, env, zdtBin, "bundle", "create", "--key", "k.key", "-o", "q2.zdt").must(t, "create 0.2.0")

	site := filepath.Join(dir, "site")
	addr := freeAddr(t, "127.0.0.1")
	zdt(t, dir, "install", "--bundle", "q2.zdt", "--key", "k.pub", "--root", site, "--serve-addr", addr).must(t, "site install")
	startServeStoppable(t, "--root", site, "--addr", addr)
	ca := filepath.Join(site, "var/lib/zdt/tls/ca.crt")
	ref := addr + "/zdt/quickstart:0.2.0"

	c := kubetest.Start(t, kubetest.WithControllers(), kubetest.WithNodes("cp-1:control-plane", "w-1", "w-2"))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Another key: refused before anything is recorded.
	bad := zdt(t, dir, "rollout", "start", ref, "--ca", ca, "--key", "other.pub", "--kubeconfig", c.Kubeconfig)
	if bad.code != 3 {
		t.Fatalf("rollout start with another key: exit %d, want 3\n%s", bad.code, bad.stderr)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "zdt-system", metav1.GetOptions{}); err == nil {
		t.Fatal("a refused rollout created namespace zdt-system")
	}

	// Watch the nodes from before the agents start.
	var mu sync.Mutex
	cordoned := map[string]bool{}
	var order []string
	maxCordoned := 0
	w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok {
				continue
			}
			mu.Lock()
			if n.Spec.Unschedulable && !cordoned[n.Name] {
				order = append(order, n.Name)
			}
			cordoned[n.Name] = n.Spec.Unschedulable
			k := 0
			for _, v := range cordoned {
				if v {
					k++
				}
			}
			maxCordoned = max(maxCordoned, k)
			mu.Unlock()
		}
	}()

	roots := map[string]string{}
	for _, node := range []string{"cp-1", "w-1", "w-2"} {
		roots[node] = filepath.Join(dir, "node-"+node)
		actx, acancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(actx, zdtBin, "agent", "--node", node, "--kubeconfig", c.Kubeconfig,
			"--root", roots[node], "--ca", ca, "--key", filepath.Join(dir, "k.pub"), "--serve-addr", freeAddr(t, "127.0.0.1"),
			"--poll", "200ms", "--lease-duration", "3s", "--drain-timeout", "30s", "--ready-timeout", "20s")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			acancel()
			cmd.Wait()
			if t.Failed() {
				t.Logf("agent %s:\n%s", node, stderr.String())
			}
		})
	}

	begin := time.Now()
	started := zdt(t, dir, "rollout", "start", ref, "--ca", ca, "--key", "k.pub", "--kubeconfig", c.Kubeconfig, "--output", "json").must(t, "rollout start")
	var st struct{ ID, Reference, Digest string }
	if err := json.Unmarshal([]byte(started.stdout), &st); err != nil || !strings.HasPrefix(st.Digest, "sha256:") || st.Reference != addr+"/zdt/quickstart@"+st.Digest {
		t.Fatalf("rollout start --output json: %v\n%s", err, started.stdout)
	}
	want, err := os.ReadFile(filepath.Join(site, "usr/local/bin/zdt-hello"))
	if err != nil || !bytes.Equal(want, script) {
		t.Fatalf("site's file: %q %v", want, err)
	}
	var last string
	deadline := time.Now().Add(90 * time.Second)
	for {
		r := zdt(t, dir, "rollout", "status", "--kubeconfig", c.Kubeconfig, "--output", "json")
		last = r.stdout + r.stderr
		var status struct {
			Rollout struct{ Phase string }
			Nodes   []struct {
				Name, Digest, Phase, Error string
				Cordoned, Ready            bool
			}
		}
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &status) == nil && status.Rollout.Phase == "done" {
			if len(status.Nodes) != 3 {
				t.Fatalf("status lists %d nodes:\n%s", len(status.Nodes), r.stdout)
			}
			for _, n := range status.Nodes {
				if n.Digest != st.Digest || n.Phase != "done" || n.Cordoned || !n.Ready || n.Error != "" {
					t.Errorf("node %s: %+v", n.Name, n)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout not done after 90 s:\n%s", last)
		}
		time.Sleep(time.Second)
	}
	t.Logf("rollout over 3 agent processes in %s", time.Since(begin).Round(time.Millisecond))
	text := zdt(t, dir, "rollout", "status", "--kubeconfig", c.Kubeconfig).must(t, "rollout status")
	if !strings.Contains(text.stdout, "cp-1") || !strings.Contains(text.stdout, "control-plane") || !strings.Contains(text.stdout, "done") {
		t.Errorf("rollout status says:\n%s", text.stdout)
	}
	for node, root := range roots {
		b, err := os.ReadFile(filepath.Join(root, "usr/local/bin/zdt-hello"))
		if err != nil || !bytes.Equal(b, script) {
			t.Errorf("node %s: /usr/local/bin/zdt-hello = %q (%v), want 0.2.0's", node, b, err)
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil || n.Annotations["zdt.dev/bundle-digest"] != st.Digest || n.Annotations["zdt.dev/generation"] != "1" {
			t.Errorf("node %s annotations %v (%v)", node, n.Annotations, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxCordoned != 1 || len(order) != 3 || order[0] != "cp-1" {
		t.Errorf("cordoned: at most %d at once (want 1), in order %v (want cp-1 first, each once)", maxCordoned, order)
	}
}
