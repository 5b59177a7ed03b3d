package registry

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/remote"
)

// PushOptions tune Push. Remotes is required.
type PushOptions struct {
	// Remotes opens repositories of the target registry (TLS, credentials).
	Remotes *remote.Remotes
	// Concurrency bounds the manifests copied at once, and the blobs per
	// copy (default 4).
	Concurrency int
	// Logger receives what is done (default: discard).
	Logger *slog.Logger
}

// PushResult says what Push placed.
type PushResult struct {
	Placements []Placement
	// Target is the registry host and prefix pushed to.
	Target string
}

// Push mirrors a (verified) bundle into a registry a site already runs
// (Harbor, distribution on S3, …) under to = HOST[/PREFIX], with the same
// names `zdt serve` uses: an image docker.io/library/nginx:1.25 lands at
// HOST/PREFIX/library/nginx:1.25, a chart at HOST/PREFIX/charts/NAME, the
// bundle root and its signatures at HOST/PREFIX/zdt/NAME, so
// `cosign verify HOST/PREFIX/zdt/NAME@ROOT` works against it. Blobs the
// registry has already are not uploaded again (oras-go checks before it
// copies); pushing again changes nothing.
func Push(ctx context.Context, a *bundle.Archive, to string, opts PushOptions) (PushResult, error) {
	if opts.Remotes == nil {
		return PushResult{}, fmt.Errorf("push: no registry clients")
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	host, prefix, _ := strings.Cut(strings.TrimSuffix(to, "/"), "/")
	if host == "" {
		return PushResult{}, fmt.Errorf("push: target %q is not HOST[/PREFIX]", to)
	}
	ps, err := Placements(ctx, a)
	if err != nil {
		return PushResult{}, err
	}
	// Items first, the root (which references them) and its signatures
	// last, so a registry that checks references sees them present.
	var items, last []Placement
	for _, p := range ps {
		if p.Kind == "bundle" || p.Kind == "attachment" {
			last = append(last, p)
		} else {
			items = append(items, p)
		}
	}
	// The root repository holds every blob of the bundle: mount them from
	// the item repositories pushed first instead of uploading them again.
	mountFrom := map[string]string{}
	for _, p := range items {
		for _, d := range append(append([]digest.Digest(nil), p.Manifests...), p.Blobs...) {
			if _, ok := mountFrom[d.String()]; !ok {
				mountFrom[d.String()] = join(prefix, p.Repository)
			}
		}
	}
	for i, batch := range [][]Placement{items, last} {
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(opts.Concurrency)
		for _, p := range batch {
			var mounts map[string]string
			if i == 1 {
				mounts = mountFrom
			}
			eg.Go(func() error { return pushOne(ectx, a, host, prefix, p, mounts, opts) })
		}
		if err := eg.Wait(); err != nil {
			return PushResult{}, err
		}
	}
	return PushResult{Placements: ps, Target: to}, nil
}

func join(prefix, repo string) string {
	if prefix == "" {
		return repo
	}
	return prefix + "/" + repo
}

func pushOne(ctx context.Context, a *bundle.Archive, host, prefix string, p Placement, mounts map[string]string, opts PushOptions) error {
	path := join(prefix, p.Repository)
	repo, err := opts.Remotes.Repository(host, path)
	if err != nil {
		return fmt.Errorf("pushing %s: %w", path, err)
	}
	size, ok := a.BlobSize(p.Digest)
	if !ok {
		return &bundle.BlobError{Digest: p.Digest, Err: bundle.ErrMissingBlob}
	}
	desc := ocispec.Descriptor{MediaType: p.MediaType, Digest: p.Digest, Size: size}
	copyOpts := oras.CopyGraphOptions{Concurrency: opts.Concurrency}
	if mounts != nil {
		copyOpts.MountFrom = func(_ context.Context, d ocispec.Descriptor) ([]string, error) {
			if from, ok := mounts[d.Digest.String()]; ok && from != path {
				return []string{from}, nil
			}
			return nil, nil
		}
	}
	if err := oras.CopyGraph(ctx, a, repo, desc, copyOpts); err != nil {
		return fmt.Errorf("pushing %s@%s: %w", path, p.Digest, err)
	}
	if p.Tag != "" {
		if err := repo.Tag(ctx, desc, p.Tag); err != nil {
			return fmt.Errorf("tagging %s:%s: %w", path, p.Tag, err)
		}
	}
	opts.Logger.Info("pushed", "repository", host+"/"+path, "tag", p.Tag, "digest", p.Digest)
	return nil
}
