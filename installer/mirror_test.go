package installer

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/distribution/reference"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/registry"
)

// TestMirrorConfigResolvesServedPaths is issue 13.8: an image of a
// registry with a port (127.0.0.1:5101/team/app) is served at a path
// whose port colon became '_' (127.0.0.1_5101/team/app). Every runtime's
// mirror configuration install writes must lead its client there: the
// containerd hosts.toml (looked up in certs.d/HOST:PORT, host URL with
// override_path) and the containers registries.conf.d drop-in (prefix →
// mirror location). Each original reference is resolved the way the
// runtime does and pulled from the installed registry.
func TestMirrorConfigResolvesServedPaths(t *testing.T) {
	dir := t.TempDir()
	refs := map[string]int64{
		"127.0.0.1:5101/team/app:2":    1,
		"registry.local:5000/a/b/c:3":  2,
		"docker.io/library/nginx:1.25": 3,
		"quay.io/x/y:1":                4,
		"localhost:5002/single:1":      5,
	}
	p := release{version: "1", images: refs}.build(t, dir)
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	srv := serveStore(t, root)
	addr := strings.TrimPrefix(srv.URL, "http://")

	a, err := bundle.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	reg := openStore(t, root, false)
	if _, err := Install(context.Background(), a, Options{Root: root, ToolVersion: "test", Registry: reg, ServeAddr: addr}); err != nil {
		t.Fatal(err)
	}
	g, err := a.Walk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // ref → manifest digest
	for _, it := range g.Items {
		want[it.Ref] = it.Digest
	}
	var conf registriesConf
	if _, err := toml.DecodeFile(filepath.Join(root, layout.ContainersRegistriesConf), &conf); err != nil {
		t.Fatal(err)
	}
	for ref := range refs {
		n, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			t.Fatal(err)
		}
		domain, repoPath, tag := reference.Domain(n), reference.Path(n), n.(reference.Tagged).Tag()
		// The path served is the one the registry's naming gives.
		repos, _, _, err := registry.ImageRepositories(ref)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(domain, ":") && repos[0] != strings.ReplaceAll(domain, ":", "_")+"/"+repoPath {
			t.Errorf("%s is served at %v, want the port's colon as '_'", ref, repos)
		}

		// containerd: certs.d/<host:port>/hosts.toml; a host with
		// override_path gets <url>/<repo>/manifests/<tag>, one without
		// <url>/v2/<repo>/manifests/<tag>.
		var hf hostsFile
		if _, err := toml.DecodeFile(filepath.Join(root, layout.HostsTOML(domain)), &hf); err != nil {
			t.Fatalf("%s: containerd's hosts.toml for %s: %v", ref, domain, err)
		}
		if len(hf.Host) != 1 {
			t.Fatalf("%s: hosts %v", ref, hf.Host)
		}
		for hostURL, h := range hf.Host {
			u := strings.Replace(hostURL, "https://", "http://", 1)
			if !h.OverridePath {
				u += "/v2"
			}
			checkPull(t, "containerd", ref, u+"/"+repoPath+"/manifests/"+tag, want[ref])
		}

		// containers: the drop-in entry whose prefix is the registry;
		// the reference's prefix is replaced by the mirror's location.
		found := false
		for _, e := range conf.Registry {
			if e.Prefix != domain {
				continue
			}
			found = true
			if len(e.Mirror) != 1 {
				t.Fatalf("%s: mirrors %v", ref, e.Mirror)
			}
			mirrored := e.Mirror[0].Location + strings.TrimPrefix(domain+"/"+repoPath, e.Prefix)
			host, rest, _ := strings.Cut(mirrored, "/")
			checkPull(t, "containers", ref, "http://"+host+"/v2/"+rest+"/manifests/"+tag, want[ref])
		}
		if !found {
			t.Errorf("%s: no registries.conf entry with prefix %s in %+v", ref, domain, conf.Registry)
		}
	}
}

// checkPull fetches a manifest URL and checks it answers digest d.
func checkPull(t *testing.T, runtime, ref, url, d string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, url, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s pulling %s from %s: %v", runtime, ref, url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != d {
		t.Errorf("%s pulling %s: %s answers %s, digest %q (want %s)", runtime, ref, url, resp.Status, resp.Header.Get("Docker-Content-Digest"), d)
	}
}
