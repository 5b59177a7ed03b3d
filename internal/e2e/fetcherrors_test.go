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

// TestFetchErrorHints: a failed fetch names the spec line of the image (or
// the chart it was discovered in) and says what to change: a TLS registry
// reached over plain HTTP, a certificate of an unknown CA, 401 with the
// credentials that were sent and where from (#13).
func TestFetchErrorHints(t *testing.T) {
	img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, testregistry.RandomLayers(t, 1, 4<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	tlsReg := testregistry.New(t, testregistry.Options{TLS: true})
	tlsReg.PushImage(t, testregistry.Auth{}, "app/web:1", img)
	authReg := testregistry.New(t, testregistry.Options{Username: "alice", Password: "secret"})
	authReg.PushImage(t, testregistry.Auth{Username: "alice", Password: "secret"}, "app/api:1", img)

	dir := t.TempDir()
	dockerCfg := filepath.Join(dir, "docker")
	os.MkdirAll(dockerCfg, 0o755)
	env := []string{"DOCKER_CONFIG=" + dockerCfg}
	spec := func(image string) {
		t.Helper()
		testregistry.WriteFile(t, filepath.Join(dir, "zdt.yaml"), []byte("apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: e, version: \"1\"}\ncomponents:\n"+
			"  - name: c\n    images:\n      - "+image+"\n"))
	}
	create := func(args ...string) result {
		t.Helper()
		return runIn(t, dir, env, zdtBin, append([]string{"bundle", "create", "--no-cache", "-o", "e.zdt"}, args...)...)
	}
	expect := func(r result, wants ...string) {
		t.Helper()
		if r.code != 1 {
			t.Fatalf("create: exit %d, want 1\n%s", r.code, r.stderr)
		}
		for _, w := range wants {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("the error does not say %q:\n%s", w, r.stderr)
			}
		}
	}

	spec(tlsReg.Ref("app/web:1"))
	expect(create(), "zdt.yaml:7:9: image "+tlsReg.Ref("app/web:1"), tlsReg.Host+" speaks TLS but was reached over plain HTTP", "plainHTTP: false")

	regCfg := filepath.Join(dir, "registries.yaml")
	testregistry.WriteFile(t, regCfg, []byte("registries:\n  \""+tlsReg.Host+"\": {plainHTTP: false}\n  \""+authReg.Host+"\": {username: bob, password: wrong}\n"))
	expect(create("--registry-config", regCfg), "zdt.yaml:7:9: image", "signed by an authority this machine does not trust", "--registry-ca "+tlsReg.Host+"=CA.pem")
	// What the hint says works.
	create("--registry-config", regCfg, "--registry-ca", tlsReg.Host+"="+tlsReg.CAFile).must(t, "create with --registry-ca")

	spec(authReg.Ref("app/api:1"))
	expect(create(), authReg.Host+" needs credentials", "credentials sent: none (no entry for "+authReg.Host, filepath.Join(dockerCfg, "config.json"))
	expect(create("--registry-config", regCfg), `credentials sent: username "bob" from --registry-config `+regCfg)
}

// TestDiscoveredImageErrors: an image discovered in a chart that fails to
// fetch names the chart (without -v) and how to leave it out or replace
// it; the chart's exclude leaves it out, and its images override fetches
// it from another reference under the name the chart uses (#13).
func TestDiscoveredImageErrors(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, testregistry.RandomLayers(t, 1, 4<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	mirrored := reg.PushImage(t, testregistry.Auth{}, "mirror/gone:1", img).String()
	gone := reg.Ref("upstream/gone:1")
	dir := chartSpec(t, t.TempDir(), []string{gone}, "")
	create := func() result {
		return zdt(t, dir, "bundle", "create", "--output", "json", "--no-cache", "-o", "d.zdt")
	}
	r := create()
	for _, w := range []string{"zdt.yaml:7:9: chart app (component apps) uses image " + gone, "exclude: [" + gone + "]", "images: {" + gone + ": REF}"} {
		if r.code != 1 || !strings.Contains(r.stderr, w) {
			t.Errorf("create: exit %d, want 1 saying %q:\n%s", r.code, w, r.stderr)
		}
	}

	specPath := filepath.Join(dir, "zdt.yaml")
	base, _ := os.ReadFile(specPath)
	chartLine := "      - {name: app, source: charts/app, version: 1.0.0}\n"
	withChart := func(extra string) {
		s := strings.Replace(string(base), chartLine, "      - name: app\n        source: charts/app\n        version: 1.0.0\n"+extra, 1)
		testregistry.WriteFile(t, specPath, []byte(s))
	}
	withChart("        exclude: ['" + gone + "']\n")
	var out struct {
		Items      []struct{ Kind, Name, Digest string }
		Discovered []struct {
			Ref       string
			Added     bool
			Excluded  bool
			FetchFrom string
		}
	}
	r = create().must(t, "create with exclude")
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 || len(out.Discovered) != 1 || !out.Discovered[0].Excluded || out.Discovered[0].Added {
		t.Fatalf("with exclude: items %+v, discovered %+v", out.Items, out.Discovered)
	}
	if r := zdt(t, dir, "bundle", "create", "--no-cache", "-o", "text.zdt").must(t, "create with exclude (text)"); !strings.Contains(r.stdout, gone+"  (excluded by the chart)") {
		t.Errorf("the summary does not say the image was excluded:\n%s", r.stdout)
	}

	withChart("        images:\n          " + gone + ": " + reg.Ref("mirror/gone:1") + "\n")
	r = create().must(t, "create with images")
	out.Items, out.Discovered = nil, nil
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 2 || out.Items[0].Name != gone || out.Items[0].Digest != mirrored ||
		len(out.Discovered) != 1 || out.Discovered[0].FetchFrom != reg.Ref("mirror/gone:1") {
		t.Fatalf("with images: items %+v, discovered %+v; want %s with the digest of mirror/gone:1", out.Items, out.Discovered, gone)
	}
	lock, _ := os.ReadFile(filepath.Join(dir, "zdt.lock.yaml"))
	if !strings.Contains(string(lock), "source: "+reg.Host+"/mirror/gone@"+mirrored) {
		t.Errorf("the lock does not record where the image came from:\n%s", lock)
	}
	zdt(t, dir, "bundle", "create", "--lock", "--no-cache", "-o", "again.zdt").must(t, "create --lock with images")
}
