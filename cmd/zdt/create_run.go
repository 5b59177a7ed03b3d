package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/version"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/signing"
)

// run is `zdt bundle create`. discoverSet says --discover-images was given
// explicitly (which makes discovery required).
func (o *createOptions) run(ctx context.Context, g *globals, discoverSet bool) error {
	spec, err := manifests.Load(o.spec)
	if err != nil {
		return err
	}
	lockPath := o.lockFile
	if lockPath == "" {
		lockPath = manifests.LockPath(o.spec)
	}
	for _, p := range o.platforms {
		if _, _, _, err := manifests.ParsePlatform(p); err != nil {
			return usageError{err}
		}
	}
	opts, err := o.buildOptions(g, spec, lockPath)
	if err != nil {
		return err
	}
	var signer *signing.Signer
	if o.key != "" {
		signer, err = signing.NewSigner(ctx, signing.SignOptions{Key: o.key, Password: g.keyPassword, Logger: g.logger()})
		if err != nil {
			return err
		}
		defer signer.Close()
		opts.Attach, opts.ArchiveWritten = signer.Attach, signer.SignArchive(opts.Output)
	}
	if err := o.apply(&opts); err != nil {
		return err
	}
	opts.DiscoveryRequired = o.discover && discoverSet
	if o.base != "" {
		base, err := bundle.Open(ctx, o.base)
		if err != nil {
			return fmt.Errorf("--base: %w", err)
		}
		defer base.Close()
		opts.Base = base
	}
	bars := g.phaseBars()
	opts.PhaseProgress = bars.update
	opts.Progress = func(done, total int64) { bars.update(build.PhaseWrite, done, total) }
	res, err := build.Create(ctx, spec, opts)
	bars.finish()
	if err != nil {
		return err
	}
	if !o.lock {
		data, err := res.Lock.Marshal(version.String())
		if err != nil {
			return err
		}
		if err := fsutil.WritePath(lockPath, data, 0o644); err != nil {
			return fmt.Errorf("writing lock file: %w", err)
		}
	}
	return o.report(g, spec, opts, signer, res, lockPath)
}

// buildOptions gives the CreateOptions of the output, lock and budget
// flags; with --lock it reads the lock file. It creates the output's
// directory.
func (o *createOptions) buildOptions(g *globals, spec *manifests.Spec, lockPath string) (build.CreateOptions, error) {
	opts := build.CreateOptions{
		Output:          o.out,
		ToolVersion:     version.String(),
		Platforms:       o.platforms,
		StrictPlatforms: o.strictPlat,
		Concurrency:     o.concurrency,
		Logger:          g.logger(),
	}
	if opts.Output == "" {
		opts.Output = spec.Metadata.Name + "-" + spec.Metadata.Version + ".zdt"
	}
	if o.lock {
		var err error
		if opts.Lock, err = manifests.LoadLock(lockPath); err != nil {
			return opts, fmt.Errorf("--lock: %w", err)
		}
	}
	if dir := filepath.Dir(opts.Output); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return opts, err
		}
	}
	return opts, nil
}

// report prints what create wrote: createOutput with --output json, else
// a summary.
func (o *createOptions) report(g *globals, spec *manifests.Spec, opts build.CreateOptions, signer *signing.Signer, res build.CreateResult, lockPath string) error {
	if g.json() {
		out := createOutput{
			Path: res.Path, Size: res.Size, SHA256: res.Digest.Encoded(),
			Root: res.Root.Digest, RootRepository: strings.SplitN(bundle.RootRef(spec.Metadata.Name, spec.Metadata.Version), ":", 2)[0],
			Items: res.Items, Blobs: res.Blobs, UniqueSize: res.UniqueSize, LockFile: lockPath,
			Discovered: res.Discovered, Fetch: res.Fetch,
		}
		if opts.Base != nil {
			out.Base = &createBase{Root: opts.Base.Root.Digest, Path: o.base, Blobs: res.BaseBlobs, Size: res.BaseSize}
		}
		if signer != nil {
			out.SignedBy = "sha256:" + signer.Fingerprint()
			out.SigstoreBundle = signing.ArchiveBundlePath(res.Path)
		}
		return g.printJSON(out)
	}
	fmt.Fprintf(g.stdout, "created %s (%s, %s, %s)\n", res.Path, humanBytes(res.Size), count(len(res.Items), "item"), count(res.Blobs, "blob"))
	fmt.Fprintf(g.stdout, "root    %s\n", res.Root.Digest)
	fmt.Fprintf(g.stdout, "sha256  %s\n", res.Digest.Encoded())
	fmt.Fprintf(g.stdout, "fetched %s (%s); %d from the cache (%s)\n",
		count(res.Fetch.FetchedBlobs, "blob"), humanBytes(res.Fetch.FetchedBytes), res.Fetch.CachedBlobs, humanBytes(res.Fetch.CachedBytes))
	if res.Fetch.ResumedBlobs > 0 {
		fmt.Fprintf(g.stdout, "resumed %s an interrupted create had started (%s not fetched again)\n",
			count(res.Fetch.ResumedBlobs, "blob"), humanBytes(res.Fetch.ResumedBytes))
	}
	if opts.Base != nil {
		fmt.Fprintf(g.stdout, "delta   on %s %s (%s): %s (%s) left to it\n",
			opts.Base.Config.Name, opts.Base.Config.Version, opts.Base.Root.Digest, count(res.BaseBlobs, "blob"), humanBytes(res.BaseSize))
	}
	printDiscovered(g, res.Discovered)
	if signer != nil {
		fmt.Fprintf(g.stdout, "signed  key sha256:%s, with provenance and SBOM attestations\n", signer.Fingerprint())
		fmt.Fprintf(g.stdout, "        %s (for cosign verify-blob)\n", signing.ArchiveBundlePath(res.Path))
	}
	if !o.lock {
		fmt.Fprintf(g.stdout, "lock    %s\n", lockPath)
	}
	return nil
}

// count is "1 item", "2 items", "0 items".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
