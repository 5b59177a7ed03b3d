package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"zdt.dev/zdt/bundle"
)

// multiSpec writes a spec of bundle NAME VERSION in its own directory
// under dir (a quickstart directory, whose generated images it uses), with
// one file item, and creates the bundle; it returns the bundle's path.
func multiSpec(t *testing.T, dir, bundleName, version, target, content string, images ...string) string {
	t.Helper()
	sub := filepath.Join(dir, bundleName+"-"+version)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(sub, "file")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: %s, version: %s}\ncomponents:\n  - name: main\n    images:\n", bundleName, version)
	for _, img := range images {
		switch img {
		case "hello":
			fmt.Fprintf(&b, "      - {ref: zdt.example/quickstart/hello:1.0, source: \"oci:%s:1.0\"}\n", filepath.Join(dir, "images", "hello"))
		case "tools":
			fmt.Fprintf(&b, "      - {ref: zdt.example/quickstart/tools:1.0, source: \"docker-archive:%s\"}\n", filepath.Join(dir, "images", "tools.tar"))
		}
	}
	fmt.Fprintf(&b, "    files:\n      - {source: %q, sha256: %s, target: %q, mode: \"0644\"}\n", src, hex.EncodeToString(sum[:]), target)
	if err := os.WriteFile(filepath.Join(sub, "zdt.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, bundleName+"-"+version+".zdt")
	zdt(t, sub, "bundle", "create", "-f", "zdt.yaml", "-o", out).must(t, "create "+bundleName+" "+version)
	return out
}

type statusJSON struct {
	Installed bool
	Current   *struct{ Name, Version string }
	Bundles   []struct {
		Name    string
		Current struct {
			Name, Version string
			Generation    int
		}
		Drift []string
	}
}

// TestBundlesSideBySideCLI is issue 13's "several bundles side by side",
// through the built CLI: a second bundle of another name installed into
// the same root used to remove the first ("1 to remove"). Two bundles
// sharing an image install side by side (the shared blobs stored once),
// upgrade and roll back independently (--name when it is ambiguous),
// status lists both, a bundle claiming a path another holds is refused
// naming both and writing nothing, and uninstalling one leaves the other
// served to a registry client.
func TestBundlesSideBySideCLI(t *testing.T) {
	dir := quickstart(t)
	a1 := multiSpec(t, dir, "alpha", "1.0.0", "/opt/alpha/alpha.conf", "alpha one\n", "hello")
	a2 := multiSpec(t, dir, "alpha", "2.0.0", "/opt/alpha/alpha.conf", "alpha two\n", "hello")
	b1 := multiSpec(t, dir, "beta", "1.0.0", "/opt/beta/beta.conf", "beta one\n", "hello", "tools")
	b2 := multiSpec(t, dir, "beta", "2.0.0", "/opt/beta/beta.conf", "beta two\n", "hello", "tools")
	g1 := multiSpec(t, dir, "gamma", "1.0.0", "/opt/alpha/alpha.conf", "gamma\n")
	root := t.TempDir()
	install := func(p string, extra ...string) result {
		t.Helper()
		args := append([]string{"install", "--bundle", p, "--root", root, "--insecure-skip-signature", "--copy-blobs"}, extra...)
		return zdt(t, dir, args...).must(t, "install "+filepath.Base(p))
	}
	read := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	install(a1)
	r := install(b1)
	if !strings.Contains(r.stdout, "0 to remove") || !strings.Contains(r.stdout, "nothing installed yet") || !strings.Contains(r.stdout, "beside alpha 1.0.0") {
		t.Fatalf("installing beta beside alpha:\n%s", r.stdout)
	}
	if read("opt/alpha/alpha.conf") != "alpha one\n" || read("opt/beta/beta.conf") != "beta one\n" {
		t.Fatal("both bundles' files are not in place")
	}

	// The shared image's blobs are stored once: the store holds each
	// distinct blob of the two archives exactly once.
	want := map[string]bool{}
	sum := 0
	for _, p := range []string{a1, b1} {
		a, err := bundle.Open(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range a.Digests() {
			want[d.Encoded()] = true
			sum++
		}
		a.Close()
	}
	if sum-len(want) < 3 { // the shared image: its manifests, config and layers
		t.Fatalf("the two bundles share %d blobs; the test needs the shared image in both", sum-len(want))
	}
	got := map[string]int{}
	filepath.Walk(filepath.Join(root, "var/lib/zdt/registry/docker/registry/v2/blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "data" {
			got[filepath.Base(filepath.Dir(p))]++
		}
		return nil
	})
	for d := range want {
		if got[d] != 1 {
			t.Errorf("blob %s stored %d times, want once", d, got[d])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d blobs in the store, want %d (the two bundles' distinct blobs)", len(got), len(want))
	}
	t.Logf("%d blobs in the two archives, %d distinct, each stored once", sum, len(want))

	status := func(what string, args ...string) statusJSON {
		t.Helper()
		r := zdt(t, dir, append([]string{"status", "--root", root, "--output", "json"}, args...)...).must(t, what)
		var s statusJSON
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, r.stdout)
		}
		return s
	}
	s := status("status with both")
	if len(s.Bundles) != 2 || s.Bundles[0].Name != "alpha" || s.Bundles[1].Name != "beta" || s.Current != nil {
		t.Fatalf("status lists %+v, want alpha and beta", s.Bundles)
	}
	text := zdt(t, dir, "status", "--root", root).must(t, "status text").stdout
	if !strings.Contains(text, "2 bundles installed") || !strings.Contains(text, "alpha") || !strings.Contains(text, "beta") {
		t.Fatalf("status text:\n%s", text)
	}

	// A third bundle claiming alpha's file is refused, naming both
	// bundles and the path, at plan time too; nothing changes.
	for _, plan := range [][]string{{"--plan"}, nil} {
		args := append([]string{"install", "--bundle", g1, "--root", root, "--insecure-skip-signature"}, plan...)
		r := zdt(t, dir, args...)
		if r.code == 0 || !strings.Contains(r.stderr, "/opt/alpha/alpha.conf") || !strings.Contains(r.stderr, "gamma") || !strings.Contains(r.stderr, "alpha") {
			t.Fatalf("conflicting install %v: exit %d\n%s%s", plan, r.code, r.stdout, r.stderr)
		}
	}
	if read("opt/alpha/alpha.conf") != "alpha one\n" {
		t.Fatal("the refused bundle changed alpha's file")
	}
	if s := status("status after the refusal"); len(s.Bundles) != 2 {
		t.Fatalf("the refused bundle is installed: %+v", s.Bundles)
	}

	// Upgrades: each moves only its own bundle.
	install(b2)
	if read("opt/beta/beta.conf") != "beta two\n" || read("opt/alpha/alpha.conf") != "alpha one\n" {
		t.Fatal("upgrading beta touched alpha")
	}
	install(a2)
	if read("opt/alpha/alpha.conf") != "alpha two\n" || read("opt/beta/beta.conf") != "beta two\n" {
		t.Fatal("upgrading alpha touched beta")
	}
	// Rollback needs --name now (usage error, exit 2), then moves one.
	if r := zdt(t, dir, "rollback", "--root", root); r.code != 2 || !strings.Contains(r.stderr, "--name") {
		t.Fatalf("rollback without --name: exit %d\n%s", r.code, r.stderr)
	}
	zdt(t, dir, "rollback", "--root", root, "--name", "beta").must(t, "rollback beta")
	if read("opt/beta/beta.conf") != "beta one\n" || read("opt/alpha/alpha.conf") != "alpha two\n" {
		t.Fatal("rolling back beta did not return beta alone to 1.0.0")
	}
	s = status("status after beta's rollback")
	if s.Bundles[0].Current.Version != "2.0.0" || s.Bundles[1].Current.Version != "1.0.0" {
		t.Fatalf("after beta's rollback: %+v", s.Bundles)
	}
	zdt(t, dir, "rollback", "--root", root, "--name", "alpha").must(t, "rollback alpha")
	if read("opt/alpha/alpha.conf") != "alpha one\n" || read("opt/beta/beta.conf") != "beta one\n" {
		t.Fatal("rolling back alpha did not return alpha alone to 1.0.0")
	}

	// Uninstall alpha: beta stays installed and served.
	zdt(t, dir, "uninstall", "--root", root, "--name", "alpha").must(t, "uninstall alpha")
	if _, err := os.Stat(filepath.Join(root, "opt/alpha/alpha.conf")); !os.IsNotExist(err) {
		t.Fatalf("alpha's file survived its uninstall: %v", err)
	}
	s = status("status after alpha's uninstall")
	if s.Current == nil || s.Current.Name != "beta" || len(s.Bundles) != 1 {
		t.Fatalf("status after alpha's uninstall: %+v", s)
	}
	addr := freeAddr(t, "127.0.0.1")
	startServe(t, "--root", root, "--addr", addr, "--insecure-http")
	for _, ref := range []string{"zdt.example/quickstart/hello:1.0", "zdt.example/quickstart/tools:1.0"} {
		pullAll(t, addr+"/"+ref)
	}
	if _, err := remote.Head(mustRef(t, addr+"/zdt/beta:1.0.0")); err != nil {
		t.Errorf("beta's bundle is not served: %v", err)
	}
	if _, err := remote.Head(mustRef(t, addr+"/zdt/alpha:1.0.0")); err == nil {
		t.Error("alpha's bundle is still served after its uninstall")
	}
	// Files over plain HTTP: beta's served, alpha's gone.
	for file, want := range map[string]string{"beta.conf": "beta one\n", "alpha.conf": ""} {
		resp, err := http.Get("http://" + addr + "/files/" + file)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want == "" && resp.StatusCode != http.StatusNotFound || want != "" && (resp.StatusCode != 200 || string(body) != want) {
			t.Errorf("GET /files/%s: %d %q, want %q", file, resp.StatusCode, body, want)
		}
	}
	// With one bundle left, the commands work without --name as before.
	zdt(t, dir, "uninstall", "--root", root).must(t, "uninstall the last")
	if _, err := os.Stat(filepath.Join(root, "var/lib/zdt")); !os.IsNotExist(err) {
		t.Fatalf("the last uninstall left zdt's state: %v", err)
	}
}

func mustRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pullAll pulls ref (every platform of an index) and reads every layer,
// which go-containerregistry checks against its digest.
func pullAll(t *testing.T, ref string) {
	t.Helper()
	desc, err := remote.Get(mustRef(t, ref))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		for _, d := range m.Manifests {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatalf("%s@%s: %v", ref, d.Digest, err)
			}
			readLayers(t, ref, img)
		}
		return
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	readLayers(t, ref, img)
}

// readLayers reads every layer of img to its end (the client checks each
// against its digest).
func readLayers(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		if err != nil {
			t.Fatalf("%s: reading a layer: %v", ref, err)
		}
	}
}
