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
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/remote"
)

type creator struct {
	spec      *manifests.Spec
	store     *blobStore
	opts      CreateOptions
	platforms []string
	remotes   *remote.Remotes
	plan      *fetchPlan
	stats     FetchStats
	// repoHosts are the hosts chart dependencies may come from; repoPlain
	// those of them allowed over plain http (see chartRepos).
	repoHosts, repoPlain map[string]bool
}

// at is "FILE:LINE:COL: " for a position in the spec ("" when unknown).
func (c *creator) at(p manifests.Pos) string {
	if c.spec.File == "" || p.Line == 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d:%d: ", c.spec.File, p.Line, p.Column)
}

// explainSource adds remote's hint (Remotes.Explain) to the error of
// fetching an oci:// or http(s):// source.
func (c *creator) explainSource(ctx context.Context, src string, err error) error {
	u, perr := url.Parse(src)
	if perr != nil || u.Host == "" || (u.Scheme != "oci" && u.Scheme != "https" && u.Scheme != "http") {
		return err
	}
	return c.remotes.Explain(ctx, u.Host, err)
}

func (c *creator) path(p string) string {
	if filepath.IsAbs(p) || c.spec.Dir == "" {
		return p
	}
	return filepath.Join(c.spec.Dir, p)
}

// NormalizeRef gives an image reference in its full form
// (manifests.NormalizeImageRef): nginx:1.25 → docker.io/library/nginx:1.25,
// busybox → docker.io/library/busybox:latest.
func NormalizeRef(ref string) (string, error) { return manifests.NormalizeImageRef(ref) }

// image resolves an image from a registry or a local OCI layout / archive
// and plans its blobs (see fetch.go). It returns the manifests to commit
// once the blobs are fetched. fetch, if set, is the registry reference to
// fetch it from instead of its name (a chart's images override); the item
// keeps the name.
func (c *creator) image(ctx context.Context, comp string, im manifests.Image, fetch string) (resolved, []stagedManifest, error) {
	ref, err := NormalizeRef(im.Ref)
	if err != nil {
		return resolved{}, nil, fmt.Errorf("image %q: %w", im.Ref, err)
	}
	it := bundle.Item{Component: comp, Kind: manifests.KindImage, Name: ref, Ref: ref}
	what := "image " + ref
	if fetch != "" {
		what += " (fetched from " + fetch + ")"
	}
	host := "" // the registry fetched from, for hints
	fail := func(err error) (resolved, []stagedManifest, error) {
		if host != "" {
			err = c.remotes.Explain(ctx, host, err)
		}
		return resolved{}, nil, fmt.Errorf("%s: %w", what, err)
	}
	var (
		src    content.Fetcher
		desc   ocispec.Descriptor
		source string
	)
	if im.Source == "" {
		from := ref
		if fetch != "" {
			from = fetch
		}
		repo, tagOrDigest, err := c.remotes.Reference(from)
		if err != nil {
			return fail(err)
		}
		host = repo.Reference.Registry
		if c.opts.Lock != nil {
			if l, ok := c.opts.Lock.FindImage(ref); ok && l.Source != "" {
				if _, d, ok := strings.Cut(l.Source, "@"); ok {
					tagOrDigest = d
				}
			}
		}
		cached := false
		if d, err := digest.Parse(tagOrDigest); err == nil {
			desc, cached = c.store.describe(ctx, d)
		}
		if !cached {
			if desc, err = repo.Resolve(ctx, tagOrDigest); err != nil {
				return fail(fmt.Errorf("resolving %s: %w", tagOrDigest, err))
			}
		}
		src = repo
		source = repo.Reference.Registry + "/" + repo.Reference.Repository + "@" + desc.Digest.String()
	} else {
		kind, p, tag, err := manifests.SplitImageSource(im.Source)
		if err != nil {
			return fail(err)
		}
		p = c.path(p)
		source = im.Source
		switch kind {
		case "oci", "oci-archive":
			var s *oci.ReadOnlyStore
			if kind == "oci" {
				s, err = oci.NewFromFS(ctx, os.DirFS(p))
			} else {
				s, err = oci.NewFromTar(ctx, p)
			}
			if err != nil {
				return fail(fmt.Errorf("reading %s: %w", im.Source, err))
			}
			if desc, err = pickTag(ctx, s, tag, ref); err != nil {
				return fail(fmt.Errorf("%s: %w", im.Source, err))
			}
			src = s
		case "docker-archive":
			if desc, err = c.dockerArchive(ctx, p); err != nil {
				return fail(fmt.Errorf("%s: %w", im.Source, err))
			}
			src = c.store
		}
	}
	if len(c.platforms) > 0 && !isIndex(desc.MediaType) {
		if err := c.checkPlatform(ctx, src, desc, ref); err != nil {
			return fail(err)
		}
	}
	var commit []stagedManifest
	top := desc
	if len(c.platforms) > 0 && isIndex(desc.MediaType) {
		top, err = c.plan.filterIndex(ctx, src, desc, c.platforms, it.String(), &commit)
	} else {
		err = c.plan.walk(ctx, src, desc, it.String(), 0, &commit, &walkBudget{})
	}
	if err != nil {
		return fail(err)
	}
	top = ocispec.Descriptor{MediaType: top.MediaType, Digest: top.Digest, Size: top.Size, ArtifactType: top.ArtifactType}
	it.Digest, it.MediaType = top.Digest.String(), top.MediaType
	c.opts.Logger.Debug("resolved image", "ref", ref, "digest", top.Digest, "manifestsToFetch", len(commit))
	return resolved{item: it, desc: top, lock: manifests.LockItem{Component: comp, Kind: it.Kind, Name: ref, Digest: top.Digest.String(), Source: source}}, commit, nil
}

