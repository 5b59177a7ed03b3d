package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/version"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/signing"
)

func newBundleCmd(g *globals) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "bundle",
		Short: "Create, inspect, verify and extract bundles",
	})
	cmd.AddCommand(newCreateCmd(g), newInspectCmd(g), newVerifyCmd(g), newExtractCmd(g))
	return cmd
}

// createOptions are the flags of `zdt bundle create`.
type createOptions struct {
	spec        string
	out         string
	lock        bool
	lockFile    string
	platforms   []string
	strictPlat  bool
	concurrency int
	key         string
	cacheDir    string
	noCache     bool
	reg         registryOptions
	discover    bool
	base        string
	fetch       fetchLimits
}

func (o *createOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.spec, "file", "f", "zdt.yaml", "bundle spec to build")
	fs.StringVarP(&o.out, "out", "o", "", "archive to write (default NAME-VERSION.zdt in the current directory)")
	fs.BoolVar(&o.lock, "lock", false, "rebuild exactly the content of the lock file; fail if a source changed")
	fs.StringVar(&o.lockFile, "lock-file", "", "lock file to write, or to read with --lock (default NAME.lock.yaml next to the spec NAME.yaml)")
	fs.StringSliceVar(&o.platforms, "platform", nil, "keep only these platforms (OS/ARCH[/VARIANT]) of multi-arch images; overrides the spec")
	fs.BoolVar(&o.strictPlat, "strict-platforms", false, "fail when a single-platform image is not of one of the platforms (default: bundle it with a warning)")
	fs.IntVar(&o.concurrency, "concurrency", 0, "one budget for everything fetched at once: items, charts, files and image blobs (default: 2 x CPUs, at least 4)")
	fs.StringVar(&o.cacheDir, "cache-dir", "", "persistent blob cache shared by creates; blobs found there are not fetched again (default $XDG_CACHE_HOME/zdt, ~/.cache/zdt)")
	fs.BoolVar(&o.noCache, "no-cache", false, "stage blobs in a temp dir next to the archive instead of the cache")
	o.reg.AddFlags(fs)
	fs.BoolVar(&o.discover, "discover-images", true, "render each chart with its values and add the images it uses (and its artifacthub.io/images annotation) to the bundle")
	o.fetch.AddFlags(fs)
	fs.StringVar(&o.key, "key", "", "sign with this cosign private key (password in COSIGN_PASSWORD) or KMS URI; also writes ARCHIVE.sigstore.json")
	fs.StringVar(&o.base, "base", "", "make a delta bundle: leave out every blob this earlier bundle holds (installing it needs that bundle installed, or given with --base)")
}

