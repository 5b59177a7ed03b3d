package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"gopkg.in/yaml.v3"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"oras.land/oras-go/v2/content"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/charts"
	"zdt.dev/zdt/manifests"
)

// chartResult is a staged chart and the images found in it.
type chartResult struct {
	resolved
	// commit holds the manifests of an OCI chart to store after its blobs.
	commit []stagedManifest
	// images are the normalized references discovered in the chart.
	images []string
}

// chart stages a Helm chart as an OCI artifact with Helm's media types,
// from a local directory or .tgz, an https Helm repository (index.yaml) or
// an OCI registry (oci://). Directories are packaged reproducibly (fixed
// mtimes, no gzip timestamp); dependencies that the chart declares but does
// not carry in charts/ are fetched and vendored. With DiscoverImages, the
// chart is rendered with its values and the spec's values file and every
// image it uses is returned.
func (c *creator) chart(ctx context.Context, comp string, ch manifests.Chart) (chartResult, error) {
	fail := func(err error) (chartResult, error) {
		return chartResult{}, fmt.Errorf("%schart %s (%s): %w", c.at(ch.Pos), ch.Name, ch.Source, c.explainSource(ctx, ch.Source, err))
	}
	var (
		res    chartResult
		tgz    []byte
		loaded *chart.Chart
		err    error
	)
	switch {
	case strings.HasPrefix(ch.Source, "oci://"):
		res, tgz, err = c.ociChart(ctx, comp, ch)
		if err != nil {
			return fail(err)
		}
		if loaded, err = loader.LoadArchive(bytes.NewReader(tgz)); err != nil {
			return fail(err)
		}
		if err := charts.Check(loaded, ch); err != nil {
			return fail(err)
		}
		if missing := charts.MissingDeps(loaded); len(missing) > 0 {
			return fail(fmt.Errorf("the chart lacks its dependencies %v in charts/; push it with them vendored (helm dependency build)", missing))
		}
	case strings.HasPrefix(ch.Source, "https://") || strings.HasPrefix(ch.Source, "http://"):
		var source string
		if tgz, source, err = c.repoChart(ctx, ch.Source, ch.Name, ch.Version); err != nil {
			return fail(err)
		}
		if loaded, err = loader.LoadArchive(bytes.NewReader(tgz)); err != nil {
			return fail(err)
		}
		if err := charts.Check(loaded, ch); err != nil {
			return fail(err)
		}
		if len(charts.MissingDeps(loaded)) > 0 {
			if err := charts.Vendor(ctx, loaded, "", c.fetchDep, c.opts.Logger); err != nil {
				return fail(err)
			}
			if tgz, err = charts.Package(loaded); err != nil {
				return fail(err)
			}
		}
		if res.resolved, err = c.putChart(ctx, comp, ch, loaded, tgz, source); err != nil {
			return fail(err)
		}
	default:
		p := c.path(ch.Source)
		if loaded, err = loader.Load(p); err != nil {
			return fail(err)
		}
		if err := charts.Check(loaded, ch); err != nil {
			return fail(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fail(err)
		}
		if fi.IsDir() || len(charts.MissingDeps(loaded)) > 0 {
			base := p
			if !fi.IsDir() {
				base = filepath.Dir(p)
			}
			if err := charts.Vendor(ctx, loaded, base, c.fetchDep, c.opts.Logger); err != nil {
				return fail(err)
			}
			if tgz, err = charts.Package(loaded); err != nil {
				return fail(err)
			}
		} else if tgz, err = os.ReadFile(p); err != nil {
			return fail(err)
		}
		if res.resolved, err = c.putChart(ctx, comp, ch, loaded, tgz, ch.Source); err != nil {
			return fail(err)
		}
	}
	if c.opts.DiscoverImages {
		if res.images, err = c.discoverImages(ctx, comp, ch, tgz); err != nil {
			return fail(err)
		}
	}
	c.opts.Logger.Info("staged chart", "name", ch.Name, "version", loaded.Metadata.Version, "digest", res.desc.Digest, "images", len(res.images))
	return res, nil
}

// putChart stores a chart archive as zdt's Helm-style OCI artifact.
func (c *creator) putChart(ctx context.Context, comp string, ch manifests.Chart, loaded *chart.Chart, tgz []byte, source string) (resolved, error) {
	cfg, err := json.Marshal(loaded.Metadata)
	if err != nil {
		return resolved{}, err
	}
	cfgDesc, err := c.store.PutBytes(ctx, manifests.MediaTypeHelmConfig, cfg)
	if err != nil {
		return resolved{}, err
	}
	layer, err := c.store.PutBytes(ctx, manifests.MediaTypeHelmChart, tgz)
	if err != nil {
		return resolved{}, err
	}
	ann := map[string]string{
		ocispec.AnnotationTitle:   loaded.Metadata.Name,
		ocispec.AnnotationVersion: loaded.Metadata.Version,
	}
	if loaded.Metadata.Description != "" {
		ann[ocispec.AnnotationDescription] = loaded.Metadata.Description
	}
	desc, err := c.store.putManifest(ctx, "", cfgDesc, []ocispec.Descriptor{layer}, ann)
	if err != nil {
		return resolved{}, err
	}
	return chartItem(comp, ch, loaded, desc, source), nil
}

func chartItem(comp string, ch manifests.Chart, loaded *chart.Chart, desc ocispec.Descriptor, source string) resolved {
	ref := "charts/" + loaded.Metadata.Name + ":" + loaded.Metadata.Version
	it := bundle.Item{Component: comp, Kind: manifests.KindChart, Name: ch.Name, Ref: ref, Digest: desc.Digest.String(), MediaType: desc.MediaType}
	return resolved{item: it, desc: desc, lock: manifests.LockItem{Component: comp, Kind: it.Kind, Name: ch.Name, Digest: it.Digest, Source: source, Version: loaded.Metadata.Version}}
}

// ociChart resolves oci://HOST/PATH[/NAME] at the chart's version and plans
// its manifest as pushed by helm (its digest is kept). It returns the chart
// archive, which is stored at once (it is a leaf blob).
func (c *creator) ociChart(ctx context.Context, comp string, ch manifests.Chart) (chartResult, []byte, error) {
	repo, version, err := c.ociChartRepo(ctx, strings.TrimPrefix(ch.Source, "oci://"), ch.Name, ch.Version)
	if err != nil {
		return chartResult{}, nil, err
	}
	tagOrDigest := strings.ReplaceAll(version, "+", "_")
	if c.opts.Lock != nil {
		if l, ok := c.opts.Lock.Find(manifests.KindChart, ch.Name); ok {
			if _, d, ok := strings.Cut(l.Source, "@"); ok {
				tagOrDigest = d
			}
		}
	}
	desc, err := repo.Resolve(ctx, tagOrDigest)
	if err != nil {
		return chartResult{}, nil, fmt.Errorf("resolving %s: %w", tagOrDigest, err)
	}
	raw, _, err := c.plan.readManifest(ctx, repo, desc)
	if err != nil {
		return chartResult{}, nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return chartResult{}, nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	var layer *ocispec.Descriptor
	for i, l := range m.Layers {
		if l.MediaType == manifests.MediaTypeHelmChart || l.MediaType == "application/tar+gzip" {
			layer = &m.Layers[i]
			break
		}
	}
	if layer == nil || layer.Size > charts.MaxChartSize {
		return chartResult{}, nil, fmt.Errorf("manifest %s has no chart layer (%s) of at most %d bytes", desc.Digest, manifests.MediaTypeHelmChart, charts.MaxChartSize)
	}
	tgz, ok := c.store.readVerified(ctx, layer.Digest, charts.MaxChartSize) // a corrupt entry is removed
	if !ok || int64(len(tgz)) != layer.Size {
		if err := c.plan.fetchBlob(ctx, &pendingBlob{desc: *layer, src: repo, item: "chart " + ch.Name}, func(int64) {}); err != nil {
			return chartResult{}, nil, fmt.Errorf("fetching chart layer %s: %w", layer.Digest, err)
		}
		if tgz, err = content.FetchAll(ctx, c.store, *layer); err != nil {
			return chartResult{}, nil, err
		}
	}
	var res chartResult
	if err := c.plan.walk(ctx, repo, desc, "chart "+ch.Name, 0, &res.commit, &walkBudget{}); err != nil {
		return chartResult{}, nil, err
	}
	loaded, err := loader.LoadArchive(bytes.NewReader(tgz))
	if err != nil {
		return chartResult{}, nil, err
	}
	top := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, ArtifactType: m.ArtifactType}
	if top.MediaType == "" {
		top.MediaType = ocispec.MediaTypeImageManifest
	}
	res.resolved = chartItem(comp, ch, loaded, top, repo.Reference.Registry+"/"+repo.Reference.Repository+"@"+desc.Digest.String())
	return res, tgz, nil
}

// ociChartRepo opens the repository of an OCI chart: HOST/PATH/NAME, where
// the source may or may not end with the chart name. A version that is a
// semver constraint is resolved against the repository's tags.
func (c *creator) ociChartRepo(ctx context.Context, src, name, version string) (*orasremote.Repository, string, error) {
	host, p, ok := strings.Cut(src, "/")
	if !ok || p == "" {
		p = ""
	}
	p = strings.Trim(p, "/")
	if path.Base(p) != name {
		p = strings.TrimPrefix(p+"/"+name, "/")
	}
	repo, err := c.remotes.Repository(host, p)
	if err != nil {
		return nil, "", err
	}
	if _, err := semver.StrictNewVersion(strings.TrimPrefix(version, "v")); err == nil || version == "" {
		return repo, version, nil
	}
	cons, err := semver.NewConstraint(version)
	if err != nil {
		return repo, version, nil // a plain tag
	}
	var best *semver.Version
	var bestTag string
	err = repo.Tags(ctx, "", func(tags []string) error {
		for _, t := range tags {
			v, err := semver.NewVersion(strings.ReplaceAll(t, "_", "+"))
			if err == nil && cons.Check(v) && (best == nil || v.GreaterThan(best)) {
				best, bestTag = v, t
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("listing tags: %w", err)
	}
	if best == nil {
		return nil, "", fmt.Errorf("no tag matches version %q", version)
	}
	return repo, bestTag, nil
}

// repoChart downloads NAME at VERSION (an exact version or a semver
// constraint) from a Helm HTTP repository, checking the archive against the
// digest in index.yaml. The source it returns is URL@sha256:HEX. A chart
// whose digest is in the store already (and whose bytes still hash to it)
// is not downloaded again.
func (c *creator) repoChart(ctx context.Context, repoURL, name, version string) ([]byte, string, error) {
	base := strings.TrimSuffix(repoURL, "/")
	indexURL := base + "/index.yaml"
	var raw []byte
	err := retryTransient(ctx, func() error {
		var err error
		raw, err = c.getLimited(ctx, indexURL, c.opts.MaxChartIndexSize)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	idx, err := charts.ParseRepoIndex(raw, c.opts.MaxChartIndexSize)
	raw = nil
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", indexURL, err)
	}
	cv, err := idx.Get(name, version)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %s %s: %w", indexURL, name, version, err)
	}
	if len(cv.URLs) == 0 {
		return nil, "", fmt.Errorf("%s: %s %s has no download URL", indexURL, name, cv.Version)
	}
	u, err := url.Parse(cv.URLs[0])
	if err != nil {
		return nil, "", err
	}
	if !u.IsAbs() {
		b, err := url.Parse(base + "/")
		if err != nil {
			return nil, "", err
		}
		u = b.ResolveReference(u)
	}
	want := strings.TrimPrefix(cv.Digest, "sha256:")
	if want == "" {
		if c.opts.RequireChartDigests {
			return nil, "", fmt.Errorf("%s: %s %s has no digest (--require-chart-digests): %w", indexURL, name, cv.Version, bundle.ErrNoChartDigest)
		}
		c.opts.Logger.Warn("chart index entry has no digest: the download is not checked", "index", indexURL, "chart", name, "version", cv.Version)
	} else if d := digest.NewDigestFromEncoded(digest.SHA256, want); d.Validate() == nil {
		if b, ok := c.store.readVerified(ctx, d, charts.MaxChartSize); ok {
			c.opts.Logger.Debug("chart from cache", "url", u.String(), "digest", d)
			return b, u.String() + "@" + d.String(), nil
		}
	}
	var tgz []byte
	err = retryTransient(ctx, func() error {
		var err error
		tgz, err = c.getLimited(ctx, u.String(), charts.MaxChartSize)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(tgz)
	got := hex.EncodeToString(sum[:])
	if want != "" && got != want {
		return nil, "", &SourceDigestError{Source: u.String(), Want: want, Got: got, Origin: indexURL}
	}
	// Kept in the store so that the next create need not download it.
	if _, err := c.store.PutBytes(ctx, manifests.MediaTypeHelmChart, tgz); err != nil {
		return nil, "", err
	}
	return tgz, u.String() + "@sha256:" + got, nil
}

// getLimited reads an http(s) URL whole, refusing more than limit bytes
// (without reading further than limit+1).
func (c *creator) getLimited(ctx context.Context, u string, limit int64) ([]byte, error) {
	resp, err := c.remotes.Get(ctx, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%s is %d bytes (limit %d): %w", u, resp.ContentLength, limit, bundle.ErrTooLarge)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", u, limit, bundle.ErrTooLarge)
	}
	return b, nil
}

// chartRepos collects the hosts chart dependencies may be fetched from:
// those of the spec's chart sources and CreateOptions.AllowChartRepos.
func (c *creator) chartRepos() error {
	c.repoHosts = map[string]bool{}
	c.repoPlain = map[string]bool{}
	add := func(src string, explicit bool) error {
		if !strings.Contains(src, "://") {
			if !explicit {
				return nil // a local chart
			}
			src = "https://" + src
		}
		u, err := url.Parse(src)
		if err != nil || u.Host == "" {
			return fmt.Errorf("chart repository %q: not HOST[:PORT] or a URL", src)
		}
		c.repoHosts[u.Host] = true
		if u.Scheme == "http" {
			c.repoPlain[u.Host] = true
		}
		return nil
	}
	for _, comp := range c.spec.Components {
		for _, ch := range comp.Charts {
			if err := add(ch.Source, false); err != nil {
				return err
			}
		}
	}
	for _, r := range c.opts.AllowChartRepos {
		if err := add(r, true); err != nil {
			return err
		}
	}
	return nil
}

// checkDepRepo refuses a dependency repository (named by a chart, so
// untrusted) on a host the spec does not allow, or over plain http where
// neither the spec, the registry config nor a loopback host allows it.
func (c *creator) checkDepRepo(repo string) error {
	u, err := url.Parse(repo)
	if err != nil {
		return err
	}
	if !c.repoHosts[u.Host] {
		return fmt.Errorf("repository %s: host %q is not a chart source of the spec (allow it with --allow-chart-repo): %w", repo, u.Host, bundle.ErrChartRepoNotAllowed)
	}
	if u.Scheme == "http" && !c.repoPlain[u.Host] && !c.remotes.PlainHTTP(u.Host) {
		return fmt.Errorf("repository %s: plain http to %q (allow it with --allow-chart-repo http://%s): %w", repo, u.Host, u.Host, bundle.ErrChartRepoNotAllowed)
	}
	return nil
}

// discoverImages renders the chart (its values, then the spec's values
// file) as a client-only install would and collects every `image:` string
// of the rendered manifests, plus the images annotation. The result is
// normalized, deduplicated and sorted. A chart that does not render is
// reported in the log and contributes its annotation only.
//
// Rendering runs under the render limits (CreateOptions.RenderTimeout and
// MaxRenderSize): a chart that exceeds them fails the create when
// discovery was asked for explicitly (DiscoveryRequired), else it is
// skipped with a warning. Cancelling ctx stops it at once.
func (c *creator) discoverImages(ctx context.Context, comp string, ch manifests.Chart, tgz []byte) ([]string, error) {
	loaded, err := loader.LoadArchive(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	add := func(ref string) {
		ref = strings.TrimSpace(ref)
		if ref == "" {
			return
		}
		if n, err := NormalizeRef(ref); err == nil {
			found[n] = true
		}
	}
	if ann := loaded.Metadata.Annotations[charts.ImagesAnnotation]; ann != "" {
		var list []struct {
			Name  string `yaml:"name"`
			Image string `yaml:"image"`
		}
		if err := yaml.Unmarshal([]byte(ann), &list); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", charts.ImagesAnnotation, err)
		}
		for _, e := range list {
			add(e.Image)
		}
	}
	vals := map[string]any{}
	if ch.Values != "" {
		b, err := os.ReadFile(c.path(ch.Values))
		if err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
		v, err := common.ReadValues(b)
		if err != nil {
			return nil, fmt.Errorf("values %s: %w", ch.Values, err)
		}
		vals = v
	}
	rctx, cancel := context.WithTimeoutCause(ctx, c.opts.RenderTimeout,
		fmt.Errorf("rendering took longer than %s: %w", c.opts.RenderTimeout, bundle.ErrRenderLimit))
	rendered, err := charts.Render(rctx, loaded, vals, orDefault(ch.Release, ch.Name), orDefault(ch.Namespace, comp), c.opts.MaxRenderSize)
	cancel()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case errors.Is(err, bundle.ErrRenderLimit) && c.opts.DiscoveryRequired:
		return nil, fmt.Errorf("discovering images: %w", err)
	case errors.Is(err, bundle.ErrRenderLimit):
		c.opts.Logger.Warn("chart exceeds the render limits; skipped, only its images annotation is used", "chart", ch.Name, "err", err)
	default:
		c.opts.Logger.Warn("chart does not render; only its images annotation is used", "chart", ch.Name, "err", err)
	}
	for _, ref := range charts.ImagesInManifests(rendered) {
		add(ref)
	}
	out := make([]string, 0, len(found))
	for r := range found {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

// fetchDep downloads a chart dependency for charts.Vendor from an allowed
// oci:// or http(s):// repository.
func (c *creator) fetchDep(ctx context.Context, repo, name, version string) ([]byte, error) {
	if err := c.checkDepRepo(repo); err != nil {
		return nil, err
	}
	if strings.HasPrefix(repo, "oci://") {
		_, tgz, err := c.ociChart(ctx, "", manifests.Chart{Name: name, Source: repo, Version: version})
		return tgz, err
	}
	tgz, _, err := c.repoChart(ctx, repo, name, version)
	return tgz, err
}
