// Package kubetest runs a real Kubernetes control plane for tests: an etcd
// and a kube-apiserver, both built from pinned sources by
// scripts/kube-tools.sh (tools/kube), listening on 127.0.0.1 on free ports
// with certificates generated for the run, the way envtest does. Plain
// Start runs only those two (a few seconds): objects that need no
// controller (ConfigMaps, Secrets, CRDs, custom resources, namespaces)
// behave as in a real cluster, Deployments and Pods never become ready.
//
// Start(t, WithControllers(), WithNodes("cp-1:control-plane", "w-1", "w-2"))
// adds kube-controller-manager and kube-scheduler from the same Kubernetes
// build and fake nodes kept by kwok (sigs.k8s.io/kwok, pinned in
// tools/kube), which stands in for the kubelets: it keeps each node Ready
// (status and a Lease in kube-node-lease), makes the pods bound to it
// Running and Ready and removes them once they are deleted. So Deployments
// get ReplicaSets and pods, pods are scheduled and become Ready,
// Deployments become Available, PodDisruptionBudgets get their status
// (the disruption controller) so the eviction API enforces them, and a
// drain (cordon, evict) reschedules pods onto other nodes. No container
// ever runs: images are not pulled, probes are not run.
//
// etcd serves its clients over TLS with client-certificate authentication,
// as kubeadm runs it: its own CA (Cluster.EtcdCAFile) signs its serving
// certificate, kube-apiserver's client certificate and one for the test
// (Cluster.EtcdCertFile, EtcdKeyFile; Cluster.EtcdTLSConfig builds a
// tls.Config of them).
//
// Start skips the test when the binaries are missing, unless
// ZDT_REQUIRE_CLIENTS=1 (CI), then it fails. Every process (etcd,
// kube-apiserver, controller manager, scheduler, kwok) listens on
// 127.0.0.1 only or not at all, stops by itself at the end of the test
// (t.Cleanup) and, on Linux, dies with the test binary (parent-death
// signal) if that is killed.
//
// Every request goes to the audit log; Cluster.Requests reads it back so a
// test can count the write requests a client (ZdtUser) sent.
package kubetest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// KubeVersion is the Kubernetes release tools/kube builds (its go.mod
// requires k8s.io/kubernetes at this version; TestToolsVersion checks).
const KubeVersion = "v1.37.2"

// The two client identities the certificates are issued to. Both are in
// system:masters; only the name differs so the audit log tells them apart.
const (
	AdminUser = "kubetest-admin"
	ZdtUser   = "zdt"
)

// ToolsDir is where scripts/kube-tools.sh puts the binaries:
// $ZDT_KUBE_TOOLS, else the user cache dir's zdt-tools/kube-VERSION.
func ToolsDir() string {
	if d := os.Getenv("ZDT_KUBE_TOOLS"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "zdt-tools", "kube-"+KubeVersion)
}

// Cluster is a running control plane.
type Cluster struct {
	// URL is the API server's https URL.
	URL string
	// Kubeconfig is a kubeconfig file for AdminUser; ZdtKubeconfig one for
	// ZdtUser. Both trust the cluster's CA and nothing else.
	Kubeconfig, ZdtKubeconfig string
	// Dir holds the certificates, the logs and etcd's data.
	Dir string
	// EtcdURL is etcd's client URL (https on 127.0.0.1). etcd accepts only
	// clients with a certificate its own CA signed: EtcdCAFile is that CA
	// (it also signs etcd's serving certificate), EtcdCertFile/EtcdKeyFile
	// a client certificate and key for the test (PEM files; kube-apiserver
	// has its own).
	EtcdURL                               string
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// AuditLog is the API server's audit log (JSON lines, every request at
	// Metadata level).
	AuditLog string
	// StartupTime is how long the control plane took to become ready (with
	// WithNodes: until every node is Ready).
	StartupTime time.Duration
	// Nodes are the names of the fake nodes (WithNodes), in order.
	Nodes []string

	begin             time.Time
	certs             *certs
	client, zdtClient *http.Client
	procs             []*proc
	marks             int
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
	// keep is the write end of etcd's stdin pipe, held (never written) so
	// etcd sees EOF exactly when this process is gone.
	keep *os.File
}

