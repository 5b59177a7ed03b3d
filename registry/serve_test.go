package registry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zdt.dev/zdt/bundle"
)

// TestServeTLSAndGracefulShutdown runs Serve with a generated CA: a client
// trusting only that CA pulls; the CA is kept across restarts while the
// short-lived server certificate is re-issued; cancelling the context lets
// a running request finish and Serve return nil.
func TestServeTLSAndGracefulShutdown(t *testing.T) {
	tb := buildBundle(t, bundleSpec{noAMI: true})
	h, err := NewHandler(context.Background(), HandlerOptions{Archives: []*bundle.Archive{tb.archive}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	tlsDir := TLSDir(t.TempDir())
	ca, err := LoadOrCreateCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(tlsDir, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v %v", fi.Mode(), err)
	}
	again, err := LoadOrCreateCA(tlsDir)
	if err != nil || !bytes.Equal(again.Cert.Raw, ca.Cert.Raw) {
		t.Fatalf("CA not kept across starts: %v", err)
	}

	// A slow request in flight when shutdown starts must complete.
	slow := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(slow)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ServeOptions{Handler: mux, Listener: ln, CA: ca, Hostnames: []string{"127.0.0.1", "registry.test", "localhost"}})
	}()

	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(ca.CertPath)
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + ln.Addr().String()
	var resp *http.Response
	for i := 0; i < 50; i++ {
		if resp, err = client.Get(url + "/v2/"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v2/ over TLS: %d", resp.StatusCode)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if strings.Join(leaf.DNSNames, ",") != "registry.test,localhost" || len(leaf.IPAddresses) != 1 || leaf.Subject.CommonName != "registry.test" {
		t.Fatalf("server certificate SANs: DNS %v IP %v CN %q", leaf.DNSNames, leaf.IPAddresses, leaf.Subject.CommonName)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > ServerCertLifetime+10*time.Minute {
		t.Fatalf("server certificate lives %s", life)
	}
	// An untrusting client is refused.
	if _, err := http.Get(url + "/v2/"); err == nil {
		t.Fatal("a client without the CA connected")
	}
	// A plain-HTTP request on the TLS port does not reach the registry.
	if r, err := http.Get("http://" + ln.Addr().String() + "/v2/"); err == nil && r.StatusCode == 200 {
		t.Fatal("plain HTTP served on the TLS port")
	}

	got := make(chan string, 1)
	go func() {
		r, err := client.Get(url + "/slow")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		got <- string(b)
	}()
	<-slow
	cancel()
	if s := <-got; s != "done" {
		t.Fatalf("in-flight request during shutdown: %q", s)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
	if _, err := client.Get(url + "/v2/"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestRotatingCertReissues(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &rotatingCert{ca: ca, hostnames: []string{"a.test"}, lifetime: 3 * time.Second}
	c1, err := r.get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c2, _ := r.get(nil); c2 != c1 {
		t.Fatal("re-issued a fresh certificate")
	}
	time.Sleep(2100 * time.Millisecond)
	if c3, _ := r.get(nil); c3 == c1 || !c3.Leaf.NotAfter.After(c1.Leaf.NotAfter) {
		t.Fatal("certificate near expiry not re-issued")
	}
}
