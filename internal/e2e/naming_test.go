package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/testregistry"
)

// chartSpec writes a spec of one local chart (chart "app" in component
// "apps") whose template uses each of images, plus the images section
// given, and returns dir.
func chartSpec(t *testing.T, dir string, images []string, specImages string) string {
	t.Helper()
	var tpl strings.Builder
	tpl.WriteString("apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n")
	for i, im := range images {
		tpl.WriteString("    - name: c" + string(rune('a'+i)) + "\n      image: " + im + "\n")
	}
	testregistry.ChartDir(t, filepath.Join(dir, "charts", "app"), map[string]string{
		"Chart.yaml":         "apiVersion: v2\nname: app\nversion: 1.0.0\n",
		"templates/pod.yaml": tpl.String(),
	})
	spec := "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: naming, version: \"1\"}\ncomponents:\n" +
		specImages +
		"  - name: apps\n    charts:\n      - {name: app, source: charts/app, version: 1.0.0}\n"
	testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte(spec))
	return dir
}

// TestTaglessImageServedAsLatest: a chart template's `image: HOST/platform/app`
// (no tag) is bundled as HOST/platform/app:latest, so `serve --bundle`
// and `push` answer a stock client's pull of …:latest and its tags/list
// (they answered 404 and NAME_UNKNOWN) (#13).
func TestTaglessImageServedAsLatest(t *testing.T) {
	crane := client(t, "crane")
	up := testregistry.New(t, testregistry.Options{})
	img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, testregistry.RandomLayers(t, 1, 8<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	want := up.PushImage(t, testregistry.Auth{}, "platform/app:latest", img).String()
	dir := chartSpec(t, t.TempDir(), []string{up.Host + "/platform/app"}, "")
	r := zdt(t, dir, "bundle", "create", "--output", "json", "--cache-dir", t.TempDir(), "-o", "n.zdt").must(t, "create")
	var out createJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	wantName := up.Host + "/platform/app:latest"
	if len(out.Items) != 2 || out.Items[0].Name != wantName || out.Items[0].Ref != wantName {
		t.Fatalf("items: %+v, want the image named %s", out.Items, wantName)
	}
	lock, _ := os.ReadFile(filepath.Join(dir, "zdt.lock.yaml"))
	if !strings.Contains(string(lock), "name: "+wantName+"\n") {
		t.Fatalf("the lock does not name %s:\n%s", wantName, lock)
	}

	repo := strings.ReplaceAll(up.Host, ":", "_") + "/platform/app"
	check := func(what, host string) {
		t.Helper()
		got := strings.TrimSpace(runIn(t, dir, nil, crane, "digest", "--insecure", host+"/"+repo+":latest").must(t, what+": crane digest :latest").stdout)
		if got != want {
			t.Errorf("%s: %s:latest is %s, want %s", what, repo, got, want)
		}
		tags := runIn(t, dir, nil, crane, "ls", "--insecure", host+"/"+repo).must(t, what+": crane ls (tags/list)").stdout
		if strings.TrimSpace(tags) != "latest" {
			t.Errorf("%s: tags of %s: %q, want latest", what, repo, tags)
		}
	}
	addr := freeAddr(t, "127.0.0.1")
	startServe(t, "--bundle", filepath.Join(dir, "n.zdt"), "--insecure-http", "--insecure-skip-signature", "--addr", addr)
	check("serve --bundle", addr)

	site := testregistry.New(t, testregistry.Options{})
	zdt(t, dir, "push", "--bundle", "n.zdt", "--insecure-skip-signature", "--to", site.Host).must(t, "push")
	check("push", site.Host)
}

// TestDiscoveredImageDedupOffline: a spec image docker.io/library/busybox:latest
// read from a local OCI layout stops the chart's `busybox` and
// `docker.io/library/busybox` from being fetched from Docker Hub: all
// three are one image, bundled once, and create succeeds offline (#13).
func TestDiscoveredImageDedupOffline(t *testing.T) {
	dir := t.TempDir()
	img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, testregistry.RandomLayers(t, 1, 8<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.WriteLayoutImage(filepath.Join(dir, "images", "busybox"), "latest", img); err != nil {
		t.Fatal(err)
	}
	chartSpec(t, dir, []string{"busybox", "docker.io/library/busybox", "index.docker.io/library/busybox:latest"},
		"  - name: base\n    images:\n      - {ref: 'docker.io/library/busybox:latest', source: 'oci:images/busybox'}\n")
	// Offline: every request to a registry other than loopback goes to a
	// proxy that is not there.
	offline := []string{"HTTPS_PROXY=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9", "NO_PROXY=", "https_proxy=", "http_proxy=", "no_proxy="}
	r := runIn(t, dir, offline, zdtBin, "bundle", "create", "--output", "json", "--cache-dir", t.TempDir(), "-o", "d.zdt").must(t, "create offline")
	var out struct {
		createJSON
		Discovered []struct {
			Ref   string
			Added bool
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 2 || out.Items[0].Name != "docker.io/library/busybox:latest" {
		t.Fatalf("items: %+v, want busybox once and the chart", out.Items)
	}
	if len(out.Discovered) != 1 || out.Discovered[0].Ref != "docker.io/library/busybox:latest" || out.Discovered[0].Added {
		t.Fatalf("discovered: %+v, want docker.io/library/busybox:latest once, listed in the spec", out.Discovered)
	}
}
