package kubetest

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"
)

// TestToolsVersion: the harness looks for the binaries of the version the
// tools module builds.
func TestToolsVersion(t *testing.T) {
	b, err := os.ReadFile("../../tools/kube/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*k8s\.io/kubernetes (v\S+)`).FindSubmatch(b)
	if m == nil || string(m[1]) != KubeVersion {
		t.Fatalf("tools/kube/go.mod requires k8s.io/kubernetes %q, KubeVersion is %q", m, KubeVersion)
	}
}

const crd = `{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.smoke.zdt.dev"},
  "spec": {"group": "smoke.zdt.dev", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}}`

// TestSmoke: a real API server backed by etcd takes a namespace, a CRD that
// becomes Established and a custom resource of it, reports its version, and
// its audit log attributes each write to the client that sent it.
func TestSmoke(t *testing.T) {
	c := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	code, body, err := c.Do(ctx, http.MethodGet, "/version", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("version: %d %v", code, err)
	}
	var v struct{ GitVersion string }
	if err := json.Unmarshal(body, &v); err != nil || v.GitVersion != KubeVersion {
		t.Fatalf("server version %q (%v), want %s (version ldflags of scripts/kube-tools.sh)", v.GitVersion, err, KubeVersion)
	}

	mustDo := func(user, method, path, body string, want int) []byte {
		t.Helper()
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		code, out, err := c.DoAs(ctx, user, method, path, b)
		if err != nil || code != want {
			t.Fatalf("%s %s: %d %v: %s", method, path, code, err, out)
		}
		return out
	}
	mustDo(ZdtUser, http.MethodPost, "/api/v1/namespaces", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"smoke"}}`, http.StatusCreated)
	mustDo(AdminUser, http.MethodPost, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, http.StatusCreated)

	start := time.Now()
	for {
		var got struct {
			Status struct {
				Conditions []struct{ Type, Status string }
			}
		}
		out := mustDo(AdminUser, http.MethodGet, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.smoke.zdt.dev", "", http.StatusOK)
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		established := false
		for _, cond := range got.Status.Conditions {
			established = established || cond.Type == "Established" && cond.Status == "True"
		}
		if established {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("CRD not established after 30s: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("CRD established in %s", time.Since(start).Round(time.Millisecond))
	// The CRD is served: a custom resource of it is stored and read back.
	mustDo(ZdtUser, http.MethodPost, "/apis/smoke.zdt.dev/v1/namespaces/smoke/widgets",
		`{"apiVersion":"smoke.zdt.dev/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"size":3}}`, http.StatusCreated)
	out := mustDo(AdminUser, http.MethodGet, "/apis/smoke.zdt.dev/v1/namespaces/smoke/widgets/w1", "", http.StatusOK)
	var w struct{ Spec struct{ Size int } }
	if err := json.Unmarshal(out, &w); err != nil || w.Spec.Size != 3 {
		t.Fatalf("widget read back: %s (%v)", out, err)
	}

	writes, err := c.Writes(ctx, ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	if len(writes) != 2 || writes[0].Resource != "namespaces" || writes[0].Name != "smoke" || writes[0].Verb != "create" ||
		writes[1].Resource != "widgets" || writes[1].Namespace != "smoke" || writes[1].Code != http.StatusCreated {
		t.Fatalf("zdt's writes in the audit log = %v, want the namespace and the widget", writes)
	}
	reqs, err := c.Requests(ctx, ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 2 {
		t.Fatalf("zdt's requests = %v, want only its two writes (the admin's requests are not counted)", reqs)
	}
}

// TestStopEndsProcesses: after Stop nothing listens any more.
func TestStopEndsProcesses(t *testing.T) {
	c := Start(t)
	c.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Do(ctx, http.MethodGet, "/readyz", nil); err == nil {
		t.Fatal("API server still answers after Stop")
	}
	if resp, err := http.Get(c.EtcdURL + "/health"); err == nil {
		resp.Body.Close()
		t.Fatal("etcd still answers after Stop")
	}
}