func isIndex(mt string) bool {
	return mt == manifests.MediaTypeOCIIndex || mt == manifests.MediaTypeDockerManifestList
}

type tagLister interface {
	Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error)
	Tags(ctx context.Context, last string, fn func([]string) error) error
}

// pickTag finds an image in a layout: by the given tag, else by the image
// reference or its tag, else the layout's only tagged entry.
func pickTag(ctx context.Context, s tagLister, tag, ref string) (ocispec.Descriptor, error) {
	if tag != "" {
		return s.Resolve(ctx, tag)
	}
	cands := []string{ref}
	if n, err := reference.ParseNormalizedNamed(ref); err == nil {
		if t, ok := n.(reference.Tagged); ok {
			cands = append(cands, t.Tag(), reference.FamiliarString(n))
		}
	}
	for _, c := range cands {
		if d, err := s.Resolve(ctx, c); err == nil {
			return d, nil
		}
	}
	var tags []string
	if err := s.Tags(ctx, "", func(t []string) error { tags = append(tags, t...); return nil }); err != nil {
		return ocispec.Descriptor{}, err
	}
	if len(tags) == 1 {
		return s.Resolve(ctx, tags[0])
	}
	if len(tags) == 0 {
		return ocispec.Descriptor{}, fmt.Errorf("no entry named %q in the layout, which has no tagged entries; tag the image in the layout (org.opencontainers.image.ref.name)", ref)
	}
	return ocispec.Descriptor{}, fmt.Errorf("no entry named %q in the layout (it has %d: %s); add :TAG to the source", ref, len(tags), strings.Join(tags, ", "))
}

// dockerArchive stages an image from a `docker save` tarball. Such a
// tarball has no registry manifest, so zdt writes an OCI one (OCI media
// types: readable by every OCI layout client, skopeo included).
func (c *creator) dockerArchive(ctx context.Context, p string) (ocispec.Descriptor, error) {
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layers, err := img.Layers()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		d, err := c.store.Ingest(ctx, ocispec.MediaTypeImageLayerGzip, rc)
		rc.Close()
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		m.Layers = append(m.Layers, d)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if m.Config, err = c.store.PutBytes(ctx, ocispec.MediaTypeImageConfig, cfg); err != nil {
		return ocispec.Descriptor{}, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return c.store.PutBytes(ctx, ocispec.MediaTypeImageManifest, raw)
}

// platformWanted reports whether an index entry's platform is one of want
// (os/arch[/variant][:osversion]), parsed and matched by
// go-containerregistry (v1.ParsePlatform, Platform.Satisfies: a field the
// wanted platform leaves empty matches anything), with architectures and
// variants normalised first as containerd does (aarch64/v8 is arm64,
// x86_64 is amd64, armhf is arm/v7).
func platformWanted(want []string, p *ocispec.Platform) bool {
	have := normalizePlatform(v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, OSVersion: p.OSVersion, OSFeatures: p.OSFeatures})
	for _, w := range want {
		spec, err := v1.ParsePlatform(w)
		if err == nil && have.Satisfies(normalizePlatform(*spec)) {
			return true
		}
	}
	return false
}

