package signing

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"

	"zdt.dev/zdt/internal/fsutil"
)

// TrustedRootFile is the name of the minimal sigstore trusted root that
// GenerateKeyPair writes next to the public key. Passed to cosign as
// --trusted-root together with --insecure-ignore-tlog=true, it stops
// cosign's online TUF lookup, so key-based verification works offline.
const TrustedRootFile = "trusted-root.json"

// MinimalTrustedRoot is the content of TrustedRootFile: a trusted root with
// no transparency log, CA or timestamp authority (keys are trusted
// directly).
const MinimalTrustedRoot = `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}` + "\n"

// KeyPairOptions tune GenerateKeyPair.
type KeyPairOptions struct {
	// Prefix is the path prefix of the files: PREFIX.key and PREFIX.pub
	// (default "cosign", like `cosign generate-key-pair`).
	Prefix string
	// Password encrypts the private key in cosign's format (scrypt +
	// secretbox). Empty is allowed, as with cosign.
	Password []byte
	// Force overwrites existing key files; without it GenerateKeyPair
	// refuses to (fs.ErrExist).
	Force bool
}

// KeyPair names the files GenerateKeyPair wrote.
type KeyPair struct {
	PrivateKey  string `json:"privateKey"`
	PublicKey   string `json:"publicKey"`
	TrustedRoot string `json:"trustedRoot"`
	// Fingerprint is the sha256 of the public key's DER encoding (hex).
	Fingerprint string `json:"fingerprint"`
}

// GenerateKeyPair writes a new ECDSA P-256 key pair in cosign's format
// (PREFIX.key, encrypted, mode 0600; PREFIX.pub, PEM) and the minimal
// TrustedRootFile next to them. Each file is written to a temp file, synced
// and renamed. `cosign sign --key PREFIX.key` and `cosign verify --key
// PREFIX.pub` accept them.
func GenerateKeyPair(ctx context.Context, opts KeyPairOptions) (KeyPair, error) {
	if opts.Prefix == "" {
		opts.Prefix = "cosign"
	}
	kp := KeyPair{
		PrivateKey:  opts.Prefix + ".key",
		PublicKey:   opts.Prefix + ".pub",
		TrustedRoot: filepath.Join(filepath.Dir(opts.Prefix), TrustedRootFile),
	}
	if !opts.Force {
		for _, p := range []string{kp.PrivateKey, kp.PublicKey} {
			if _, err := os.Stat(p); err == nil {
				return KeyPair{}, fmt.Errorf("generating key pair: %s: %w (use --force to overwrite)", p, fs.ErrExist)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return KeyPair{}, err
	}
	pass := opts.Password
	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return pass, nil })
	if err != nil {
		return KeyPair{}, fmt.Errorf("generating key pair: %w", err)
	}
	if kp.Fingerprint, err = fingerprintPEM(keys.PublicBytes); err != nil {
		return KeyPair{}, err
	}
	if dir := filepath.Dir(opts.Prefix); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return KeyPair{}, fmt.Errorf("generating key pair: %w", err)
		}
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{kp.PrivateKey, keys.PrivateBytes, 0o600},
		{kp.PublicKey, keys.PublicBytes, 0o644},
		{kp.TrustedRoot, []byte(MinimalTrustedRoot), 0o644},
	} {
		if err := fsutil.WritePath(f.path, f.data, f.mode); err != nil {
			return KeyPair{}, fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return kp, nil
}

// isKMSRef reports whether a --key value is a KMS URI (awskms://,
// gcpkms://, azurekms://, hashivault://) rather than a file.
func isKMSRef(ref string) bool { return strings.Contains(ref, "://") }

// loadSigner loads a private key: a cosign key file (decrypted with
// password) or a KMS URI.
func loadSigner(ctx context.Context, ref string, password func() ([]byte, error)) (signature.SignerVerifier, error) {
	if isKMSRef(ref) {
		sv, err := kms.Get(ctx, ref, crypto.SHA256)
		if err != nil {
			var pnf *kms.ProviderNotFoundError
			if errors.As(err, &pnf) {
				return nil, fmt.Errorf("%w %s: no KMS provider for this scheme (supported: %s)", ErrKey, ref, strings.Join(kms.SupportedProviders(), ", "))
			}
			return nil, fmt.Errorf("%w %s: %v", ErrKey, ref, err)
		}
		return sv, nil
	}
	kb, err := os.ReadFile(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrKey, ref, err)
	}
	var pass []byte
	if password != nil {
		if pass, err = password(); err != nil {
			return nil, fmt.Errorf("%w %s: password: %v", ErrKey, ref, err)
		}
	}
	sv, err := cosign.LoadPrivateKey(kb, pass, nil)
	if err != nil {
		// The underlying message says "decrypt: …"; never echo key bytes.
		return nil, fmt.Errorf("%w %s: cannot load the private key (wrong COSIGN_PASSWORD, or not a cosign key): %v", ErrKey, ref, err)
	}
	return sv, nil
}

// loadVerifier loads a public key: a PEM file, a private cosign key's
// public half is not accepted (give the .pub), or a KMS URI.
func loadVerifier(ctx context.Context, ref string) (signature.Verifier, []byte, error) {
	if isKMSRef(ref) {
		sv, err := kms.Get(ctx, ref, crypto.SHA256)
		if err != nil {
			return nil, nil, fmt.Errorf("%w %s: %v", ErrKey, ref, err)
		}
		pub, err := sv.PublicKey()
		if err != nil {
			return nil, nil, fmt.Errorf("%w %s: public key: %v", ErrKey, ref, err)
		}
		pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(pub)
		if err != nil {
			return nil, nil, fmt.Errorf("%w %s: %v", ErrKey, ref, err)
		}
		return sv, pemBytes, nil
	}
	b, err := os.ReadFile(ref)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading %s: %v", ErrKey, ref, err)
	}
	v, err := verifierFromPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: %v", ErrKey, ref, err)
	}
	return v, b, nil
}

func verifierFromPEM(b []byte) (signature.Verifier, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("not a PEM public key: %v", err)
	}
	return signature.LoadVerifier(pub, crypto.SHA256)
}

// fingerprint is the hex sha256 of a public key's DER (PKIX) encoding.
func fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrKey, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

func fingerprintPEM(b []byte) (string, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrKey, err)
	}
	return fingerprint(pub)
}
