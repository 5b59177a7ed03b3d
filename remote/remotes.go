package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/reference"
	"gopkg.in/yaml.v3"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// RegistryConfig is the --registry-config file: per-registry connection
// settings, keyed by host[:port] as written in image references (docker.io
// for Docker Hub). Hosts not listed use HTTPS with the system CAs, except
// loopback hosts (localhost, 127.*, ::1), which default to plain HTTP.
//
//	registries:
//	  registry.example:5000:
//	    ca: /etc/zdt/registry-ca.pem   # PEM bundle trusted in addition to the system CAs
//	  127.0.0.1:5000:
//	    plainHTTP: true                 # speak http:// (default for loopback hosts)
//	  mirror.internal:
//	    insecure: true                  # HTTPS without certificate verification
//	    username: robot                 # basic auth; overrides the Docker config
//	    password: secret
type RegistryConfig struct {
	Registries map[string]RegistryHost `yaml:"registries"`
	// File is the file it was read from ("" when made in code), for
	// messages that say where credentials came from.
	File string `yaml:"-"`
}

// RegistryHost is how to talk to one registry (or HTTP host, for chart
// repositories and file URLs).
type RegistryHost struct {
	// CA is a PEM file of certificates to trust for this host, in addition
	// to the system pool.
	CA string `yaml:"ca"`
	// Insecure skips TLS certificate verification.
	Insecure bool `yaml:"insecure"`
	// PlainHTTP speaks http:// instead of https://. Nil means the default:
	// false when CA or Insecure is set, else true for loopback hosts and
	// false otherwise.
	PlainHTTP *bool `yaml:"plainHTTP"`
	// Username and Password are basic-auth credentials; when empty the
	// Docker config and its credential helpers are asked.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// LoadRegistryConfig reads a --registry-config file. Unknown fields are an
// error.
func LoadRegistryConfig(path string) (*RegistryConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading registry config: %w", err)
	}
	return ParseRegistryConfig(path, data)
}

// ParseRegistryConfig decodes a registry config; file names it in errors.
func ParseRegistryConfig(file string, data []byte) (*RegistryConfig, error) {
	var c RegistryConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	for h, r := range c.Registries {
		if h == "" || strings.Contains(h, "/") {
			return nil, fmt.Errorf("%s: registry %q: a key is host[:port], without scheme or path", file, h)
		}
		if r.Insecure && r.CA != "" {
			return nil, fmt.Errorf("%s: registry %q: insecure and ca exclude each other", file, h)
		}
	}
	c.File = file
	return &c, nil
}

