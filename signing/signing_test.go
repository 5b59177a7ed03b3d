package signing

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

func TestGenerateKeyPair(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "release", "s3cret")
	fi, err := os.Stat(kp.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	priv, _ := os.ReadFile(kp.PrivateKey)
	if !strings.Contains(string(priv), "ENCRYPTED SIGSTORE PRIVATE KEY") {
		t.Errorf("private key is not in cosign's format:\n%s", priv)
	}
	tr, err := os.ReadFile(filepath.Join(dir, TrustedRootFile))
	if err != nil || string(tr) != MinimalTrustedRoot {
		t.Errorf("trusted root: %q, %v", tr, err)
	}
	if len(kp.Fingerprint) != 64 {
		t.Errorf("fingerprint %q", kp.Fingerprint)
	}
	if _, err := GenerateKeyPair(ctx, KeyPairOptions{Prefix: filepath.Join(dir, "release")}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("overwriting a key pair: %v, want fs.ErrExist", err)
	}
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{{"right password", "s3cret", true}, {"wrong password", "nope", false}, {"no password", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSigner(ctx, SignOptions{Key: kp.PrivateKey, Password: func() ([]byte, error) { return []byte(tc.password), nil }})
			if tc.ok != (err == nil) {
				t.Fatalf("NewSigner: %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrKey) {
					t.Errorf("error %v does not match ErrKey", err)
				}
				if strings.Contains(err.Error(), tc.password) && tc.password != "" {
					t.Errorf("error shows the password: %v", err)
				}
				return
			}
			if s.Fingerprint() != kp.Fingerprint {
				t.Errorf("signer fingerprint %s, key pair %s", s.Fingerprint(), kp.Fingerprint)
			}
		})
	}
	if _, err := NewSigner(ctx, SignOptions{Key: "nosuchkms://key"}); !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), "no KMS provider") {
		t.Errorf("unknown KMS scheme: %v", err)
	}
	// A registered KMS scheme is recognised (and fails here: no server).
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "test")
	if _, err := NewSigner(ctx, SignOptions{Key: "hashivault://zdt-test"}); !errors.Is(err, ErrKey) || strings.Contains(err.Error(), "no KMS provider") {
		t.Errorf("hashivault:// without a server: %v", err)
	}
}

func TestSignAndVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "cosign", "")
	out, res := testBundle(t, dir, "signed", kp.PrivateKey, "", []byte("tool v1\n"))

	a, err := bundle.Open(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// The whole archive, signatures included, is reachable and intact.
	if _, err := a.Verify(ctx, bundle.VerifyOptions{}); err != nil {
		t.Fatalf("bundle verify: %v", err)
	}
	p, err := LoadPolicy(ctx, PolicyOptions{Keys: []string{kp.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	vr, err := Verify(ctx, a, p)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !vr.Verified || !vr.Signed || vr.Root != res.Root.Digest || !strings.Contains(vr.Signer, kp.Fingerprint) {
		t.Errorf("result %+v", vr)
	}
	types := map[string]json.RawMessage{}
	for _, at := range vr.Attestations {
		types[at.PredicateType] = at.Statement
	}
	if len(types) != 2 || types[PredicateProvenance] == nil || types[PredicateSBOM] == nil {
		t.Fatalf("attestations %v", vr.Attestations)
	}

	// Provenance names the spec, the tool version and every resolved item.
	var prov struct {
		Subject []struct {
			Name   string            `json:"name"`
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		Predicate struct {
			BuildDefinition struct {
				BuildType            string `json:"buildType"`
				InternalParameters   map[string]string
				ResolvedDependencies []struct {
					URI    string            `json:"uri"`
					Name   string            `json:"name"`
					Digest map[string]string `json:"digest"`
				} `json:"resolvedDependencies"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(types[PredicateProvenance], &prov); err != nil {
		t.Fatal(err)
	}
	if len(prov.Subject) != 1 || prov.Subject[0].Name != "zdt/signed" || "sha256:"+prov.Subject[0].Digest["sha256"] != res.Root.Digest.String() {
		t.Errorf("provenance subject %+v", prov.Subject)
	}
	bd := prov.Predicate.BuildDefinition
	if bd.BuildType != BuildType || bd.InternalParameters["toolVersion"] != "v0.0.0-test" {
		t.Errorf("provenance build definition %+v", bd)
	}
	deps := map[string]string{}
	for _, d := range bd.ResolvedDependencies {
		deps[d.Name] = "sha256:" + d.Digest["sha256"]
	}
	for _, li := range res.Lock.Items {
		if deps[li.Kind+"/"+li.Name] != li.Digest {
			t.Errorf("provenance has %s = %q, lock says %s", li.Key(), deps[li.Kind+"/"+li.Name], li.Digest)
		}
	}
	if deps["zdt.yaml"] == "sha256:" {
		t.Errorf("provenance does not name the spec")
	}

	// The SBOM lists every item with its digest.
	var sbom struct {
		Predicate struct {
			BOMFormat  string `json:"bomFormat"`
			Components []struct {
				Type   string `json:"type"`
				Name   string `json:"name"`
				PURL   string `json:"purl"`
				Hashes []struct{ Content string }
			} `json:"components"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(types[PredicateSBOM], &sbom); err != nil {
		t.Fatal(err)
	}
	if sbom.Predicate.BOMFormat != "CycloneDX" || len(sbom.Predicate.Components) != len(res.Items) {
		t.Fatalf("sbom %+v, items %d", sbom.Predicate, len(res.Items))
	}
	for i, c := range sbom.Predicate.Components {
		if c.Name != res.Items[i].Name || "sha256:"+c.Hashes[0].Content != res.Items[i].Digest {
			t.Errorf("sbom component %d = %+v, item %+v", i, c, res.Items[i])
		}
	}
	if c := sbom.Predicate.Components[0]; c.Type != "container" || !strings.HasPrefix(c.PURL, "pkg:oci/web@sha256%3A") {
		t.Errorf("image component %+v", c)
	}

	// The archive's own signature was written next to it.
	sb, err := os.ReadFile(ArchiveBundlePath(out))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sb), res.Digest.Encoded()) && !strings.Contains(string(sb), "messageSignature") {
		t.Errorf("archive bundle %s", sb)
	}
	if err := VerifyArchiveFile(ctx, out, ArchiveBundlePath(out), p); err != nil {
		t.Errorf("VerifyArchiveFile: %v", err)
	}

	// The root entry carries cosign's layout annotation; key material is
	// nowhere in the archive.
	var root ocispec.Descriptor
	for _, m := range a.Index.Manifests {
		if m.Annotations[manifests.AnnotationBundleRoot] == "true" {
			root = m
		}
	}
	if root.Annotations[AnnotationCosignKind] != CosignKindImageIndex {
		t.Errorf("root entry annotations %v", root.Annotations)
	}
	raw, _ := os.ReadFile(out)
	priv, _ := os.ReadFile(kp.PrivateKey)
	if strings.Contains(string(raw), "PRIVATE KEY") || strings.Contains(string(raw), string(priv[40:80])) {
		t.Error("the archive contains private key material")
	}
}

// checkBundle is what `zdt bundle verify --key` does: open, signature
// against the policy, then every blob.
func checkBundle(ctx context.Context, path string, p Policy) (Result, error) {
	a, err := bundle.Open(ctx, path)
	if err != nil {
		return Result{}, err
	}
	defer a.Close()
	res, err := Verify(ctx, a, p)
	if err != nil {
		return res, err
	}
	_, err = a.Verify(ctx, bundle.VerifyOptions{})
	return res, err
}

// rewriteIndex rewrites index.json of an archive's entries with edit.
func rewriteIndex(t *testing.T, entries []tarEntry, edit func(*ocispec.Index)) []tarEntry {
	t.Helper()
	var idx ocispec.Index
	if err := json.Unmarshal(entryData(t, entries, "index.json"), &idx); err != nil {
		t.Fatal(err)
	}
	edit(&idx)
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	return setEntry(entries, "index.json", b)
}

func dropRef(idx *ocispec.Index, suffix string) {
	var keep []ocispec.Descriptor
	for _, m := range idx.Manifests {
		if !strings.HasSuffix(m.Annotations[manifests.AnnotationRefName], suffix) {
			keep = append(keep, m)
		}
	}
	idx.Manifests = keep
}

func TestVerifyRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "cosign", "")
	other := testKey(t, filepath.Join(dir, "other"), "cosign", "")
	signed, resA := testBundle(t, dir, "a", kp.PrivateKey, "", []byte("tool a\n"))
	bSigned, resB := testBundle(t, dir, "b", kp.PrivateKey, "", []byte("tool b\n"))
	byOther, _ := testBundle(t, dir, "c", other.PrivateKey, "", []byte("tool c\n"))
	unsigned, _ := testBundle(t, dir, "d", "", "", []byte("tool d\n"))
	policy, err := LoadPolicy(ctx, PolicyOptions{Keys: []string{kp.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	insecure, err := LoadPolicy(ctx, PolicyOptions{InsecureSkipSignature: true})
	if err != nil {
		t.Fatal(err)
	}
	noAtt := policy
	noAtt.RequireAttestations = nil

	write := func(name string, entries []tarEntry) string {
		p := filepath.Join(dir, name+".zdt")
		writeEntries(t, p, entries)
		return p
	}
	tagA := strings.ReplaceAll(resA.Root.Digest.String(), ":", "-")
	tagB := strings.ReplaceAll(resB.Root.Digest.String(), ":", "-")

	// Removed signature / attestations: their index.json entries dropped.
	noSig := write("nosig", rewriteIndex(t, readEntries(t, signed), func(idx *ocispec.Index) { dropRef(idx, ".sig") }))
	noAttFile := write("noatt", rewriteIndex(t, readEntries(t, signed), func(idx *ocispec.Index) { dropRef(idx, ".att") }))

	// Swapped root: bundle b carrying a's signature and attestations,
	// renamed to b's tags (a valid signature by a trusted key, over a's root).
	aEntries := readEntries(t, signed)
	swapped := rewriteIndex(t, readEntries(t, bSigned), func(idx *ocispec.Index) {
		dropRef(idx, ".sig")
		dropRef(idx, ".att")
		var ai ocispec.Index
		if err := json.Unmarshal(entryData(t, aEntries, "index.json"), &ai); err != nil {
			t.Fatal(err)
		}
		for _, m := range ai.Manifests {
			if r := m.Annotations[manifests.AnnotationRefName]; strings.HasPrefix(r, tagA) {
				m.Annotations = map[string]string{manifests.AnnotationRefName: tagB + strings.TrimPrefix(r, tagA)}
				idx.Manifests = append(idx.Manifests, m)
			}
		}
	})
	for _, e := range aEntries {
		if strings.HasPrefix(e.Hdr.Name, "blobs/sha256/") {
			found := false
			for _, s := range swapped {
				found = found || s.Hdr.Name == e.Hdr.Name
			}
			if !found {
				swapped = append(swapped, e)
			}
		}
	}
	swappedFile := write("swapped", swapped)

	for _, tc := range []struct {
		name   string
		path   string
		policy Policy
		want   error
		msg    string // the error must name this
		// sigOnly runs Verify alone (the archive is refused anyway for
		// its unreachable blobs).
		sigOnly bool
	}{
		{"signed", signed, policy, nil, "", false},
		{"unsigned", unsigned, policy, ErrUnsigned, "has no signature", false},
		{"unsigned, insecure flag", unsigned, insecure, nil, "", false},
		{"signed, no policy", signed, Policy{}, ErrNoPolicy, "--key", false},
		{"removed signature", noSig, policy, ErrUnsigned, tagA + ".sig", false},
		{"signature from another key", byOther, policy, ErrUntrusted, kp.Fingerprint, false},
		{"swapped root manifest", swappedFile, policy, ErrWrongDigest, resA.Root.Digest.String(), false},
		{"removed attestations", noAttFile, policy, ErrAttestation, PredicateProvenance, false},
		{"removed attestations, not required", noAttFile, noAtt, nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := checkBundle(ctx, tc.path, tc.policy)
			if tc.sigOnly {
				a, oerr := bundle.Open(ctx, tc.path)
				if oerr != nil {
					t.Fatal(oerr)
				}
				defer a.Close()
				res, err = Verify(ctx, a, tc.policy)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tc.policy.InsecureSkipSignature != (len(res.Warnings) > 0) || tc.policy.InsecureSkipSignature == res.Verified {
					t.Errorf("result %+v", res)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("error %v, want %v (and bundle.ErrVerification)", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not name %q", err, tc.msg)
			}
		})
	}
	if _, err := checkBundle(ctx, swappedFile, policy); err != nil && !strings.Contains(err.Error(), resB.Root.Digest.String()) {
		t.Errorf("swapped root error does not name the bundle's root: %v", err)
	}

	// A flipped byte in any blob of a signed bundle is refused, naming
	// the blob.
	entries := readEntries(t, signed)
	n := 0
	for i, e := range entries {
		hex, ok := strings.CutPrefix(e.Hdr.Name, "blobs/sha256/")
		if !ok || len(e.Data) == 0 {
			continue
		}
		n++
		t.Run("flipped byte in "+hex[:12], func(t *testing.T) {
			mod := append([]tarEntry(nil), entries...)
			data := append([]byte(nil), e.Data...)
			data[len(data)/2] ^= 0x01
			mod[i].Data = data
			p := write("flip-"+hex[:12], mod)
			_, err := checkBundle(ctx, p, policy)
			if !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("flipped byte: %v, want a verification error", err)
			}
			if !strings.Contains(err.Error(), hex) {
				t.Errorf("error does not name blob %s: %v", hex, err)
			}
		})
	}
	if n < 10 {
		t.Errorf("only %d blobs flipped", n)
	}
}

func TestPolicyFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "cosign", "")
	pub, _ := os.ReadFile(kp.PublicKey)
	signed, _ := testBundle(t, dir, "p", kp.PrivateKey, "", []byte("tool\n"))
	indent := "      " + strings.ReplaceAll(strings.TrimSpace(string(pub)), "\n", "\n      ")
	for _, tc := range []struct {
		name, policy string
		loadErr      bool
		verifyErr    error
	}{
		{"key path", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeys:\n  - path: cosign.pub\n", false, nil},
		{"inline pem", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeys:\n  - pem: |\n" + indent + "\n", false, nil},
		{"json", `{"apiVersion":"zdt.dev/v1alpha1","kind":"TrustPolicy","keys":[{"path":"cosign.pub"}],"requireAttestations":[]}`, false, nil},
		{"requires an attestation zdt does not make", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeys:\n  - path: cosign.pub\nrequireAttestations: [https://spdx.dev/Document]\n", false, ErrAttestation},
		{"no keys", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\n", false, ErrNoPolicy},
		{"unknown field", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeyz: []\n", true, nil},
		{"wrong kind", "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\n", true, nil},
		{"two sources in one key", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeys:\n  - path: cosign.pub\n    kms: awskms:///x\n", true, nil},
		{"missing key file", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeys:\n  - path: nope.pub\n", true, nil},
		{"keyless without a trusted root", "apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeyless:\n  identities: [{issuer: x, subject: y}]\n", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pf := filepath.Join(dir, "policy.yaml")
			writeFile(t, pf, []byte(tc.policy))
			p, err := LoadPolicy(ctx, PolicyOptions{File: pf})
			if tc.loadErr {
				if !errors.Is(err, ErrPolicyFile) {
					t.Fatalf("LoadPolicy: %v, want ErrPolicyFile", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = checkBundle(ctx, signed, p)
			if tc.verifyErr == nil && err != nil || tc.verifyErr != nil && !errors.Is(err, tc.verifyErr) {
				t.Fatalf("verify: %v, want %v", err, tc.verifyErr)
			}
		})
	}
	if _, err := LoadPolicy(ctx, PolicyOptions{Keys: []string{kp.PublicKey}, InsecureSkipSignature: true}); !errors.Is(err, ErrPolicyFile) {
		t.Errorf("--key with --insecure-skip-signature: %v", err)
	}
}
