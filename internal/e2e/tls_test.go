package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freeAddr returns host:port free on host, or skips when host cannot be
// listened on (127.0.0.2 needs Linux's whole 127/8 loopback).
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", host, err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startServe runs `zdt serve ARGS` until the test ends and waits for it to
// say it is serving.
func startServe(t *testing.T, args ...string) {
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
	t.Cleanup(func() { cancel(); cmd.Wait() })
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
}

// handshake dials addr over TLS trusting only caFile and checking the
// certificate against serverName.
func handshake(caFile, addr, serverName string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no certificate", caFile)
	}
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: serverName})
	if err != nil {
		return err
	}
	return c.Close()
}

// TestServeCertificateCoversAddr is issue 13.6: `zdt serve --addr
// 127.0.0.2:PORT` served a certificate without 127.0.0.2 (clients failed
// with an unknown-name error); with --hostname the names given and the
// --addr host are all covered.
func TestServeCertificateCoversAddr(t *testing.T) {
	root := t.TempDir()
	addr := freeAddr(t, "127.0.0.2")
	startServe(t, "--root", root, "--addr", addr)
	ca := filepath.Join(root, "var/lib/zdt/tls/ca.crt")
	if err := handshake(ca, addr, "127.0.0.2"); err != nil {
		t.Fatalf("client dialling the --addr host: %v", err)
	}
	if err := handshake(ca, addr, "not-a-name-it-serves.example"); err == nil {
		t.Fatal("the certificate is accepted for any name")
	}

	addr2 := freeAddr(t, "127.0.0.2")
	startServe(t, "--root", root, "--addr", addr2, "--hostname", "registry.site.local")
	for _, name := range []string{"registry.site.local", "127.0.0.2"} {
		if err := handshake(ca, addr2, name); err != nil {
			t.Errorf("with --hostname registry.site.local, a client naming %s: %v", name, err)
		}
	}
}
