package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	sigsyaml "sigs.k8s.io/yaml"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/charts"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/kubetest"
)

// bundleImages are the images of the test bundle, written the ways a spec
// may write them.
var bundleImages = []string{
	"nginx:1.25",
	"quay.io/cilium/cilium:v1.15.0",
	"registry.local:5000/team/app@sha256:" + strings.Repeat("ab", 32),
}

func testRewriter(t testing.TB, host string) *imageRewriter {
	t.Helper()
	r, err := newImageRewriter(host, bundleImages)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRewriteImagesUnit: whole values equal to a bundle image after
// normalizing are rewritten to the served name, wherever they are
// (containers, init containers, env, CR fields, lists); substrings,
// keys, images not in the bundle and bare words outside an "image" key
// are left alone; a document without a match is kept byte for byte.
func TestRewriteImagesUnit(t *testing.T) {
	r := testRewriter(t, "zdt.example:5000")
	in := `# Source: c/templates/a.yaml
apiVersion: v1
kind: Pod
metadata:
  name: nginx
  labels: {app: nginx}
spec:
  initContainers:
  - name: init
    image: docker.io/library/nginx:1.25
  containers:
  - name: nginx
    image: nginx:1.25
    env:
    - {name: CILIUM, value: "quay.io/cilium/cilium:v1.15.0"}
    - {name: OTHER, value: "quay.io/cilium/cilium:v1.16.0"}
    - {name: SUB, value: "use nginx:1.25 please"}
    - {name: N, value: "123"}
---
# nothing here
apiVersion: v1
kind: ConfigMap
metadata: {name: keep}
data: {a: "quay.io/cilium/cilium:v1.14", nginx:1.25: "x"}
---
apiVersion: zdt.dev/v1
kind: Widget
metadata: {name: w}
spec:
  images: ["index.docker.io/library/nginx:1.25", "registry.local:5000/team/app@sha256:` + strings.Repeat("ab", 32) + `"]
  image: nginx
  size: 12345678901234567890
`
	out, n, err := r.rewrite([]byte(in))
	if err != nil || n != 2 {
		t.Fatalf("rewrite: %d documents rewritten, %v", n, err)
	}
	docs := strings.Split(string(out), "---\n")[1:]
	if len(docs) != 3 {
		t.Fatalf("%d documents:\n%s", len(docs), out)
	}
	var pod struct {
		Metadata struct {
			Name   string
			Labels map[string]string
		}
		Spec struct {
			InitContainers, Containers []struct {
				Name, Image string
				Env         []struct{ Name, Value string }
			}
		}
	}
	if err := sigsyaml.Unmarshal([]byte(docs[0]), &pod); err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	if pod.Metadata.Name != "nginx" || pod.Metadata.Labels["app"] != "nginx" || c.Name != "nginx" {
		t.Errorf("a bare word outside an image key was rewritten: %+v", pod)
	}
	if c.Image != "zdt.example:5000/library/nginx:1.25" || pod.Spec.InitContainers[0].Image != c.Image {
		t.Errorf("container images = %q, %q", c.Image, pod.Spec.InitContainers[0].Image)
	}
	want := []string{"zdt.example:5000/quay.io/cilium/cilium:v1.15.0", "quay.io/cilium/cilium:v1.16.0", "use nginx:1.25 please", "123"}
	for i, e := range c.Env {
		if e.Value != want[i] {
			t.Errorf("env %s = %q, want %q", e.Name, e.Value, want[i])
		}
	}
	if !strings.HasPrefix(docs[1], "# nothing here\n") || !strings.Contains(docs[1], `nginx:1.25: "x"`) {
		t.Errorf("a document without a match was not kept as it was:\n%s", docs[1])
	}
	var w struct {
		Spec struct {
			Images []string
			Image  string
			Size   json.Number
		}
	}
	if err := sigsyaml.Unmarshal([]byte(docs[2]), &w); err != nil {
		t.Fatal(err)
	}
	if w.Spec.Images[0] != "zdt.example:5000/library/nginx:1.25" ||
		w.Spec.Images[1] != "zdt.example:5000/registry.local_5000/team/app@sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("CR = %+v", w.Spec)
	}
	if !strings.Contains(docs[2], "12345678901234567890") {
		t.Errorf("a large integer was not kept:\n%s", docs[2])
	}
	// "nginx" is nginx:latest, not in the bundle: untouched.
	if w.Spec.Image != "nginx" {
		t.Errorf("image nginx (latest, not in the bundle) = %q", w.Spec.Image)
	}
	again, _, err := r.rewrite([]byte(in))
	if err != nil || string(again) != string(out) {
		t.Errorf("the rewrite is not deterministic: %v", err)
	}
	for _, bad := range []string{"", "Zdt.example", "a/b", "zdt.example:5000/x", "has space", "zdt.example:port"} {
		if err := CheckRegistryHost(bad); err == nil {
			t.Errorf("CheckRegistryHost(%q) accepted", bad)
		}
	}
	if _, _, err := r.rewrite([]byte("a: [\n")); err == nil {
		t.Error("broken YAML was accepted")
	}
	if _, _, err := r.rewrite(make([]byte, MaxRewriteSize+1)); err == nil {
		t.Error("input past MaxRewriteSize was accepted")
	}
}

