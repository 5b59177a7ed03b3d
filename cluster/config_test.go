package cluster

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/kube"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"zdt.dev/zdt/internal/kubetest"
)

// TestSelectTarget: --kubeconfig wins, then $KUBECONFIG, then the
// in-cluster configuration when KUBERNETES_SERVICE_HOST is set; with none
// of them there is no cluster.
func TestSelectTarget(t *testing.T) {
	for _, tc := range []struct {
		name string
		flag string
		env  map[string]string
		want Target
		ok   bool
	}{
		{name: "nothing", ok: false},
		{name: "flag", flag: "a.conf", env: map[string]string{"KUBECONFIG": "b.conf", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, want: Target{Kubeconfig: "a.conf"}, ok: true},
		{name: "env", env: map[string]string{"KUBECONFIG": "b.conf", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, want: Target{Kubeconfig: "b.conf"}, ok: true},
		{name: "in a pod", env: map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, want: Target{InCluster: true}, ok: true},
		{name: "port only", env: map[string]string{"KUBERNETES_SERVICE_PORT": "443"}, ok: false},
		{name: "empty values", env: map[string]string{"KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": ""}, ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := SelectTarget(tc.flag, func(k string) string { return tc.env[k] })
			if got != tc.want || ok != tc.ok {
				t.Fatalf("SelectTarget = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestInClusterConfig: with InCluster the deployer uses what
// rest.InClusterConfig returns (here the zdt identity of a real API
// server, standing in for a pod's service account) and never a kubeconfig
// ($KUBECONFIG points at a file that does not exist); Helm installs a
// release through it. Outside a pod New fails, saying why.
func TestInClusterConfig(t *testing.T) {
	saved := inClusterConfig
	t.Cleanup(func() { inClusterConfig = saved })
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := New(Options{InCluster: true}); err == nil || !strings.Contains(err.Error(), "in-cluster configuration") {
		t.Fatalf("New(InCluster) outside a pod: %v", err)
	}

	c := kubetest.Start(t)
	calls := 0
	inClusterConfig = func() (*rest.Config, error) {
		calls++
		return clientcmd.BuildConfigFromFlags("", c.ZdtKubeconfig)
	}
	d, err := New(Options{InCluster: true})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 || d.rest.UserAgent != "zdt" {
		t.Fatalf("in-cluster config used %d times, user agent %q", calls, d.rest.UserAgent)
	}
	ctx := context.Background()
	if code, b, err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ic"}}`)); err != nil || code != http.StatusCreated {
		t.Fatalf("namespace: %d %v %s", code, err, b)
	}
	cfg, err := d.helmConfig("ic")
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = "hello", "ic"
	in.WaitStrategy = kube.StatusWatcherStrategy
	ch := &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: "v2", Name: "hello", Version: "1.0.0"},
		Templates: []*common.File{{Name: "templates/cm.yaml", Data: []byte(
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  k: v\n")}},
	}
	if _, err := in.RunWithContext(ctx, ch, nil); err != nil {
		t.Fatalf("helm install through the in-cluster configuration: %v", err)
	}
	if code, b, err := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/ic/configmaps/hello", nil); err != nil || code != http.StatusOK {
		t.Fatalf("configmap: %d %v %s", code, err, b)
	}
	if n, status, err := d.latestRevision(ctx, "ic", "hello"); err != nil || n != 1 || status != "deployed" {
		t.Fatalf("latestRevision = %d %q %v", n, status, err)
	}
	writes, err := c.Writes(ctx, kubetest.ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	if len(writes) == 0 {
		t.Fatal("no write request as zdt: the in-cluster identity was not used")
	}

	inClusterConfig = func() (*rest.Config, error) { return nil, errors.New("no service account") }
	if _, err := New(Options{InCluster: true}); err == nil || !strings.Contains(err.Error(), "no service account") {
		t.Fatalf("New with a failing in-cluster configuration: %v", err)
	}
}
