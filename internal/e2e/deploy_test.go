package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/internal/testregistry"
)

// deploySpec is a platform of three ordered components: a chart that
// ships a CRD (in crds/), an app whose chart holds a custom resource of
// that CRD and a ConfigMap from its values, and a third chart.
const deploySpec = `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata:
  name: platform
  version: %s
components:
  - name: crds
    charts:
      - name: widgets
        source: charts/widgets
  - name: app
    charts:
      - name: app
        source: charts/app
        values: values/app.yaml
  - name: extra
    charts:
      - name: extra
        source: charts/extra
        namespace: extra-ns
`

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.zdt.dev
spec:
  group: zdt.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
`

func writeDeployInputs(t *testing.T, dir, version, greeting string) {
	t.Helper()
	writeDeployInputsExtra(t, dir, version, greeting, "v")
}

func writeDeployInputsExtra(t *testing.T, dir, version, greeting, extra string) {
	t.Helper()
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "widgets"), map[string]string{
		"Chart.yaml":          "apiVersion: v2\nname: widgets\nversion: 1.0.0\n",
		"crds/widgets.yaml":   "# the Widget CRD\n---\n" + widgetCRD,
		"templates/cm.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: widgets-info\ndata:\n  installed: \"yes\"\n",
		"templates/NOTES.txt": "widgets installed\n",
	})
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "app"), map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: app\nversion: 1.0.0\n",
		"values.yaml": "greeting: default\nsize: 1\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n" +
			"  greeting: {{ .Values.greeting | quote }}\n",
		"templates/widget.yaml": "apiVersion: zdt.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: {{ .Values.size }}\n",
	})
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "extra"), map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: extra\nversion: 1.0.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: " + extra + "\n",
	})
	testregistry.WriteFile(t, filepath.Join(dir, "values", "app.yaml"), []byte("greeting: "+greeting+"\nsize: 3\n"))
	testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte(fmt.Sprintf(deploySpec, version)))
}

// revisions lists a release's Helm revisions (version label → status) as
// stored in the cluster.
func revisions(t *testing.T, c *kubetest.Cluster, ns, name string) map[string]string {
	t.Helper()
	q := url.Values{"labelSelector": {"owner=helm,name=" + name}}
	code, body, err := c.Do(context.Background(), http.MethodGet, "/api/v1/namespaces/"+ns+"/secrets?"+q.Encode(), nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("listing release %s/%s: %d %v", ns, name, code, err)
	}
	var list struct {
		Items []struct {
			Metadata struct{ Labels map[string]string }
		}
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, it := range list.Items {
		out[it.Metadata.Labels["version"]] = it.Metadata.Labels["status"]
	}
	return out
}

func getJSON(t *testing.T, c *kubetest.Cluster, path string, into any) {
	t.Helper()
	code, body, err := c.Do(context.Background(), http.MethodGet, path, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v: %s", path, code, err, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatal(err)
	}
}

// TestDeployCharts: `zdt install --kubeconfig` against a real
// kube-apiserver deploys three ordered components (CRD first, then a custom
// resource using it), a re-run creates no Helm revision and sends no write
// request (the API server's audit log is the judge), and a changed value
// upgrades only its release. No controller runs: the releases hold
// ConfigMaps and custom resources, which are ready without one.
func TestDeployCharts(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")

	install := func(bundle string) (result, time.Duration) {
		start := time.Now()
		r := zdt(t, dir, "install", "--bundle", bundle, "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m")
		return r.must(t, "install "+bundle), time.Since(start)
	}
	ctx := context.Background()

	// Fresh install.
	first, took := install("v1.zdt")
	t.Logf("fresh deploy of 3 releases: %s", took.Round(time.Millisecond))
	if !strings.Contains(first.stdout, "deployed: 3 releases changed, 0 unchanged") {
		t.Fatalf("first install said:\n%s", first.stdout)
	}
	for _, r := range [][2]string{{"crds", "widgets"}, {"app", "app"}, {"extra-ns", "extra"}} {
		if got := revisions(t, c, r[0], r[1]); len(got) != 1 || got["1"] != "deployed" {
			t.Fatalf("release %s/%s history = %v, want revision 1 deployed", r[0], r[1], got)
		}
	}
	var crd struct {
		Status struct {
			Conditions []struct{ Type, Status string }
		}
	}
	getJSON(t, c, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.zdt.dev", &crd)
	established := false
	for _, cond := range crd.Status.Conditions {
		established = established || cond.Type == "Established" && cond.Status == "True"
	}
	if !established {
		t.Fatalf("CRD not established: %+v", crd)
	}
	var widget struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct{ Size int }
	}
	getJSON(t, c, "/apis/zdt.dev/v1/namespaces/app/widgets/w1", &widget)
	if widget.Spec.Size != 3 || widget.Metadata.Labels["app.kubernetes.io/managed-by"] != "Helm" {
		t.Fatalf("widget = %+v, want size 3 from the bundle's values, managed by Helm", widget)
	}
	var cm struct{ Data map[string]string }
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hello" {
		t.Fatalf("app-config = %v", cm.Data)
	}
	gen := readGeneration(t, root, 1)
	if len(gen.Releases) != 3 || gen.Releases[0].Name != "widgets" || gen.Releases[1].Name != "app" || gen.Releases[2].Namespace != "extra-ns" {
		t.Fatalf("generation 1 releases = %+v, want widgets, app, extra in order", gen.Releases)
	}

	// Re-run: nothing new in the cluster, not even a write request.
	before, err := c.Writes(ctx, kubetest.ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) == 0 {
		t.Fatal("the audit log shows no write by zdt after the first install")
	}
	again, took := install("v1.zdt")
	t.Logf("re-run of the same bundle: %s", took.Round(time.Millisecond))
	if !strings.Contains(again.stdout, "nothing changed") {
		t.Fatalf("re-run said:\n%s", again.stdout)
	}
	after, err := c.Writes(ctx, kubetest.ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("re-run sent %d write requests: %v", len(after)-len(before), after[len(before):])
	}
	for _, r := range [][2]string{{"crds", "widgets"}, {"app", "app"}, {"extra-ns", "extra"}} {
		if got := revisions(t, c, r[0], r[1]); len(got) != 1 {
			t.Fatalf("re-run: release %s/%s history = %v, want still one revision", r[0], r[1], got)
		}
	}

	// A changed value upgrades its release only.
	writeDeployInputs(t, dir, "1.1.0", "hi")
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	plan := zdt(t, dir, "install", "--bundle", "v2.zdt", "--root", root, "--insecure-skip-signature",
		"--kubeconfig", c.ZdtKubeconfig, "--plan").must(t, "plan v2")
	if !strings.Contains(plan.stdout, "~ release app/app") || !strings.Contains(plan.stdout, "values") ||
		!strings.Contains(plan.stdout, "= release crds/widgets") {
		t.Fatalf("plan of v2:\n%s", plan.stdout)
	}
	up, took := install("v2.zdt")
	t.Logf("upgrade of one release: %s", took.Round(time.Millisecond))
	if !strings.Contains(up.stdout, "deployed: 1 releases changed, 2 unchanged") {
		t.Fatalf("upgrade said:\n%s", up.stdout)
	}
	if got := revisions(t, c, "app", "app"); len(got) != 2 || got["2"] != "deployed" || got["1"] != "superseded" {
		t.Fatalf("app history after the upgrade = %v", got)
	}
	for _, r := range [][2]string{{"crds", "widgets"}, {"extra-ns", "extra"}} {
		if got := revisions(t, c, r[0], r[1]); len(got) != 1 {
			t.Fatalf("upgrade touched release %s/%s: %v", r[0], r[1], got)
		}
	}
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hi" {
		t.Fatalf("app-config after the upgrade = %v", cm.Data)
	}
	upWrites, err := c.Writes(ctx, kubetest.ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range upWrites[len(after):] {
		if w.Namespace != "app" {
			t.Fatalf("the upgrade of app/app wrote outside its namespace: %v", w)
		}
	}
	if gen := readGeneration(t, root, 2); len(gen.Releases) != 3 || gen.Releases[1].Revision != 2 || gen.Releases[0].Revision != 1 {
		t.Fatalf("generation 2 releases = %+v", gen.Releases)
	}
	st := zdt(t, dir, "status", "--root", root).must(t, "status")
	if !strings.Contains(st.stdout, "release    app/app  chart app 1.0.0  revision 2") ||
		!strings.Contains(st.stdout, "release    crds/widgets  chart widgets 1.0.0  revision 1") {
		t.Fatalf("status does not list the releases:\n%s", st.stdout)
	}
}

type generationJSON struct {
	Releases []struct {
		Name, Namespace, ChartDigest, ValuesDigest, ManifestDigest string
		Revision                                                   int
	}
}

func readGeneration(t *testing.T, root string, n int) generationJSON {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, layout.Generation(n)))
	if err != nil {
		t.Fatal(err)
	}
	var g generationJSON
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestDeployFailureRollsBack: a bundle whose second component's chart
// fails to upgrade (the API server refuses one of its objects) rolls that
// release back to what ran before, leaves the third component untouched,
// exits non-zero naming the release and the object, and records no
// generation; the fixed bundle then converges.
func TestDeployFailureRollsBack(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	install := func(bundle string) result {
		return zdt(t, dir, "install", "--bundle", bundle, "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m")
	}
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	install("v1.zdt").must(t, "install v1")

	// v2 changes app (and breaks it: a ConfigMap key the API refuses) and
	// extra, which comes after it.
	writeDeployInputsExtra(t, dir, "2.0.0", "hi", "changed")
	bad := filepath.Join(dir, "charts", "app", "templates", "bad.yaml")
	testregistry.WriteFile(t, bad, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken-config\ndata:\n  \"no spaces allowed\": x\n"))
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	r := install("v2.zdt")
	if r.code == 0 {
		t.Fatalf("installing a failing chart succeeded:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "app/app") || !strings.Contains(r.stderr, "broken-config") {
		t.Fatalf("the error does not name the release and the object:\n%s", r.stderr)
	}
	hist := revisions(t, c, "app", "app")
	if len(hist) != 3 || hist["2"] != "failed" || hist["3"] != "deployed" {
		t.Fatalf("app history after the failed upgrade = %v, want 2 failed and 3 (the rollback) deployed", hist)
	}
	var cm struct{ Data map[string]string }
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hello" {
		t.Fatalf("app-config after the rollback = %v, want v1's", cm.Data)
	}
	getJSON(t, c, "/api/v1/namespaces/extra-ns/configmaps/extra", &cm)
	if got := revisions(t, c, "extra-ns", "extra"); len(got) != 1 || cm.Data["k"] != "v" {
		t.Fatalf("the release after the failing one was touched: history %v, data %v", got, cm.Data)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(2))); err == nil {
		t.Fatal("a failed deploy recorded generation 2")
	}

	// Fixed: the same changes without the broken object converge.
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	zdt(t, dir, "bundle", "create", "-o", "v3.zdt").must(t, "create v3")
	install("v3.zdt").must(t, "install the fixed bundle")
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hi" {
		t.Fatalf("app-config after the fix = %v", cm.Data)
	}
	getJSON(t, c, "/api/v1/namespaces/extra-ns/configmaps/extra", &cm)
	if cm.Data["k"] != "changed" {
		t.Fatalf("extra after the fix = %v", cm.Data)
	}
	if gen := readGeneration(t, root, 2); len(gen.Releases) != 3 || gen.Releases[1].Revision != 4 || gen.Releases[2].Revision != 2 {
		t.Fatalf("generation 2 releases = %+v, want app at revision 4, extra at 2", gen.Releases)
	}
}

// TestDeployPrune: a chart the new bundle drops has its release
// uninstalled (its objects deleted), while the CRD it shipped is kept, and
// so are the custom resources of it that other releases own.
func TestDeployPrune(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	args := func(bundle string, more ...string) []string {
		return append([]string{"install", "--bundle", bundle, "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m"}, more...)
	}
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	zdt(t, dir, args("v1.zdt")...).must(t, "install v1")

	spec := fmt.Sprintf(deploySpec, "2.0.0")
	dropped := strings.Replace(spec, "  - name: crds\n    charts:\n      - name: widgets\n        source: charts/widgets\n", "", 1)
	if dropped == spec {
		t.Fatal("the spec fixture changed: cannot drop the widgets chart")
	}
	testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte(dropped))
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	plan := zdt(t, dir, args("v2.zdt", "--plan")...).must(t, "plan v2")
	if !strings.Contains(plan.stdout, "- release crds/widgets") || !strings.Contains(plan.stdout, "= release app/app") {
		t.Fatalf("plan of v2:\n%s", plan.stdout)
	}
	zdt(t, dir, args("v2.zdt")...).must(t, "install v2")

	if got := revisions(t, c, "crds", "widgets"); len(got) != 0 {
		t.Fatalf("dropped release widgets still has history %v", got)
	}
	code, _, err := c.Do(context.Background(), http.MethodGet, "/api/v1/namespaces/crds/configmaps/widgets-info", nil)
	if err != nil || code != http.StatusNotFound {
		t.Fatalf("the dropped release's ConfigMap: %d %v, want 404", code, err)
	}
	var crd struct{ Metadata struct{ Name string } }
	getJSON(t, c, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.zdt.dev", &crd)
	var w struct{ Spec struct{ Size int } }
	getJSON(t, c, "/apis/zdt.dev/v1/namespaces/app/widgets/w1", &w)
	if crd.Metadata.Name != "widgets.zdt.dev" || w.Spec.Size != 3 {
		t.Fatalf("CRD %+v or widget %+v lost with the dropped release", crd, w)
	}
	if got := revisions(t, c, "app", "app"); len(got) != 1 {
		t.Fatalf("app touched by the prune: %v", got)
	}
	if gen := readGeneration(t, root, 2); len(gen.Releases) != 2 || gen.Releases[0].Name != "app" {
		t.Fatalf("generation 2 releases = %+v, want app and extra", gen.Releases)
	}
}

// TestDeployCRDSchemaUpgrade: a new chart version whose CRD gains a field
// upgrades the CRD by server-side apply (Helm alone never would) before
// the release, and the release; the field is then accepted.
func TestDeployCRDSchemaUpgrade(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	install := func(bundle string) result {
		return zdt(t, dir, "install", "--bundle", bundle, "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m").must(t, "install "+bundle)
	}
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	install("v1.zdt")

	charts := filepath.Join(dir, "charts", "widgets")
	testregistry.WriteFile(t, filepath.Join(charts, "Chart.yaml"), []byte("apiVersion: v2\nname: widgets\nversion: 1.1.0\n"))
	testregistry.WriteFile(t, filepath.Join(charts, "crds", "widgets.yaml"),
		[]byte(widgetCRD+"                color: {type: string}\n"))
	testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte(fmt.Sprintf(deploySpec, "2.0.0")))
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	plan := zdt(t, dir, "install", "--bundle", "v2.zdt", "--root", root, "--insecure-skip-signature",
		"--kubeconfig", c.ZdtKubeconfig, "--plan").must(t, "plan v2")
	if !strings.Contains(plan.stdout, "~ release crds/widgets") || !strings.Contains(plan.stdout, "chart 1.0.0 -> 1.1.0") {
		t.Fatalf("plan of v2:\n%s", plan.stdout)
	}
	install("v2.zdt")

	var crd struct {
		Metadata struct {
			ManagedFields []struct{ Manager, Operation string }
		}
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]struct {
							Properties map[string]any
						}
					}
				}
			}
		}
	}
	getJSON(t, c, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.zdt.dev", &crd)
	if _, ok := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["color"]; !ok {
		t.Fatalf("CRD schema not upgraded: %+v", crd.Spec.Versions)
	}
	applied := false
	for _, f := range crd.Metadata.ManagedFields {
		applied = applied || f.Manager == "zdt" && f.Operation == "Apply"
	}
	if !applied {
		t.Fatalf("CRD not server-side applied by zdt: %+v", crd.Metadata.ManagedFields)
	}
	if got := revisions(t, c, "crds", "widgets"); len(got) != 2 || got["2"] != "deployed" {
		t.Fatalf("widgets history = %v, want revision 2 deployed", got)
	}
	if got := revisions(t, c, "app", "app"); len(got) != 1 {
		t.Fatalf("app touched by the widgets upgrade: %v", got)
	}
	// The new field is served: a custom resource using it is stored.
	code, body, err := c.Do(context.Background(), http.MethodPost, "/apis/zdt.dev/v1/namespaces/app/widgets",
		[]byte(`{"apiVersion":"zdt.dev/v1","kind":"Widget","metadata":{"name":"w2"},"spec":{"size":1,"color":"red"}}`))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("widget with the new field: %d %v %s", code, err, body)
	}
	var w struct{ Spec struct{ Color string } }
	getJSON(t, c, "/apis/zdt.dev/v1/namespaces/app/widgets/w2", &w)
	if w.Spec.Color != "red" {
		t.Fatalf("the new field was pruned: %+v", w)
	}
}

// TestDeployValuesOverride: --values CHART=FILE is merged over the
// bundle's values; the same override again changes nothing (no write), a
// changed one upgrades that release only, and an override for a chart the
// bundle does not have is refused.
func TestDeployValuesOverride(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	over := filepath.Join(dir, "over.yaml")
	install := func(more ...string) result {
		return zdt(t, dir, append([]string{"install", "--bundle", "v1.zdt", "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m"}, more...)...)
	}
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	if r := install("--values", "nosuchchart="+over); r.code == 0 || !strings.Contains(r.stderr, "nosuchchart") {
		t.Fatalf("an override for a chart the bundle lacks: exit %d\n%s", r.code, r.stderr)
	}
	testregistry.WriteFile(t, over, []byte("greeting: overridden\n"))
	install("--values", "app="+over).must(t, "install with an override")
	var cm struct{ Data map[string]string }
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	var w struct{ Spec struct{ Size int } }
	getJSON(t, c, "/apis/zdt.dev/v1/namespaces/app/widgets/w1", &w)
	if cm.Data["greeting"] != "overridden" || w.Spec.Size != 3 {
		t.Fatalf("greeting %q, size %d: want the override over the bundle's values", cm.Data["greeting"], w.Spec.Size)
	}

	ctx := context.Background()
	before, err := c.Writes(ctx, kubetest.ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	if r := install("--values", "app/app="+over).must(t, "the same override again"); !strings.Contains(r.stdout, "nothing changed") {
		t.Fatalf("the same override again said:\n%s", r.stdout)
	}
	if after, err := c.Writes(ctx, kubetest.ZdtUser); err != nil || len(after) != len(before) {
		t.Fatalf("the same override again wrote %v (%v)", after[len(before):], err)
	}

	testregistry.WriteFile(t, over, []byte("greeting: changed\n"))
	if r := install("--values", "app="+over).must(t, "a changed override"); !strings.Contains(r.stdout, "deployed: 1 releases changed, 2 unchanged") {
		t.Fatalf("a changed override said:\n%s", r.stdout)
	}
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if got := revisions(t, c, "app", "app"); cm.Data["greeting"] != "changed" || len(got) != 2 {
		t.Fatalf("after a changed override: greeting %q, history %v", cm.Data["greeting"], got)
	}
}