func FuzzRewriteImages(f *testing.F) {
	f.Add([]byte("image: nginx:1.25\n"))
	f.Add([]byte("---\na: &a [*a, *a]\n---\nb: [quay.io/cilium/cilium:v1.15.0]\n"))
	f.Add([]byte("- - - - - - nginx:1.25\n"))
	f.Add([]byte("? [a]\n: nginx:1.25\n"))
	r := testRewriter(f, "h:1")
	f.Fuzz(func(t *testing.T, data []byte) {
		out, _, err := r.rewrite(data)
		if err != nil {
			return
		}
		if len(out) > MaxRewriteSize {
			t.Fatalf("output of %d bytes", len(out))
		}
		// What it wrote reads back, and rewriting it again changes nothing
		// more (the served names are not bundle images).
		if _, n, err := r.rewrite(out); err != nil || n != 0 {
			t.Fatalf("its own output: %d documents rewritten again, %v\n%q", n, err, out)
		}
	})
}

const rewriteChart = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: nginx}
spec:
  replicas: 0
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      initContainers:
      - name: init
        image: quay.io/cilium/cilium:v1.15.0
      containers:
      - name: nginx
        image: {{ .Values.image }}
        env:
        - {name: SIDECAR, value: "docker.io/library/nginx:1.25"}
        - {name: FOREIGN, value: "quay.io/other/thing:1"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: images
data:
  agent: quay.io/cilium/cilium:v1.15.0
  foreign: quay.io/other/thing:1
  word: nginx
`

// TestRewriteImagesDeploy: against a real apiserver (with controllers),
// --rewrite-images rewrites the Deployment's container and init container
// images, an env value and a ConfigMap value to the serving registry,
// leaves an image not in the bundle alone, records the host; the same host
// again is no change (no new revision), another host is an upgrade.
func TestRewriteImagesDeploy(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithControllers())
	ctx := context.Background()
	mk := func(host string) (*Deployer, *desired) {
		d, err := New(Options{Kubeconfig: c.ZdtKubeconfig, RewriteImages: host})
		if err != nil {
			t.Fatal(err)
		}
		d.rewriter = testRewriter(t, host)
		newChart := func() *chart.Chart {
			return &chart.Chart{
				Metadata:  &chart.Metadata{APIVersion: "v2", Name: "web", Version: "1.0.0"},
				Values:    map[string]any{"image": "nginx:1.25"},
				Templates: []*common.File{{Name: "templates/web.yaml", Data: []byte(rewriteChart)}},
			}
		}
		vals := map[string]any{"image": "nginx:1.25"}
		rendered, err := charts.Render(ctx, newChart(), vals, "web", "rw", MaxRenderSize)
		if err != nil {
			t.Fatal(err)
		}
		it := bundle.Item{Component: "rw", Name: "web", Digest: "sha256:" + strings.Repeat("0", 64)}
		w, err := d.finish(it, "web", "rw", newChart(), vals, []byte(`{"image":"nginx:1.25"}`), rendered)
		if err != nil {
			t.Fatal(err)
		}
		return d, w
	}
	deploy := func(host string, installed []installer.Release, want installer.Action) []installer.Release {
		t.Helper()
		d, w := mk(host)
		changes, err := d.plan(ctx, []*desired{w}, installed)
		if err != nil || len(changes) != 1 || changes[0].Action != want {
			t.Fatalf("plan with %s = %+v, %v; want %s", host, changes, err, want)
		}
		rels, err := d.Deploy(ctx, nil, changes)
		if err != nil {
			t.Fatal(err)
		}
		if rels[0].ImageRegistry != host {
			t.Fatalf("recorded image registry %q, want %q", rels[0].ImageRegistry, host)
		}
		return rels
	}
	check := func(host string) {
		t.Helper()
		var dep struct {
			Spec struct {
				Template struct {
					Spec struct {
						InitContainers, Containers []struct {
							Image string
							Env   []struct{ Name, Value string }
						}
					}
				}
			}
		}
		get(t, c, "/apis/apps/v1/namespaces/rw/deployments/web", &dep)
		ps := dep.Spec.Template.Spec
		if got := ps.Containers[0].Image; got != host+"/library/nginx:1.25" {
			t.Errorf("container image = %q", got)
		}
		if got := ps.InitContainers[0].Image; got != host+"/quay.io/cilium/cilium:v1.15.0" {
			t.Errorf("init container image = %q", got)
		}
		env := map[string]string{}
		for _, e := range ps.Containers[0].Env {
			env[e.Name] = e.Value
		}
		if env["SIDECAR"] != host+"/library/nginx:1.25" || env["FOREIGN"] != "quay.io/other/thing:1" {
			t.Errorf("env = %v", env)
		}
		var cm struct{ Data map[string]string }
		get(t, c, "/api/v1/namespaces/rw/configmaps/images", &cm)
		if cm.Data["agent"] != host+"/quay.io/cilium/cilium:v1.15.0" || cm.Data["foreign"] != "quay.io/other/thing:1" || cm.Data["word"] != "nginx" {
			t.Errorf("configmap = %v", cm.Data)
		}
	}
	rels := deploy("zdt.example:5000", nil, installer.ReleaseInstall)
	check("zdt.example:5000")
	rels = deploy("zdt.example:5000", rels, installer.ReleaseUnchanged)
	if rels[0].Revision != 1 {
		t.Fatalf("re-run: revision %d", rels[0].Revision)
	}
	if n := helmRevisions(t, c); n != 1 {
		t.Fatalf("re-run with the same host: %d revisions, want 1", n)
	}
	rels = deploy("other.example", rels, installer.ReleaseUpgrade)
	check("other.example")
	if rels[0].Revision != 2 || helmRevisions(t, c) != 2 {
		t.Fatalf("a changed host: revision %d", rels[0].Revision)
	}
}

func get(t *testing.T, c *kubetest.Cluster, p string, into any) {
	t.Helper()
	code, b, err := c.Do(context.Background(), http.MethodGet, p, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", p, code, err, b)
	}
	if err := json.Unmarshal(b, into); err != nil {
		t.Fatal(err)
	}
}

func helmRevisions(t *testing.T, c *kubetest.Cluster) int {
	t.Helper()
	var list struct{ Items []json.RawMessage }
	get(t, c, "/api/v1/namespaces/rw/secrets?labelSelector=owner%3Dhelm%2Cname%3Dweb", &list)
	return len(list.Items)
}