// normalizePlatform spells an architecture and variant the one way
// containerd's platforms.Normalize does.
func normalizePlatform(p v1.Platform) v1.Platform {
	switch p.Architecture {
	case "x86_64", "x86-64", "amd64":
		p.Architecture = "amd64"
		if p.Variant == "v1" {
			p.Variant = ""
		}
	case "aarch64", "arm64":
		p.Architecture = "arm64"
		switch p.Variant {
		case "8", "v8", "v8.0":
			p.Variant = ""
		}
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	case "arm":
		switch p.Variant {
		case "", "7":
			p.Variant = "v7"
		case "5", "6", "8":
			p.Variant = "v" + p.Variant
		}
	case "i386":
		p.Architecture = "386"
	}
	return p
}

// putManifest stores an OCI image manifest (an artifact when artifactType
// is set) and returns its descriptor.
func (s *blobStore) putManifest(ctx context.Context, artifactType string, cfg ocispec.Descriptor, layers []ocispec.Descriptor, ann map[string]string) (ocispec.Descriptor, error) {
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       cfg,
		Layers:       layers,
		Annotations:  ann,
	}
	b, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d, err := s.PutBytes(ctx, ocispec.MediaTypeImageManifest, b)
	d.ArtifactType = artifactType
	return d, err
}

// openSource opens a local path or an http(s) URL (with the host's TLS
// settings from the registry config, and retries).
func (c *creator) openSource(ctx context.Context, src string) (io.ReadCloser, error) {
	if strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://") {
		resp, err := c.remotes.Get(ctx, src)
		if err != nil {
			return nil, err
		}
		return resp.Body, nil
	}
	return os.Open(c.path(src))
}

// stageCompressed stages a source's bytes, zstd-compressing them unless they
// are compressed already, and checks their sha256 if one is given (and
// their size: reading stops one byte past wantSize when it is given). It
// returns the layer descriptor, the digest and size of the original bytes,
// and the first bytes (for format sniffing). A download that stalls or
// breaks off is tried again.
func (c *creator) stageCompressed(ctx context.Context, src, wantSHA string, wantSize int64, rawType, zstdType string) (ocispec.Descriptor, digest.Digest, int64, []byte, error) {
	if wantSHA != "" {
		if e, ok := c.store.lookupSource(ctx, wantSHA, zstdType); ok && (wantSize == 0 || e.Size == wantSize) {
			c.opts.Logger.Debug("source from cache", "source", src, "sha256", wantSHA)
			return e.Layer, digest.NewDigestFromEncoded(digest.SHA256, wantSHA), e.Size, e.Head, nil
		}
	}
	var (
		desc ocispec.Descriptor
		got  string
		n    int64
		head []byte
	)
	err := retryTransient(ctx, func() error {
		var err error
		desc, got, n, head, err = c.ingestSource(ctx, src, wantSize, rawType, zstdType)
		return err
	})
	if err != nil {
		return ocispec.Descriptor{}, "", 0, nil, err
	}
	if wantSHA != "" && got != wantSHA {
		return ocispec.Descriptor{}, "", 0, nil, &SourceDigestError{Source: src, Want: wantSHA, Got: got}
	}
	if err := c.store.recordSource(got, zstdType, sourceEntry{Layer: desc, Size: n, Head: head}); err != nil {
		c.opts.Logger.Debug("not recording source in the cache", "source", src, "err", err)
	}
	return desc, digest.NewDigestFromEncoded(digest.SHA256, got), n, head, nil
}

