package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/remote"
)

// pushOptions are the flags of `zdt push`.
type pushOptions struct {
	bundle      string
	to          string
	concurrency int
	reg         registryOptions
	trust       trustOptions
	base        baseOptions
}

func (o *pushOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.bundle, "bundle", "", "bundle archive to push (required)")
	fs.StringVar(&o.to, "to", "", "REGISTRY[/PREFIX] to push to (required), e.g. harbor.example/platform")
	fs.IntVar(&o.concurrency, "concurrency", 4, "manifests and blobs copied at once")
	o.reg.AddFlags(fs)
	o.trust.AddFlags(fs)
	o.base.AddFlags(fs)
}

func newPushCmd(g *globals) *cobra.Command {
	o := &pushOptions{}
	cmd := &cobra.Command{
		Use:   "push --bundle BUNDLE --to REGISTRY[/PREFIX]",
		Short: "Mirror a verified bundle into a registry the site already runs",
		Long: `Mirror a verified bundle into a registry the site already runs (Harbor,
distribution on S3, …), under the names 'zdt serve' uses: images at their
original paths (docker.io/library/nginx:1.25 → REGISTRY/PREFIX/library/nginx:1.25,
quay.io/x/y → REGISTRY/PREFIX/quay.io/x/y), charts at charts/NAME, files at
files/NAME, AMIs at amis/NAME, and the bundle root with its signatures at
zdt/NAME, so 'cosign verify REGISTRY/PREFIX/zdt/NAME@ROOT' works there.

The signature is checked against the trust policy and every blob's digest
before anything is pushed. Blobs the registry has already are not uploaded
again; pushing the same bundle twice changes nothing. Credentials come from
the Docker config and credential helpers, or --registry-config.`,
		Example: `  zdt push --bundle platform-1.4.0.zdt --key cosign.pub --to harbor.example/platform`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.bundle == "" || o.to == "" {
				return usageError{fmt.Errorf("--bundle and --to are required")}
			}
			ctx := cmd.Context()
			cfg, err := o.reg.config()
			if err != nil {
				return err
			}
			a, _, done, err := g.openBundle(ctx, o.bundle, &o.trust, &o.base)
			if err != nil {
				return err
			}
			defer done()
			bar := g.progress("verifying")
			_, err = a.Verify(ctx, bundle.VerifyOptions{Progress: bar.update})
			bar.finish()
			if err != nil {
				return err
			}
			res, err := registry.Push(ctx, a, o.to, registry.PushOptions{
				Remotes: remote.New(cfg, o.concurrency), Concurrency: o.concurrency, Logger: g.logger(),
			})
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(pushOutput{Target: res.Target, Root: a.Root.Digest, Placements: res.Placements})
			}
			fmt.Fprintf(g.stdout, "pushed %s to %s (%d repositories)\n", o.bundle, o.to, len(res.Placements))
			fmt.Fprintf(g.stdout, "root %s/%s@%s\n", o.to, registry.RootRepository(a.Config.Name), a.Root.Digest)
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
