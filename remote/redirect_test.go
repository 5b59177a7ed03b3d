package remote

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestGetRedirectKeepsCredentials: credentials configured for a host go
// to that origin only. A redirect to the same host name on another port
// reaches it without Authorization (Go would keep the header for the same
// host name), and a redirect from https to plain http is refused before
// anything is sent there.
func TestGetRedirectKeepsCredentials(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // server -> Authorization it received
	record := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name] = r.Header.Get("Authorization")
			mu.Unlock()
			w.Write([]byte("ok"))
		}
	}
	other := httptest.NewTLSServer(record("other port"))
	defer other.Close()
	plain := httptest.NewServer(record("plain"))
	defer plain.Close()
	origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen["origin"] = r.Header.Get("Authorization")
		mu.Unlock()
		switch r.URL.Path {
		case "/to-other-port":
			http.Redirect(w, r, other.URL+"/x", http.StatusFound)
		case "/to-plain":
			http.Redirect(w, r, plain.URL+"/x", http.StatusFound)
		}
	}))
	defer origin.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: origin.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(origin.URL, "https://")
	r := New(&RegistryConfig{Registries: map[string]RegistryHost{host: {CA: ca, Username: "u", Password: "secret"}}}, 1)
	ctx := context.Background()

	resp, err := r.Get(ctx, origin.URL+"/to-other-port")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	if seen["origin"] == "" || seen["other port"] != "" {
		t.Errorf("origin got %q, the other port got %q: credentials must reach the origin only", seen["origin"], seen["other port"])
	}
	mu.Unlock()

	_, err = r.Get(ctx, origin.URL+"/to-plain")
	if err == nil || !strings.Contains(err.Error(), "leaves TLS") {
		t.Errorf("https -> http redirect: %v, want refused", err)
	}
	mu.Lock()
	if _, reached := seen["plain"]; reached {
		t.Errorf("the plain http server was reached (Authorization %q)", seen["plain"])
	}
	mu.Unlock()
}

// TestCAWithInsecureRefused: --ca merged into a host the configuration
// marks insecure would verify nothing; it is refused, naming the host.
func TestCAWithInsecureRefused(t *testing.T) {
	r := New(&RegistryConfig{Registries: map[string]RegistryHost{"reg.example:5000": {CA: "ca.pem", Insecure: true}}}, 1)
	_, err := r.Get(context.Background(), "https://reg.example:5000/v2/")
	if err == nil || !strings.Contains(err.Error(), "reg.example:5000") || !strings.Contains(err.Error(), "choose one") {
		t.Fatalf("CA and insecure: %v, want refused naming the host", err)
	}
}
