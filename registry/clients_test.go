package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
)

// requestLog records the requests a server saw.
type requestLog struct {
	mu   sync.Mutex
	reqs []string // "METHOD path?query"
	next http.Handler
}

func (l *requestLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r.Method+" "+r.URL.RequestURI())
	l.mu.Unlock()
	l.next.ServeHTTP(w, r)
}

func (l *requestLog) saw(substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.reqs {
		if strings.Contains(r, substr) {
			return true
		}
	}
	return false
}

// startTLS serves h over TLS with a generated CA and returns the address
// and the CA file.
func startTLS(t *testing.T, h http.Handler) (string, string) {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServeOptions{Handler: h, Listener: ln, CA: ca, Hostnames: []string{"localhost", "127.0.0.1"}})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), ca.CertPath
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// TestClients: real clients pull from `zdt serve --bundle` (TLS with the
// generated CA where the client takes a CA, plain HTTP for the runtime
// mirrors as CLIENTS.md describes).
func TestClients(t *testing.T) {
	tb := buildBundle(t, bundleSpec{noAMI: true})
	h, err := NewHandler(context.Background(), HandlerOptions{Archives: []*bundle.Archive{tb.archive}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	log := &requestLog{next: h}
	host, caFile := startTLS(t, log)
	plain := httptest.NewServer(log)
	t.Cleanup(plain.Close)
	plainHost := strings.TrimPrefix(plain.URL, "http://")
	web := findPlacement(t, h.Placements, "library/web", "1.0")
	tools := findPlacement(t, h.Placements, "quay.io/zdt/tools", "2.0")
	chart := findPlacement(t, h.Placements, "charts/demo", "1.2.3")
	caEnv := []string{"SSL_CERT_FILE=" + caFile}

	t.Run("crane", func(t *testing.T) {
		crane := needClient(t, "crane")
		if got := strings.TrimSpace(run(t, caEnv, crane, "digest", host+"/library/web:1.0")); got != web.Digest.String() {
			t.Fatalf("crane digest = %s, want %s", got, web.Digest)
		}
		out := filepath.Join(t.TempDir(), "web.tar")
		run(t, caEnv, crane, "pull", "--platform", "linux/arm64", host+"/docker.io/library/web:1.0", out)
		if fi, err := os.Stat(out); err != nil || fi.Size() < 32<<10 {
			t.Fatalf("crane pull wrote %v %v", fi, err)
		}
		tags := strings.Fields(run(t, caEnv, crane, "ls", host+"/zdt/test"))
		if len(tags) != 2 || tags[0] != "1.0.0" {
			t.Fatalf("crane ls = %v", tags)
		}
	})

	t.Run("skopeo", func(t *testing.T) {
		skopeo := needClient(t, "skopeo")
		certDir := t.TempDir()
		caPEM, _ := os.ReadFile(caFile)
		writeTestFile(t, filepath.Join(certDir, "ca.crt"), caPEM)
		var insp struct{ Digest string }
		if err := json.Unmarshal([]byte(run(t, nil, skopeo, "inspect", "--cert-dir", certDir, "docker://"+host+"/quay.io/zdt/tools:2.0")), &insp); err != nil {
			t.Fatal(err)
		}
		if insp.Digest != tools.Digest.String() {
			t.Fatalf("skopeo inspect digest %s, want %s", insp.Digest, tools.Digest)
		}
		raw := run(t, nil, skopeo, "inspect", "--raw", "--cert-dir", certDir, "docker://"+host+"/library/web:1.0")
		if digestOf([]byte(raw)) != web.Digest {
			t.Fatalf("skopeo inspect --raw hashes to %s, want %s", digestOf([]byte(raw)), web.Digest)
		}
		// skopeo re-serializes an index it copies; the images inside are
		// copied byte for byte.
		dst := filepath.Join(t.TempDir(), "dir")
		run(t, nil, skopeo, "copy", "--all", "--src-cert-dir", certDir, "docker://"+host+"/library/web:1.0", "dir:"+dst)
		var idx ocispec.Index
		if err := json.Unmarshal([]byte(raw), &idx); err != nil || len(idx.Manifests) != 2 {
			t.Fatalf("served index: %s", raw)
		}
		for _, m := range idx.Manifests {
			b, err := os.ReadFile(filepath.Join(dst, m.Digest.Encoded()+".manifest.json"))
			if err != nil || digestOf(b) != m.Digest {
				t.Fatalf("platform manifest %s not copied intact: %v", m.Digest, err)
			}
		}
	})

	t.Run("oras pull file", func(t *testing.T) {
		oras := needClient(t, "oras")
		dir := t.TempDir()
		run(t, []string{"HOME=" + t.TempDir()}, oras, "pull", "--ca-file", caFile, "-o", dir, host+"/files/tool:1.0.0")
		got, err := os.ReadFile(filepath.Join(dir, "tool"))
		if err != nil {
			// zdt stores uncompressed files zstd-compressed, titled NAME.zst.
			z, zerr := os.ReadFile(filepath.Join(dir, "tool.zst"))
			if zerr != nil {
				t.Fatalf("oras pulled neither tool nor tool.zst: %v", zerr)
			}
			dec, _ := zstd.NewReader(nil)
			defer dec.Close()
			if got, err = dec.DecodeAll(z, nil); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, tb.fileData) {
			t.Fatalf("pulled file %q, want %q", got, tb.fileData)
		}
	})

	t.Run("helm pull oci", func(t *testing.T) {
		helm := needClient(t, "helm")
		tmp := t.TempDir()
		env := []string{"HELM_CACHE_HOME=" + tmp + "/cache", "HELM_CONFIG_HOME=" + tmp + "/config", "HELM_DATA_HOME=" + tmp + "/data"}
		dst := filepath.Join(tmp, "out")
		os.MkdirAll(dst, 0o755)
		run(t, env, helm, "pull", "oci://"+host+"/charts/demo", "--version", "1.2.3", "--ca-file", caFile, "-d", dst)
		tgz, err := os.ReadFile(filepath.Join(dst, "demo-1.2.3.tgz"))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, d := range chart.Blobs {
			found = found || d == digestOf(tgz)
		}
		if !found {
			t.Fatalf("pulled chart %s is not a blob of charts/demo %v", digestOf(tgz), chart.Blobs)
		}
	})

	t.Run("podman via registries.conf mirror", func(t *testing.T) {
		podman := needClient(t, "podman")
		tmp, err := os.MkdirTemp("", "zp") // podman wants a short runroot
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(tmp) })
		conf := filepath.Join(tmp, "registries.conf")
		writeTestFile(t, conf, []byte(fmt.Sprintf(`unqualified-search-registries = []
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "%[1]s"
insecure = true

[[registry]]
prefix = "quay.io"
location = "quay.io"
[[registry.mirror]]
location = "%[1]s/%[2]s"
insecure = true
`, plainHost, MirrorNamespace("quay.io"))))
		args := []string{"--root", tmp + "/root", "--runroot", tmp + "/runroot", "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", tmp + "/tmp"}
		env := []string{"CONTAINERS_REGISTRIES_CONF=" + conf, "XDG_CONFIG_HOME=" + tmp + "/xdg", "HOME=" + tmp}
		for _, c := range []struct {
			ref  string
			want string
		}{{"docker.io/library/web:1.0", web.Digest.String()}, {"quay.io/zdt/tools:2.0", tools.Digest.String()}} {
			run(t, env, podman, append(args, "pull", "--quiet", c.ref)...)
			got := strings.TrimSpace(run(t, env, podman, append(args, "image", "inspect", "--format", "{{.Digest}}", c.ref)...))
			if got != c.want {
				t.Fatalf("podman pulled %s as %s, want %s", c.ref, got, c.want)
			}
		}
		if !log.saw("/v2/quay.io/zdt/tools/manifests/2.0") || !log.saw("/v2/library/web/manifests/1.0") {
			t.Fatal("podman did not go through the mirror")
		}
	})

	t.Run("ctr via hosts.toml mirror", func(t *testing.T) {
		ctr := needClient(t, "ctr")
		containerd := needClient(t, "containerd")
		dir, err := os.MkdirTemp("", "zdtctr")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		sock := filepath.Join(dir, "c.sock")
		writeTestFile(t, filepath.Join(dir, "config.toml"), []byte(fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "%[1]s/c.sock"
[ttrpc]
  address = "%[1]s/c.sock.ttrpc"
[debug]
  address = "%[1]s/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"
`, dir)))
		hosts := filepath.Join(dir, "hosts")
		writeTestFile(t, filepath.Join(hosts, "docker.io", "hosts.toml"), []byte(fmt.Sprintf(`server = "https://registry-1.docker.io"
[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, plainHost)))
		writeTestFile(t, filepath.Join(hosts, "quay.io", "hosts.toml"), []byte(fmt.Sprintf(`server = "https://quay.io"
[host."http://%s/v2/%s"]
  capabilities = ["pull", "resolve"]
  override_path = true
`, plainHost, MirrorNamespace("quay.io"))))
		ctx, cancel := context.WithCancel(context.Background())
		daemon := exec.CommandContext(ctx, containerd, "--config", filepath.Join(dir, "config.toml"))
		var dlog bytes.Buffer
		daemon.Stdout, daemon.Stderr = &dlog, &dlog
		if err := daemon.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); daemon.Wait() })
		up := false
		for i := 0; i < 100 && !up; i++ {
			up = exec.Command(ctr, "--address", sock, "version").Run() == nil
			if !up {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !up {
			t.Fatalf("containerd did not start:\n%s", dlog.String())
		}
		for _, c := range []struct{ ref, want string }{
			{"docker.io/library/web:1.0", web.Digest.String()},
			{"quay.io/zdt/tools:2.0", tools.Digest.String()},
		} {
			run(t, nil, ctr, "--address", sock, "image", "pull", "--hosts-dir", hosts, c.ref)
			out := run(t, nil, ctr, "--address", sock, "image", "ls")
			if !strings.Contains(out, c.ref) || !strings.Contains(out, c.want) {
				t.Fatalf("ctr image ls lacks %s @ %s:\n%s", c.ref, c.want, out)
			}
		}
		if !log.saw("/v2/library/web/manifests/1.0?ns=docker.io") || !log.saw("/v2/quay.io/zdt/tools/manifests/2.0?ns=quay.io") {
			t.Fatal("containerd did not go through the mirror (with ?ns=)")
		}
	})
}