// Hosts lists the configured hosts, sorted.
func (c *RegistryConfig) Hosts() []string {
	if c == nil {
		return nil
	}
	var out []string
	for h := range c.Registries {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

func (c *RegistryConfig) host(h string) RegistryHost {
	if c == nil {
		return RegistryHost{}
	}
	if r, ok := c.Registries[h]; ok {
		return r
	}
	if h == "registry-1.docker.io" || h == "index.docker.io" {
		return c.Registries["docker.io"]
	}
	return RegistryHost{}
}

// isLoopback reports whether host[:port] names this machine.
func isLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = strings.Trim(host, "[]")
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Remotes hands out HTTP clients and repositories per host with the TLS,
// plain-HTTP and credential settings of a registry config (nil: defaults,
// Docker credentials): one connection pool, TLS setting and token cache per
// registry, with retries (backoff on 429 and 5xx) under the auth layer.
// Safe for concurrent use.
type Remotes struct {
	cfg    *RegistryConfig
	conns  int
	stall  time.Duration
	mu     sync.Mutex
	http   map[string]*http.Client
	auth   map[string]*auth.Client
	creds  credentials.Store
	credOK bool
	cache  auth.Cache
}

// New returns the repository opener for cfg with a pool of conns
// connections per registry (at least 4) and DefaultStallTimeout.
func New(cfg *RegistryConfig, conns int) *Remotes {
	return &Remotes{cfg: cfg, conns: max(conns, 4), stall: DefaultStallTimeout, http: map[string]*http.Client{}, auth: map[string]*auth.Client{}, cache: auth.NewCache()}
}

// PlainHTTP says whether host is spoken to over http://.
func (r *Remotes) PlainHTTP(host string) bool {
	h := r.cfg.host(host)
	switch {
	case h.PlainHTTP != nil:
		return *h.PlainHTTP
	case h.CA != "" || h.Insecure:
		return false // TLS settings imply HTTPS, loopback or not
	}
	return isLoopback(host)
}

// httpClient is the retrying client for host (TLS per the config).
func (r *Remotes) httpClient(host string) (*http.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.http[host]; ok {
		return c, nil
	}
	h := r.cfg.host(host)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = r.conns * 2
	tr.MaxIdleConns = 0
	tr.ResponseHeaderTimeout = r.stall
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if h.Insecure && h.CA != "" {
		// A configuration file refuses both; --ca merged into an insecure
		// host's entry must not quietly verify nothing.
		return nil, fmt.Errorf("registry %s: a CA (%s) and insecure are both set: a CA is checked only without insecure, choose one", host, h.CA)
	}
	if h.Insecure {
		tlsCfg.InsecureSkipVerify = true
	}
	if h.CA != "" {
		pem, err := os.ReadFile(h.CA)
		if err != nil {
			return nil, fmt.Errorf("registry %s: reading ca: %w", host, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry %s: %s holds no PEM certificate", host, h.CA)
		}
		tlsCfg.RootCAs = pool
	}
	tr.TLSClientConfig = tlsCfg
	rt := retry.NewTransport(&stallTransport{next: tr, timeout: r.stall})
	rt.Policy = func() retry.Policy { return retryPolicy{} }
	c := &http.Client{Transport: rt, CheckRedirect: checkRedirect}
	r.http[host] = c
	return c, nil
}

// authClient is the registry client for host: retries, TLS and credentials.
func (r *Remotes) authClient(host string) (*auth.Client, error) {
	hc, err := r.httpClient(host)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.auth[host]; ok {
		return c, nil
	}
	var cred auth.CredentialFunc
	if h := r.cfg.host(host); h.Username != "" || h.Password != "" {
		cred = auth.StaticCredential(host, auth.Credential{Username: h.Username, Password: h.Password})
	} else {
		if !r.credOK {
			s, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
			if err != nil {
				return nil, fmt.Errorf("reading docker credentials: %w", err)
			}
			r.creds, r.credOK = s, true
		}
		cred = credentials.Credential(r.creds)
	}
	c := &auth.Client{Client: hc, Credential: cred, Cache: r.cache}
	c.SetUserAgent("zdt")
	r.auth[host] = c
	return c, nil
}

// Reference opens the repository of an image reference and returns the
// tag or digest to resolve (default "latest").
func (r *Remotes) Reference(ref string) (*remote.Repository, string, error) {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, "", err
	}
	repo, err := r.Repository(reference.Domain(n), reference.Path(n))
	if err != nil {
		return nil, "", err
	}
	tag := "latest"
	if d, ok := n.(reference.Digested); ok {
		tag = d.Digest().String()
	} else if t, ok := n.(reference.Tagged); ok {
		tag = t.Tag()
	}
	return repo, tag, nil
}

// Repository opens host/path (docker.io is Docker Hub's registry-1.docker.io).
func (r *Remotes) Repository(host, path string) (*remote.Repository, error) {
	regHost := host
	if host == "docker.io" {
		regHost = "registry-1.docker.io"
	}
	repo, err := remote.NewRepository(regHost + "/" + path)
	if err != nil {
		return nil, err
	}
	c, err := r.authClient(host)
	if err != nil {
		return nil, err
	}
	repo.Client = c
	repo.PlainHTTP = r.PlainHTTP(host)
	return repo, nil
}

// checkRedirect follows at most 10 redirects, never from https to plain
// http, and sends credentials only to the origin (scheme, host and port)
// they were given for: Go keeps Authorization for the same host name on
// another scheme or port and for its subdomains.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return fmt.Errorf("stopped after 10 redirects")
	}
	first := via[0].URL
	if first.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect from %s to %s refused: it leaves TLS", first.Redacted(), req.URL.Redacted())
	}
	if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		req.Header.Del("Authorization")
	}
	return nil
}