func newCreateCmd(g *globals) *cobra.Command {
	o := &createOptions{}
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Build a bundle archive from a zdt.yaml spec",
		Long: `Build a bundle archive from a zdt.yaml spec.

Every image, chart, file and AMI of the spec is resolved to a digest, staged,
and written into one OCI image layout inside an uncompressed tar. The same
spec and sources give a byte-identical archive. The resolved digests are
written to the lock file (zdt.lock.yaml next to the spec); --lock rebuilds
exactly that content and fails, naming the item, if a source changed.

The archive is written to a temp file and renamed into place when complete:
an interrupted create leaves nothing behind.

Content is fetched in phases that share one --concurrency budget: charts
(fetched from local directories, https Helm repositories or oci:// registries,
with their dependencies vendored, and rendered to discover the images they
use), then every image is resolved to a digest and its manifests read, then
every missing blob is fetched once however many images share it, largest
first. Blobs are kept in the --cache-dir cache (digest-checked before they
appear there; synced by a later create), so a second create fetches only what changed and a
create that was interrupted (Ctrl-C, kill -9) resumes without fetching again
what it had finished, and asks registries only for the rest of a large blob
it was in the middle of (HTTP Range; every byte is still digest-checked).
'zdt cache ls' and 'zdt cache prune' list and trim the cache. Requests are retried with backoff on 429 and 5xx.

--base OLD.zdt makes a delta bundle: every blob OLD holds is left out and
the root names OLD's root digest, so an update carries only what changed.
Installing the delta needs OLD installed; other commands take --base OLD.zdt.

Registry credentials come from the Docker config (~/.docker/config.json,
$DOCKER_CONFIG) and its credential helpers, unless --registry-config gives
them. The --registry-config file:

  registries:
    registry.example:5000:
      ca: /etc/zdt/registry-ca.pem    # trusted in addition to the system CAs
    mirror.internal:
      insecure: true                  # HTTPS without certificate verification
      username: robot                 # basic auth (else the Docker config)
      password: secret
    127.0.0.1:5000:
      plainHTTP: true                 # the default for loopback hosts

--registry-ca, --insecure-registry and --plain-http-registry add to it.`,
		Example: `  zdt bundle create -f examples/quickstart/zdt.yaml -o build/quickstart.zdt
  zdt bundle create --lock -o platform-1.4.0.zdt
  COSIGN_PASSWORD=... zdt bundle create --key cosign.key -o platform-1.4.0.zdt`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g, cmd.Flags().Changed("discover-images"))
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newInspectCmd(g *globals) *cobra.Command {
	base := &baseOptions{}
	cmd := &cobra.Command{
		Use:   "inspect BUNDLE",
		Short: "List a bundle's components, items, digests and sizes",
		Long: `List a bundle's components, items, digests and sizes.

Reads the archive's tar headers and manifests only (no blob is hashed; use
'zdt bundle verify' for that). The total counts every item's blobs; the
stored size counts each blob once, as the archive holds it.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, done, err := g.openBundle(cmd.Context(), args[0], nil, base)
			if err != nil {
				return err
			}
			defer done()
			gr, err := a.Walk(cmd.Context())
			if err != nil {
				return err
			}
			repo, _, _ := strings.Cut(bundle.RootRef(a.Config.Name, a.Config.Version), ":")
			if g.json() {
				return g.printJSON(inspectOutput{
					Name: a.Config.Name, Version: a.Config.Version, Description: a.Config.Description,
					Root: a.Root.Digest, RootRepository: repo, ToolVersion: a.Config.ToolVersion,
					Platforms: a.Config.Platforms, Items: gr.Items,
					TotalSize: gr.TotalSize(), UniqueSize: gr.UniqueSize(), Blobs: len(gr.Blobs), ArchiveSize: a.Size(),
					Base: a.Base(),
				})
			}
			// Names come from an archive that may be unverified: escape
			// what a terminal would interpret.
			fmt.Fprintf(g.stdout, "bundle      %s %s\n", printable(a.Config.Name), printable(a.Config.Version))
			fmt.Fprintf(g.stdout, "root        %s\n", a.Root.Digest)
			if a.Base() != "" {
				fmt.Fprintf(g.stdout, "delta on    %s (its blobs not in this archive are read from there)\n", a.Base())
			}
			fmt.Fprintf(g.stdout, "repository  %s:%s\n", printable(repo), printable(a.Config.Version))
			fmt.Fprintf(g.stdout, "created by  zdt %s\n\n", printable(a.Config.ToolVersion))
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "COMPONENT\tKIND\tNAME\tDIGEST\tSIZE")
			for _, it := range gr.Items {
				name := printable(it.Name)
				if it.Target != "" {
					name += " -> " + printable(it.Target)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(it.Component), printable(it.Kind), name, printable(shortDigest(it.Digest)), humanBytes(it.Size))
			}
			tw.Flush()
			fmt.Fprintf(g.stdout, "\n%d items, %s in total, %s stored once in %d blobs (archive %s)\n",
				len(gr.Items), humanBytes(gr.TotalSize()), humanBytes(gr.UniqueSize()), len(gr.Blobs), humanBytes(a.Size()))
			return nil
		},
	}
	base.AddFlags(cmd.Flags())
	return cmd
}

// verifyOptions are the flags of `zdt bundle verify`.
type verifyOptions struct {
	concurrency int
	trust       trustOptions
	base        baseOptions
}

func (o *verifyOptions) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.concurrency, "concurrency", 0, "blobs hashed at once (default: number of CPUs)")
	o.trust.AddFlags(fs)
	o.base.AddFlags(fs)
}

func newVerifyCmd(g *globals) *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify BUNDLE",
		Short: "Check a bundle's signature, structure and every blob's digest",
		Long: `Check a bundle's signature, structure and every blob's digest.

First the signature of the bundle root (and its provenance and SBOM
attestations) is checked against the trust policy: --key PUB (repeatable),
or --policy FILE. An unsigned bundle, one signed by a key the policy does not
trust, or a signature over another digest is refused; --insecure-skip-signature
accepts any bundle and prints a warning. Then the structure: refuses entries outside an OCI layout (absolute or '..' paths, links),
truncated archives, oversized metadata, blobs not reachable from the bundle
root, missing blobs and blobs whose bytes do not match their digest, naming
the first bad blob and the item it belongs to. Blobs are hashed in parallel
straight from the archive. Exit code 3 when verification fails.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, sig, done, err := g.openBundle(cmd.Context(), args[0], &o.trust, &o.base)
			if err != nil {
				return err
			}
			defer done()
			bar := g.progress("verifying")
			res, err := a.Verify(cmd.Context(), bundle.VerifyOptions{Concurrency: o.concurrency, Progress: bar.update})
			bar.finish()
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if g.json() {
				return g.printJSON(verifyOutput{Verified: true, Root: a.Root.Digest, Blobs: res.Blobs, Bytes: res.Bytes, Items: len(res.Graph.Items), Signature: sig})
			}
			fmt.Fprintf(g.stdout, "verified %s: %d items, %d blobs, %s hashed\nroot %s\n",
				args[0], len(res.Graph.Items), res.Blobs, humanBytes(res.Bytes), a.Root.Digest)
			if sig.Verified {
				fmt.Fprintf(g.stdout, "signed by %s\n", sig.Signer)
				for _, at := range sig.Attestations {
					fmt.Fprintf(g.stdout, "attested %s\n", at.PredicateType)
				}
			} else {
				fmt.Fprintln(g.stdout, "signature NOT checked (--insecure-skip-signature)")
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newExtractCmd(g *globals) *cobra.Command {
	o := &trustOptions{}
	base := &baseOptions{}
	cmd := &cobra.Command{
		Use:   "extract BUNDLE DIR",
		Short: "Verify a bundle and write its OCI layout to DIR",
		Long: `Verify a bundle and write its OCI layout to DIR, for cosign, crane, skopeo
or oras. Nothing is written unless the whole bundle verifies: its signature
against the trust policy (--key, --policy or --insecure-skip-signature, as for
'zdt bundle verify'), then every blob.`,
		Example: `  zdt bundle extract --key cosign.pub build/quickstart.zdt /tmp/layout
  skopeo inspect oci:/tmp/layout:zdt.example/quickstart/hello:1.0`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, done, err := g.openBundle(cmd.Context(), args[0], o, base)
			if err != nil {
				return err
			}
			defer done()
			bar := g.progress("verifying")
			err = bundle.Extract(cmd.Context(), a, args[1], bundle.ExtractOptions{VerifyOptions: bundle.VerifyOptions{Progress: bar.update}})
			bar.finish()
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(extractOutput{Dir: args[1], Root: a.Root.Digest})
			}
			fmt.Fprintf(g.stdout, "extracted %s to %s\n", args[0], args[1])
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	base.AddFlags(cmd.Flags())
	return cmd
}

func newSchemaCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of zdt.yaml",
		Long: `Print the JSON Schema of zdt.yaml, for editors. With the YAML language
server, put this at the top of zdt.yaml:
  # yaml-language-server: $schema=zdt.schema.json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := manifests.Schema()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, string(b))
			return err
		},
	}
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print zdt's version",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.json() {
				return g.printJSON(versionOutput{Version: version.String()})
			}
			_, err := fmt.Fprintln(g.stdout, "zdt", version.String())
			return err
		},
	}
}

// printable returns s as is when every rune of it prints as itself, else
// quoted with escapes (strconv.Quote): names read from an archive must not
// move the cursor, recolour the terminal or start a line of their own.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// baseOptions is --base, for the commands that read a delta bundle.
type baseOptions struct {
	files []string
}

func (o *baseOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.files, "base", nil, "base bundle of a delta bundle (repeatable): the delta reads the blobs it leaves out from it")
}

// openBundle opens the bundle at p, checks its signature against trust
// (when given: before anything else reads it) and gives a delta its base
// from the --base files (when given). done closes the archive and its base.
func (g *globals) openBundle(ctx context.Context, p string, trust *trustOptions, base *baseOptions) (a *bundle.Archive, sig signing.Result, done func(), err error) {
	var bases *installer.Bases
	if base != nil {
		bases = &installer.Bases{Files: base.files}
	}
	v, err := g.openVerified(ctx, p, trust, bases)
	if err != nil {
		return nil, sig, nil, err
	}
	return v.Archive, v.Signature, func() { v.Close() }, nil
}

// openVerified is installer.OpenVerified with the policy the flags give
// (none when trust is nil), reporting an unchecked signature.
func (g *globals) openVerified(ctx context.Context, p string, trust *trustOptions, bases *installer.Bases) (*installer.Verified, error) {
	var policy *signing.Policy
	if trust != nil {
		pl, err := trust.load(ctx)
		if err != nil {
			return nil, err
		}
		policy = &pl
	}
	v, err := installer.OpenVerified(ctx, p, policy, bases)
	if err != nil {
		return nil, err
	}
	g.warn(v.Archive, v.Signature)
	return v, nil
}
