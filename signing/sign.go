package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	cbundle "github.com/sigstore/cosign/v2/pkg/cosign/bundle"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/cosign/v2/pkg/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/options"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"
	"google.golang.org/protobuf/encoding/protojson"
	"oras.land/oras-go/v2/content"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/manifests"
)

// Cosign's names for what it stores, reused so stock cosign finds them.
const (
	// AnnotationSignature carries the base64 signature on a simple-signing layer.
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	// AnnotationPredicateType names an attestation layer's predicate type.
	AnnotationPredicateType = "predicateType"
	// AnnotationCosignKind is the index.json annotation `cosign verify
	// --local-image` looks for (cosign's own layout format).
	AnnotationCosignKind = "kind"
	cosignKindSigs       = "dev.cosignproject.cosign/sigs"
	cosignKindAtts       = "dev.cosignproject.cosign/atts"
	// CosignKindImageIndex is the `kind` annotation of the signed index in
	// cosign's layout format; the bundle root's index.json entry carries it.
	CosignKindImageIndex = "dev.cosignproject.cosign/imageIndex"
)

// SignOptions tune NewSigner.
type SignOptions struct {
	// Key is a cosign private key file or a KMS URI (awskms://, gcpkms://,
	// azurekms://, hashivault://). Required.
	Key string
	// Password returns the key file's password (cosign reads
	// COSIGN_PASSWORD); nil means an empty password. Not used for KMS.
	Password func() ([]byte, error)
	// Logger receives what is signed (digests, key fingerprint; never key
	// material). Default: discard.
	Logger *slog.Logger
}

// Signer signs one bundle during build.Create: set
// CreateOptions.Attach = s.Attach and CreateOptions.ArchiveWritten =
// s.SignArchive(output). Not safe for concurrent use by several creates.
type Signer struct {
	sv     signature.SignerVerifier
	pub    crypto.PublicKey
	fp     string
	logger *slog.Logger
	// Set by Attach, for the result.
	root digest.Digest
}

// NewSigner loads the signing key. The key stays in memory until Close.
func NewSigner(ctx context.Context, opts SignOptions) (*Signer, error) {
	if opts.Key == "" {
		return nil, fmt.Errorf("%w: no signing key given", ErrKey)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sv, err := loadSigner(ctx, opts.Key, opts.Password)
	if err != nil {
		return nil, err
	}
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w %s: public key: %v", ErrKey, opts.Key, err)
	}
	fp, err := fingerprint(pub)
	if err != nil {
		return nil, err
	}
	return &Signer{sv: sv, pub: pub, fp: fp, logger: opts.Logger}, nil
}

// Fingerprint is the sha256 (hex) of the signing key's public half.
func (s *Signer) Fingerprint() string { return s.fp }

// Close drops the key.
func (s *Signer) Close() error {
	s.sv = nil
	return nil
}

// ArchiveBundlePath is where the archive file's sigstore bundle is written:
// ARCHIVE.sigstore.json.
func ArchiveBundlePath(archive string) string { return archive + ".sigstore.json" }

// RootRepository is the repository a bundle root is served and pushed
// under (zdt/NAME); signatures name it as their docker-reference.
func RootRepository(bundleName string) string {
	repo, _, _ := strings.Cut(bundle.RootRef(bundleName, "v"), ":")
	return repo
}

