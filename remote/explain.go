package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// StatusError is an answer other than 200 to Remotes.Get.
type StatusError struct {
	URL        string
	StatusCode int
	Status     string
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

// HintError is a request's error with what zdt knows about its likely cause
// and what to change (Explain).
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string { return e.Err.Error() + " (" + e.Hint + ")" }
func (e *HintError) Unwrap() error { return e.Err }

// probeTimeout bounds the TLS handshake Explain tries on a host reached
// over plain HTTP.
const probeTimeout = 2 * time.Second

// Explain adds a hint to err, the error of a request to host (HOST[:PORT])
// through these Remotes, when its cause is one zdt can name:
//
//   - a registry that speaks TLS reached over plain HTTP (a loopback host
//     by default, or plainHTTP in the registry config), found by trying a
//     TLS handshake with it;
//   - a plain-HTTP registry reached over HTTPS;
//   - a certificate signed by an unknown authority, or for another name:
//     --registry-ca or the registry config's ca;
//   - 401 or 403: which credentials were sent, and where they came from
//     (the --registry-config file, the Docker config and its path, or
//     none).
//
// Other errors, and nil, are returned as they are.
func (r *Remotes) Explain(ctx context.Context, host string, err error) error {
	if err == nil || errors.As(err, new(*HintError)) {
		return err
	}
	if hint := r.hint(ctx, host, err); hint != "" {
		return &HintError{Err: err, Hint: hint}
	}
	return err
}

func (r *Remotes) hint(ctx context.Context, host string, err error) string {
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	var status *StatusError
	var resp *errcode.ErrorResponse
	code := 0
	switch {
	case errors.As(err, &status):
		code = status.StatusCode
	case errors.As(err, &resp):
		code = resp.StatusCode
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		code = http.StatusUnauthorized // asked for basic auth, had none to send
	}
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("the certificate of %s is signed by an authority this machine does not trust: give its CA with --registry-ca %s=CA.pem, or ca: in --registry-config", host, host)
	case errors.As(err, &badName):
		return fmt.Sprintf("the certificate of %s is not for that name (%v): reach it by a name the certificate holds, or set insecure: true for it in --registry-config", host, badName.Certificate.DNSNames)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("%s speaks plain HTTP: allow it with --plain-http-registry %s, or plainHTTP: true in --registry-config", host, host)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		what := "refused"
		if code == http.StatusUnauthorized {
			what = "needs credentials"
		}
		return fmt.Sprintf("%s %s; credentials sent: %s", host, what, r.CredentialSource(ctx, host))
	case code == http.StatusNotFound:
		return ""
	}
	var stall *StallError
	if errors.As(err, &stall) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return "" // no answer at all: nothing to probe
	}
	if r.PlainHTTP(host) && speaksTLS(ctx, host) {
		why := "as a loopback host, by default"
		if h := r.cfg.host(host); h.PlainHTTP != nil {
			why = "as the registry config says"
		}
		return fmt.Sprintf("%s speaks TLS but was reached over plain HTTP (%s): set plainHTTP: false for it in --registry-config, with its ca: or --registry-ca %s=CA.pem", host, why, host)
	}
	return ""
}

// speaksTLS reports whether host[:port] (port 80 when none is given, as a
// plain-HTTP client would use) completes a TLS handshake.
func speaksTLS(ctx context.Context, host string) bool {
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(strings.Trim(host, "[]"), "80")
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} // only asks whether it speaks TLS; nothing is sent
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// CredentialSource says which credentials requests to host carry and where
// they come from: a username from the --registry-config file, one (or an
// identity token) from the Docker config, or none (naming where zdt
// looked).
func (r *Remotes) CredentialSource(ctx context.Context, host string) string {
	if h := r.cfg.host(host); h.Username != "" || h.Password != "" {
		from := "the registry config"
		if r.cfg != nil && r.cfg.File != "" {
			from = "--registry-config " + r.cfg.File
		}
		return fmt.Sprintf("username %q from %s", h.Username, from)
	}
	path := dockerConfigPath()
	r.mu.Lock()
	store, ok := r.creds, r.credOK
	r.mu.Unlock()
	if !ok {
		s, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return fmt.Sprintf("none (reading the Docker config %s: %v)", path, err)
		}
		store = s
	}
	addr := credentials.ServerAddressFromHostname(host)
	if host == "docker.io" || host == "registry-1.docker.io" {
		addr = credentials.ServerAddressFromRegistry("docker.io")
	}
	cred, err := store.Get(ctx, addr)
	switch {
	case err != nil:
		return fmt.Sprintf("none (the Docker config %s: %v)", path, err)
	case cred.Username != "":
		return fmt.Sprintf("username %q from the Docker config %s", cred.Username, path)
	case cred.RefreshToken != "" || cred.AccessToken != "":
		return fmt.Sprintf("a token from the Docker config %s", path)
	}
	return fmt.Sprintf("none (no entry for %s in --registry-config or the Docker config %s; add one, or run docker login %s)", host, path, host)
}

// dockerConfigPath is the Docker config file credentials are read from.
func dockerConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "~/.docker/config.json"
	}
	return filepath.Join(home, ".docker", "config.json")
}
