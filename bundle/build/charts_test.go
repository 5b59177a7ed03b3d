package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/manifests"
)

// chartDir writes a chart directory: files maps relative paths to contents.
var chartDir = testregistry.ChartDir

// packageDir packages a chart directory as helm would (charts/ kept as is).
func packageDir(t testing.TB, dir string) []byte {
	t.Helper()
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	p, err := chartutil.Save(ch, out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// helmRepo serves index.yaml and chart archives like a Helm HTTP repository.
type helmRepo struct {
	srv     *httptest.Server
	charts  map[string][]byte // file name → tgz
	entries []string          // index.yaml entry blocks
	gets    atomic.Int32      // chart downloads
}

func newHelmRepo(t testing.TB) *helmRepo {
	r := &helmRepo{charts: map[string][]byte{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name := strings.TrimPrefix(req.URL.Path, "/charts/")
		switch {
		case req.URL.Path == "/index.yaml":
			fmt.Fprintf(w, "apiVersion: v1\nentries:\n%s", strings.Join(r.entries, ""))
		case r.charts[name] != nil:
			r.gets.Add(1)
			w.Write(r.charts[name])
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *helmRepo) add(name, version string, tgz []byte) {
	file := name + "-" + version + ".tgz"
	r.charts[file] = tgz
	sum := sha256.Sum256(tgz)
	r.entries = append(r.entries, fmt.Sprintf("  %s:\n  - apiVersion: v2\n    name: %s\n    version: %s\n    urls: [charts/%s]\n    digest: %s\n",
		name, name, version, file, hex.EncodeToString(sum[:])))
}

const deployTemplate = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: "{{ .Values.init }}"
      containers:
        - name: main
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
`

func TestChartFromHelmRepository(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	for _, name := range []string{"app/web:2", "app/init:1", "app/sidecar:1", "app/sub:1", "app/listed:1"} {
		reg.PushIndex(t, testregistry.Auth{}, name, testregistry.RandomIndex(t, []string{"linux/amd64"}, nil, 1, 2<<10))
	}
	repo := newHelmRepo(t)
	src := t.TempDir()
	sub := chartDir(t, filepath.Join(src, "sub"), map[string]string{
		"Chart.yaml":          "apiVersion: v2\nname: sub\nversion: 0.2.0\n",
		"templates/job.yaml":  "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: sub\nspec:\n  template:\n    spec:\n      containers:\n        - name: s\n          image: " + reg.Ref("app/sub:1") + "\n",
		"templates/NOTES.txt": "image: not/an-image:1\n",
	})
	repo.add("sub", "0.2.0", packageDir(t, sub))
	web := chartDir(t, filepath.Join(src, "web"), map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n" +
			"annotations:\n  artifacthub.io/images: |\n    - name: sidecar\n      image: " + reg.Ref("app/sidecar:1") + "\n" +
			"dependencies:\n  - name: sub\n    version: \"~0.2\"\n    repository: " + repo.srv.URL + "\n",
		"values.yaml":            "image:\n  repository: " + reg.Host + "/app/web\n  tag: \"1\"\ninit: " + reg.Ref("app/init:1") + "\n",
		"templates/deploy.yaml":  deployTemplate,
		"templates/_helpers.tpl": "{{- define \"x\" -}}image: ignored/partial:1{{- end -}}\n",
	})
	repo.add("web", "0.1.0", packageDir(t, web)) // without charts/sub: zdt vendors it

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "values", "web.yaml"), []byte("image:\n  tag: \"2\"\n"))
	spec := writeSpec(t, dir, fmt.Sprintf(`components:
  - name: apps
    images:
      - %s
    charts:
      - name: web
        source: %s
        version: 0.1.0
        values: values/web.yaml
`, reg.Ref("app/listed:1"), repo.srv.URL))
	cache := filepath.Join(dir, "cache")
	res := createIn(t, dir, "charts", spec, CreateOptions{CacheDir: cache, DiscoverImages: true})

	var found []string
	for _, d := range res.Discovered {
		if d.Component != "apps" || d.Chart != "web" || !d.Added {
			t.Errorf("discovered %+v", d)
		}
		found = append(found, d.Ref)
	}
	want := []string{reg.Ref("app/init:1"), reg.Ref("app/sidecar:1"), reg.Ref("app/sub:1"), reg.Ref("app/web:2")}
	if !slices.Equal(found, want) {
		t.Fatalf("discovered %v, want %v", found, want)
	}
	// Items: the spec's image, the discovered ones, then the chart; all locked.
	var items []string
	for _, it := range res.Items {
		items = append(items, it.Kind+" "+it.Name)
		if _, ok := res.Lock.Find(it.Kind, it.Name); !ok {
			t.Errorf("%s is not in the lock", it)
		}
	}
	wantItems := []string{"image " + reg.Ref("app/listed:1")}
	for _, w := range want {
		wantItems = append(wantItems, "image "+w)
	}
	wantItems = append(wantItems, "chart web")
	if !slices.Equal(items, wantItems) {
		t.Fatalf("items %v, want %v", items, wantItems)
	}
	l, _ := res.Lock.Find(manifests.KindChart, "web")
	if !strings.HasPrefix(l.Source, repo.srv.URL+"/charts/web-0.1.0.tgz@sha256:") {
		t.Fatalf("chart lock source %q", l.Source)
	}
	// The chart in the bundle carries its dependency.
	a, err := bundle.Open(context.Background(), res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	layer := findLayer(t, a, res.Items[len(res.Items)-1])
	rc, err := a.Fetch(context.Background(), layer)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := loader.LoadArchive(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if deps := ch.Dependencies(); len(deps) != 1 || deps[0].Metadata.Name != "sub" || deps[0].Metadata.Version != "0.2.0" {
		t.Fatalf("bundled chart dependencies: %v", deps)
	}

	// A second create takes the charts from the cache and gives the same archive.
	n := repo.gets.Load()
	again := createIn(t, dir, "again", spec, CreateOptions{CacheDir: cache, DiscoverImages: true})
	if repo.gets.Load() != n {
		t.Errorf("charts downloaded again (%d → %d)", n, repo.gets.Load())
	}
	if again.Digest != res.Digest {
		t.Errorf("archives differ: %s vs %s", again.Digest, res.Digest)
	}
	// Without discovery, only what the spec lists.
	plain := createIn(t, dir, "plain", spec, CreateOptions{CacheDir: cache})
	if len(plain.Items) != 2 || len(plain.Discovered) != 0 {
		t.Fatalf("without discovery: %d items, %d discovered", len(plain.Items), len(plain.Discovered))
	}
}

// pushChart pushes a chart archive to an OCI registry the way `helm push`
// does and returns the manifest descriptor.
func pushChart(t testing.TB, reg *testregistry.Registry, repoName, version string, tgz []byte) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	ch, err := loader.LoadArchive(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(ch.Metadata)
	repo, err := remote.NewRepository(reg.Host + "/" + repoName)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	cfgDesc := content.NewDescriptorFromBytes(manifests.MediaTypeHelmConfig, cfg)
	layer := content.NewDescriptorFromBytes(manifests.MediaTypeHelmChart, tgz)
	for _, b := range []struct {
		d ocispec.Descriptor
		b []byte
	}{{cfgDesc, cfg}, {layer, tgz}} {
		if err := repo.Push(ctx, b.d, bytes.NewReader(b.b)); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cfgDesc, Layers: []ocispec.Descriptor{layer}, Annotations: map[string]string{"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}})
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, m)
	if err := repo.PushReference(ctx, md, bytes.NewReader(m), version); err != nil {
		t.Fatal(err)
	}
	return md
}

func TestChartFromOCI(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	reg.PushIndex(t, testregistry.Auth{}, "app/web:1", testregistry.RandomIndex(t, []string{"linux/amd64"}, nil, 1, 2<<10))
	src := chartDir(t, t.TempDir(), map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: web\nversion: 1.2.3\n",
		"values.yaml":           "image:\n  repository: " + reg.Host + "/app/web\n  tag: \"1\"\ninit: \"\"\n",
		"templates/deploy.yaml": deployTemplate,
	})
	md := pushChart(t, reg, "charts/web", "1.2.3", packageDir(t, src))
	for _, source := range []string{"oci://" + reg.Host + "/charts/web", "oci://" + reg.Host + "/charts"} {
		t.Run(source, func(t *testing.T) {
			dir := t.TempDir()
			spec := writeSpec(t, dir, fmt.Sprintf("components:\n  - name: apps\n    charts:\n      - name: web\n        source: %s\n        version: \"1.2.3\"\n", source))
			res := createIn(t, dir, "oci", spec, CreateOptions{CacheDir: filepath.Join(dir, "cache"), DiscoverImages: true})
			if len(res.Items) != 2 || res.Items[0].Name != reg.Ref("app/web:1") {
				t.Fatalf("items %+v", res.Items)
			}
			chart := res.Items[1]
			if chart.Digest != md.Digest.String() || chart.Ref != "charts/web:1.2.3" {
				t.Fatalf("chart item %+v, want the pushed manifest %s", chart, md.Digest)
			}
			l, _ := res.Lock.Find(manifests.KindChart, "web")
			if l.Source != reg.Host+"/charts/web@"+md.Digest.String() {
				t.Fatalf("lock source %q", l.Source)
			}
		})
	}
}
