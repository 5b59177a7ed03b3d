package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/internal/testregistry"
)

// readySpec is a platform of three ordered components whose second runs a
// Deployment: it is ready only once its pods are scheduled onto a node and
// Ready, which needs the controllers, the scheduler and the (kwok) nodes.
const readySpec = `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata:
  name: ready
  version: %s
components:
  - name: base
    charts:
      - name: base
        source: charts/base
  - name: web
    charts:
      - name: web
        source: charts/web
        values: values/web.yaml
  - name: extra
    charts:
      - name: extra
        source: charts/extra
`

// webDeployment's pods go to the nodes matching .Values.nodeSelector.
const webDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, rev: {{ .Values.rev | quote }}}
    spec:
      {{- with .Values.nodeSelector }}
      nodeSelector: {{ toJson . }}
      {{- end }}
      containers:
        - name: web
          image: registry.invalid/web:1
`

func writeReadyInputs(t *testing.T, dir, version, webValues, extra string) {
	t.Helper()
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "base"), map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: base\nversion: 1.0.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: base\ndata:\n  k: v\n",
	})
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "web"), map[string]string{
		"Chart.yaml":                "apiVersion: v2\nname: web\nversion: 1.0.0\n",
		"values.yaml":               "rev: \"1\"\nnodeSelector: {}\n",
		"templates/deployment.yaml": webDeployment,
	})
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "extra"), map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: extra\nversion: 1.0.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: " + extra + "\n",
	})
	testregistry.WriteFile(t, filepath.Join(dir, "values", "web.yaml"), []byte(webValues))
	testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte(fmt.Sprintf(readySpec, version)))
}

type deploymentStatus struct {
	Metadata struct{ Generation int64 }
	Spec     struct {
		Template struct {
			Metadata struct{ Labels map[string]string }
			Spec     struct{ NodeSelector map[string]string }
		}
	}
	Status struct {
		ObservedGeneration                         int64
		Replicas, ReadyReplicas, AvailableReplicas int32
		UpdatedReplicas                            int32
		Conditions                                 []struct{ Type, Status string }
	}
}

// TestDeployWaitsReady: install waits until each release's resources are
// ready (kstatus, Helm v4's waiter) against a real control plane with
// controllers, scheduler and kwok nodes: when install returns the
// Deployment is Available with every replica ready. An upgrade whose pods
// can never be scheduled (a nodeSelector no node matches) is not ready
// within --timeout: it is rolled back to the previous revision like a
// failed one, the install fails naming the release and the not-ready
// Deployment with its status, the later component is untouched and no
// generation is recorded; the fixed bundle then converges.
func TestDeployWaitsReady(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithControllers(), kubetest.WithNodes("cp-1:control-plane", "w-1", "w-2"))
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	install := func(bundle, timeout string) result {
		return zdt(t, dir, "install", "--bundle", bundle, "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", timeout)
	}
	create := func(out string) {
		t.Helper()
		zdt(t, dir, "bundle", "create", "--discover-images=false", "-o", out).must(t, "create "+out)
	}

	writeReadyInputs(t, dir, "1.0.0", "rev: \"1\"\n", "v")
	create("v1.zdt")
	start := time.Now()
	install("v1.zdt", "2m").must(t, "install v1")
	t.Logf("install with a Deployment waited ready in %s", time.Since(start).Round(time.Millisecond))
	var d deploymentStatus
	getJSON(t, c, "/apis/apps/v1/namespaces/web/deployments/web", &d)
	available := false
	for _, cond := range d.Status.Conditions {
		available = available || cond.Type == "Available" && cond.Status == "True"
	}
	if !available || d.Status.ReadyReplicas != 2 || d.Status.AvailableReplicas != 2 || d.Status.ObservedGeneration != d.Metadata.Generation {
		t.Fatalf("install returned before the Deployment was ready: %+v", d.Status)
	}
	if got := revisions(t, c, "web", "web"); len(got) != 1 || got["1"] != "deployed" {
		t.Fatalf("web history after v1 = %v", got)
	}

	// v2: web's pods need a node labelled disk=none (there is none), and
	// extra, after it, changes too.
	writeReadyInputs(t, dir, "2.0.0", "rev: \"2\"\nnodeSelector: {disk: none}\n", "changed")
	create("v2.zdt")
	start = time.Now()
	r := install("v2.zdt", "15s")
	if r.code == 0 {
		t.Fatalf("an upgrade whose pods can never be scheduled succeeded:\n%s", r.stdout)
	}
	t.Logf("not-ready upgrade failed after %s:\n%s", time.Since(start).Round(time.Millisecond), r.stderr)
	// ... and why, from the cluster's warnings: the scheduler's.
	for _, want := range []string{"web/web", "Deployment/web/web", "not ready", "status: InProgress", "FailedScheduling", "node affinity/selector"} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("the error does not name %q (release, resource, status):\n%s", want, r.stderr)
		}
	}
	hist := revisions(t, c, "web", "web")
	if len(hist) != 3 || hist["2"] != "failed" || hist["3"] != "deployed" {
		t.Fatalf("web history after the not-ready upgrade = %v, want 2 failed and 3 (the rollback) deployed", hist)
	}
	getJSON(t, c, "/apis/apps/v1/namespaces/web/deployments/web", &d)
	if d.Spec.Template.Metadata.Labels["rev"] != "1" || len(d.Spec.Template.Spec.NodeSelector) != 0 {
		t.Fatalf("the Deployment after the rollback = %+v, want v1's template", d.Spec.Template)
	}
	var cm struct{ Data map[string]string }
	getJSON(t, c, "/api/v1/namespaces/extra/configmaps/extra", &cm)
	if got := revisions(t, c, "extra", "extra"); len(got) != 1 || cm.Data["k"] != "v" {
		t.Fatalf("the release after the not-ready one was touched: history %v, data %v", got, cm.Data)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(2))); err == nil {
		t.Fatal("a not-ready deploy recorded generation 2")
	}
	// The rolled-back Deployment is ready again: v1's pods kept running.
	deadline := time.Now().Add(60 * time.Second)
	for {
		getJSON(t, c, "/apis/apps/v1/namespaces/web/deployments/web", &d)
		if d.Status.ObservedGeneration == d.Metadata.Generation && d.Status.ReadyReplicas == 2 && d.Status.UpdatedReplicas == 2 && d.Status.Replicas == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rolled-back Deployment did not settle: %+v", d.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Fixed: the same changes with a selector the nodes match converge.
	writeReadyInputs(t, dir, "3.0.0", "rev: \"3\"\nnodeSelector: {type: kwok}\n", "changed")
	create("v3.zdt")
	install("v3.zdt", "2m").must(t, "install the fixed bundle")
	getJSON(t, c, "/apis/apps/v1/namespaces/web/deployments/web", &d)
	if d.Spec.Template.Metadata.Labels["rev"] != "3" || d.Status.ReadyReplicas != 2 || d.Status.UpdatedReplicas != 2 {
		t.Fatalf("the Deployment after the fix = %+v %+v", d.Spec.Template.Metadata, d.Status)
	}
	getJSON(t, c, "/api/v1/namespaces/extra/configmaps/extra", &cm)
	if cm.Data["k"] != "changed" {
		t.Fatalf("extra after the fix = %v", cm.Data)
	}
	if gen := readGeneration(t, root, 2); len(gen.Releases) != 3 || gen.Releases[1].Revision != 4 || gen.Releases[2].Revision != 2 {
		t.Fatalf("generation 2 releases = %+v, want web at revision 4, extra at 2", gen.Releases)
	}
}

// TestDeployFreshNotReadyUninstalled: a release installed for the first
// time that is not ready within --timeout is uninstalled (nothing of it
// stays), the install fails naming it and its Deployment, and no
// generation is recorded.
func TestDeployFreshNotReadyUninstalled(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithControllers(), kubetest.WithNodes("w-1"))
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	writeReadyInputs(t, dir, "1.0.0", "nodeSelector: {disk: none}\n", "v")
	zdt(t, dir, "bundle", "create", "--discover-images=false", "-o", "v1.zdt").must(t, "create v1")
	r := zdt(t, dir, "install", "--bundle", "v1.zdt", "--root", root, "--insecure-skip-signature",
		"--kubeconfig", c.ZdtKubeconfig, "--timeout", "10s")
	if r.code == 0 {
		t.Fatalf("a fresh release that can never be ready installed:\n%s", r.stdout)
	}
	for _, want := range []string{"web/web", "Deployment/web/web", "not ready", "uninstalled"} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("the error does not name %q:\n%s", want, r.stderr)
		}
	}
	if got := revisions(t, c, "web", "web"); len(got) != 0 {
		t.Fatalf("web history after the failed fresh install = %v, want none (uninstalled)", got)
	}
	if got := revisions(t, c, "extra", "extra"); len(got) != 0 {
		t.Fatalf("extra, after the failing release, was installed: %v", got)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(1))); err == nil {
		t.Fatal("a failed deploy recorded generation 1")
	}
}
