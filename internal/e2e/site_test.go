package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// deltaPair creates the quickstart as v1.zdt and, with its file changed,
// v2.zdt as a delta on v1 (both unsigned); it returns the directory and
// v2's file content.
func deltaPair(t *testing.T) (string, []byte) {
	t.Helper()
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	script := []byte("#!/bin/sh\necho hello from v2\n")
	old, _ := os.ReadFile(filepath.Join(dir, "files", "zdt-hello.sh"))
	oldSum, newSum := sha256.Sum256(old), sha256.Sum256(script)
	if err := os.WriteFile(filepath.Join(dir, "files", "zdt-hello.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, _ := os.ReadFile(filepath.Join(dir, "zdt.yaml"))
	s := strings.Replace(strings.Replace(string(spec), hex.EncodeToString(oldSum[:]), hex.EncodeToString(newSum[:]), 1), "version: 0.1.0", "version: 0.2.0", 1)
	if err := os.WriteFile(filepath.Join(dir, "zdt.yaml"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt", "--base", "v1.zdt").must(t, "create v2 --base v1")
	return dir, script
}

// httpStatus GETs url and returns the status code and body.
func httpStatus(t *testing.T, c *http.Client, url string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, b.Bytes()
}

// TestServeDeltaWithBaseAsBundle is issue 13.11: `serve --bundle v1.zdt
// --bundle v2-delta.zdt` was refused until --base v1.zdt was given too; a
// base given as a served bundle is a base. Both bundles are served.
func TestServeDeltaWithBaseAsBundle(t *testing.T) {
	dir, _ := deltaPair(t)
	addr := freeAddr(t, "127.0.0.1")
	startServe(t, "--bundle", filepath.Join(dir, "v1.zdt"), "--bundle", filepath.Join(dir, "v2.zdt"),
		"--insecure-skip-signature", "--insecure-http", "--addr", addr)
	for _, tag := range []string{"0.1.0", "0.2.0"} {
		if code, _, body := httpStatus(t, http.DefaultClient, "http://"+addr+"/v2/files/zdt-hello/manifests/"+tag); code != http.StatusOK {
			t.Errorf("files/zdt-hello:%s: %d %s", tag, code, body)
		}
	}
	// The order does not matter: the delta first, its base after.
	addr2 := freeAddr(t, "127.0.0.1")
	startServe(t, "--bundle", filepath.Join(dir, "v2.zdt"), "--bundle", filepath.Join(dir, "v1.zdt"),
		"--insecure-skip-signature", "--insecure-http", "--addr", addr2)
	if code, _, body := httpStatus(t, http.DefaultClient, "http://"+addr2+"/v2/zdt/quickstart/manifests/0.2.0"); code != http.StatusOK {
		t.Errorf("zdt/quickstart:0.2.0: %d %s", code, body)
	}
	// Without the base anywhere it is still refused, naming --base.
	if r := zdt(t, dir, "serve", "--bundle", "v2.zdt", "--insecure-skip-signature", "--insecure-http", "--addr", "127.0.0.1:0"); r.code == 0 || !strings.Contains(r.stderr, "--base") {
		t.Fatalf("serving a delta alone: exit %d\n%s", r.code, r.stderr)
	}
}

// TestAMIExportIsSparse is issue 13.11: `install --ami-export` wrote the
// disk image fully allocated; the zero blocks are holes now (the
// quickstart's 64 MiB disk holds a few KiB of data) and the content is
// byte for byte the disk image.
func TestAMIExportIsSparse(t *testing.T) {
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	export := filepath.Join(dir, "amis")
	zdt(t, dir, "install", "--bundle", "q.zdt", "--root", filepath.Join(dir, "root"), "--insecure-skip-signature", "--ami-export", export).must(t, "install --ami-export")
	img := filepath.Join(export, "quickstart-node.img")
	got, err := os.ReadFile(img)
	want, _ := os.ReadFile(filepath.Join(dir, "disk", "node.raw"))
	if err != nil || len(want) == 0 || !bytes.Equal(got, want) {
		t.Fatalf("exported image (%d bytes, %v) is not the disk image (%d bytes)", len(got), err, len(want))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc >= st.Size/8 {
		t.Fatalf("%s: %d bytes allocated for %d: not sparse", img, alloc, st.Size)
	}
	if _, err := os.Stat(filepath.Join(export, "quickstart-node.json")); err != nil {
		t.Fatal(err)
	}
}

// TestRootIsCreated is issue 13.11: `--root DIR` that did not exist yet
// failed. install creates it (after the bundle verified); --plan plans
// against nothing installed and still writes nothing.
func TestRootIsCreated(t *testing.T) {
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	root := filepath.Join(dir, "new", "root")
	plan := zdt(t, dir, "install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature", "--plan").must(t, "plan into a missing root")
	if !strings.Contains(plan.stdout, "nothing installed yet") {
		t.Fatalf("plan said:\n%s", plan.stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Fatalf("--plan created the root: %v", err)
	}
	// A refused bundle creates nothing either.
	if r := zdt(t, dir, "install", "--bundle", "q.zdt", "--root", root); r.code != 3 {
		t.Fatalf("unsigned install: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Fatalf("a refused install created the root: %v", err)
	}
	zdt(t, dir, "install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature").must(t, "install into a missing root")
	if _, err := os.Stat(filepath.Join(root, "usr/local/bin/zdt-hello")); err != nil {
		t.Fatal(err)
	}
	zdt(t, dir, "status", "--root", root).must(t, "status")
}

// TestCLIWording is issue 13.11's cosmetics: the key fingerprint is
// "sha256:HEX" in text and JSON alike, the --serve-addr help does not read
// "--serve-addr zdt serve", and uninstall's JSON counts filesRemoved.
func TestCLIWording(t *testing.T) {
	dir := t.TempDir()
	env := []string{"COSIGN_PASSWORD=x"}
	text := runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "a").must(t, "key generate")
	js := runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "b", "--output", "json").must(t, "key generate --output json")
	var kp struct{ Fingerprint, PublicKey string }
	if err := json.Unmarshal([]byte(js.stdout), &kp); err != nil || !strings.HasPrefix(kp.Fingerprint, "sha256:") || len(kp.Fingerprint) != 71 {
		t.Fatalf("key generate --output json: %v\n%s", err, js.stdout)
	}
	if !strings.Contains(text.stdout, "fingerprint  sha256:") {
		t.Fatalf("key generate says:\n%s", text.stdout)
	}
	help := zdt(t, dir, "install", "--help").must(t, "install --help")
	for _, line := range strings.Split(help.stdout, "\n") {
		if strings.Contains(line, "--serve-addr") && (strings.Contains(line, "--serve-addr zdt") || !strings.Contains(line, "HOST:PORT")) {
			t.Errorf("install --help: %q", line)
		}
	}

	qdir := quickstart(t)
	zdt(t, qdir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	root := filepath.Join(qdir, "root")
	zdt(t, qdir, "install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature").must(t, "install")
	un := zdt(t, qdir, "uninstall", "--root", root, "--output", "json").must(t, "uninstall")
	var u map[string]any
	if err := json.Unmarshal([]byte(un.stdout), &u); err != nil {
		t.Fatal(err)
	}
	if _, ok := u["filesWritten"]; ok || u["filesRemoved"] == nil || u["filesRemoved"].(float64) == 0 {
		t.Fatalf("uninstall --output json:\n%s", un.stdout)
	}
}

// TestReproducibleBundles checks what the README says of re-creating a
// bundle from the same inputs: an unsigned bundle is byte-identical; a
// signed one has the same root digest (the bundle's identity, which the
// signature covers) while its bytes differ (ECDSA signatures are
// randomized); signing does not change the root digest.
func TestReproducibleBundles(t *testing.T) {
	dir := quickstart(t)
	env := []string{"COSIGN_PASSWORD=x"}
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	zdt(t, dir, "bundle", "create", "-o", "u1.zdt").must(t, "create")
	zdt(t, dir, "bundle", "create", "--lock", "-o", "u2.zdt").must(t, "create again")
	runIn(t, dir, env, zdtBin, "bundle", "create", "--lock", "--key", "k.key", "-o", "s1.zdt").must(t, "create signed")
	runIn(t, dir, env, zdtBin, "bundle", "create", "--lock", "--key", "k.key", "-o", "s2.zdt").must(t, "create signed again")
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	root := func(n string) string {
		var info inspectJSON
		out := zdt(t, dir, "bundle", "inspect", "--output", "json", n).must(t, "inspect")
		if err := json.Unmarshal([]byte(out.stdout), &info); err != nil || info.Root == "" {
			t.Fatalf("inspect %s: %v", n, err)
		}
		return info.Root
	}
	if !bytes.Equal(read("u1.zdt"), read("u2.zdt")) {
		t.Error("two unsigned creates from the same inputs differ")
	}
	if bytes.Equal(read("s1.zdt"), read("s2.zdt")) {
		t.Error("two signed creates are byte-identical: the README says their signatures differ")
	}
	if r1, r2, u := root("s1.zdt"), root("s2.zdt"), root("u1.zdt"); r1 != r2 || r1 != u {
		t.Errorf("root digests: signed %s and %s, unsigned %s", r1, r2, u)
	}
}

// TestFilesOverHTTPSWithCurl: on a bare node only curl is needed to fetch a
// file of the bundle — `curl -fO --cacert CA https://HOST/files/NAME`
// against `zdt serve` over the installed root and over the bundle file,
// the file decompressed (zdt stored it zstd-compressed), its sha256 in a
// header, a Range request, the listing; an unknown name fails curl -f.
func TestFilesOverHTTPSWithCurl(t *testing.T) {
	curl := client(t, "curl")
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	want, _ := os.ReadFile(filepath.Join(dir, "files", "zdt-hello.sh"))
	sum := sha256.Sum256(want)
	root := filepath.Join(dir, "root")
	zdt(t, dir, "install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature").must(t, "install")
	addrRoot := freeAddr(t, "127.0.0.1")
	startServe(t, "--root", root, "--addr", addrRoot)
	root2 := filepath.Join(dir, "root2")
	addrBundle := freeAddr(t, "127.0.0.1")
	startServe(t, "--bundle", filepath.Join(dir, "q.zdt"), "--insecure-skip-signature", "--root", root2, "--addr", addrBundle)
	for _, tc := range []struct{ name, addr, ca string }{
		{"root", addrRoot, filepath.Join(root, "var/lib/zdt/tls/ca.crt")},
		{"bundle", addrBundle, filepath.Join(root2, "var/lib/zdt/tls/ca.crt")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := t.TempDir()
			base := "https://" + tc.addr + "/files/"
			runIn(t, node, nil, curl, "-fsSO", "--cacert", tc.ca, base+"zdt-hello").must(t, "curl -fO")
			if got, err := os.ReadFile(filepath.Join(node, "zdt-hello")); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("curl -O saved %q (%v), want the file's content", got, err)
			}
			head := runIn(t, node, nil, curl, "-fsSI", "--cacert", tc.ca, base+"zdt-hello").must(t, "curl -I")
			if !strings.Contains(strings.ToLower(head.stdout), "x-checksum-sha256: "+hex.EncodeToString(sum[:])) {
				t.Errorf("HEAD headers:\n%s", head.stdout)
			}
			part := runIn(t, node, nil, curl, "-fsS", "--cacert", tc.ca, "-r", "10-19", base+"zdt-hello").must(t, "curl -r")
			if part.stdout != string(want[10:20]) {
				t.Errorf("curl -r 10-19 = %q, want %q", part.stdout, want[10:20])
			}
			list := runIn(t, node, nil, curl, "-fsS", "--cacert", tc.ca, base).must(t, "curl the listing")
			if !strings.HasPrefix(list.stdout, "zdt-hello ") || !strings.Contains(list.stdout, "sha256:"+hex.EncodeToString(sum[:])) {
				t.Errorf("listing:\n%s", list.stdout)
			}
			if r := runIn(t, node, nil, curl, "-fsSO", "--cacert", tc.ca, base+"..%2f..%2fetc%2fpasswd"); r.code != 22 {
				t.Errorf("curl -f of a hostile name: exit %d (want 22: HTTP error)\n%s", r.code, r.stderr)
			}
		})
	}
}

// TestInstallPlacesZdtBinary is issue 13.8 through the CLI: the unit runs
// /usr/local/bin/zdt, which nothing installed. install places the zdt
// that runs it there (byte for byte, runnable), records its sha256 in the
// generation, changes nothing when run again, replaces it when another
// zdt installs (a new generation), rollback puts the previous one back,
// and uninstall removes it.
func TestInstallPlacesZdtBinary(t *testing.T) {
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	// Another zdt: the same program with bytes appended (an ELF file runs
	// with trailing data), so another digest. Files are compared by
	// sha256, streamed: the binary is ~100 MB.
	other := filepath.Join(dir, "zdt-other")
	copyFile(t, zdtBin, other, "\x00another build")
	self, otherBytes := fileSum(t, zdtBin), fileSum(t, other)
	root := filepath.Join(dir, "root")
	target := filepath.Join(root, "usr/local/bin/zdt")
	install := []string{"install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature"}
	holds := func(want, what string) {
		t.Helper()
		if got := fileSum(t, target); got != want {
			t.Fatalf("%s: /usr/local/bin/zdt is %s, want %s (the zdt that installed)", what, got, want)
		}
		runIn(t, dir, nil, target, "version").must(t, "the placed zdt runs")
	}
	binaryOf := func() string {
		var s struct{ Current struct{ Binary string } }
		st := zdt(t, dir, "status", "--root", root, "--output", "json").must(t, "status")
		if err := json.Unmarshal([]byte(st.stdout), &s); err != nil {
			t.Fatal(err)
		}
		return s.Current.Binary
	}

	first := zdt(t, dir, install...).must(t, "install")
	if !strings.Contains(first.stdout, "binary zdt -> /usr/local/bin/zdt") {
		t.Errorf("the plan does not show the binary:\n%s", first.stdout)
	}
	holds(self, "after install")
	if got := binaryOf(); got != self {
		t.Fatalf("generation records binary %q, want %s", got, self)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/zdt-serve.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/zdt serve") {
		t.Fatalf("unit:\n%s", unit)
	}
	if r := zdt(t, dir, install...).must(t, "re-install"); !strings.Contains(r.stdout, "nothing changed") {
		t.Fatalf("re-install with the same zdt: %s", r.stdout)
	}
	up := runIn(t, dir, nil, other, install...).must(t, "install with another zdt")
	if !strings.Contains(up.stdout, "installed: generation 2") {
		t.Fatalf("install with another zdt said:\n%s", up.stdout)
	}
	holds(otherBytes, "after the other zdt installed")
	if got := binaryOf(); got != otherBytes {
		t.Fatalf("generation records binary %q after the other zdt installed", got)
	}
	zdt(t, dir, "rollback", "--root", root).must(t, "rollback")
	holds(self, "after rollback")
	zdt(t, dir, "uninstall", "--root", root).must(t, "uninstall")
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("uninstall left /usr/local/bin/zdt: %v", err)
	}
}

// fileSum is "sha256:HEX" of a file, streamed.
func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// copyFile copies src to dst (mode 0755) with extra appended, streamed.
func copyFile(t *testing.T, src, dst, extra string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(out, extra); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
