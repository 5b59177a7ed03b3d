package signing

import (
	"context"
	"fmt"

	"github.com/sigstore/sigstore-go/pkg/root"
	"gopkg.in/yaml.v3"
)

// Portable is the trust policy opts give as one self-contained policy
// file, for a zdt that verifies later, elsewhere, with the same trust
// (the unit of `zdt agent` that `zdt install --agent` writes): each key
// as its PEM (the content of a key file, read now) or its KMS URI, the
// keyless identities with the content of their trusted root (returned
// apart: the caller writes it where the file's Keyless.TrustedRoot will
// name it), and the required attestations spelled out (the default
// list when opts' policy leaves them out). LoadPolicy of the file, the
// trusted root written where it names, trusts the same keys (by
// fingerprint), identities and attestations as LoadPolicy(opts), however
// the files opts named move or change afterwards.
//
// opts.InsecureSkipSignature has no policy file: it is refused
// (ErrPolicyFile), as is an empty policy.
func Portable(ctx context.Context, opts PolicyOptions) (PolicyFile, []byte, error) {
	if opts.InsecureSkipSignature {
		return PolicyFile{}, nil, fmt.Errorf("%w: --insecure-skip-signature has no policy file", ErrPolicyFile)
	}
	// Everything is checked the way verification will read it.
	p, err := LoadPolicy(ctx, opts)
	if err != nil {
		return PolicyFile{}, nil, err
	}
	if p.Empty() {
		return PolicyFile{}, nil, fmt.Errorf("%w: no trusted key or identity", ErrNoPolicy)
	}
	out := PolicyFile{APIVersion: PolicyAPIVersion, Kind: PolicyKind}
	key := func(ref string) (PolicyKey, error) {
		if isKMSRef(ref) {
			return PolicyKey{KMS: ref}, nil
		}
		b, err := readBounded(ref)
		if err != nil {
			return PolicyKey{}, fmt.Errorf("%w: reading %s: %v", ErrKey, ref, err)
		}
		if _, err := verifierFromPEM(b); err != nil {
			return PolicyKey{}, fmt.Errorf("%w %s: %v", ErrKey, ref, err)
		}
		return PolicyKey{PEM: string(b)}, nil
	}
	for _, k := range opts.Keys {
		pk, err := key(k)
		if err != nil {
			return PolicyFile{}, nil, err
		}
		out.Keys = append(out.Keys, pk)
	}
	attestations := append([]string{}, DefaultAttestations...)
	var trustedRoot []byte
	if opts.File != "" {
		pf, err := readPolicyFile(opts.File)
		if err != nil {
			return PolicyFile{}, nil, err
		}
		for i, k := range pf.Keys {
			if k.Path == "" {
				out.Keys = append(out.Keys, k)
				continue
			}
			pk, err := key(relTo(opts.File, k.Path))
			if err != nil {
				return PolicyFile{}, nil, fmt.Errorf("%w %s: keys[%d]: %v", ErrPolicyFile, opts.File, i, err)
			}
			out.Keys = append(out.Keys, pk)
		}
		if kl := pf.Keyless; kl != nil {
			if trustedRoot, err = readBounded(relTo(opts.File, kl.TrustedRoot)); err != nil {
				return PolicyFile{}, nil, fmt.Errorf("%w %s: keyless.trustedRoot: %v", ErrPolicyFile, opts.File, err)
			}
			if _, err := root.NewTrustedRootFromJSON(trustedRoot); err != nil {
				return PolicyFile{}, nil, fmt.Errorf("%w %s: keyless.trustedRoot: %v", ErrPolicyFile, opts.File, err)
			}
			out.Keyless = &PolicyKeyless{Identities: append([]PolicyIdentity(nil), kl.Identities...)}
		}
		if pf.RequireAttestations != nil {
			attestations = append([]string{}, *pf.RequireAttestations...)
		}
	}
	out.RequireAttestations = &attestations
	return out, trustedRoot, nil
}

// Encode renders the policy file as YAML (what LoadPolicy reads).
func (f PolicyFile) Encode() []byte {
	b, err := yaml.Marshal(f)
	if err != nil {
		panic("signing: encoding a policy file: " + err.Error()) // strings and lists only: cannot fail
	}
	return b
}
