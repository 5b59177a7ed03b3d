package signing

import (
	"errors"
	"fmt"

	"zdt.dev/zdt/bundle"
)

// Sentinel errors; match them with errors.Is. Every refusal of a bundle by
// Verify matches bundle.ErrVerification too (CLI exit code 3).
var (
	// ErrUnsigned: the bundle root has no signature.
	ErrUnsigned = fmt.Errorf("bundle is not signed: %w", bundle.ErrVerification)
	// ErrUntrusted: no signature was made by a key or identity of the policy.
	ErrUntrusted = fmt.Errorf("signature not made by a trusted key or identity: %w", bundle.ErrVerification)
	// ErrWrongDigest: a signature by a trusted signer names another digest
	// than the bundle root (a swapped root or a replayed signature).
	ErrWrongDigest = fmt.Errorf("signature is over a different digest: %w", bundle.ErrVerification)
	// ErrBadSignature: a signature or attestation is malformed.
	ErrBadSignature = fmt.Errorf("malformed signature: %w", bundle.ErrVerification)
	// ErrAttestation: a required attestation is missing, or one present does
	// not verify.
	ErrAttestation = fmt.Errorf("attestation check failed: %w", bundle.ErrVerification)
	// ErrNoPolicy: Verify was called with an empty policy.
	ErrNoPolicy = fmt.Errorf("no trust policy (give --key, --policy or --insecure-skip-signature): %w", bundle.ErrVerification)

	// ErrPolicyFile: a policy file is invalid (not a verification failure).
	ErrPolicyFile = errors.New("invalid trust policy")
	// ErrKey: a key could not be loaded or used (wrong password, unknown KMS
	// scheme, unsupported key type).
	ErrKey = errors.New("key")
)
