package signing

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/signature"
	"gopkg.in/yaml.v3"
)

// PolicyAPIVersion and PolicyKind identify a trust policy file.
const (
	PolicyAPIVersion = "zdt.dev/v1alpha1"
	PolicyKind       = "TrustPolicy"
)

// MaxPolicySize bounds a policy file and the files it names.
const MaxPolicySize = 1 << 20

// PolicyFile is the on-disk trust policy (YAML or JSON):
//
//	apiVersion: zdt.dev/v1alpha1
//	kind: TrustPolicy
//	keys:                          # trusted public keys (any one suffices)
//	  - path: release.pub          # relative to this file
//	  - kms: awskms:///alias/release
//	  - pem: |
//	      -----BEGIN PUBLIC KEY-----
//	      ...
//	keyless:                       # or: certificates from a CA of an offline trusted root
//	  trustedRoot: trusted-root.json
//	  identities:
//	    - issuer: https://token.actions.githubusercontent.com
//	      subjectRegExp: ^https://github.com/acme/platform/
//	requireAttestations:           # default: both of these
//	  - https://slsa.dev/provenance/v1
//	  - https://cyclonedx.org/bom
type PolicyFile struct {
	APIVersion          string         `yaml:"apiVersion" json:"apiVersion"`
	Kind                string         `yaml:"kind" json:"kind"`
	Keys                []PolicyKey    `yaml:"keys,omitempty" json:"keys"`
	Keyless             *PolicyKeyless `yaml:"keyless,omitempty" json:"keyless"`
	RequireAttestations *[]string      `yaml:"requireAttestations,omitempty" json:"requireAttestations"`
}

// PolicyKey is one trusted key: exactly one of Path, KMS or PEM.
type PolicyKey struct {
	Path string `yaml:"path,omitempty" json:"path"`
	KMS  string `yaml:"kms,omitempty" json:"kms"`
	PEM  string `yaml:"pem,omitempty" json:"pem"`
}

// PolicyKeyless trusts certificates issued by the CAs of an offline sigstore
// trusted root to one of the identities.
type PolicyKeyless struct {
	TrustedRoot string           `yaml:"trustedRoot" json:"trustedRoot"`
	Identities  []PolicyIdentity `yaml:"identities" json:"identities"`
}

// PolicyIdentity is a certificate identity, as cosign's
// --certificate-identity(-regexp) and --certificate-oidc-issuer(-regexp).
type PolicyIdentity struct {
	Issuer        string `yaml:"issuer,omitempty" json:"issuer"`
	IssuerRegExp  string `yaml:"issuerRegExp,omitempty" json:"issuerRegExp"`
	Subject       string `yaml:"subject,omitempty" json:"subject"`
	SubjectRegExp string `yaml:"subjectRegExp,omitempty" json:"subjectRegExp"`
}

// Policy is a loaded trust policy. The zero value trusts nothing, and
// Verify refuses every bundle with it.
type Policy struct {
	// Keys are the trusted public keys.
	Keys []TrustedKey
	// Identities and the CA pools of a trusted root, for certificate-bearing
	// signatures.
	Identities    []cosign.Identity
	RootCerts     *x509.CertPool
	Intermediates *x509.CertPool
	// RequireAttestations are predicate types that must each be attested by
	// a trusted signer (default from LoadPolicy: provenance and SBOM).
	RequireAttestations []string
	// InsecureSkipSignature accepts any bundle, signed or not, without
	// checking signatures; Verify reports a warning.
	InsecureSkipSignature bool
}

// TrustedKey is one trusted public key.
type TrustedKey struct {
	// Name says where it came from (file path or KMS URI).
	Name string
	// Fingerprint is the sha256 (hex) of the key's DER encoding.
	Fingerprint string
	verifier    signature.Verifier
}

// PolicyOptions are the ways a policy is given on the command line.
type PolicyOptions struct {
	// Keys are public key files or KMS URIs (--key).
	Keys []string
	// File is a PolicyFile (--policy).
	File string
	// InsecureSkipSignature is --insecure-skip-signature.
	InsecureSkipSignature bool
}

// DefaultAttestations are the predicate types a policy requires unless it
// says otherwise: the ones `zdt bundle create --key` attaches.
var DefaultAttestations = []string{PredicateProvenance, PredicateSBOM}

// LoadPolicy builds a Policy from --key values, a --policy file, or the
// insecure flag (which cannot be combined with the other two). With none
// of them it returns an empty policy, which Verify refuses (ErrNoPolicy).
func LoadPolicy(ctx context.Context, opts PolicyOptions) (Policy, error) {
	p := Policy{RequireAttestations: DefaultAttestations}
	if opts.InsecureSkipSignature {
		if len(opts.Keys) > 0 || opts.File != "" {
			return Policy{}, fmt.Errorf("%w: --insecure-skip-signature cannot be combined with --key or --policy", ErrPolicyFile)
		}
		p.InsecureSkipSignature = true
		return p, nil
	}
	for _, k := range opts.Keys {
		tk, err := loadTrustedKey(ctx, k)
		if err != nil {
			return Policy{}, err
		}
		p.Keys = append(p.Keys, tk)
	}
	if opts.File != "" {
		if err := p.loadFile(ctx, opts.File); err != nil {
			return Policy{}, err
		}
	}
	return p, nil
}

