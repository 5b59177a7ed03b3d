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
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/internal/kubetest"
)

// TestAgentRefusesDowngradeCLI: a node runs the quickstart 0.2.0; someone
// allowed to start rollouts starts one to 0.1.0 — signed with the site's
// key and served by the registry the agent pins, so rollout start and
// the signature check accept it. The agent refuses it before the node is
// cordoned: cp-1 records failed at step admit saying 0.1.0 is older than
// the installed 0.2.0, the rollout pauses, the node is never cordoned
// (Node watch) and its root still holds 0.2.0. Only an agent started with
// --allow-downgrade installs it after a resume.
func TestAgentRefusesDowngradeCLI(t *testing.T) {
	dir := quickstart(t)
	env := []string{"COSIGN_PASSWORD=test"}
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	runIn(t, dir, env, zdtBin, "bundle", "create", "--key", "k.key", "-o", "q1.zdt").must(t, "create 0.1.0")
	script1, err := os.ReadFile(filepath.Join(dir, "files/zdt-hello.sh"))
	if err != nil {
		t.Fatal(err)
	}
	script2 := []byte("#!/bin/sh\necho hello from 0.2.0\n")
	if err := os.WriteFile(filepath.Join(dir, "files/zdt-hello.sh"), script2, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, err := os.ReadFile(filepath.Join(dir, "zdt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sum1, sum2 := sha256.Sum256(script1), sha256.Sum256(script2)
	s := strings.Replace(string(spec), "  version: 0.1.0\n", "  version: 0.2.0\n", 1)
	s = strings.Replace(s, hex.EncodeToString(sum1[:]), hex.EncodeToString(sum2[:]), 1)
	if s == string(spec) || !strings.Contains(s, "0.2.0") {
		t.Fatal("could not make 0.2.0's spec")
	}
	if err := os.WriteFile(filepath.Join(dir, "zdt.yaml"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	runIn(t, dir, env, zdtBin, "bundle", "create", "--key", "k.key", "-o", "q2.zdt").must(t, "create 0.2.0")

	// One registry serving both, straight from the files.
	addr := freeAddr(t, "127.0.0.1")
	srv := filepath.Join(dir, "srv")
	startServeStoppable(t, "--root", srv, "--addr", addr, "--key", filepath.Join(dir, "k.pub"),
		"--bundle", filepath.Join(dir, "q1.zdt"), "--bundle", filepath.Join(dir, "q2.zdt"))
	ca := filepath.Join(srv, "var/lib/zdt/tls/ca.crt")
	root := filepath.Join(dir, "node-cp-1")
	zdt(t, dir, "install", "--from", addr+"/zdt/quickstart:0.2.0", "--ca", ca, "--key", "k.pub", "--root", root,
		"--serve-addr", freeAddr(t, "127.0.0.1")).must(t, "node install 0.2.0")

	c := kubetest.Start(t, kubetest.WithNodes("cp-1:control-plane"))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var cordoned atomic.Bool
	w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		for ev := range w.ResultChan() {
			if n, ok := ev.Object.(*corev1.Node); ok && n.Spec.Unschedulable {
				cordoned.Store(true)
			}
		}
	}()

	agent := func(extra ...string) (stop func()) {
		actx, acancel := context.WithCancel(context.Background())
		args := append([]string{"agent", "--node", "cp-1", "--kubeconfig", c.Kubeconfig, "--root", root, "--ca", ca,
			"--key", filepath.Join(dir, "k.pub"), "--serve-addr", freeAddr(t, "127.0.0.1"), "--registry", addr,
			"--poll", "200ms", "--lease-duration", "3s", "--drain-timeout", "30s", "--ready-timeout", "20s"}, extra...)
		cmd := exec.CommandContext(actx, zdtBin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			acancel()
			cmd.Wait()
			if t.Failed() {
				t.Logf("agent %v:\n%s", extra, stderr.String())
			}
		}
		t.Cleanup(stop)
		return stop
	}
	stop := agent()

	type nodeStatus struct {
		Name, Digest, Phase, Error string
		Cordoned, Ready            bool
	}
	waitPhase := func(phase string) nodeStatus {
		t.Helper()
		var last string
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := zdt(t, dir, "rollout", "status", "--kubeconfig", c.Kubeconfig, "--output", "json")
			last = r.stdout + r.stderr
			var st struct {
				Rollout struct{ Phase string }
				Nodes   []nodeStatus
			}
			if json.Unmarshal([]byte(r.stdout), &st) == nil && st.Rollout.Phase == phase && len(st.Nodes) == 1 {
				return st.Nodes[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("rollout not %s after 60 s:\n%s", phase, last)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}

	started := zdt(t, dir, "rollout", "start", addr+"/zdt/quickstart:0.1.0", "--ca", ca, "--key", "k.pub",
		"--kubeconfig", c.Kubeconfig, "--output", "json").must(t, "rollout start 0.1.0 (signed: accepted)")
	var st struct{ Digest string }
	if err := json.Unmarshal([]byte(started.stdout), &st); err != nil || st.Digest == "" {
		t.Fatalf("rollout start: %v\n%s", err, started.stdout)
	}
	n := waitPhase("paused")
	for _, want := range []string{"admit", "quickstart 0.1.0", "older than the installed version", "quickstart 0.2.0", "--allow-downgrade"} {
		if !strings.Contains(n.Error, want) {
			t.Errorf("cp-1's error %q does not say %q", n.Error, want)
		}
	}
	if n.Phase != "failed" || n.Cordoned || n.Digest == st.Digest {
		t.Errorf("cp-1 after the refused downgrade: %+v", n)
	}
	time.Sleep(500 * time.Millisecond)
	if b, err := os.ReadFile(filepath.Join(root, "usr/local/bin/zdt-hello")); err != nil || !bytes.Equal(b, script2) {
		t.Errorf("root holds %q (%v) after a refused downgrade, want 0.2.0's", b, err)
	}
	if cordoned.Load() {
		t.Errorf("cp-1 was cordoned for a downgrade its agent refuses")
	}

	// An agent allowed to downgrade installs it once resumed.
	stop()
	agent("--allow-downgrade")
	zdt(t, dir, "rollout", "resume", "--kubeconfig", c.Kubeconfig).must(t, "rollout resume")
	n = waitPhase("done")
	if n.Digest != st.Digest || n.Cordoned || n.Error != "" {
		t.Errorf("cp-1 after the allowed downgrade: %+v", n)
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/local/bin/zdt-hello")); err != nil || !bytes.Equal(b, script1) {
		t.Errorf("root holds %q (%v), want 0.1.0's", b, err)
	}
}
