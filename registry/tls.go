package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// Lifetimes of the generated certificates.
const (
	// CALifetime is the lifetime of a generated CA (it is kept and reused).
	CALifetime = 10 * 365 * 24 * time.Hour
	// ServerCertLifetime is the lifetime of a server certificate issued by
	// the local CA; Serve re-issues it on start and before it expires.
	ServerCertLifetime = 7 * 24 * time.Hour
)

// CA is a local certificate authority whose files live in a directory.
type CA struct {
	// CertPath is the CA certificate (PEM), what clients trust.
	CertPath string
	Cert     *x509.Certificate
	key      *ecdsa.PrivateKey
}

// TLSDir is where zdt keeps its CA under an install root:
// ROOT/var/lib/zdt/tls (layout.TLSDir).
func TLSDir(root string) string { return filepath.Join(root, filepath.FromSlash(layout.TLSDir)) }

// LoadOrCreateCA loads the CA in dir (ca.crt, ca.key), creating it (ECDSA
// P-256, key mode 0600, written temp + fsync + rename) when absent or
// expiring within a day. dir is trusted as given (a flag); for the CA of
// an install root use OpenCA.
func LoadOrCreateCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening CA directory: %w", err)
	}
	defer root.Close()
	return loadOrCreateCA(root, dir)
}

// OpenCA loads or creates (as LoadOrCreateCA) the CA of `zdt serve` under
// the install root rootDir, layout.TLSDir, through an os.Root opened at
// rootDir: when that directory, or a parent, is a symlink leading out of
// the root, it fails (matching ErrOutsideRoot) and writes nothing.
func OpenCA(rootDir string) (*CA, error) {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return nil, fmt.Errorf("opening install root %s: %w", rootDir, err)
	}
	defer root.Close()
	if err := root.MkdirAll(layout.TLSDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA: %w", rootedError(root, rootDir, layout.TLSDir, err))
	}
	dir, err := root.OpenRoot(layout.TLSDir)
	if err != nil {
		return nil, fmt.Errorf("opening CA directory: %w", rootedError(root, rootDir, layout.TLSDir, err))
	}
	defer dir.Close()
	return loadOrCreateCA(dir, TLSDir(rootDir))
}

// loadOrCreateCA is LoadOrCreateCA in root, whose path is dir.
func loadOrCreateCA(root *os.Root, dir string) (*CA, error) {
	certPath := filepath.Join(dir, "ca.crt")
	if ca, err := loadCA(root, certPath); err == nil && time.Until(ca.Cert.NotAfter) > 24*time.Hour {
		return ca, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "zdt local registry CA " + host, Organization: []string{"zdt"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	// The key first: a cert without its key is never left behind.
	if err := fsutil.WriteFileAtomic(root, "ca.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, fmt.Errorf("writing CA key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(root, "ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("writing CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{CertPath: certPath, Cert: cert, key: key}, nil
}

func loadCA(root *os.Root, certPath string) (*CA, error) {
	cb, err := root.ReadFile("ca.crt")
	if err != nil {
		return nil, err
	}
	kb, err := root.ReadFile("ca.key")
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(cb, kb)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("%s is not an ECDSA CA", certPath)
	}
	return &CA{CertPath: certPath, Cert: cert, key: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Issue makes a server certificate for hostnames (DNS names or IP
// addresses) valid for lifetime. DNS names come first in the SANs and the
// first DNS name (else the first address) is the subject's common name.
func (ca *CA) Issue(hostnames []string, lifetime time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var dns []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, h := range hostnames {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	cn := ""
	if len(dns) > 0 {
		cn = dns[0]
	} else if len(ips) > 0 {
		cn = ips[0].String()
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"zdt"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// rotatingCert serves a CA-issued certificate and re-issues it when less
// than a third of its lifetime is left. Safe for concurrent use.
type rotatingCert struct {
	ca        *CA
	hostnames []string
	lifetime  time.Duration
	mu        sync.Mutex
	cur       *tls.Certificate
}

func (r *rotatingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil || time.Until(r.cur.Leaf.NotAfter) < r.lifetime/3 {
		c, err := r.ca.Issue(r.hostnames, r.lifetime)
		if err != nil {
			return nil, err
		}
		r.cur = c
	}
	return r.cur, nil
}

// ServerHostnames are the SANs of the server certificate Serve issues for
// a listener at addr: hostnames (default DefaultHostnames) plus addr's host
// unless it is a wildcard address (0.0.0.0, ::) or empty. A client that
// dials the --addr it was given then finds that name in the certificate.
func ServerHostnames(addr string, hostnames []string) []string {
	out := append([]string(nil), hostnames...)
	if len(out) == 0 {
		out = DefaultHostnames()
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return out
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return out
	}
	for _, h := range out {
		if h == host {
			return out
		}
	}
	return append(out, host)
}

// DefaultHostnames are the SANs of a generated server certificate when no
// --hostname is given: the machine's hostname, localhost and the loopback
// addresses.
func DefaultHostnames() []string {
	var out []string
	if h, err := os.Hostname(); err == nil && h != "" {
		out = append(out, h)
	}
	return append(out, "localhost", "127.0.0.1", "::1")
}