// Get fetches an http(s) URL with the host's TLS settings and retries. The
// caller closes the body. A status other than 200 is an error naming the URL.
func (r *Remotes) Get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	c, err := r.httpClient(req.URL.Host)
	if err != nil {
		return nil, err
	}
	if h := r.cfg.host(req.URL.Host); h.Username != "" {
		req.SetBasicAuth(h.Username, h.Password)
	}
	req.Header.Set("User-Agent", "zdt")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &StatusError{URL: url, StatusCode: resp.StatusCode, Status: resp.Status}
	}
	return resp, nil
}

// DefaultStallTimeout is how long a response may deliver less than
// stallMinBytes before it is abandoned (the default of build's
// CreateOptions.StallTimeout).
const DefaultStallTimeout = 30 * time.Second

// stallMinBytes is what a response must deliver per stall window.
const stallMinBytes = 1 << 10

// StallError is a request that stopped delivering: no answer within the
// stall timeout, or less than 1 KiB of body in a window that long.
type StallError struct {
	URL    string
	Window time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("GET %s: stalled: less than %d bytes received in %s", e.URL, stallMinBytes, e.Window)
}

// Timeout makes a stall a timeout (net.Error), which retries take as
// transient.
func (e *StallError) Timeout() bool   { return true }
func (e *StallError) Temporary() bool { return true }

// retryPolicy is oras-go's default (backoff on 429, 5xx and broken
// connections) with at most two retries of a request that timed out: each
// attempt waited a whole stall timeout already.
type retryPolicy struct{}

func (retryPolicy) Retry(attempt int, resp *http.Response, err error) (time.Duration, error) {
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() && attempt >= 2 {
		return -1, nil
	}
	return retry.DefaultPolicy.Retry(attempt, resp, err)
}

// stallTransport fails a response body that stalls or trickles: each Read
// that blocks longer than timeout cancels the request, and so does a body
// that, over reads adding up to timeout, delivered less than
// stallMinBytes. Time the caller spends between reads does not count.
type stallTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	b := &stallBody{rc: resp.Body, timeout: t.timeout, cancel: cancel, url: req.URL.Redacted()}
	b.timer = time.AfterFunc(time.Hour, func() { b.fired.Store(true); cancel() })
	b.timer.Stop()
	resp.Body = b
	return resp, nil
}

type stallBody struct {
	rc       io.ReadCloser
	timeout  time.Duration
	cancel   context.CancelFunc
	url      string
	timer    *time.Timer
	fired    atomic.Bool
	winTime  time.Duration
	winBytes int64
}

func (b *stallBody) Read(p []byte) (int, error) {
	start := time.Now()
	b.timer.Reset(b.timeout)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	b.winTime += time.Since(start)
	b.winBytes += int64(n)
	if b.winTime >= b.timeout {
		if b.winBytes < stallMinBytes && err == nil {
			b.fired.Store(true)
			b.cancel()
		}
		b.winTime, b.winBytes = 0, 0
	}
	if b.fired.Load() && err != io.EOF {
		return n, &StallError{URL: b.url, Window: b.timeout}
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel()
	return err
}

// SetStallTimeout sets how long a response may stall (see StallError).
// Call it before the first use.
func (r *Remotes) SetStallTimeout(d time.Duration) { r.stall = d }