// Empty reports whether the policy trusts nothing and skips nothing.
func (p Policy) Empty() bool {
	return len(p.Keys) == 0 && len(p.Identities) == 0 && !p.InsecureSkipSignature
}

func loadTrustedKey(ctx context.Context, ref string) (TrustedKey, error) {
	v, pemBytes, err := loadVerifier(ctx, ref)
	if err != nil {
		return TrustedKey{}, err
	}
	fp, err := fingerprintPEM(pemBytes)
	if err != nil {
		return TrustedKey{}, err
	}
	return TrustedKey{Name: ref, Fingerprint: fp, verifier: v}, nil
}

func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPolicySize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, MaxPolicySize)
	}
	return b, nil
}

// readPolicyFile reads and decodes a policy file (unknown fields are an
// error).
func readPolicyFile(file string) (PolicyFile, error) {
	b, err := readBounded(file)
	if err != nil {
		return PolicyFile{}, fmt.Errorf("%w: %v", ErrPolicyFile, err)
	}
	var pf PolicyFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&pf); err != nil {
		return PolicyFile{}, fmt.Errorf("%w %s: %v", ErrPolicyFile, file, err)
	}
	if pf.APIVersion != PolicyAPIVersion || pf.Kind != PolicyKind {
		return PolicyFile{}, fmt.Errorf("%w %s: apiVersion must be %q and kind %q", ErrPolicyFile, file, PolicyAPIVersion, PolicyKind)
	}
	return pf, nil
}

// relTo resolves a path a policy file names: relative to the file.
func relTo(file, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(file), p)
}

func (p *Policy) loadFile(ctx context.Context, file string) error {
	pf, err := readPolicyFile(file)
	if err != nil {
		return err
	}
	rel := func(p string) string { return relTo(file, p) }
	for i, k := range pf.Keys {
		n := 0
		for _, s := range []string{k.Path, k.KMS, k.PEM} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%w %s: keys[%d]: give exactly one of path, kms, pem", ErrPolicyFile, file, i)
		}
		var tk TrustedKey
		switch {
		case k.Path != "":
			tk, err = loadTrustedKey(ctx, rel(k.Path))
		case k.KMS != "":
			tk, err = loadTrustedKey(ctx, k.KMS)
		default:
			var v signature.Verifier
			if v, err = verifierFromPEM([]byte(k.PEM)); err == nil {
				var fp string
				if fp, err = fingerprintPEM([]byte(k.PEM)); err == nil {
					tk = TrustedKey{Name: fmt.Sprintf("%s keys[%d]", file, i), Fingerprint: fp, verifier: v}
				}
			}
		}
		if err != nil {
			return fmt.Errorf("%w %s: keys[%d]: %v", ErrPolicyFile, file, i, err)
		}
		p.Keys = append(p.Keys, tk)
	}
	if kl := pf.Keyless; kl != nil {
		if kl.TrustedRoot == "" || len(kl.Identities) == 0 {
			return fmt.Errorf("%w %s: keyless needs a trustedRoot and at least one identity", ErrPolicyFile, file)
		}
		tb, err := readBounded(rel(kl.TrustedRoot))
		if err != nil {
			return fmt.Errorf("%w %s: keyless.trustedRoot: %v", ErrPolicyFile, file, err)
		}
		tr, err := root.NewTrustedRootFromJSON(tb)
		if err != nil {
			return fmt.Errorf("%w %s: keyless.trustedRoot: %v", ErrPolicyFile, file, err)
		}
		p.RootCerts, p.Intermediates = x509.NewCertPool(), x509.NewCertPool()
		n := 0
		for _, ca := range tr.FulcioCertificateAuthorities() {
			fca, ok := ca.(*root.FulcioCertificateAuthority)
			if !ok || fca.Root == nil {
				continue
			}
			p.RootCerts.AddCert(fca.Root)
			for _, c := range fca.Intermediates {
				p.Intermediates.AddCert(c)
			}
			n++
		}
		if n == 0 {
			return fmt.Errorf("%w %s: keyless.trustedRoot lists no certificate authority", ErrPolicyFile, file)
		}
		for i, id := range kl.Identities {
			if (id.Issuer == "") == (id.IssuerRegExp == "") || (id.Subject == "") == (id.SubjectRegExp == "") {
				return fmt.Errorf("%w %s: keyless.identities[%d]: give one of issuer/issuerRegExp and one of subject/subjectRegExp", ErrPolicyFile, file, i)
			}
			p.Identities = append(p.Identities, cosign.Identity{Issuer: id.Issuer, IssuerRegExp: id.IssuerRegExp, Subject: id.Subject, SubjectRegExp: id.SubjectRegExp})
		}
	}
	if pf.RequireAttestations != nil {
		p.RequireAttestations = *pf.RequireAttestations
	}
	return nil
}