// Attach signs root and attests it, pushing cosign's signature and
// attestation manifests into store. It matches build.CreateOptions.Attach:
// the returned index.json entries are named sha256-<root hex>.sig and .att.
func (s *Signer) Attach(ctx context.Context, root ocispec.Descriptor, store content.Storage) ([]ocispec.Descriptor, error) {
	if s.sv == nil {
		return nil, fmt.Errorf("%w: signer closed", ErrKey)
	}
	info, err := readRoot(ctx, store, root)
	if err != nil {
		return nil, err
	}
	repo := RootRepository(info.config.Name)
	ref, err := name.NewDigest(repo + "@" + root.Digest.String())
	if err != nil {
		return nil, fmt.Errorf("signing: reference %s@%s: %w", repo, root.Digest, err)
	}
	// The payload `cosign sign` would make for HOST/zdt/NAME@ROOT.
	payload, err := (&sigpayload.Cosign{Image: ref, ClaimedIdentity: repo}).MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("signing: payload: %w", err)
	}
	raw, err := s.sv.SignMessage(bytes.NewReader(payload), options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("signing root %s: %w", root.Digest, err)
	}
	sig, err := static.NewSignature(payload, base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	sigs, err := mutate.AppendSignatures(empty.Signatures(), false, sig)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	tag := strings.ReplaceAll(root.Digest.String(), ":", "-")
	sigDesc, err := pushImage(ctx, store, sigs)
	if err != nil {
		return nil, fmt.Errorf("storing signature: %w", err)
	}
	sigDesc.Annotations = map[string]string{
		manifests.AnnotationRefName: tag + ".sig",
		AnnotationCosignKind:        cosignKindSigs,
	}

	statements, err := attestations(info, root.Digest, repo)
	if err != nil {
		return nil, err
	}
	wrapped := dsse.WrapSigner(s.sv, types.IntotoPayloadType)
	var atts []oci.Signature
	for _, st := range statements {
		env, err := wrapped.SignMessage(bytes.NewReader(st.statement), options.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("signing %s attestation: %w", st.predicateType, err)
		}
		att, err := static.NewAttestation(env,
			static.WithLayerMediaType(types.DssePayloadType),
			static.WithAnnotations(map[string]string{AnnotationPredicateType: st.predicateType}))
		if err != nil {
			return nil, fmt.Errorf("attestation: %w", err)
		}
		atts = append(atts, att)
	}
	attImg, err := mutate.AppendSignatures(empty.Signatures(), false, atts...)
	if err != nil {
		return nil, fmt.Errorf("attestations: %w", err)
	}
	attDesc, err := pushImage(ctx, store, attImg)
	if err != nil {
		return nil, fmt.Errorf("storing attestations: %w", err)
	}
	attDesc.Annotations = map[string]string{
		manifests.AnnotationRefName: tag + ".att",
		AnnotationCosignKind:        cosignKindAtts,
	}
	s.root = root.Digest
	s.logger.Info("signed bundle root", "root", root.Digest, "key", s.fp, "signature", sigDesc.Digest, "attestations", attDesc.Digest)
	return []ocispec.Descriptor{sigDesc, attDesc}, nil
}

// SignArchive returns a build.CreateOptions.ArchiveWritten function that
// signs the archive's sha256 (computed while it was written) and writes the
// sigstore bundle ArchiveBundlePath(archive) atomically, in the format
// `cosign verify-blob --new-bundle-format --bundle` reads.
func (s *Signer) SignArchive(archive string) func(ctx context.Context, sum digest.Digest, size int64) error {
	return func(ctx context.Context, sum digest.Digest, size int64) error {
		b, err := s.ArchiveBundle(ctx, sum)
		if err != nil {
			return err
		}
		p := ArchiveBundlePath(archive)
		if err := fsutil.WritePath(p, b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		s.logger.Info("signed archive", "sha256", sum.Encoded(), "bytes", size, "bundle", p)
		return nil
	}
}

// SignFile hashes the file at p, signs its sha256 like SignArchive does
// and writes ArchiveBundlePath(p) atomically, for files zdt did not write
// itself (release binaries, their SHA256SUMS). It returns the bundle's
// path.
func (s *Signer) SignFile(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, err := digest.SHA256.FromReader(f)
	if err != nil {
		return "", fmt.Errorf("hashing %s: %w", p, err)
	}
	if err := s.SignArchive(p)(ctx, sum, 0); err != nil {
		return "", err
	}
	return ArchiveBundlePath(p), nil
}

// ArchiveBundle signs a file's sha256 digest and returns a sigstore bundle
// (v0.3 JSON, public-key hint, no transparency log entry) for it.
func (s *Signer) ArchiveBundle(ctx context.Context, sum digest.Digest) ([]byte, error) {
	if s.sv == nil {
		return nil, fmt.Errorf("%w: signer closed", ErrKey)
	}
	if sum.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("signing archive: %w", bundle.ErrUnsupportedDigest)
	}
	raw, err := hexBytes(sum.Encoded())
	if err != nil {
		return nil, err
	}
	sig, err := s.sv.SignMessage(bytes.NewReader(nil), options.WithContext(ctx),
		options.WithDigest(raw), options.WithCryptoSignerOpts(crypto.SHA256))
	if err != nil {
		return nil, fmt.Errorf("signing archive digest (the key must sign sha256 digests: ECDSA or RSA): %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(s.pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	hint := sha256.Sum256(der)
	pb, err := cbundle.MakeProtobufBundle(base64.StdEncoding.EncodeToString(hint[:]), nil, nil, nil)
	if err != nil {
		return nil, err
	}
	pb.Content = &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
		MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: raw},
		Signature:     sig,
	}}
	return protojson.Marshal(pb)
}

