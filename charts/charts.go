package charts

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"gopkg.in/yaml.v3"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	sigyaml "sigs.k8s.io/yaml"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// MaxChartSize bounds a chart archive read into memory.
const MaxChartSize = 64 << 20

// DefaultMaxChartIndexSize is build.CreateOptions.MaxChartIndexSize's default.
const DefaultMaxChartIndexSize = 64 << 20

func Check(loaded *chart.Chart, ch manifests.Chart) error {
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

// RepoIndex is the part of a Helm repository's index.yaml zdt reads.
type RepoIndex struct {
	APIVersion string                       `json:"apiVersion"`
	Entries    map[string][]*RepoChartEntry `json:"entries"`
}

type RepoChartEntry struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	URLs    []string `json:"urls"`
	Digest  string   `json:"digest"`
}

// ParseRepoIndex decodes an index.yaml of at most limit bytes.
func ParseRepoIndex(raw []byte, limit int64) (*RepoIndex, error) {
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("index is %d bytes (limit %d): %w", len(raw), limit, bundle.ErrTooLarge)
	}
	var idx RepoIndex
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
func (i *RepoIndex) Get(name, version string) (*RepoChartEntry, error) {
	entries := i.Entries[name]
	if len(entries) == 0 {
		return nil, fmt.Errorf("no chart named %q", name)
	}
	for _, e := range entries {
		if e != nil && e.Version == version {
			return e, nil
		}
	}
	cons, err := semver.NewConstraint(cmp.Or(version, "*"))
	if err != nil {
		return nil, fmt.Errorf("no version %q", version)
	}
	var best *RepoChartEntry
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

// MissingDeps lists the dependencies Chart.yaml declares that charts/ lacks.
func MissingDeps(ch *chart.Chart) []string {
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

// FetchFunc downloads the archive of chart NAME at VERSION from an oci://
// or http(s):// repository named by a chart's dependency. It refuses
// repositories the caller does not allow.
type FetchFunc func(ctx context.Context, repo, name, version string) ([]byte, error)

// Vendor fetches the dependencies a chart declares but does not carry
// (from https Helm repositories and oci:// registries through fetch, or
// file:// paths relative to base) and adds them to the chart, as `helm
// dependency build` would. A chart that depends on itself, directly or not,
// or dependencies nested deeper than maxDepDepth, are an error naming the
// chain (ErrChartCycle). log may be nil.
func Vendor(ctx context.Context, ch *chart.Chart, base string, fetch FetchFunc, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return vendor(ctx, ch, base, nil, fetch, log)
}

// vendor is Vendor; chain names the charts that led here ("web 1.0.0").
func vendor(ctx context.Context, ch *chart.Chart, base string, chain []string, fetch FetchFunc, log *slog.Logger) error {
	chain = append(chain, ch.Metadata.Name+" "+ch.Metadata.Version)
	if len(chain) > maxDepDepth {
		return fmt.Errorf("dependencies nest deeper than %d: %s: %w", maxDepDepth, strings.Join(chain, " → "), bundle.ErrChartCycle)
	}
	missing := map[string]bool{}
	for _, n := range MissingDeps(ch) {
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
		case strings.HasPrefix(d.Repository, "oci://") || strings.HasPrefix(d.Repository, "https://") || strings.HasPrefix(d.Repository, "http://"):
			var tgz []byte
			if tgz, err = fetch(ctx, d.Repository, d.Name, d.Version); err == nil {
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
			return fmt.Errorf("dependencies loop: %s → %s: %w", strings.Join(chain, " → "), self, bundle.ErrChartCycle)
		}
		if len(MissingDeps(sub)) > 0 {
			if err := vendor(ctx, sub, "", chain, fetch, log); err != nil {
				return err
			}
		}
		log.Info("vendored chart dependency", "chart", ch.Metadata.Name, "dependency", d.Name, "version", sub.Metadata.Version)
		ch.AddDependency(sub)
	}
	return nil
}

// Package saves a loaded chart with Helm's own writer, then rewrites
// the archive with fixed metadata so the same chart gives the same bytes.
func Package(ch *chart.Chart) ([]byte, error) {
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
		h.ModTime, h.AccessTime, h.ChangeTime = bundle.ArchiveModTime, time.Time{}, time.Time{}
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

// ImagesInManifests collects every string value under an "image" key in
// the rendered YAML documents (NOTES.txt and partials skipped).
func ImagesInManifests(rendered map[string]string) []string {
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
// build.CreateOptions.RenderTimeout and MaxRenderSize.
const (
	DefaultRenderTimeout = time.Minute
	DefaultMaxRenderSize = 64 << 20
)
