package signing

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testTrustedRoot is a sigstore trusted root with one certificate
// authority (a fresh self-signed CA), what a keyless policy names.
func testTrustedRoot(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fulcio", Organization: []string{"zdt"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(nil, `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","certificateAuthorities":[{"subject":{"organization":"zdt","commonName":"test fulcio"},"uri":"https://fulcio.test","certChain":{"certificates":[{"rawBytes":%q}]},"validFor":{"start":"2020-01-01T00:00:00Z"}}]}`,
		base64.StdEncoding.EncodeToString(der))
}

// TestPortable: the self-contained policy install --agent records trusts
// exactly what the install's --key/--policy trusted (keys by fingerprint,
// keyless identities and CAs, attestations), after every file those
// named is gone, and verifies the same signed bundle.
func TestPortable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k1 := testKey(t, dir, "one", "")
	k2 := testKey(t, dir, "two", "")
	k3 := testKey(t, dir, "three", "")
	pem3, _ := os.ReadFile(k3.PublicKey)
	signed, _ := testBundle(t, dir, "p", k1.PrivateKey, "", []byte("tool\n"))
	writeFile(t, filepath.Join(dir, "policies", "root.json"), testTrustedRoot(t))
	if err := os.Rename(k2.PublicKey, filepath.Join(dir, "policies", "two.pub")); err != nil {
		t.Fatal(err)
	}
	indent := "      " + strings.ReplaceAll(strings.TrimSpace(string(pem3)), "\n", "\n      ")
	keyless := "keyless:\n  trustedRoot: root.json\n  identities:\n    - issuer: https://issuer.test\n      subjectRegExp: ^https://github.com/acme/\n"
	for _, tc := range []struct {
		name   string
		opts   PolicyOptions
		policy string
		want   []string // attestations
		roots  bool
	}{
		{name: "--key only", opts: PolicyOptions{Keys: []string{k1.PublicKey}}, want: DefaultAttestations},
		{name: "--key and a policy with a relative key, a pem, keyless and attestations",
			opts:   PolicyOptions{Keys: []string{k1.PublicKey}},
			policy: "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeys:\n  - path: two.pub\n  - pem: |\n" + indent + "\n" + keyless + "requireAttestations: [https://slsa.dev/provenance/v1]\n",
			want:   []string{PredicateProvenance}, roots: true},
		{name: "a policy requiring no attestation", opts: PolicyOptions{Keys: []string{k1.PublicKey}},
			policy: "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nrequireAttestations: []\n", want: []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if tc.policy != "" {
				opts.File = filepath.Join(dir, "policies", "policy.yaml")
				writeFile(t, opts.File, []byte(tc.policy))
			}
			orig, err := LoadPolicy(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			pf, trustedRoot, err := Portable(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if (trustedRoot != nil) != tc.roots {
				t.Fatalf("trusted root returned: %v, want %v", trustedRoot != nil, tc.roots)
			}
			// Elsewhere, with nothing the install's flags named.
			other := t.TempDir()
			if pf.Keyless != nil {
				pf.Keyless.TrustedRoot = "agent-root.json"
				writeFile(t, filepath.Join(other, "agent-root.json"), trustedRoot)
			}
			enc := pf.Encode()
			if !slices.Equal(enc, pf.Encode()) {
				t.Fatal("encoding is not deterministic")
			}
			writeFile(t, filepath.Join(other, "policy.yaml"), enc)
			got, err := LoadPolicy(ctx, PolicyOptions{File: filepath.Join(other, "policy.yaml")})
			if err != nil {
				t.Fatalf("loading the portable policy: %v\n%s", err, enc)
			}
			fps := func(p Policy) []string {
				var out []string
				for _, k := range p.Keys {
					out = append(out, k.Fingerprint)
				}
				return out
			}
			if !slices.Equal(fps(got), fps(orig)) {
				t.Errorf("keys %v, want %v", fps(got), fps(orig))
			}
			if !slices.Equal(got.Identities, orig.Identities) {
				t.Errorf("identities %+v, want %+v", got.Identities, orig.Identities)
			}
			if (got.RootCerts == nil) != (orig.RootCerts == nil) || got.RootCerts != nil && !got.RootCerts.Equal(orig.RootCerts) {
				t.Error("keyless CAs differ")
			}
			if !slices.Equal(got.RequireAttestations, tc.want) || !slices.Equal(orig.RequireAttestations, tc.want) {
				t.Errorf("attestations %v (install: %v), want %v", got.RequireAttestations, orig.RequireAttestations, tc.want)
			}
			if _, err := checkBundle(ctx, signed, got); err != nil {
				t.Errorf("the portable policy refuses the bundle the install's accepts: %v", err)
			}
		})
	}
	if _, _, err := Portable(ctx, PolicyOptions{InsecureSkipSignature: true}); !errors.Is(err, ErrPolicyFile) {
		t.Errorf("--insecure-skip-signature: %v, want ErrPolicyFile", err)
	}
	if _, _, err := Portable(ctx, PolicyOptions{}); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("no policy: %v, want ErrNoPolicy", err)
	}
	if _, _, err := Portable(ctx, PolicyOptions{Keys: []string{filepath.Join(dir, "nope.pub")}}); !errors.Is(err, ErrKey) {
		t.Errorf("missing key: %v, want ErrKey", err)
	}
}
