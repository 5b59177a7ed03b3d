package testregistry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // registers "htpasswd"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory" // registers "inmemory"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
)

// Options configure a registry. The zero value is a plain-HTTP registry
// without auth.
type Options struct {
	// TLS serves HTTPS with a self-signed certificate for 127.0.0.1
	// (Registry.CAFile and Registry.Client trust it).
	TLS bool
	// Username and Password, if set, require basic auth (htpasswd).
	Username, Password string
	// Middleware, if set, wraps the registry handler (after the counters).
	Middleware func(http.Handler) http.Handler
}

// Registry is a running in-process registry. It stops when the test ends.
// Safe for concurrent use.
type Registry struct {
	// Host is 127.0.0.1:PORT; URL is http(s)://Host.
	Host string
	URL  string
	// CAFile is a PEM file of the TLS certificate (TLS only).
	CAFile string
	// Client trusts the registry's certificate (TLS) and has no auth.
	Client *http.Client

	srv *httptest.Server

	mu       sync.Mutex
	requests map[string]int // "METHOD /path" → count
	log      []Request
}

// Request is a request the registry answered (after the middleware), as
// Log returns it.
type Request struct {
	Method, Path string
	// Range is the request's Range header ("" if none).
	Range string
	// Status is the answer's status; Bytes the body bytes written (by
	// the time the handler returned: a cut connection counts what went).
	Status int
	Bytes  int64
}

// countingWriter counts a response's body bytes.
type countingWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	n           int64
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes a flush on.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Log returns the requests answered so far (since New or Reset), in the
// order they finished.
func (r *Registry) Log() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.log...)
}

// BlobBytes sums the body bytes sent for GETs of one blob (a digest).
func (r *Registry) BlobBytes(dgst string) int64 {
	var n int64
	for _, q := range r.Log() {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/blobs/"+dgst) {
			n += q.Bytes
		}
	}
	return n
}

var quiet sync.Once

// New starts a registry for the length of the test.
func New(t testing.TB, opts Options) *Registry {
	t.Helper()
	quiet.Do(func() { logrus.SetOutput(io.Discard) })
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"inmemory": configuration.Parameters{},
		"delete":   configuration.Parameters{"enabled": true},
		"redirect": configuration.Parameters{"disable": true},
		"maintenance": configuration.Parameters{
			"uploadpurging": map[any]any{"enabled": false},
		},
	}
	cfg.HTTP.Secret = "testregistry-secret-0123456789abcdef"
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	if opts.Username != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "htpasswd")
		if err := os.WriteFile(p, []byte(opts.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "testregistry", "path": p}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	r := &Registry{requests: map[string]int{}}
	var h http.Handler = app
	if opts.Middleware != nil {
		h = opts.Middleware(h)
	}
	counted := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests[req.Method+" "+req.URL.Path]++
		r.mu.Unlock()
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(cw, req)
		r.mu.Lock()
		r.log = append(r.log, Request{Method: req.Method, Path: req.URL.Path, Range: req.Header.Get("Range"), Status: cw.status, Bytes: cw.n})
		r.mu.Unlock()
	})
	if opts.TLS {
		r.srv = httptest.NewTLSServer(counted)
		r.Client = r.srv.Client()
		r.CAFile = filepath.Join(t.TempDir(), "ca.pem")
		cert := r.srv.Certificate()
		if err := os.WriteFile(r.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		r.srv = httptest.NewServer(counted)
		r.Client = &http.Client{}
	}
	r.URL = r.srv.URL
	r.Host = strings.TrimPrefix(strings.TrimPrefix(r.URL, "https://"), "http://")
	t.Cleanup(func() {
		r.srv.Close()
		_ = app.Shutdown()
		cancel()
	})
	return r
}

// CertPool is a pool holding the registry's certificate (TLS only).
func (r *Registry) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	if c := r.srv.Certificate(); c != nil {
		p.AddCert(c)
	}
	return p
}

// TLSConfig trusts the registry's certificate.
func (r *Registry) TLSConfig() *tls.Config { return &tls.Config{RootCAs: r.CertPool()} }

// Requests counts the requests seen so far whose "METHOD /path" has the
// given prefix (e.g. "GET /v2/app/blobs/").
func (r *Registry) Requests(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, v := range r.requests {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// BlobGets returns, per blob digest, how many GET requests fetched it.
func (r *Registry) BlobGets() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.requests {
		if !strings.HasPrefix(k, "GET /v2/") {
			continue
		}
		if i := strings.Index(k, "/blobs/sha256:"); i >= 0 {
			out[k[i+len("/blobs/"):]] += v
		}
	}
	return out
}

// Reset forgets the counters.
func (r *Registry) Reset() {
	r.mu.Lock()
	r.requests = map[string]int{}
	r.log = nil
	r.mu.Unlock()
}

// Ref is Host/repo:tag.
func (r *Registry) Ref(repoTag string) string { return fmt.Sprintf("%s/%s", r.Host, repoTag) }