func hexBytes(h string) ([]byte, error) {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("not a sha256 hex digest: %q", h)
	}
	return b, nil
}

// pushImage stores a go-containerregistry image (cosign's signature
// image) blob by blob and returns its manifest descriptor.
func pushImage(ctx context.Context, store content.Storage, img v1.Image) (ocispec.Descriptor, error) {
	layers, err := img.Layers()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		size, err := l.Size()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		mt, err := l.MediaType()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		b, err := io.ReadAll(io.LimitReader(rc, bundle.MaxManifestSize+1))
		rc.Close()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		desc := ocispec.Descriptor{MediaType: string(mt), Digest: digest.Digest(d.String()), Size: size}
		if err := pushBytes(ctx, store, desc, b); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := pushBytes(ctx, store, content.NewDescriptorFromBytes(string(m.Config.MediaType), cfg), cfg); err != nil {
		return ocispec.Descriptor{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := content.NewDescriptorFromBytes(string(mt), raw)
	return desc, pushBytes(ctx, store, desc, raw)
}

func pushBytes(ctx context.Context, store content.Storage, desc ocispec.Descriptor, b []byte) error {
	if int64(len(b)) != desc.Size || digest.FromBytes(b) != desc.Digest {
		return fmt.Errorf("blob %s: content does not match its descriptor", desc.Digest)
	}
	if ok, err := store.Exists(ctx, desc); err == nil && ok {
		return nil
	}
	return store.Push(ctx, desc, bytes.NewReader(b))
}

// rootInfo is what the attestations describe, read back from the store.
type rootInfo struct {
	root   ocispec.Index
	config bundle.Config
	lock   *manifests.Lock
}

func readRoot(ctx context.Context, store content.Fetcher, root ocispec.Descriptor) (rootInfo, error) {
	var info rootInfo
	rb, err := fetchSmall(ctx, store, root)
	if err != nil {
		return info, fmt.Errorf("reading root %s: %w", root.Digest, err)
	}
	if err := json.Unmarshal(rb, &info.root); err != nil || len(info.root.Manifests) == 0 {
		return info, fmt.Errorf("root %s: not a bundle root index: %w", root.Digest, bundle.ErrNotBundle)
	}
	mb, err := fetchSmall(ctx, store, info.root.Manifests[0])
	if err != nil {
		return info, fmt.Errorf("reading bundle config manifest: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return info, fmt.Errorf("bundle config manifest: %v: %w", err, bundle.ErrNotBundle)
	}
	cb, err := fetchSmall(ctx, store, m.Config)
	if err != nil {
		return info, fmt.Errorf("reading bundle config: %w", err)
	}
	if err := json.Unmarshal(cb, &info.config); err != nil {
		return info, fmt.Errorf("bundle config: %v: %w", err, bundle.ErrNotBundle)
	}
	if info.config.Lock != "" {
		if info.lock, err = manifests.ParseLock("bundle lock", []byte(info.config.Lock)); err != nil {
			return info, fmt.Errorf("bundle config lock: %w", err)
		}
	}
	return info, nil
}

// fetchSmall reads a manifest or config (bounded) and checks its digest.
func fetchSmall(ctx context.Context, f content.Fetcher, d ocispec.Descriptor) ([]byte, error) {
	if d.Size > bundle.MaxManifestSize {
		return nil, fmt.Errorf("%s is %d bytes: %w", d.Digest, d.Size, bundle.ErrTooLarge)
	}
	return content.FetchAll(ctx, f, d)
}
