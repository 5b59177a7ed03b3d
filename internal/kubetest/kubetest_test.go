package kubetest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
	cfg, err := c.EtcdTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	etcd := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	if resp, err := etcd.Get(c.EtcdURL + "/health"); err == nil {
		resp.Body.Close()
		t.Fatal("etcd still answers after Stop")
	}
}

// TestEtcdTLS: etcd answers only over TLS, to a client whose certificate
// its CA signed (the test's, from EtcdCertFile/EtcdKeyFile); a client
// without a certificate, one with a certificate of the API server's CA and
// a plain-HTTP request are refused, and kube-apiserver stores through it.
func TestEtcdTLS(t *testing.T) {
	c := Start(t)
	if !strings.HasPrefix(c.EtcdURL, "https://127.0.0.1:") {
		t.Fatalf("EtcdURL = %s, want https on 127.0.0.1", c.EtcdURL)
	}
	cfg, err := c.EtcdTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	get := func(cfg *tls.Config, url string) (int, error) {
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		defer cl.CloseIdleConnections()
		resp, err := cl.Get(url)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(cfg, c.EtcdURL+"/health"); err != nil || code != http.StatusOK {
		t.Fatalf("etcd /health with the client certificate: %d %v", code, err)
	}
	noCert := cfg.Clone()
	noCert.Certificates = nil
	if code, err := get(noCert, c.EtcdURL+"/health"); err == nil {
		t.Fatalf("etcd answered %d to a client without a certificate", code)
	}
	// A certificate the API server's CA signed is no etcd client.
	other := cfg.Clone()
	adm, err := tls.LoadX509KeyPair(filepath.Join(c.Dir, "admin.crt"), filepath.Join(c.Dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	other.Certificates = []tls.Certificate{adm}
	if code, err := get(other, c.EtcdURL+"/health"); err == nil {
		t.Fatalf("etcd answered %d to a client certificate of another CA", code)
	}
	if code, err := get(nil, "http"+strings.TrimPrefix(c.EtcdURL, "https")+"/health"); err == nil && code == http.StatusOK {
		t.Fatal("etcd answered plain HTTP")
	}
	// The API server reaches etcd with its own client certificate.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, out, err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"tls"}}`)); err != nil || code != http.StatusCreated {
		t.Fatalf("create namespace through the API server: %d %v %s", code, err, out)
	}
	if code, err := get(cfg, c.EtcdURL+"/health"); err != nil || code != http.StatusOK {
		t.Fatalf("etcd /health after a write: %d %v", code, err)
	}
}