// Start starts etcd and kube-apiserver for t and waits for /readyz; with
// WithControllers also kube-controller-manager and kube-scheduler, with
// WithNodes fake nodes kept by kwok. It skips t when a binary it needs is
// missing (fails under ZDT_REQUIRE_CLIENTS=1).
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	nodes, err := parseNodes(o.nodes)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	dir := ToolsDir()
	for _, bin := range o.binaries() {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			if os.Getenv("ZDT_REQUIRE_CLIENTS") == "1" {
				t.Fatalf("%s is required (ZDT_REQUIRE_CLIENTS=1) but missing in %s: run scripts/kube-tools.sh", bin, dir)
			}
			t.Skipf("%s not built (%s): run scripts/kube-tools.sh", bin, dir)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := start(ctx, dir, t.TempDir())
	if c != nil {
		t.Cleanup(c.Stop)
	}
	if err == nil && o.controllers {
		err = c.startControllers(ctx, dir)
	}
	if err == nil && len(nodes) > 0 {
		err = c.startNodes(ctx, dir, nodes, o.controllers)
	}
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	c.StartupTime = time.Since(c.begin)
	t.Logf("kubetest: kube-apiserver %s ready at %s in %s%s", KubeVersion, c.URL, c.StartupTime.Round(time.Millisecond), o.describe())
	return c
}

func start(ctx context.Context, tools, dir string) (*Cluster, error) {
	begin := time.Now()
	cs, err := newCerts()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.crt": cs.ca.cert, "apiserver.crt": cs.serving.cert, "apiserver.key": cs.serving.key,
		"admin.crt": cs.admin.cert, "admin.key": cs.admin.key,
		"sa.pub": cs.saPub, "sa.key": cs.saKey,
		"audit-policy.yaml": []byte(auditPolicy),
		"etcd-ca.crt":       cs.etcdCA.cert, "etcd.crt": cs.etcdServing.cert, "etcd.key": cs.etcdServing.key,
		"apiserver-etcd-client.crt": cs.etcdAPIServer.cert, "apiserver-etcd-client.key": cs.etcdAPIServer.key,
		"etcd-client.crt": cs.etcdClient.cert, "etcd-client.key": cs.etcdClient.key,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		begin:    begin,
		certs:    cs,
		Dir:      dir,
		URL:      "https://127.0.0.1:" + strconv.Itoa(ports[2]),
		EtcdURL:  "https://127.0.0.1:" + strconv.Itoa(ports[0]),
		AuditLog: filepath.Join(dir, "audit.log"),

		EtcdCAFile:   filepath.Join(dir, "etcd-ca.crt"),
		EtcdCertFile: filepath.Join(dir, "etcd-client.crt"),
		EtcdKeyFile:  filepath.Join(dir, "etcd-client.key"),
	}
	etcdClient, err := httpClient(cs.etcdCA.cert, cs.etcdClient)
	if err != nil {
		return nil, err
	}
	defer etcdClient.CloseIdleConnections()
	if c.client, err = httpClient(cs.ca.cert, cs.admin); err != nil {
		return nil, err
	}
	if c.zdtClient, err = httpClient(cs.ca.cert, cs.zdt); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	c.ZdtKubeconfig = filepath.Join(dir, "zdt.kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kubeconfig(c.URL, cs.ca.cert, AdminUser, cs.admin), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.ZdtKubeconfig, kubeconfig(c.URL, cs.ca.cert, ZdtUser, cs.zdt), 0o600); err != nil {
		return nil, err
	}

	etcd, err := c.spawn("etcd", filepath.Join(tools, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", c.EtcdURL,
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(ports[1]),
		"--cert-file", filepath.Join(dir, "etcd.crt"),
		"--key-file", filepath.Join(dir, "etcd.key"),
		"--trusted-ca-file", c.EtcdCAFile,
		"--client-cert-auth",
		"--exit-on-stdin-eof")
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, etcd, func() bool {
		resp, err := etcdClient.Get(c.EtcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return c, err
	}
	api, err := c.spawn("kube-apiserver", filepath.Join(tools, "kube-apiserver"),
		"--etcd-servers="+c.EtcdURL,
		"--etcd-cafile="+c.EtcdCAFile,
		"--etcd-certfile="+filepath.Join(dir, "apiserver-etcd-client.crt"),
		"--etcd-keyfile="+filepath.Join(dir, "apiserver-etcd-client.key"),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[2]),
		"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file="+filepath.Join(dir, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(dir, "apiserver.key"),
		"--client-ca-file="+filepath.Join(dir, "ca.crt"),
		"--authorization-mode=RBAC",
		"--service-account-issuer="+c.URL,
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--audit-log-path="+c.AuditLog,
		"--audit-policy-file="+filepath.Join(dir, "audit-policy.yaml"),
		"--audit-log-mode=blocking",
		"--v=0")
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, api, func() bool {
		code, _, err := c.Do(ctx, http.MethodGet, "/readyz", nil)
		return err == nil && code == http.StatusOK
	}); err != nil {
		return c, err
	}
	return c, nil
}

