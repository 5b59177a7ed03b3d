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
// ROOT/var/lib/zdt/tls.
func TLSDir(root string) string { return filepath.Join(root, "var/lib/zdt/tls") }

// LoadOrCreateCA loads the CA in dir (ca.crt, ca.key), creating it (ECDSA
// P-256, key mode 0600, written temp + fsync + rename) when absent or
// expiring within a day.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if ca, err := loadCA(certPath, keyPath); err == nil && time.Until(ca.Cert.NotAfter) > 24*time.Hour {
		return ca, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("loading CA from %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
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
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
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

func loadCA(certPath, keyPath string) (*CA, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyPath)
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
