package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
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
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"gopkg.in/yaml.v3"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	sigyaml "sigs.k8s.io/yaml"

	"zdt.dev/zdt/manifests"
)

// maxChartSize bounds a chart archive read into memory.
const maxChartSize = 64 << 20

// DefaultMaxChartIndexSize is CreateOptions.MaxChartIndexSize's default.
const DefaultMaxChartIndexSize = 64 << 20

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
		return chartResult{}, fmt.Errorf("chart %s (%s): %w", ch.Name, ch.Source, err)
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
		if err := checkChart(loaded, ch); err != nil {
			return fail(err)
		}
		if missing := missingDeps(loaded); len(missing) > 0 {
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
		if err := checkChart(loaded, ch); err != nil {
			return fail(err)
		}
		if len(missingDeps(loaded)) > 0 {
			if err := c.vendorDeps(ctx, loaded, "", nil); err != nil {
				return fail(err)
			}
			if tgz, err = packageChart(loaded); err != nil {
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
		if err := checkChart(loaded, ch); err != nil {
			return fail(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fail(err)
		}
		if fi.IsDir() || len(missingDeps(loaded)) > 0 {
			base := p
			if !fi.IsDir() {
				base = filepath.Dir(p)
			}
			if err := c.vendorDeps(ctx, loaded, base, nil); err != nil {
				return fail(err)
			}
			if tgz, err = packageChart(loaded); err != nil {
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

func checkChart(loaded *chart.Chart, ch manifests.Chart) error {
	if loaded.Metadata.Name != ch.Name {
		return fmt.Errorf("the chart is named %q, not %q", loaded.Metadata.Name, ch.Name)
	}
	if ch.Version != "" && loaded.Metadata.Version != ch.Version {
		if c, err := semver.NewConstraint(ch.Version); err == nil {
			if v, err := semver.NewVersion(loaded.Metadata.Version); err == nil && c.Check(v) {
				return nil
			}
		}
		return fmt.Errorf("the chart has version %q, the spec asks for %q", loaded.Metadata.Version, ch.Version)
	}
	return nil
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
	it := Item{Component: comp, Kind: manifests.KindChart, Name: ch.Name, Ref: ref, Digest: desc.Digest.String(), MediaType: desc.MediaType}
	return resolved{item: it, desc: desc, lock: manifests.LockItem{Component: comp, Kind: it.Kind, Name: ch.Name, Digest: it.Digest, Source: source}}
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
	if layer == nil || layer.Size > maxChartSize {
		return chartResult{}, nil, fmt.Errorf("manifest %s has no chart layer (%s) of at most %d bytes", desc.Digest, manifests.MediaTypeHelmChart, maxChartSize)
	}
	tgz, ok := c.store.readVerified(ctx, layer.Digest, maxChartSize) // a corrupt entry is removed
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
func (c *creator) ociChartRepo(ctx context.Context, src, name, version string) (*remote.Repository, string, error) {
	host, p, ok := strings.Cut(src, "/")
	if !ok || p == "" {
		p = ""
	}
	p = strings.Trim(p, "/")
	if path.Base(p) != name {
		p = strings.TrimPrefix(p+"/"+name, "/")
	}
	repo, err := c.remotes.repo(host, p)
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
	idx, err := parseRepoIndex(raw, c.opts.MaxChartIndexSize)
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
			return nil, "", fmt.Errorf("%s: %s %s has no digest (--require-chart-digests): %w", indexURL, name, cv.Version, ErrNoChartDigest)
		}
		c.opts.Logger.Warn("chart index entry has no digest: the download is not checked", "index", indexURL, "chart", name, "version", cv.Version)
	} else if d := digest.NewDigestFromEncoded(digest.SHA256, want); d.Validate() == nil {
		if b, ok := c.store.readVerified(ctx, d, maxChartSize); ok {
			c.opts.Logger.Debug("chart from cache", "url", u.String(), "digest", d)
			return b, u.String() + "@" + d.String(), nil
		}
	}
	var tgz []byte
	err = retryTransient(ctx, func() error {
		var err error
		tgz, err = c.getLimited(ctx, u.String(), maxChartSize)
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
	resp, err := c.remotes.get(ctx, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%s is %d bytes (limit %d): %w", u, resp.ContentLength, limit, ErrTooLarge)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", u, limit, ErrTooLarge)
	}
	return b, nil
}

// repoIndex is the part of a Helm repository's index.yaml zdt reads.
type repoIndex struct {
	APIVersion string                       `json:"apiVersion"`
	Entries    map[string][]*repoChartEntry `json:"entries"`
}

type repoChartEntry struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	URLs    []string `json:"urls"`
	Digest  string   `json:"digest"`
}

// parseRepoIndex decodes an index.yaml of at most limit bytes.
func parseRepoIndex(raw []byte, limit int64) (*repoIndex, error) {
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("index is %d bytes (limit %d): %w", len(raw), limit, ErrTooLarge)
	}
	var idx repoIndex
	if err := sigyaml.Unmarshal(raw, &idx); err != nil {
		return nil, err
	}
	if idx.APIVersion == "" {
		return nil, fmt.Errorf("no apiVersion: not a Helm repository index")
	}
	return &idx, nil
}

// Get finds a chart version: the version itself, else the highest version
// matching it as a semver constraint (prereleases only when asked for).
func (i *repoIndex) Get(name, version string) (*repoChartEntry, error) {
	entries := i.Entries[name]
	if len(entries) == 0 {
		return nil, fmt.Errorf("no chart named %q", name)
	}
	for _, e := range entries {
		if e != nil && e.Version == version {
			return e, nil
		}
	}
	cons, err := semver.NewConstraint(orDefault(version, "*"))
	if err != nil {
		return nil, fmt.Errorf("no version %q", version)
	}
	var best *repoChartEntry
	var bestV *semver.Version
	for _, e := range entries {
		if e == nil {
			continue
		}
		v, err := semver.NewVersion(e.Version)
		if err != nil || !cons.Check(v) {
			continue
		}
		if bestV == nil || v.GreaterThan(bestV) {
			best, bestV = e, v
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no version matches %q", version)
	}
	return best, nil
}

// missingDeps lists the dependencies Chart.yaml declares that charts/ lacks.
func missingDeps(ch *chart.Chart) []string {
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	var out []string
	for _, d := range ch.Metadata.Dependencies {
		if !have[d.Name] {
			out = append(out, d.Name)
		}
	}
	return out
}

// maxDepDepth bounds how deep chart dependencies nest (a chart's
// dependency's dependency …).
const maxDepDepth = 8

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
		return fmt.Errorf("repository %s: host %q is not a chart source of the spec (allow it with --allow-chart-repo): %w", repo, u.Host, ErrChartRepoNotAllowed)
	}
	if u.Scheme == "http" && !c.repoPlain[u.Host] && !c.remotes.plainHTTP(u.Host) {
		return fmt.Errorf("repository %s: plain http to %q (allow it with --allow-chart-repo http://%s): %w", repo, u.Host, u.Host, ErrChartRepoNotAllowed)
	}
	return nil
}

// vendorDeps fetches the dependencies a chart declares but does not carry
// (from https Helm repositories, oci:// registries or file:// paths relative
// to base) and adds them to the chart, as `helm dependency build` would.
// chain names the charts that led here ("web 1.0.0"), for cycles: a chart
// that depends on itself, directly or not, or dependencies nested deeper
// than maxDepDepth, are an error naming the chain.
func (c *creator) vendorDeps(ctx context.Context, ch *chart.Chart, base string, chain []string) error {
	chain = append(chain, ch.Metadata.Name+" "+ch.Metadata.Version)
	if len(chain) > maxDepDepth {
		return fmt.Errorf("dependencies nest deeper than %d: %s: %w", maxDepDepth, strings.Join(chain, " → "), ErrChartCycle)
	}
	missing := map[string]bool{}
	for _, n := range missingDeps(ch) {
		missing[n] = true
	}
	for _, d := range ch.Metadata.Dependencies {
		if !missing[d.Name] {
			continue
		}
		var (
			sub *chart.Chart
			err error
		)
		switch {
		case strings.HasPrefix(d.Repository, "file://"):
			if base == "" {
				return fmt.Errorf("dependency %s: file:// repositories need a local chart", d.Name)
			}
			sub, err = loader.Load(filepath.Join(base, strings.TrimPrefix(d.Repository, "file://")))
		case strings.HasPrefix(d.Repository, "oci://"):
			if err = c.checkDepRepo(d.Repository); err != nil {
				break
			}
			var tgz []byte
			_, tgz, err = c.ociChart(ctx, "", manifests.Chart{Name: d.Name, Source: d.Repository, Version: d.Version})
			if err == nil {
				sub, err = loader.LoadArchive(bytes.NewReader(tgz))
			}
		case strings.HasPrefix(d.Repository, "https://") || strings.HasPrefix(d.Repository, "http://"):
			if err = c.checkDepRepo(d.Repository); err != nil {
				break
			}
			var tgz []byte
			if tgz, _, err = c.repoChart(ctx, d.Repository, d.Name, d.Version); err == nil {
				sub, err = loader.LoadArchive(bytes.NewReader(tgz))
			}
		default:
			err = fmt.Errorf("repository %q is not https://, oci:// or file:// (repository aliases need a Helm config zdt does not read)", d.Repository)
		}
		if err != nil {
			return fmt.Errorf("vendoring dependency %s %s of %s: %w", d.Name, d.Version, strings.Join(chain, " → "), err)
		}
		self := sub.Metadata.Name + " " + sub.Metadata.Version
		if slices.Contains(chain, self) {
			return fmt.Errorf("dependencies loop: %s → %s: %w", strings.Join(chain, " → "), self, ErrChartCycle)
		}
		if len(missingDeps(sub)) > 0 {
			if err := c.vendorDeps(ctx, sub, "", chain); err != nil {
				return err
			}
		}
		c.opts.Logger.Info("vendored chart dependency", "chart", ch.Metadata.Name, "dependency", d.Name, "version", sub.Metadata.Version)
		ch.AddDependency(sub)
	}
	return nil
}

// packageChart saves a loaded chart with Helm's own writer, then rewrites
// the archive with fixed metadata so the same chart gives the same bytes.
func packageChart(ch *chart.Chart) ([]byte, error) {
	dir, err := os.MkdirTemp("", "zdt-chart-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	saved, err := chartutil.Save(ch, dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(saved)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		h.ModTime, h.AccessTime, h.ChangeTime = archiveModTime, time.Time{}, time.Time{}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.Format = tar.FormatUSTAR
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ImagesAnnotation is the Chart.yaml annotation listing a chart's images
// (Artifact Hub's format: a YAML list of {name, image}).
const ImagesAnnotation = "artifacthub.io/images"

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
	if ann := loaded.Metadata.Annotations[ImagesAnnotation]; ann != "" {
		var list []struct {
			Name  string `yaml:"name"`
			Image string `yaml:"image"`
		}
		if err := yaml.Unmarshal([]byte(ann), &list); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", ImagesAnnotation, err)
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
		v, err := chartutil.ReadValues(b)
		if err != nil {
			return nil, fmt.Errorf("values %s: %w", ch.Values, err)
		}
		vals = v
	}
	rctx, cancel := context.WithTimeoutCause(ctx, c.opts.RenderTimeout,
		fmt.Errorf("rendering took longer than %s: %w", c.opts.RenderTimeout, ErrRenderLimit))
	rendered, err := renderChart(rctx, loaded, vals, orDefault(ch.Release, ch.Name), orDefault(ch.Namespace, comp), c.opts.MaxRenderSize)
	cancel()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case errors.Is(err, ErrRenderLimit) && c.opts.DiscoveryRequired:
		return nil, fmt.Errorf("discovering images: %w", err)
	case errors.Is(err, ErrRenderLimit):
		c.opts.Logger.Warn("chart exceeds the render limits; skipped, only its images annotation is used", "chart", ch.Name, "err", err)
	default:
		c.opts.Logger.Warn("chart does not render; only its images annotation is used", "chart", ch.Name, "err", err)
	}
	for _, ref := range imagesInManifests(rendered) {
		add(ref)
	}
	out := make([]string, 0, len(found))
	for r := range found {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

// imagesInManifests collects every string value under an "image" key in
// the rendered YAML documents (NOTES.txt and partials skipped).
func imagesInManifests(rendered map[string]string) []string {
	names := make([]string, 0, len(rendered))
	for n := range rendered {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys) // map order is random; the lock file must not be
			for _, k := range keys {
				val := x[k]
				if s, ok := val.(string); ok && k == "image" {
					out = append(out, s)
					continue
				}
				walk(val)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	for _, n := range names {
		base := path.Base(n)
		if strings.HasSuffix(n, "NOTES.txt") || strings.HasPrefix(base, "_") {
			continue
		}
		if ext := path.Ext(n); ext != ".yaml" && ext != ".yml" && ext != ".json" {
			continue
		}
		dec := yaml.NewDecoder(strings.NewReader(rendered[n]))
		for {
			var doc any
			if err := dec.Decode(&doc); err != nil {
				break
			}
			walk(doc)
		}
	}
	return out
}

// DefaultRenderTimeout and DefaultMaxRenderSize are the defaults of
// CreateOptions.RenderTimeout and MaxRenderSize.
const (
	DefaultRenderTimeout = time.Minute
	DefaultMaxRenderSize = 64 << 20
)