// ingestSource reads a source once into the store (see stageCompressed)
// and returns the hex sha256 and size of its original bytes.
func (c *creator) ingestSource(ctx context.Context, src string, wantSize int64, rawType, zstdType string) (ocispec.Descriptor, string, int64, []byte, error) {
	rc, err := c.openSource(ctx, src)
	if err != nil {
		return ocispec.Descriptor{}, "", 0, nil, err
	}
	defer rc.Close()
	var r io.Reader = rc
	if wantSize > 0 {
		r = io.LimitReader(rc, wantSize+1)
	}
	br := bufioReader(r)
	head, _ := br.Peek(512)
	head = append([]byte(nil), head...)
	raw := sha256.New()
	var n int64
	counted := io.TeeReader(br, writerFunc(func(p []byte) (int, error) { raw.Write(p); n += int64(len(p)); return len(p), nil }))
	var desc ocispec.Descriptor
	if isCompressed(head) {
		desc, err = c.store.Ingest(ctx, rawType, counted)
	} else {
		pr, pw := io.Pipe()
		go func() {
			enc, err := zstd.NewWriter(pw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
			if err == nil {
				_, err = fsutil.CopyCtx(ctx, enc, counted)
				if cerr := enc.Close(); err == nil {
					err = cerr
				}
			}
			pw.CloseWithError(err)
		}()
		desc, err = c.store.Ingest(ctx, zstdType, pr)
		pr.Close()
	}
	if err != nil {
		return ocispec.Descriptor{}, "", 0, nil, err
	}
	if wantSize > 0 && n != wantSize {
		more := ""
		if n > wantSize {
			more = " or more"
		}
		return ocispec.Descriptor{}, "", 0, nil, fmt.Errorf("%s: %d%s bytes, the spec says %d: %w", src, n, more, wantSize, bundle.ErrSizeMismatch)
	}
	return desc, hex.EncodeToString(raw.Sum(nil)), n, head, nil
}

// SourceDigestError is a source whose bytes do not match the sha256 they
// should have: the spec's, or (Origin) the one a Helm repository's
// index.yaml gives.
type SourceDigestError struct {
	Source, Want, Got string
	// Origin names where Want came from ("" for the spec).
	Origin string
}

func (e *SourceDigestError) Error() string {
	from := "the spec"
	if e.Origin != "" {
		from = e.Origin
	}
	return fmt.Sprintf("%s: sha256 mismatch: %s says %s, the source has %s", e.Source, from, e.Want, e.Got)
}

// file stages a host file or binary as an ORAS-style artifact.
func (c *creator) file(ctx context.Context, comp string, f manifests.File) (resolved, error) {
	name := f.ItemName()
	fail := func(err error) (resolved, error) {
		return resolved{}, fmt.Errorf("%sfile %s: %w", c.at(f.Pos), name, c.explainSource(ctx, f.Source, err))
	}
	layer, _, size, _, err := c.stageCompressed(ctx, f.Source, f.SHA256, f.Size, manifests.MediaTypeFileRaw, manifests.MediaTypeFileZstd)
	if err != nil {
		return fail(err)
	}
	title := name
	if layer.MediaType == manifests.MediaTypeFileZstd {
		title += ".zst"
	}
	layer.Annotations = map[string]string{
		ocispec.AnnotationTitle:                title,
		manifests.AnnotationUncompressedDigest: "sha256:" + f.SHA256,
		manifests.AnnotationUncompressedSize:   fmt.Sprint(size),
	}
	empty, err := c.store.PutBytes(ctx, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	if err != nil {
		return fail(err)
	}
	mode := f.Mode
	if mode == "" {
		mode = "0644"
	}
	ann := map[string]string{
		manifests.AnnotationTarget: f.Target,
		manifests.AnnotationMode:   mode,
	}
	if f.AllowSpecialBits {
		ann[manifests.AnnotationAllowSpecialBits] = "true"
	}
	desc, err := c.store.putManifest(ctx, manifests.ArtifactTypeFile, empty, []ocispec.Descriptor{layer}, ann)
	if err != nil {
		return fail(err)
	}
	it := bundle.Item{Component: comp, Kind: manifests.KindFile, Name: name, Ref: "files/" + name + ":" + c.spec.Metadata.Version,
		Digest: desc.Digest.String(), MediaType: desc.MediaType, Target: f.Target, Mode: mode, AllowSpecialBits: f.AllowSpecialBits}
	c.opts.Logger.Info("staged file", "name", name, "bytes", size, "stored", layer.Size)
	return resolved{item: it, desc: desc, lock: manifests.LockItem{Component: comp, Kind: it.Kind, Name: name, Digest: it.Digest, Source: f.Source}}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// values reads each chart's values file, keyed component/chart.
func (c *creator) values() (map[string]string, error) {
	out := map[string]string{}
	for _, comp := range c.spec.Components {
		for _, ch := range comp.Charts {
			if ch.Values == "" {
				continue
			}
			b, err := os.ReadFile(c.path(ch.Values))
			if err != nil {
				return nil, fmt.Errorf("chart %s: values: %w", ch.Name, err)
			}
			out[comp.Name+"/"+ch.Name] = string(b)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ErrPlatformMismatch: a single-platform image is not of a platform the
// bundle is for (CreateOptions.StrictPlatforms).
var ErrPlatformMismatch = errors.New("the image's platform is not among the bundle's platforms")

// PlatformError is a single-platform image whose platform is not wanted.
type PlatformError struct {
	Image, Platform string
	Want            []string
}

func (e *PlatformError) Error() string {
	return fmt.Sprintf("image %s is for %s only, the bundle is for %s: %v", e.Image, e.Platform, strings.Join(e.Want, ", "), ErrPlatformMismatch)
}

func (e *PlatformError) Unwrap() error { return ErrPlatformMismatch }

// maxConfigSize bounds an image config read to learn its platform.
const maxConfigSize = 8 << 20

// checkPlatform reads the config of a single-platform image (an image
// manifest, not an index) and, when its platform is not one of
// c.platforms, warns — or fails with a *PlatformError under
// StrictPlatforms. The platform filter only ever applied to indexes, so
// such an image used to be bundled silently. The config read is kept in
// the store (a leaf blob), so it is not fetched again.
func (c *creator) checkPlatform(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor, ref string) error {
	if desc.MediaType != ocispec.MediaTypeImageManifest && desc.MediaType != manifests.MediaTypeDockerManifest {
		return nil
	}
	raw, _, err := c.plan.readManifest(ctx, src, desc)
	if err != nil {
		return err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	if m.Config.MediaType != ocispec.MediaTypeImageConfig && m.Config.MediaType != "application/vnd.docker.container.image.v1+json" {
		return nil // an artifact: no platform
	}
	if m.Config.Size > maxConfigSize {
		return fmt.Errorf("config %s is %d bytes (limit %d): %w", m.Config.Digest, m.Config.Size, maxConfigSize, bundle.ErrTooLarge)
	}
	cfg, ok := c.store.readVerified(ctx, m.Config.Digest, maxConfigSize)
	if !ok {
		err := retryTransient(ctx, func() error {
			var err error
			cfg, err = content.FetchAll(ctx, src, m.Config)
			return err
		})
		if err != nil {
			return fmt.Errorf("fetching config %s: %w", m.Config.Digest, err)
		}
		if err := c.store.Push(ctx, m.Config, bytes.NewReader(cfg)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return fmt.Errorf("storing config %s: %w", m.Config.Digest, err)
		}
	}
	var img ocispec.Image
	if err := json.Unmarshal(cfg, &img); err != nil {
		return fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	p := img.Platform
	if p.OS == "" && p.Architecture == "" {
		return nil // says nothing
	}
	if platformWanted(c.platforms, &p) {
		return nil
	}
	perr := &PlatformError{Image: ref, Platform: platformString(&p), Want: c.platforms}
	if c.opts.StrictPlatforms {
		return perr
	}
	c.opts.Logger.Warn("single-platform image is not of a platform the bundle is for; bundled anyway (--strict-platforms refuses it)",
		"image", ref, "platform", perr.Platform, "platforms", strings.Join(c.platforms, ","))
	return nil
}
