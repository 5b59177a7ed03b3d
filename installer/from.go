package installer

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/remote"
	"zdt.dev/zdt/signing"
)

// Source is where a bundle installed from a registry (InstallFrom, `zdt
// install --from`) came from, recorded in its generations: the mirror
// configuration points at that registry for the bundle's images (after
// this node's own `zdt serve` when Replicated).
type Source struct {
	// Reference is the bundle's reference pinned to its root:
	// REGISTRY/[PREFIX/]zdt/NAME@sha256:….
	Reference string `json:"reference"`
	// Registry is where the bundle's images are served: HOST[:PORT][/PREFIX].
	Registry string `json:"registry"`
	// CA is the PEM certificate(s) the registry's certificate is checked
	// against (--ca), written into every runtime's trust of it; empty
	// when the system's trust suffices.
	CA string `json:"ca,omitempty"`
	// Replicated says the bundle's content was also copied into the
	// registry storage under the root, so this node serves it too.
	Replicated bool `json:"replicated,omitempty"`
}

// servedHere reports whether a generation's bundle is in the registry
// storage under the root whole (installed from a file, or replicated), not
// only its metadata (see ImportOptions.MetadataOnly).
func (g *Generation) servedHere() bool { return g.Source == nil || g.Source.Replicated }

// inRegistry reports whether a generation's bundle was put into the
// registry storage, whole or its metadata: what the registry activates
// for it. A generation an older zdt installed from a registry without
// replicating put nothing there.
func (g *Generation) inRegistry() bool { return g.servedHere() || g.Metadata }

// MaxCASize bounds a --ca file.
const MaxCASize = 1 << 20

// FromOptions tune InstallFrom. Policy is the trust policy, as for a
// bundle file (OpenVerified); Options as for Install, except Registry,
// which InstallFrom opens under Options.Root unless given.
type FromOptions struct {
	Options
	// Policy is the trust policy the bundle's signature and attestations
	// must satisfy (required; InsecureSkipSignature accepts any).
	Policy signing.Policy
	// CA is a PEM file of the registry's CA: trusted for the registry's
	// TLS (when Remotes is nil) and written into the mirror trust.
	CA string
	// Remotes gives the registry's TLS and credentials (default: CA and
	// the Docker config's credentials).
	Remotes *remote.Remotes
	// Replicate also copies the bundle's content into the registry
	// storage under the root, so that this node serves it (its mirror
	// configuration lists itself first, the source registry second).
	Replicate bool
}

// OpenVerifiedFrom opens the bundle ref names (REGISTRY/[PREFIX/]zdt/
// NAME[:VERSION|@DIGEST]) in the registry that holds it and checks it the
// way OpenVerified checks a file: the root is resolved to a digest once
// and everything after is read by digest; the signature and attestations
// are read from the registry (cosign's sha256-<hex>.sig/.att tags) and
// checked against policy before anything else is read; refusals match
// bundle.ErrVerification the same way. Nothing is written. The archive
// reads the rest from the registry as it is used, every byte checked
// against the signed digests; Close it when done. ctx is the context of
// those later reads too.
func OpenVerifiedFrom(ctx context.Context, ref string, policy *signing.Policy, remotes *remote.Remotes) (*Verified, *registry.RemoteSource, error) {
	r, err := registry.ParseBundleRef(ref)
	if err != nil {
		return nil, nil, err
	}
	var src *registry.RemoteSource
	v, err := openVerified(ctx, r.String(), policy, nil, func(opts bundle.OpenOptions) (*bundle.Archive, error) {
		a, s, err := registry.OpenRemote(ctx, r, remotes, opts)
		src = s
		return a, err
	})
	if err != nil {
		if src != nil {
			err = src.Explain(err)
		}
		return nil, nil, err
	}
	return v, src, nil
}

// InstallFrom installs the bundle ref names straight from the registry
// that holds it (another node's `zdt serve`, or the site registry `zdt
// push` filled): OpenVerifiedFrom, then Install with the same plan,
// generations and rollback as a bundle file. The bundle's files are read
// from the registry (digests checked before they are placed); its images
// are not copied: the mirror configuration points at the registry, whose
// CA (opts.CA) every runtime is given. With opts.Replicate the content is
// also copied into the registry storage under the root, and the mirror
// configuration lists this node's `zdt serve` first and the registry as
// the fallback. A bundle refused by the trust policy writes nothing.
func InstallFrom(ctx context.Context, ref string, opts FromOptions) (Result, error) {
	r, err := registry.ParseBundleRef(ref)
	if err != nil {
		return Result{}, err
	}
	var caPEM []byte
	if opts.CA != "" {
		if caPEM, err = readCA(opts.CA); err != nil {
			return Result{}, err
		}
	}
	remotes := opts.Remotes
	if remotes == nil {
		cfg := &remote.RegistryConfig{}
		if opts.CA != "" {
			cfg.Registries = map[string]remote.RegistryHost{r.Host: {CA: opts.CA}}
		}
		remotes = remote.New(cfg, 4)
	}
	v, src, err := OpenVerifiedFrom(ctx, ref, &opts.Policy, remotes)
	if err != nil {
		return Result{}, err
	}
	defer v.Close()
	for _, w := range v.Signature.Warnings {
		if opts.Logger != nil {
			opts.Logger.Warn(w, "bundle", v.Path())
		}
	}
	// Before the root and its registry store are created.
	if opts.RefuseDowngrade {
		if err := CheckUpgrade(opts.Root, v.Config.Name, v.Config.Version); err != nil {
			return Result{}, err
		}
	}
	iopts := opts.Options
	iopts.Source = &Source{Reference: r.Pinned(v.Root.Digest).String(), Registry: r.Registry(), CA: string(caPEM), Replicated: opts.Replicate}
	if !iopts.PlanOnly && iopts.Registry == nil {
		if err := os.MkdirAll(iopts.Root, 0o755); err != nil {
			return Result{}, fmt.Errorf("creating root %s: %w", iopts.Root, err)
		}
		// Copied, never kept: the bundle is no file here.
		store, err := registry.OpenStore(iopts.Root, registry.StoreOptions{CopyBlobs: true, Logger: iopts.Logger})
		if err != nil {
			return Result{}, err
		}
		defer store.Close()
		iopts.Registry = store
	}
	res, err := Install(ctx, v.Archive, iopts)
	return res, src.Explain(err)
}

// readCA reads a PEM file of CA certificates (bounded), refusing one that
// holds none.
func readCA(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxCASize+1))
	if err != nil {
		return nil, fmt.Errorf("--ca %s: %w", file, err)
	}
	if len(b) > MaxCASize {
		return nil, fmt.Errorf("--ca %s: larger than %d bytes", file, MaxCASize)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--ca %s holds no PEM certificate", file)
	}
	// Only the certificates go into the generated trust.
	var out []byte
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})...)
		}
	}
	return out, nil
}
