package signing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/in-toto/in-toto-golang/in_toto"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/cosign/v2/pkg/types"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// maxSignatureLayers bounds the signatures and attestations Verify reads.
const maxSignatureLayers = 64

// Everything readSignatures reads is held before any of it is verified,
// so its size is bounded before a byte is fetched: a simple-signing
// payload is a few hundred bytes, an attestation (an in-toto statement
// listing the bundle's items) grows with the bundle.
const (
	maxSignaturePayload   = 64 << 10 // one signature layer
	maxAttestationPayload = 16 << 20 // all attestation layers of a manifest together
)

// Result is what Verify checked.
type Result struct {
	// Root is the bundle root digest the signature covers.
	Root digest.Digest `json:"root"`
	// Signed says whether the bundle carries a root signature.
	Signed bool `json:"signed"`
	// Verified says whether the signature was checked against the policy
	// and accepted (false only with InsecureSkipSignature).
	Verified bool `json:"verified"`
	// Signer names the trusted key (name and fingerprint) or certificate
	// identity that signed the root.
	Signer string `json:"signer,omitempty"`
	// Signature is the digest of the sha256-<root>.sig manifest.
	Signature digest.Digest `json:"signature,omitempty"`
	// Attestations are the verified attestations of the root.
	Attestations []Attestation `json:"attestations,omitempty"`
	// Warnings are for the user: an unchecked signature.
	Warnings []string `json:"warnings,omitempty"`
}

// Attestation is one verified in-toto statement about the root.
type Attestation struct {
	PredicateType string        `json:"predicateType"`
	Digest        digest.Digest `json:"digest"` // the DSSE envelope blob
	Signer        string        `json:"signer"`
	// Statement is the verified in-toto statement (JSON).
	Statement json.RawMessage `json:"-"`
}

// Verify checks the bundle root's signature and attestations against p,
// before anything of the bundle is used: at least one signature must be
// made by a trusted key or identity and name the root digest, and every
// attestation present must verify and name the root, and each of
// p.RequireAttestations must be present. It reads only the signature and
// attestation manifests and blobs (digest-checked) and writes nothing; call
// Archive.Verify for every other blob. Every refusal matches
// bundle.ErrVerification and one of ErrUnsigned, ErrUntrusted,
// ErrWrongDigest, ErrBadSignature, ErrAttestation or ErrNoPolicy. Safe for
// concurrent use.
func Verify(ctx context.Context, a *bundle.Archive, p Policy) (Result, error) {
	res := Result{Root: a.Root.Digest}
	sigEntry, attEntry := attachments(a)
	res.Signed = sigEntry != nil
	if p.InsecureSkipSignature {
		w := "signature NOT checked (--insecure-skip-signature): anyone could have made or changed this bundle"
		if !res.Signed {
			w = "bundle is NOT signed; accepted because of --insecure-skip-signature"
		}
		res.Warnings = append(res.Warnings, w)
		return res, nil
	}
	if sigEntry == nil {
		hint := ""
		if p.Empty() {
			hint = "; --insecure-skip-signature accepts it anyway"
		}
		return res, fmt.Errorf("root %s has no signature (no %s entry in index.json)%s: %w", a.Root.Digest, sigTag(a.Root.Digest), hint, ErrUnsigned)
	}
	if p.Empty() {
		return res, ErrNoPolicy
	}
	res.Signature = sigEntry.Digest
	h, err := v1.NewHash(a.Root.Digest.String())
	if err != nil {
		return res, fmt.Errorf("root digest: %w", err)
	}
	sigs, err := readSignatures(ctx, a, *sigEntry, false)
	if err != nil {
		return res, err
	}
	if len(sigs) == 0 {
		return res, fmt.Errorf("signature manifest %s has no signature layer: %w", sigEntry.Digest, ErrUnsigned)
	}
	var wrong []string
	for _, s := range sigs {
		signer, err := p.check(ctx, s.sig, h, verifySig)
		if err != nil {
			continue
		}
		if err := cosign.SimpleClaimVerifier(s.sig, h, nil); err != nil {
			var ss sigpayload.SimpleContainerImage
			_ = json.Unmarshal(s.payload, &ss)
			wrong = append(wrong, fmt.Sprintf("signature %s by %s names %q", s.layer.Digest, signer, ss.Critical.Image.DockerManifestDigest))
			continue
		}
		res.Signer = signer
		break
	}
	if res.Signer == "" {
		if len(wrong) > 0 {
			return res, fmt.Errorf("bundle root is %s, but %s: %w", a.Root.Digest, strings.Join(wrong, "; "), ErrWrongDigest)
		}
		return res, fmt.Errorf("none of the %d signature(s) of root %s verifies with %s: %w", len(sigs), a.Root.Digest, p.describe(), ErrUntrusted)
	}

	// Attestations: each present must verify and name the root.
	seen := map[string]bool{}
	if attEntry != nil {
		atts, err := readSignatures(ctx, a, *attEntry, true)
		if err != nil {
			return res, err
		}
		for _, s := range atts {
			what := fmt.Sprintf("attestation %s (%s)", s.layer.Digest, s.layer.Annotations[AnnotationPredicateType])
			signer, err := p.check(ctx, s.sig, h, verifyAtt)
			if err != nil {
				return res, fmt.Errorf("%s: not signed by %s: %w", what, p.describe(), ErrAttestation)
			}
			if err := cosign.IntotoSubjectClaimVerifier(s.sig, h, nil); err != nil {
				return res, fmt.Errorf("%s by %s: its subject is not root %s: %w", what, signer, a.Root.Digest, ErrWrongDigest)
			}
			st, pt, err := statementOf(s.payload)
			if err != nil {
				return res, fmt.Errorf("%s: %v: %w", what, err, ErrAttestation)
			}
			seen[pt] = true
			res.Attestations = append(res.Attestations, Attestation{PredicateType: pt, Digest: s.layer.Digest, Signer: signer, Statement: st})
		}
	}
	for _, want := range p.RequireAttestations {
		if !seen[want] {
			return res, fmt.Errorf("root %s has no verified %s attestation (%s): %w", a.Root.Digest, want, sigTag(a.Root.Digest)[:len(sigTag(a.Root.Digest))-4]+".att", ErrAttestation)
		}
	}
	res.Verified = true
	return res, nil
}

