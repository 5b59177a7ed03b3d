package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"zdt.dev/zdt/internal/fixtures"
)

// writeTestCA writes a self-signed CA certificate (PEM) to p.
func writeTestCA(t *testing.T, p string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "site ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeAPIServer answers every request 404 (no rollout started) and
// reports the paths asked.
func fakeAPIServer(t *testing.T) (url string, asked <-chan string) {
	ch := make(chan string, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case ch <- r.Method + " " + r.URL.Path:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

type installAgentJSON struct {
	Generation int  `json:"generation"`
	Applied    bool `json:"applied"`
	AgentUnit  *struct {
		Unit, Path, Node, Action string
	} `json:"agentUnit"`
}

// TestInstallAgentUnit: `zdt install --agent` on a root whose path has a
// space writes zdt-agent.service; --plan showed it and wrote nothing;
// systemd-analyze verify accepts it; its ExecStart, split as systemd
// splits it and run as is (the paths on the node mapped into the root),
// starts an agent whose first request is the cluster's rollout — its
// flags, its self-contained trust policy (the install's --key file
// deleted first), --ca and --registry-config all accepted. The same
// install again changes nothing; --agent=false removes the unit and
// rollback brings it back byte for byte.
func TestInstallAgentUnit(t *testing.T) {
	dir := quickstart(t)
	env := []string{"COSIGN_PASSWORD=test"}
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	runIn(t, dir, env, zdtBin, "bundle", "create", "--key", "k.key", "-o", "q.zdt").must(t, "create --key")
	etc := filepath.Join(dir, "site etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	apiURL, asked := fakeAPIServer(t)
	kubeconfig := filepath.Join(etc, "admin 100%.conf")
	kc := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: %q}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n", apiURL)
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	regConfig := filepath.Join(etc, "registries $x.yaml")
	if err := os.WriteFile(regConfig, []byte("registries: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(etc, "site-ca.crt")
	writeTestCA(t, ca)
	keyCopy := filepath.Join(dir, "install-key.pub")
	if err := os.Rename(filepath.Join(dir, "k.pub"), keyCopy); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "node root")
	args := []string{"install", "--bundle", "q.zdt", "--key", keyCopy, "--root", root, "--agent", "--agent-node", "node-1", "--agent-registry", "site.test:5000",
		"--agent-kubeconfig", kubeconfig, "--ca", ca, "--registry-config", regConfig, "--agent-drain-timeout", "7m"}

	plan := zdt(t, dir, append(args, "--plan")...).must(t, "install --agent --plan")
	if !strings.Contains(plan.stdout, "+ unit   zdt-agent.service -> /etc/systemd/system/zdt-agent.service") {
		t.Fatalf("--plan does not show the unit:\n%s", plan.stdout)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("--plan created the root: %v", err)
	}
	out := zdt(t, dir, args...).must(t, "install --agent")
	unitPath := filepath.Join(root, "etc/systemd/system/zdt-agent.service")
	if !strings.Contains(out.stdout, "agent unit: wrote "+unitPath+" (node node-1;") {
		t.Fatalf("install does not name the unit:\n%s", out.stdout)
	}
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(unitPath)
	argv, err := fixtures.UnitExecStart(unit)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/local/bin/zdt", "agent", "--root", "/", "--node", "node-1", "--kubeconfig", kubeconfig, "--serve-addr", "127.0.0.1:5000",
		"--registry", "site.test:5000", "--policy", "/etc/zdt/agent/policy.yaml", "--ca", "/etc/zdt/agent/ca.crt", "--registry-config", regConfig, "--drain-timeout", "7m0s"}
	if !slices.Equal(argv, want) {
		t.Fatalf("ExecStart\n %q\nwant\n %q\n%s", argv, want, unit)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/zdt/agent/ca.crt")); !bytes.Contains(got, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("the agent's CA: %q", got)
	}

	// systemd-analyze verify, the binary being the one install placed.
	t.Run("systemd-analyze", func(t *testing.T) {
		sa := client(t, "systemd-analyze")
		bin := filepath.Join(root, "usr/local/bin/zdt")
		mapped := bytes.Replace(unit, []byte("ExecStart=/usr/local/bin/zdt "), []byte(fmt.Sprintf("ExecStart=%q ", bin)), 1)
		p := filepath.Join(t.TempDir(), "zdt-agent.service")
		if err := os.WriteFile(p, mapped, 0o644); err != nil {
			t.Fatal(err)
		}
		r := runIn(t, dir, nil, sa, "verify", p)
		if r.code != 0 || strings.TrimSpace(r.stdout+r.stderr) != "" {
			t.Fatalf("systemd-analyze verify: exit %d\n%s%s\n%s", r.code, r.stdout, r.stderr, mapped)
		}
	})

	// The ExecStart as is, the node's paths mapped into the root, and the
	// key file the install was given gone.
	keyBytes := mustRead(t, keyCopy)
	if err := os.Remove(keyCopy); err != nil {
		t.Fatal(err)
	}
	run := slices.Clone(argv)
	run[0] = filepath.Join(root, run[0])
	for i := 1; i < len(run)-1; i++ {
		switch run[i] {
		case "--root", "--policy", "--ca":
			run[i+1] = filepath.Join(root, run[i+1])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, run[0], run[1:]...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "KUBECONFIG=") })
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	started := make(chan string, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case started <- sc.Text():
			default:
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { wg.Wait(); exited <- cmd.Wait() }()
	// Its requests (a read, a list or a watch, as the agent goes) are
	// about the rollout ConfigMap or its Node: it got past its flags.
	for first := true; ; first = false {
		var req string
		select {
		case req = <-asked:
		case err := <-exited:
			t.Fatalf("the agent of the unit exited before asking the cluster about the rollout: %v\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("the agent never asked the cluster about the rollout\n%s", stderr.String())
		}
		if first {
			t.Logf("the agent's first request: %s", req)
		}
		if strings.HasPrefix(req, "GET /api/v1/namespaces/zdt-system/configmaps") {
			break
		}
	}
	if line := <-started; line != "agent of node node-1 started" {
		t.Errorf("agent said %q", line)
	}
	cmd.Process.Kill()
	<-exited

	// Again: nothing changes. With --output json: the unit, unchanged.
	if err := os.WriteFile(keyCopy, keyBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	r := zdt(t, dir, append(slices.Clone(args), "--output", "json")...).must(t, "install --agent again")
	var res installAgentJSON
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if res.Applied || res.Generation != 1 || res.AgentUnit == nil || res.AgentUnit.Action != "unchanged" || res.AgentUnit.Path != unitPath || res.AgentUnit.Node != "node-1" {
		t.Fatalf("install --agent again: %s", r.stdout)
	}
	if fi2, _ := os.Stat(unitPath); !bytes.Equal(mustRead(t, unitPath), unit) || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("the same install rewrote the unit")
	}
	// --agent=false removes it (a new generation); rollback brings it back.
	r = zdt(t, dir, "install", "--bundle", "q.zdt", "--key", keyCopy, "--root", root, "--agent=false").must(t, "install --agent=false")
	if !strings.Contains(r.stdout, "agent unit: removed "+unitPath) {
		t.Fatalf("install --agent=false:\n%s", r.stdout)
	}
	for _, p := range []string{unitPath, filepath.Join(root, "etc/zdt/agent/policy.yaml")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("--agent=false left %s: %v", p, err)
		}
	}
	zdt(t, dir, "rollback", "--root", root).must(t, "rollback")
	if !bytes.Equal(mustRead(t, unitPath), unit) {
		t.Fatalf("rollback: unit\n%s", mustRead(t, unitPath))
	}
	zdt(t, dir, "status", "--root", root).must(t, "status after rollback")
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