// auditPolicy logs every request's metadata once, when its response is done.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
`

func (c *Cluster) spawn(name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(c.Dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	// A pipe nobody writes: etcd exits when it closes with this process.
	if name == "etcd" {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cmd.Stdin = r
		defer r.Close()
		p.keep = w
	}
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		if p.keep != nil {
			p.keep.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	c.procs = append(c.procs, p)
	return p, nil
}

// waitFor polls ready until it holds, the process exits or ctx ends; the
// error carries the tail of the process's log.
func waitFor(ctx context.Context, p *proc, ready func() bool) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", p.name, tail(p.log))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w: %s", p.name, ctx.Err(), tail(p.log))
		case <-tick.C:
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return strings.TrimSpace(string(b))
}

// EtcdTLSConfig is a client TLS configuration for EtcdURL: it trusts
// EtcdCAFile and presents EtcdCertFile/EtcdKeyFile.
func (c *Cluster) EtcdTLSConfig() (*tls.Config, error) {
	ca, err := os.ReadFile(c.EtcdCAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("etcd ca certificate")
	}
	cert, err := tls.LoadX509KeyPair(c.EtcdCertFile, c.EtcdKeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Stop ends kube-apiserver, then etcd: SIGTERM, SIGKILL after 10 s.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if p.keep != nil {
			p.keep.Close()
		}
	}
	c.procs = nil
	for _, cl := range []*http.Client{c.client, c.zdtClient} {
		if cl != nil {
			cl.CloseIdleConnections()
		}
	}
}

// Do sends one request as AdminUser and returns the status and at most
// 4 MiB of the body.
func (c *Cluster) Do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	return c.do(ctx, c.client, method, path, body)
}

// DoAs is Do as user (AdminUser or ZdtUser).
func (c *Cluster) DoAs(ctx context.Context, user, method, path string, body []byte) (int, []byte, error) {
	cl := c.client
	if user == ZdtUser {
		cl = c.zdtClient
	}
	return c.do(ctx, cl, method, path, body)
}

func (c *Cluster) do(ctx context.Context, client *http.Client, method, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

func httpClient(ca []byte, user keyPair) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("ca certificate")
	}
	cert, err := tls.X509KeyPair(user.cert, user.key)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}},
	}, nil
}

func kubeconfig(server string, ca []byte, user string, kp keyPair) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: kubetest
  context:
    cluster: kubetest
    user: %s
current-context: kubetest
`, server, b64(ca), user, b64(kp.cert), b64(kp.key), user)
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