func sigTag(root digest.Digest) string { return strings.ReplaceAll(root.String(), ":", "-") + ".sig" }

// attachments finds the cosign signature and attestation entries of the root.
func attachments(a *bundle.Archive) (sig, att *ocispec.Descriptor) {
	tag := strings.TrimSuffix(sigTag(a.Root.Digest), ".sig")
	for _, m := range a.Attachments() {
		switch m.Annotations[manifests.AnnotationRefName] {
		case tag + ".sig":
			sig = &m
		case tag + ".att":
			att = &m
		}
	}
	return sig, att
}

type readSig struct {
	layer   ocispec.Descriptor
	payload []byte
	sig     oci.Signature
}

// readSignatures reads a cosign signature or attestation manifest from the
// archive, every blob digest-checked.
func readSignatures(ctx context.Context, a *bundle.Archive, d ocispec.Descriptor, attestation bool) ([]readSig, error) {
	b, err := a.ReadSmall(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.Annotations[manifests.AnnotationRefName], err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s %s: %v: %w", d.Annotations[manifests.AnnotationRefName], d.Digest, err, ErrBadSignature)
	}
	if len(m.Layers) > maxSignatureLayers {
		return nil, fmt.Errorf("%s has %d layers, more than %d: %w", d.Digest, len(m.Layers), maxSignatureLayers, ErrBadSignature)
	}
	var total int64
	for _, l := range m.Layers {
		switch {
		case l.Size < 0:
			return nil, fmt.Errorf("%s layer %s has size %d: %w", d.Digest, l.Digest, l.Size, ErrBadSignature)
		case !attestation && l.Size > maxSignaturePayload:
			return nil, fmt.Errorf("signature layer %s is %d bytes, more than %d: %w", l.Digest, l.Size, maxSignaturePayload, ErrBadSignature)
		case l.Size > maxAttestationPayload: // and the sum cannot overflow
			return nil, fmt.Errorf("attestation layer %s is %d bytes, more than %d: %w", l.Digest, l.Size, maxAttestationPayload, ErrBadSignature)
		}
		total += l.Size
	}
	if attestation && total > maxAttestationPayload {
		return nil, fmt.Errorf("attestation layers of %s are %d bytes, more than %d: %w", d.Digest, total, maxAttestationPayload, ErrBadSignature)
	}
	var out []readSig
	for _, l := range m.Layers {
		payload, err := a.ReadSmall(ctx, l)
		if err != nil {
			return nil, fmt.Errorf("reading signature layer of %s: %w", d.Annotations[manifests.AnnotationRefName], err)
		}
		var opts []static.Option
		if c := l.Annotations[static.CertificateAnnotationKey]; c != "" {
			opts = append(opts, static.WithCertChain([]byte(c), []byte(l.Annotations[static.ChainAnnotationKey])))
		}
		var s oci.Signature
		if attestation {
			if l.MediaType != types.DssePayloadType {
				return nil, fmt.Errorf("attestation layer %s has media type %q: %w", l.Digest, l.MediaType, ErrBadSignature)
			}
			opts = append(opts, static.WithLayerMediaType(types.DssePayloadType))
			s, err = static.NewAttestation(payload, opts...)
		} else {
			if l.MediaType != types.SimpleSigningMediaType {
				return nil, fmt.Errorf("signature layer %s has media type %q: %w", l.Digest, l.MediaType, ErrBadSignature)
			}
			b64 := l.Annotations[AnnotationSignature]
			if _, err := base64.StdEncoding.DecodeString(b64); err != nil || b64 == "" {
				return nil, fmt.Errorf("signature layer %s: no base64 %s annotation: %w", l.Digest, AnnotationSignature, ErrBadSignature)
			}
			s, err = static.NewSignature(payload, b64, opts...)
		}
		if err != nil {
			return nil, fmt.Errorf("signature layer %s: %v: %w", l.Digest, err, ErrBadSignature)
		}
		out = append(out, readSig{layer: l, payload: payload, sig: s})
	}
	return out, nil
}

