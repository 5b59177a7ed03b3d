package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServeStoppable is startServe that can be stopped before the test
// ends (a node going away); stop waits for the process to exit.
func startServeStoppable(t *testing.T, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, zdtBin, append([]string{"serve"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "serving ") && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("zdt serve %v exited:\n%s", args, stderr.String())
		}
	case <-time.After(8 * time.Second):
		t.Fatalf("zdt serve %v did not start:\n%s", args, stderr.String())
	}
	return stop
}

// placedFiles reads every regular file under root outside zdt's state and
// the generated configuration (var/, etc/): what the bundle's items put
// there.
func placedFiles(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if fi.IsDir() && (rel == "var" || rel == "etc") {
			return filepath.SkipDir
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = b
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// afterName is an error message from its first ": " after name on: the
// cause, without the bundle's file or reference.
func afterName(t *testing.T, stderr, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(stderr, name+": ")
	if !ok {
		t.Fatalf("error does not name %s:\n%s", name, stderr)
	}
	return strings.TrimSpace(rest)
}

// TestInstallFromServingNode is the scale-up of issue 15: node 1 installs
// the quickstart from its file and serves it (TLS, its own CA); node 2
// (another --root, another zdt process) installs --from node 1 with --ca:
// the same files, a mirror configuration in which node 2's own serve
// alone resolves tags (it holds the bundle's signed metadata) and node 1
// serves content by digest only, a re-run that changes nothing. A bundle the trust policy refuses is refused from the
// registry exactly as from the file, and writes nothing. --replicate then
// copies it into node 2's store, which serves it (crane pulls an image)
// with node 1 stopped; rollback returns to the mirror of node 1.
func TestInstallFromServingNode(t *testing.T) {
	dir := quickstart(t)
	env := []string{"COSIGN_PASSWORD=test"}
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	runIn(t, dir, env, zdtBin, "bundle", "create", "--key", "k.key", "-o", "q.zdt").must(t, "create --key")
	other := t.TempDir()
	runIn(t, other, env, zdtBin, "key", "generate", "--prefix", "other").must(t, "key generate other")
	otherPub := filepath.Join(other, "other.pub")

	// Node 1: from the file, serving over TLS with its CA.
	root1 := filepath.Join(dir, "node1")
	addr1 := freeAddr(t, "127.0.0.1")
	zdt(t, dir, "install", "--bundle", "q.zdt", "--key", "k.pub", "--root", root1, "--serve-addr", addr1).must(t, "node 1 install")
	stop1 := startServeStoppable(t, "--root", root1, "--addr", addr1)
	ca1 := filepath.Join(root1, "var/lib/zdt/tls/ca.crt")
	ref := addr1 + "/zdt/quickstart:0.1.0"

	// Another key: refused from the registry as from the file, nothing written.
	root2 := filepath.Join(dir, "node2")
	addr2 := freeAddr(t, "127.0.0.1")
	fromFile := zdt(t, dir, "install", "--bundle", "q.zdt", "--key", otherPub, "--root", filepath.Join(dir, "refused"))
	fromReg := zdt(t, dir, "install", "--from", ref, "--ca", ca1, "--key", otherPub, "--root", root2, "--serve-addr", addr2)
	if fromFile.code != 3 || fromReg.code != 3 {
		t.Fatalf("another key: exit %d from the file, %d from the registry, want 3\n%s\n%s", fromFile.code, fromReg.code, fromFile.stderr, fromReg.stderr)
	}
	var info inspectJSON
	if err := json.Unmarshal([]byte(zdt(t, dir, "bundle", "inspect", "--output", "json", "q.zdt").must(t, "inspect").stdout), &info); err != nil {
		t.Fatal(err)
	}
	if f, r := afterName(t, fromFile.stderr, "q.zdt"), afterName(t, fromReg.stderr, ref); f != r {
		t.Errorf("refused differently:\nfrom the file:     %s\nfrom the registry: %s", f, r)
	}
	for _, p := range []string{root2, filepath.Join(dir, "refused")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Fatalf("a refused install created %s (%v)", p, err)
		}
	}
	// A plan reads and writes nothing.
	plan := zdt(t, dir, "install", "--from", ref, "--ca", ca1, "--key", "k.pub", "--root", root2, "--serve-addr", addr2, "--plan").must(t, "plan --from")
	if !strings.Contains(plan.stdout, "nothing installed yet") {
		t.Fatalf("plan --from said:\n%s", plan.stdout)
	}
	if _, err := os.Lstat(root2); !os.IsNotExist(err) {
		t.Fatalf("--plan created %s (%v)", root2, err)
	}

	// Node 2 from node 1.
	first := zdt(t, dir, "install", "--from", ref, "--ca", ca1, "--key", "k.pub", "--root", root2, "--serve-addr", addr2).must(t, "node 2 install --from")
	if !strings.Contains(first.stdout, "installed: generation 1") {
		t.Fatalf("install --from said:\n%s", first.stdout)
	}
	files1, files2 := placedFiles(t, root1), placedFiles(t, root2)
	if len(files1) == 0 || len(files1) != len(files2) {
		t.Fatalf("node 1 has %d files, node 2 %d", len(files1), len(files2))
	}
	for p, b := range files1 {
		if !bytes.Equal(files2[p], b) {
			t.Errorf("/%s differs on node 2", p)
		}
	}
	hostsTOML := filepath.Join(root2, "etc/containerd/certs.d/zdt.example/hosts.toml")
	mirror, _ := os.ReadFile(hostsTOML)
	conf, _ := os.ReadFile(filepath.Join(root2, "etc/containers/registries.conf.d/50-zdt.conf"))
	checkDigestOnly := func(when string, mirror, conf []byte, replicated bool) {
		t.Helper()
		local, remote := strings.Index(string(mirror), `[host."https://`+addr2+`/v2/zdt.example"]`), strings.Index(string(mirror), `[host."https://`+addr1+`/v2/zdt.example"]`)
		if local < 0 || remote < local || strings.Count(string(mirror), `"resolve"`) != 1 || strings.Contains(string(mirror[remote:]), "resolve") {
			t.Errorf("%s: node 2's hosts.toml must list node 2 first (alone resolving tags), then node 1 (pull only):\n%s", when, mirror)
		}
		j2, j1 := strings.Index(string(conf), `"`+addr2+`/zdt.example"`), strings.Index(string(conf), `"`+addr1+`/zdt.example"`)
		if j1 < 0 || !strings.Contains(string(conf[j1:]), `pull-from-mirror = "digest-only"`) || replicated != (j2 >= 0 && j2 < j1) || strings.Count(string(conf), "pull-from-mirror") != 1 {
			t.Errorf("%s: node 2's registries.conf must name node 1 for digests only, after node 2 only when replicated:\n%s", when, conf)
		}
	}
	checkDigestOnly("install --from", mirror, conf, false)
	caPEM, _ := os.ReadFile(ca1)
	for _, p := range []string{"etc/containerd/certs.d/" + addr1 + "/zdt-ca.crt", "etc/containers/certs.d/" + addr1 + "/zdt-ca.crt", "etc/docker/certs.d/" + addr1 + "/zdt-ca.crt"} {
		if b, err := os.ReadFile(filepath.Join(root2, p)); err != nil || !bytes.Equal(b, caPEM) {
			t.Errorf("/%s is not node 1's CA (%v)", p, err)
		}
	}
	if !strings.Contains(string(mirror), `ca = "/etc/containerd/certs.d/`+addr1+`/zdt-ca.crt"`) {
		t.Errorf("hosts.toml does not trust node 1's CA:\n%s", mirror)
	}
	again := zdt(t, dir, "install", "--from", ref, "--ca", ca1, "--key", "k.pub", "--root", root2, "--serve-addr", addr2).must(t, "re-run")
	if !strings.Contains(again.stdout, "nothing changed") {
		t.Fatalf("re-run of install --from changed something:\n%s", again.stdout)
	}
	zdt(t, dir, "status", "--root", root2).must(t, "status of node 2")
	// Node 2's serve answers the tags itself, from the signed bundle.
	crane := client(t, "crane")
	stop2 := startServeStoppable(t, "--root", root2, "--addr", addr2)
	tag := "/zdt.example/quickstart/hello:1.0"
	d1 := runIn(t, dir, []string{"SSL_CERT_FILE=" + ca1}, crane, "digest", addr1+tag).must(t, "crane digest from node 1").stdout
	d2 := runIn(t, dir, []string{"SSL_CERT_FILE=" + filepath.Join(root2, "var/lib/zdt/tls/ca.crt")}, crane, "digest", addr2+tag).must(t, "crane digest from node 2").stdout
	if strings.TrimSpace(d1) == "" || d1 != d2 {
		t.Errorf("node 2 resolves %s to %q, node 1 to %q", tag, d2, d1)
	}
	stop2()

	// --replicate: node 2 serves it too, first in its mirror configuration.
	rep := zdt(t, dir, "install", "--from", ref, "--ca", ca1, "--key", "k.pub", "--root", root2, "--serve-addr", addr2, "--replicate").must(t, "install --from --replicate")
	if !strings.Contains(rep.stdout, "installed: generation 2") {
		t.Fatalf("--replicate said:\n%s", rep.stdout)
	}
	mirror, _ = os.ReadFile(hostsTOML)
	i2, i1 := strings.Index(string(mirror), "https://"+addr2+"/v2/zdt.example"), strings.Index(string(mirror), "https://"+addr1+"/v2/zdt.example")
	if i2 < 0 || i1 < 0 || i2 > i1 {
		t.Errorf("with --replicate, hosts.toml must list node 2 first, node 1 second:\n%s", mirror)
	}
	conf, _ = os.ReadFile(filepath.Join(root2, "etc/containers/registries.conf.d/50-zdt.conf"))
	if j2, j1 := strings.Index(string(conf), addr2+"/zdt.example"), strings.Index(string(conf), addr1+"/zdt.example"); j2 < 0 || j1 < 0 || j2 > j1 {
		t.Errorf("with --replicate, registries.conf must list node 2 first, node 1 second:\n%s", conf)
	}
	checkDigestOnly("--replicate", mirror, conf, true)
	zdt(t, dir, "install", "--from", ref, "--ca", ca1, "--key", "k.pub", "--root", root2, "--serve-addr", addr2, "--replicate").must(t, "re-run --replicate")
	zdt(t, dir, "status", "--root", root2).must(t, "status after --replicate")

	stop1()
	startServe(t, "--root", root2, "--addr", addr2)
	certEnv := []string{"SSL_CERT_FILE=" + filepath.Join(root2, "var/lib/zdt/tls/ca.crt")}
	runIn(t, dir, certEnv, crane, "pull", addr2+"/zdt.example/quickstart/hello:1.0", filepath.Join(dir, "hello.tar")).must(t, "crane pull from node 2 with node 1 stopped")
	if got := strings.TrimSpace(runIn(t, dir, certEnv, crane, "digest", addr2+"/zdt/quickstart:0.1.0").must(t, "crane digest").stdout); got != info.Root {
		t.Errorf("node 2 serves root %s, want %s", got, info.Root)
	}

	// Rollback: the mirror of node 1 again, for digests only.
	zdt(t, dir, "rollback", "--root", root2).must(t, "rollback")
	mirror, _ = os.ReadFile(hostsTOML)
	conf, _ = os.ReadFile(filepath.Join(root2, "etc/containers/registries.conf.d/50-zdt.conf"))
	checkDigestOnly("after rollback", mirror, conf, false)
}
