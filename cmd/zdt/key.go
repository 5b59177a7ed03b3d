package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/signing"
)

// passwordEnv is where cosign, and so zdt, reads a key file's password.
const passwordEnv = "COSIGN_PASSWORD"

func newKeyCmd(g *globals) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "key",
		Short: "Manage signing keys",
	})
	cmd.AddCommand(newKeyGenerateCmd(g), newSignBlobCmd(g))
	return cmd
}

// keyGenerateOptions are the flags of `zdt key generate`.
type keyGenerateOptions struct {
	prefix string
	force  bool
}

func (o *keyGenerateOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.prefix, "prefix", "cosign", "write PREFIX.key and PREFIX.pub (a path prefix)")
	fs.BoolVar(&o.force, "force", false, "overwrite an existing key pair")
}

func newKeyGenerateCmd(g *globals) *cobra.Command {
	o := &keyGenerateOptions{}
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Write a cosign-compatible key pair",
		Long: `Write a cosign-compatible ECDSA P-256 key pair: PREFIX.key (encrypted with
the password in COSIGN_PASSWORD, which may be empty; asked for on a terminal
when unset) and PREFIX.pub, plus trusted-root.json next to them: the minimal
sigstore trusted root that lets 'cosign verify --insecure-ignore-tlog=true
--trusted-root trusted-root.json' run offline.

Keep PREFIX.key secret; give PREFIX.pub and trusted-root.json to whoever
verifies bundles.`,
		Example: `  COSIGN_PASSWORD=... zdt key generate --prefix keys/release
  zdt bundle create --key keys/release.key -o platform.zdt
  zdt bundle verify --key keys/release.pub platform.zdt`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			pass, err := g.newPassword()
			if err != nil {
				return err
			}
			kp, err := signing.GenerateKeyPair(cmd.Context(), signing.KeyPairOptions{Prefix: o.prefix, Password: pass, Force: o.force})
			if errors.Is(err, fs.ErrExist) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(keyOutput{Fingerprint: "sha256:" + kp.Fingerprint, PrivateKey: kp.PrivateKey, PublicKey: kp.PublicKey, TrustedRoot: kp.TrustedRoot})
			}
			fmt.Fprintf(g.stdout, "private key  %s (keep it secret)\n", kp.PrivateKey)
			fmt.Fprintf(g.stdout, "public key   %s\n", kp.PublicKey)
			fmt.Fprintf(g.stdout, "trust root   %s (for offline cosign)\n", kp.TrustedRoot)
			fmt.Fprintf(g.stdout, "fingerprint  sha256:%s\n", kp.Fingerprint)
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// newPassword is the password for a new key: COSIGN_PASSWORD if set (even
// empty), else asked twice on a terminal.
func (g *globals) newPassword() ([]byte, error) {
	if p, ok := os.LookupEnv(passwordEnv); ok {
		return []byte(p), nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, usageError{fmt.Errorf("set %s to the private key's password (it may be empty)", passwordEnv)}
	}
	fmt.Fprint(g.stderr, "Enter password for private key: ")
	p1, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(g.stderr)
	if err != nil {
		return nil, err
	}
	fmt.Fprint(g.stderr, "Enter password for private key again: ")
	p2, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(g.stderr)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(p1, p2) {
		return nil, usageError{errors.New("passwords do not match")}
	}
	return p1, nil
}

// keyPassword reads an existing key's password: COSIGN_PASSWORD if set,
// else asked on a terminal, else empty.
func (g *globals) keyPassword() ([]byte, error) {
	if p, ok := os.LookupEnv(passwordEnv); ok {
		return []byte(p), nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, nil
	}
	fmt.Fprint(g.stderr, "Enter password for private key: ")
	p, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(g.stderr)
	return p, err
}

// trustOptions are the signature flags of every command that reads a
// bundle before using it (bundle verify, bundle extract, install).
type trustOptions struct {
	keys     []string
	policy   string
	insecure bool
}

func (o *trustOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.keys, "key", nil, "trusted public key (cosign .pub file or KMS URI); repeat to trust several")
	fs.StringVar(&o.policy, "policy", "", "trust policy file (keys, keyless identities with an offline trusted root, required attestations)")
	fs.BoolVar(&o.insecure, "insecure-skip-signature", false, "accept the bundle without checking its signature (prints a warning)")
}

// load reads the trust policy the flags give.
func (o *trustOptions) load(ctx context.Context) (signing.Policy, error) {
	p, err := signing.LoadPolicy(ctx, signing.PolicyOptions{Keys: o.keys, File: o.policy, InsecureSkipSignature: o.insecure})
	if errors.Is(err, signing.ErrPolicyFile) {
		return p, usageError{err}
	}
	return p, err
}

// warn reports the warnings of a signature check (an unchecked one).
func (g *globals) warn(a *bundle.Archive, res signing.Result) {
	for _, w := range res.Warnings {
		if g.json() {
			_ = json.NewEncoder(g.stderr).Encode(warningLine{Warning: w, Bundle: a.Path(), Root: res.Root})
		} else {
			fmt.Fprintf(g.stderr, "zdt: warning: %s: %s\n", a.Path(), w)
		}
	}
}

// signBlobOptions are the flags of `zdt key sign-blob`.
type signBlobOptions struct {
	key string
}

func (o *signBlobOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.key, "key", "", "cosign private key (password in COSIGN_PASSWORD) or KMS URI")
}

// signBlobResult is the JSON output of `zdt key sign-blob`: one entry per
// file signed.
type signBlobResult struct {
	// File is the file signed; Bundle its sigstore bundle (FILE.sigstore.json).
	File   string `json:"file"`
	Bundle string `json:"bundle"`
}

func newSignBlobCmd(g *globals) *cobra.Command {
	o := &signBlobOptions{}
	cmd := &cobra.Command{
		Use:   "sign-blob --key KEY FILE...",
		Short: "Sign files the way bundle archives are signed (FILE.sigstore.json)",
		Long: `Sign the sha256 of each FILE with a cosign key and write FILE.sigstore.json
next to it: the same detached signature 'bundle create --key' writes for an
archive, which the stock 'cosign verify-blob --new-bundle-format --bundle'
checks offline. 'make release' signs SHA256SUMS of the release binaries
with it. No network is used and no transparency log entry is made.`,
		Example: `  COSIGN_PASSWORD=... zdt key sign-blob --key keys/release.key dist/SHA256SUMS
  cosign verify-blob --key keys/release.pub --insecure-ignore-tlog=true \
    --trusted-root keys/trusted-root.json --new-bundle-format \
    --bundle dist/SHA256SUMS.sigstore.json dist/SHA256SUMS`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("%s needs at least one FILE", cmd.CommandPath())}
			}
			if o.key == "" {
				return usageError{errors.New("--key is required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := signing.NewSigner(ctx, signing.SignOptions{Key: o.key, Password: g.keyPassword, Logger: g.logger()})
			if err != nil {
				return err
			}
			defer s.Close()
			var out []signBlobResult
			for _, f := range args {
				b, err := s.SignFile(ctx, f)
				if err != nil {
					return fmt.Errorf("signing %s: %w", f, err)
				}
				out = append(out, signBlobResult{File: f, Bundle: b})
				if !g.json() {
					fmt.Fprintf(g.stdout, "signed %s: %s\n", f, b)
				}
			}
			if g.json() {
				return g.printJSON(out)
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
