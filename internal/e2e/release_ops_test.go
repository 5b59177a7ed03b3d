package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/internal/testregistry"
)

// releaseDescription decodes one stored Helm revision (the storage
// Secret: base64 of gzipped JSON) and returns its description and status.
func releaseDescription(t *testing.T, c *kubetest.Cluster, ns, name string, rev int) (string, string) {
	t.Helper()
	var sec struct{ Data map[string]string }
	getJSON(t, c, fmt.Sprintf("/api/v1/namespaces/%s/secrets/sh.helm.release.v1.%s.v%d", ns, name, rev), &sec)
	raw, err := base64.StdEncoding.DecodeString(sec.Data["release"])
	if err != nil {
		t.Fatal(err)
	}
	gz, err := base64.StdEncoding.DecodeString(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.LimitReader(zr, 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	var rel struct {
		Info struct{ Description, Status string }
	}
	if err := json.Unmarshal(b, &rel); err != nil {
		t.Fatal(err)
	}
	return rel.Info.Description, rel.Info.Status
}

// TestDeployRollbackAndUninstall: v2 upgrades app (a changed value),
// drops widgets (pruned) and adds a release; `zdt rollback` without a
// kubeconfig is refused before anything changes; with one, app is rolled
// back by Helm to revision 1 (a new revision "Rollback to 1", the old value
// back in the cluster), widgets is installed again from v1's kept
// archive, the added release is uninstalled, and the generation records
// the new revisions. `zdt uninstall` then removes every release in reverse
// order and keeps the CRD, naming it.
func TestDeployRollbackAndUninstall(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	kc := []string{"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m"}
	run := func(args ...string) result { return zdt(t, dir, append(args, "--root", root)...) }
	install := func(bundle string) result {
		return run(append([]string{"install", "--bundle", bundle, "--insecure-skip-signature"}, kc...)...).must(t, "install "+bundle)
	}
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	install("v1.zdt")

	// v2: app's greeting changes, widgets is dropped, "more" is added.
	writeDeployInputs(t, dir, "2.0.0", "hi")
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "more"), map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: more\nversion: 1.0.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: more\ndata:\n  k: v\n",
	})
	spec := fmt.Sprintf(deploySpec, "2.0.0")
	v2 := strings.Replace(spec, "  - name: crds\n    charts:\n      - name: widgets\n        source: charts/widgets\n", "", 1) +
		"      - name: more\n        source: charts/more\n        namespace: extra-ns\n"
	if v2 == spec+"      - name: more\n        source: charts/more\n        namespace: extra-ns\n" {
		t.Fatal("the spec fixture changed: cannot drop the widgets chart")
	}
	testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte(v2))
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	install("v2.zdt")
	if got := revisions(t, c, "app", "app"); len(got) != 2 || got["2"] != "deployed" {
		t.Fatalf("app after v2 = %v", got)
	}
	if got := revisions(t, c, "crds", "widgets"); len(got) != 0 {
		t.Fatalf("widgets not pruned by v2: %v", got)
	}

	// Without a cluster: refused, nothing written.
	r := zdt(t, dir, "rollback", "--root", root)
	if r.code == 0 || !strings.Contains(r.stderr, "--kubeconfig") {
		t.Fatalf("rollback without a kubeconfig: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(3))); err == nil {
		t.Fatal("a refused rollback recorded generation 3")
	}
	var cm struct{ Data map[string]string }
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hi" {
		t.Fatalf("a refused rollback changed app-config: %v", cm.Data)
	}

	rb := run(append([]string{"rollback"}, kc...)...).must(t, "rollback")
	for _, want := range []string{"release app/app", "rollback", "release crds/widgets", "reinstalled from the previous bundle", "release extra-ns/more", "uninstall"} {
		if !strings.Contains(rb.stdout, want) {
			t.Fatalf("rollback output lacks %q:\n%s", want, rb.stdout)
		}
	}
	hist := revisions(t, c, "app", "app")
	if len(hist) != 3 || hist["1"] != "superseded" || hist["2"] != "superseded" || hist["3"] != "deployed" {
		t.Fatalf("app history after rollback = %v, want 1 and 2 superseded, 3 deployed", hist)
	}
	if desc, status := releaseDescription(t, c, "app", "app", 3); desc != "Rollback to 1" || status != "deployed" {
		t.Fatalf("app revision 3: %q %q, want a rollback to 1", desc, status)
	}
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hello" {
		t.Fatalf("app-config after rollback = %v, want v1's greeting", cm.Data)
	}
	if got := revisions(t, c, "crds", "widgets"); len(got) != 1 || got["1"] != "deployed" {
		t.Fatalf("widgets after rollback = %v, want installed again", got)
	}
	getJSON(t, c, "/api/v1/namespaces/crds/configmaps/widgets-info", &cm)
	if got := revisions(t, c, "extra-ns", "more"); len(got) != 0 {
		t.Fatalf("more after rollback = %v, want uninstalled", got)
	}
	if code, _, err := c.Do(context.Background(), http.MethodGet, "/api/v1/namespaces/extra-ns/configmaps/more", nil); err != nil || code != http.StatusNotFound {
		t.Fatalf("more's ConfigMap after rollback: %d %v", code, err)
	}
	gen := readGeneration(t, root, 3)
	if len(gen.Releases) != 3 || gen.Releases[0].Name != "widgets" || gen.Releases[0].Revision != 1 ||
		gen.Releases[1].Name != "app" || gen.Releases[1].Revision != 3 || gen.Releases[2].Name != "extra" {
		t.Fatalf("generation 3 releases = %+v", gen.Releases)
	}
	// Nothing left to do: installing v1 again is a no-op in the cluster.
	before, err := c.Writes(context.Background(), kubetest.ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	if again := install("v1.zdt"); !strings.Contains(again.stdout, "nothing changed") {
		t.Fatalf("v1 after the rollback to it:\n%s", again.stdout)
	}
	if after, err := c.Writes(context.Background(), kubetest.ZdtUser); err != nil || len(after) != len(before) {
		t.Fatalf("v1 after the rollback wrote %v (%v)", after[len(before):], err)
	}

	// Uninstall: without a cluster refused; with one, reverse order, CRD kept.
	if r := zdt(t, dir, "uninstall", "--root", root); r.code == 0 || !strings.Contains(r.stderr, "--kubeconfig") {
		t.Fatalf("uninstall without a kubeconfig: exit %d\n%s", r.code, r.stderr)
	}
	un := run(append([]string{"uninstall"}, kc...)...).must(t, "uninstall")
	iExtra, iApp, iWidgets := strings.Index(un.stdout, "extra-ns/extra"), strings.Index(un.stdout, "app/app"), strings.Index(un.stdout, "crds/widgets")
	if iExtra < 0 || iApp < iExtra || iWidgets < iApp || !strings.Contains(un.stdout, "CRDs kept: widgets.zdt.dev") {
		t.Fatalf("uninstall output (want extra, app, widgets in that order, the CRD kept):\n%s", un.stdout)
	}
	for _, r := range [][2]string{{"crds", "widgets"}, {"app", "app"}, {"extra-ns", "extra"}} {
		if got := revisions(t, c, r[0], r[1]); len(got) != 0 {
			t.Fatalf("release %s/%s after uninstall: %v", r[0], r[1], got)
		}
	}
	var crd struct{ Metadata struct{ Name string } }
	getJSON(t, c, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.zdt.dev", &crd)
	if crd.Metadata.Name != "widgets.zdt.dev" {
		t.Fatalf("CRD lost with the uninstall: %+v", crd)
	}
	// The deletes went out in reverse order (the audit log's order).
	writes, err := c.Writes(context.Background(), kubetest.ZdtUser)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{}
	for _, w := range writes {
		if w.Verb == "delete" && w.Resource == "configmaps" {
			order = append(order, w.Namespace)
		}
	}
	if s := strings.Join(order, ","); !strings.HasSuffix(s, "extra-ns,app,crds") {
		t.Fatalf("ConfigMap deletes in order %s, want ...extra-ns,app,crds", s)
	}
	if st := zdt(t, dir, "status", "--root", root).must(t, "status"); !strings.Contains(st.stdout, "nothing installed") {
		t.Fatalf("status after uninstall:\n%s", st.stdout)
	}
}

// TestDeployStatusAndPlanDiff: `zdt status --kubeconfig` lists each
// release with its revision and health (ready, then not ready naming the
// object an operator deleted, exit 5; typed JSON); `install --plan`
// names why each release changes (values, chart version, CRDs) and
// `--plan --diff` prints the manifest diff, a Secret's values redacted.
func TestDeployStatusAndPlanDiff(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	kc := []string{"--kubeconfig", c.ZdtKubeconfig}
	secret := func(pw string) {
		testregistry.WriteFile(t, filepath.Join(dir, "charts", "app", "templates", "secret.yaml"),
			[]byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secret\nstringData:\n  password: "+pw+"\n  user: admin-user\n"))
	}
	writeDeployInputs(t, dir, "1.0.0", "hello")
	secret("s3cret-one")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	zdt(t, dir, append([]string{"install", "--bundle", "v1.zdt", "--root", root, "--insecure-skip-signature", "--timeout", "1m"}, kc...)...).must(t, "install v1")

	st := zdt(t, dir, append([]string{"status", "--root", root}, kc...)...).must(t, "status")
	for _, want := range []string{"release    app/app  chart app 1.0.0  revision 1  ready", "release    crds/widgets  chart widgets 1.0.0  revision 1  ready", "release    extra-ns/extra  chart extra 1.0.0  revision 1  ready"} {
		if !strings.Contains(st.stdout, want) {
			t.Fatalf("status lacks %q:\n%s", want, st.stdout)
		}
	}
	var doc struct {
		Releases []struct {
			Bundle, Namespace, Name, Chart, Health, NotReady string
			Revision, ClusterRevision                        int
		}
	}
	js := zdt(t, dir, append([]string{"status", "--root", root, "--output", "json"}, kc...)...).must(t, "status json")
	if err := json.Unmarshal([]byte(js.stdout), &doc); err != nil {
		t.Fatalf("status json: %v\n%s", err, js.stdout)
	}
	if len(doc.Releases) != 3 || doc.Releases[1].Name != "app" || doc.Releases[1].Health != "ready" || doc.Releases[1].ClusterRevision != 1 || doc.Releases[1].Bundle != "platform" {
		t.Fatalf("status json releases = %+v", doc.Releases)
	}

	// v2: a value, the Secret's password, and widgets' chart version and CRD.
	writeDeployInputs(t, dir, "2.0.0", "hi")
	secret("s3cret-two")
	testregistry.WriteFile(t, filepath.Join(dir, "charts", "widgets", "Chart.yaml"), []byte("apiVersion: v2\nname: widgets\nversion: 1.1.0\n"))
	testregistry.WriteFile(t, filepath.Join(dir, "charts", "widgets", "crds", "widgets.yaml"), []byte(widgetCRD+"                color: {type: string}\n"))
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	plan := zdt(t, dir, append([]string{"install", "--bundle", "v2.zdt", "--root", root, "--insecure-skip-signature", "--plan", "--diff"}, kc...)...).must(t, "plan --diff")
	for _, want := range []string{
		"~ release app/app", "values", "~ release crds/widgets", "chart 1.0.0 -> 1.1.0, CRDs", "= release extra-ns/extra",
		"--- app/app (cluster)", "+++ app/app (bundle)", `-  greeting: "hello"`, `+  greeting: "hi"`,
		"(redacted ", "chart 1.0.0 content, values",
	} {
		if !strings.Contains(plan.stdout, want) {
			t.Fatalf("plan --diff lacks %q:\n%s", want, plan.stdout)
		}
	}
	if strings.Contains(plan.stdout, "s3cret") || strings.Contains(plan.stdout, "admin-user") {
		t.Fatalf("plan --diff shows a Secret's value:\n%s", plan.stdout)
	}
	// The password changed, the user did not: one redacted line each side.
	if !regexpMatch(`(?m)^-\s+password: \(redacted [0-9a-f]+\)$`, plan.stdout) || !regexpMatch(`(?m)^\+\s+password: \(redacted [0-9a-f]+\)$`, plan.stdout) ||
		regexpMatch(`(?m)^[-+]\s+user:`, plan.stdout) {
		t.Fatalf("plan --diff does not show the changed password only:\n%s", plan.stdout)
	}
	if !regexpMatch(`(?m)^\+\s+color:`, plan.stdout) {
		t.Fatalf("plan --diff does not show the CRD's new field:\n%s", plan.stdout)
	}
	if strings.Contains(plan.stdout, "extra-ns/extra (cluster)") {
		t.Fatalf("plan --diff diffs an unchanged release:\n%s", plan.stdout)
	}
	if r := zdt(t, dir, "install", "--bundle", "v2.zdt", "--root", root, "--insecure-skip-signature", "--diff"); r.code != 2 {
		t.Fatalf("--diff without --plan: exit %d\n%s", r.code, r.stderr)
	}

	// An object of a release deleted behind zdt's back: not ready, exit 5.
	if code, _, err := c.Do(context.Background(), http.MethodDelete, "/api/v1/namespaces/app/configmaps/app-config", nil); err != nil || code != http.StatusOK {
		t.Fatalf("deleting app-config: %d %v", code, err)
	}
	bad := zdt(t, dir, append([]string{"status", "--root", root}, kc...)...)
	if bad.code != 5 || !strings.Contains(bad.stdout, "release    app/app  chart app 1.0.0  revision 1  not ready: ConfigMap app/app-config: not found") {
		t.Fatalf("status with a deleted object: exit %d\n%s\n%s", bad.code, bad.stdout, bad.stderr)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
