package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// keyPair is a certificate and its key, both PEM.
type keyPair struct {
	cert, key []byte
	x509      *x509.Certificate
	priv      *ecdsa.PrivateKey
}

// certs is what the control plane and its clients need, generated fresh for
// each cluster the way envtest does: one CA signs the serving certificate
// (127.0.0.1, localhost) and the client certificates; the service-account
// key pair is separate. etcd has its own CA, as kubeadm sets it up: it signs
// etcd's serving certificate and the client certificates etcd accepts, one
// for kube-apiserver and one for the tests (etcdClient).
type certs struct {
	ca, serving, admin, zdt keyPair
	saPub, saKey            []byte

	etcdCA, etcdServing, etcdAPIServer, etcdClient keyPair

	// The identities of kube-controller-manager, kube-scheduler and kwok
	// (system:masters, each its own name in the audit log).
	controllerManager, scheduler, kwok keyPair
}

func newCerts() (*certs, error) {
	var c certs
	var err error
	if c.ca, err = newCert(nil, pkix.Name{CommonName: "kubetest-ca"}, true, nil); err != nil {
		return nil, err
	}
	if c.serving, err = newCert(&c.ca, pkix.Name{CommonName: "kube-apiserver"}, false, func(t *x509.Certificate) {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		t.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1)}
		t.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
	}); err != nil {
		return nil, err
	}
	client := func(t *x509.Certificate) { t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }
	// system:masters bypasses RBAC; the two users differ only in name, so
	// the audit log can tell zdt's requests from the test's own.
	if c.admin, err = newCert(&c.ca, pkix.Name{CommonName: AdminUser, Organization: []string{"system:masters"}}, false, client); err != nil {
		return nil, err
	}
	if c.zdt, err = newCert(&c.ca, pkix.Name{CommonName: ZdtUser, Organization: []string{"system:masters"}}, false, client); err != nil {
		return nil, err
	}
	for _, id := range []struct {
		kp   *keyPair
		name string
	}{{&c.controllerManager, ControllerManagerUser}, {&c.scheduler, SchedulerUser}, {&c.kwok, KwokUser}} {
		if *id.kp, err = newCert(&c.ca, pkix.Name{CommonName: id.name, Organization: []string{"system:masters"}}, false, client); err != nil {
			return nil, err
		}
	}
	if c.etcdCA, err = newCert(nil, pkix.Name{CommonName: "kubetest-etcd-ca"}, true, nil); err != nil {
		return nil, err
	}
	if c.etcdServing, err = newCert(&c.etcdCA, pkix.Name{CommonName: "etcd"}, false, func(t *x509.Certificate) {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		t.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		t.DNSNames = []string{"localhost"}
	}); err != nil {
		return nil, err
	}
	if c.etcdAPIServer, err = newCert(&c.etcdCA, pkix.Name{CommonName: "kube-apiserver-etcd-client"}, false, client); err != nil {
		return nil, err
	}
	if c.etcdClient, err = newCert(&c.etcdCA, pkix.Name{CommonName: "kubetest-etcd-client"}, false, client); err != nil {
		return nil, err
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	c.saPub = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	kd, err := x509.MarshalECPrivateKey(sa)
	if err != nil {
		return nil, err
	}
	c.saKey = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	return &c, nil
}

func newCert(parent *keyPair, subject pkix.Name, isCA bool, edit func(*x509.Certificate)) (keyPair, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return keyPair{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if edit != nil {
		edit(tmpl)
	}
	signer, signerKey := tmpl, priv
	if parent != nil {
		signer, signerKey = parent.x509, parent.priv
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &priv.PublicKey, signerKey)
	if err != nil {
		return keyPair{}, fmt.Errorf("certificate %s: %w", subject.CommonName, err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	kd, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
		x509: parsed,
		priv: priv,
	}, nil
}