type verifyKind int

const (
	verifySig verifyKind = iota
	verifyAtt
)

// check verifies the cryptographic signature of s (not its claims) with
// each trusted key, then with the keyless identities, and names the first
// signer that verifies it.
func (p Policy) check(ctx context.Context, s oci.Signature, h v1.Hash, kind verifyKind) (string, error) {
	run := func(co *cosign.CheckOpts) error {
		co.IgnoreTlog, co.IgnoreSCT = true, true
		var err error
		if kind == verifyAtt {
			_, err = cosign.VerifyBlobAttestation(ctx, s, h, co)
		} else {
			_, err = cosign.VerifyImageSignature(ctx, s, h, co)
		}
		return err
	}
	var errs []error
	for _, k := range p.Keys {
		err := run(&cosign.CheckOpts{SigVerifier: k.verifier})
		if err == nil {
			return fmt.Sprintf("key %s (sha256:%s)", k.Name, k.Fingerprint), nil
		}
		errs = append(errs, err)
	}
	if len(p.Identities) > 0 {
		cert, err := s.Cert()
		if err == nil && cert != nil {
			for _, id := range p.Identities {
				err := run(&cosign.CheckOpts{RootCerts: p.RootCerts, IntermediateCerts: p.Intermediates, Identities: []cosign.Identity{id}})
				if err == nil {
					return "certificate " + strings.Join(append(cert.EmailAddresses, urisOf(cert.URIs)...), ","), nil
				}
				errs = append(errs, err)
			}
		}
	}
	return "", errors.Join(errs...)
}

func (p Policy) describe() string {
	var parts []string
	for _, k := range p.Keys {
		parts = append(parts, fmt.Sprintf("key %s (sha256:%s)", k.Name, k.Fingerprint))
	}
	if len(p.Identities) > 0 {
		parts = append(parts, fmt.Sprintf("%d keyless identities", len(p.Identities)))
	}
	if len(parts) == 0 {
		return "no trusted key"
	}
	return "the trust policy (" + strings.Join(parts, ", ") + ")"
}

// statementOf decodes a verified DSSE envelope's in-toto statement and its
// predicate type (the signed one, not the unsigned layer annotation).
func statementOf(envelope []byte) (json.RawMessage, string, error) {
	var env dsse.Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, "", err
	}
	st, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, "", err
	}
	var hdr in_toto.StatementHeader
	if err := json.Unmarshal(st, &hdr); err != nil {
		return nil, "", err
	}
	return st, hdr.PredicateType, nil
}

func urisOf(us []*url.URL) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}

// IndexCheck returns a bundle.OpenOptions.CheckIndex function that refuses
// a bundle p would refuse for having no signature, as soon as index.json
// is read: an unsigned archive costs one small read, not an index of all
// its entries. Verify still does the whole check. With
// InsecureSkipSignature it accepts everything.
func IndexCheck(p Policy) func(idx ocispec.Index, root ocispec.Descriptor) error {
	return func(idx ocispec.Index, root ocispec.Descriptor) error {
		if p.InsecureSkipSignature {
			return nil
		}
		for _, m := range idx.Manifests {
			if bundle.IsAttachment(root.Digest, m) && m.Annotations[manifests.AnnotationRefName] == sigTag(root.Digest) {
				return nil
			}
		}
		hint := ""
		if p.Empty() {
			hint = "; --insecure-skip-signature accepts it anyway"
		}
		return fmt.Errorf("root %s has no signature (no %s entry in index.json)%s: %w", root.Digest, sigTag(root.Digest), hint, ErrUnsigned)
	}
}
