package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/registry/remote"

	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/fsutil"
)

// genVersion is part of the dataset cache key: bump it whenever the
// generator changes what it writes.
const genVersion = 1

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// Workload is the shape of the synthetic platform release for one
// BENCH_SIZE. Every byte of it is derived from these numbers.
type Workload struct {
	Name         string `json:"name"`
	Images       int    `json:"images"`       // images bench/app-NN:1.0
	Bases        int    `json:"bases"`        // base layers, image i uses base i%Bases
	BaseSize     int64  `json:"baseSize"`     // bytes per base layer
	AppLayers    int    `json:"appLayers"`    // unique layers per image
	AppLayerSize int64  `json:"appLayerSize"` // mean bytes per unique layer (±50%)
	Charts       int    `json:"charts"`
	Files        int    `json:"files"`       // host binaries
	FileSize     int64  `json:"fileSize"`    // bytes per binary (about 2:1 compressible)
	DiskSize     int64  `json:"diskSize"`    // sparse raw disk image
	BigFileSize  int64  `json:"bigFileSize"` // the one large file of the memory rows
	HotImages    int    `json:"hotImages"`   // images the concurrent clients pull
	Clients      int    `json:"clients"`     // concurrent clients of the serve rows
}

var defaultWorkload = Workload{
	Name: "default", Images: 40, Bases: 4, BaseSize: 64 * mib, AppLayers: 2, AppLayerSize: 16 * mib,
	Charts: 3, Files: 8, FileSize: 64 * mib, DiskSize: 1 * gib, BigFileSize: 2 * gib, HotImages: 8, Clients: 50,
}

// workloadFor maps BENCH_SIZE to a workload: "small" (a 2-minute smoke
// run), "default" (≈2 GiB of content), or a size like 512M or 8G that
// scales the default's byte counts.
func workloadFor(size string) (Workload, error) {
	switch strings.ToLower(strings.TrimSpace(size)) {
	case "", "default":
		return defaultWorkload, nil
	case "small":
		return Workload{
			Name: "small", Images: 8, Bases: 2, BaseSize: 8 * mib, AppLayers: 2, AppLayerSize: 2 * mib,
			Charts: 2, Files: 2, FileSize: 8 * mib, DiskSize: 64 * mib, BigFileSize: 64 * mib, HotImages: 4, Clients: 50,
		}, nil
	}
	n, err := parseSize(size)
	if err != nil {
		return Workload{}, fmt.Errorf("BENCH_SIZE %q: want small, default or a size like 512M, 2G, 8G: %w", size, err)
	}
	f := float64(n) / float64(2*gib)
	scale := func(v int64) int64 { return max(mib, int64(float64(v)*f)/kib*kib) }
	w := defaultWorkload
	w.Name = strings.ToUpper(size)
	w.BaseSize, w.AppLayerSize, w.FileSize = scale(w.BaseSize), scale(w.AppLayerSize), scale(w.FileSize)
	w.DiskSize, w.BigFileSize = scale(w.DiskSize), scale(w.BigFileSize)
	return w, nil
}

// parseSize reads 512M, 2G, 1.5G, 300000000 (bytes).
func parseSize(s string) (int64, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = kib, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = mib, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = gib, strings.TrimSuffix(s, "G")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	if v <= 0 {
		return 0, errors.New("size must be positive")
	}
	return int64(v * float64(mult)), nil
}

// key names the dataset directory: the workload and the generator version.
func (w Workload) key() string {
	b, _ := json.Marshal(struct {
		W Workload
		V int
	}{w, genVersion})
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%s-%x", strings.ToLower(w.Name), sum[:4])
}

// BlobRef is one blob of an image.
type BlobRef struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// ImageInfo is one generated image, as pushed to the source registry.
type ImageInfo struct {
	Repo     string        `json:"repo"` // bench/app-NN
	Tag      string        `json:"tag"`
	Digest   digest.Digest `json:"digest"`
	Manifest []byte        `json:"manifest"`
	Blobs    []BlobRef     `json:"blobs"` // config and layers
}

// FileInfo is one generated file.
type FileInfo struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// ChartInfo is one generated chart directory.
type ChartInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Dir     string `json:"dir"`
}

// Dataset is the generated release on disk: the source registry's storage
// and the files, ready to be served and bundled.
type Dataset struct {
	Workload Workload    `json:"workload"`
	Dir      string      `json:"-"`
	Bases    []layerInfo `json:"bases"`
	Images   []ImageInfo `json:"images"`
	Files    []FileInfo  `json:"files"`
	Disk     FileInfo    `json:"disk"`
	BigFile  FileInfo    `json:"bigFile"`
	Seconds  float64     `json:"generationSeconds"`
}

// RegistryDir is the distribution storage root of the source registry.
func (d *Dataset) RegistryDir() string { return filepath.Join(d.Dir, "registry") }

// BlobPath is where distribution's filesystem driver keeps a blob's bytes.
func (d *Dataset) BlobPath(dg digest.Digest) string {
	h := dg.Encoded()
	return filepath.Join(d.RegistryDir(), "docker", "registry", "v2", "blobs", dg.Algorithm().String(), h[:2], h, "data")
}

// UniqueBlobs are the distinct blobs of images (all when images is nil).
func (d *Dataset) UniqueBlobs(images []ImageInfo) []BlobRef {
	if images == nil {
		images = d.Images
	}
	seen := map[digest.Digest]bool{}
	var out []BlobRef
	for _, im := range images {
		for _, b := range im.Blobs {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				out = append(out, b)
			}
		}
	}
	return out
}

// ImageBytes is the size of images' distinct blobs plus their manifests.
func (d *Dataset) ImageBytes(images []ImageInfo) int64 {
	if images == nil {
		images = d.Images
	}
	var n int64
	for _, b := range d.UniqueBlobs(images) {
		n += b.Size
	}
	for _, im := range images {
		n += int64(len(im.Manifest))
	}
	return n
}

// FileBytes is the size of the binaries, the charts aside.
func (d *Dataset) FileBytes() int64 {
	var n int64
	for _, f := range d.Files {
		n += f.Size
	}
	return n
}

// loadOrGenerate returns the cached dataset for w under root, generating
// it (with a temporary registry) when it is missing or incomplete.
func loadOrGenerate(ctx context.Context, w Workload, root string, log *slog.Logger) (*Dataset, error) {
	dir, err := filepath.Abs(filepath.Join(root, "data-"+w.key()))
	if err != nil {
		return nil, err
	}
	meta := filepath.Join(dir, "dataset.json")
	if b, err := os.ReadFile(meta); err == nil {
		d := &Dataset{}
		if err := json.Unmarshal(b, d); err == nil && d.Workload == w {
			d.Dir = dir
			log.Info("reusing generated dataset", "dir", dir)
			return d, nil
		}
	}
	log.Info("generating dataset (cached for later runs)", "dir", dir, "workload", w.Name)
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &Dataset{Workload: w, Dir: dir}
	reg, err := startRegistry(ctx, d.RegistryDir(), filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	defer reg.Stop()
	if err := d.generate(ctx, reg.Addr); err != nil {
		return nil, fmt.Errorf("generating the dataset: %w", err)
	}
	d.Seconds = time.Since(start).Seconds()
	b, err := json.MarshalIndent(d, "", " ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(meta, b); err != nil {
		return nil, err
	}
	log.Info("dataset generated", "seconds", int(d.Seconds))
	return d, nil
}

func (d *Dataset) generate(ctx context.Context, addr string) error {
	w := d.Workload
	tmp := filepath.Join(d.Dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// Base layers go to bench/base once and are mounted into every image.
	d.Bases = make([]layerInfo, w.Bases)
	bases := d.Bases
	baseRepo, err := repository(addr, "bench/base")
	if err != nil {
		return err
	}
	eg, gctx := errgroup.WithContext(ctx)
	eg.SetLimit(2)
	for i := range bases {
		eg.Go(func() error {
			l, err := buildLayer(tmp, fmt.Sprintf("base-%d", i), w.BaseSize)
			if err != nil {
				return err
			}
			defer os.Remove(l.path)
			bases[i] = l
			return pushFile(gctx, baseRepo, l.desc(), l.path)
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	d.Images = make([]ImageInfo, w.Images)
	eg, gctx = errgroup.WithContext(ctx)
	eg.SetLimit(2)
	for i := range d.Images {
		eg.Go(func() error {
			im, err := pushImage(gctx, addr, tmp, w, bases, i, 0)
			d.Images[i] = im
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Join(d.Dir, "files"), 0o755); err != nil {
		return err
	}
	for i := range w.Files {
		f, err := writeContentFile(filepath.Join(d.Dir, "files", fmt.Sprintf("bench-bin-%02d", i)), fmt.Sprintf("file-%d", i), w.FileSize)
		if err != nil {
			return err
		}
		d.Files = append(d.Files, f)
	}
	if d.BigFile, err = writeContentFile(filepath.Join(d.Dir, "files", "big.bin"), "big", w.BigFileSize); err != nil {
		return err
	}
	disk := filepath.Join(d.Dir, "disk", "node.raw")
	if err := os.MkdirAll(filepath.Dir(disk), 0o755); err != nil {
		return err
	}
	if err := fixtures.RawDisk(disk, w.DiskSize, 7); err != nil {
		return err
	}
	if d.Disk, err = hashFile(disk); err != nil {
		return err
	}
	return nil
}

// layerInfo is a generated gzip layer (path: its temp file, until pushed).
type layerInfo struct {
	path   string
	Digest digest.Digest `json:"digest"`
	DiffID digest.Digest `json:"diffID"`
	Size   int64         `json:"size"`
}

func (l layerInfo) desc() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: l.Digest, Size: l.Size}
}

// rng is a deterministic stream for a seed string.
func rng(seed string) *rand.ChaCha8 {
	return rand.NewChaCha8(sha256.Sum256([]byte("zdtbench/" + seed)))
}

// buildLayer writes a deterministic gzip layer of about size bytes of
// incompressible content (like the compressed layers of real images). gzip
// runs with no compression: the bytes are random anyway, and generation
// stays fast.
func buildLayer(dir, seed string, size int64) (layerInfo, error) {
	f, err := os.CreateTemp(dir, "layer-*")
	if err != nil {
		return layerInfo{}, err
	}
	defer f.Close()
	zh, th := sha256.New(), sha256.New()
	var n countWriter
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(f, zh, &n), gzip.NoCompression)
	tw := tar.NewWriter(io.MultiWriter(zw, th))
	r := rng(seed)
	const perFile = 8 * mib
	for i, left := 0, size; left > 0; i++ {
		fs := min(left, perFile)
		hdr := &tar.Header{Name: fmt.Sprintf("opt/%s/lib%03d.so", seed, i), Mode: 0o644, Size: fs, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return layerInfo{}, err
		}
		if _, err := io.CopyN(tw, r, fs); err != nil {
			return layerInfo{}, err
		}
		left -= fs
	}
	if err := tw.Close(); err != nil {
		return layerInfo{}, err
	}
	if err := zw.Close(); err != nil {
		return layerInfo{}, err
	}
	if err := f.Close(); err != nil {
		return layerInfo{}, err
	}
	return layerInfo{
		path:   f.Name(),
		Digest: digest.NewDigestFromBytes(digest.SHA256, zh.Sum(nil)),
		DiffID: digest.NewDigestFromBytes(digest.SHA256, th.Sum(nil)),
		Size:   int64(n),
	}, nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// appLayerSize is the size of unique layer j of image i: the mean ±50%,
// fixed by the seed.
func appLayerSize(w Workload, i, j int) int64 {
	var b [8]byte
	_, _ = rng(fmt.Sprintf("size-%d-%d", i, j)).Read(b[:])
	frac := float64(binary.LittleEndian.Uint64(b[:])%1000) / 1000
	return max(kib, int64(float64(w.AppLayerSize)*(0.5+frac))/kib*kib)
}

// pushImage builds image i (variant 0 is the dataset's; other variants
// change its unique layers, for the "one changed image" row) and pushes it
// to bench/app-NN:1.0.
func pushImage(ctx context.Context, addr, tmp string, w Workload, bases []layerInfo, i, variant int) (ImageInfo, error) {
	repoName := fmt.Sprintf("bench/app-%02d", i)
	repo, err := repository(addr, repoName)
	if err != nil {
		return ImageInfo{}, err
	}
	base := bases[i%len(bases)]
	if err := repo.Mount(ctx, base.desc(), "bench/base", nil); err != nil {
		return ImageInfo{}, fmt.Errorf("mounting base layer into %s: %w", repoName, err)
	}
	layers := []ocispec.Descriptor{base.desc()}
	diffIDs := []digest.Digest{base.DiffID}
	for j := range w.AppLayers {
		seed := fmt.Sprintf("app-%d-%d", i, j)
		if variant != 0 {
			seed += fmt.Sprintf("-v%d", variant)
		}
		l, err := buildLayer(tmp, seed, appLayerSize(w, i, j))
		if err != nil {
			return ImageInfo{}, err
		}
		err = pushFile(ctx, repo, l.desc(), l.path)
		os.Remove(l.path)
		if err != nil {
			return ImageInfo{}, err
		}
		layers = append(layers, l.desc())
		diffIDs = append(diffIDs, l.DiffID)
	}
	epoch := time.Unix(0, 0).UTC()
	cfg, err := json.Marshal(ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config: ocispec.ImageConfig{
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			Entrypoint: []string{fmt.Sprintf("/opt/app-%d-0/lib000.so", i)},
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return ImageInfo{}, err
	}
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	if err := repo.Push(ctx, cfgDesc, bytes.NewReader(cfg)); err != nil && !isExists(err) {
		return ImageInfo{}, fmt.Errorf("pushing config of %s: %w", repoName, err)
	}
	man, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    layers,
	})
	if err != nil {
		return ImageInfo{}, err
	}
	im := ImageInfo{Repo: repoName, Tag: "1.0", Digest: digest.FromBytes(man), Manifest: man}
	if err := pushManifest(ctx, addr, im); err != nil {
		return ImageInfo{}, err
	}
	im.Blobs = append(im.Blobs, BlobRef{cfgDesc.Digest, cfgDesc.Size})
	for _, l := range layers {
		im.Blobs = append(im.Blobs, BlobRef{l.Digest, l.Size})
	}
	return im, nil
}

// pushManifest tags im's manifest (its blobs must be there already).
func pushManifest(ctx context.Context, addr string, im ImageInfo) error {
	repo, err := repository(addr, im.Repo)
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: im.Digest, Size: int64(len(im.Manifest))}
	if err := repo.PushReference(ctx, desc, bytes.NewReader(im.Manifest), im.Tag); err != nil {
		return fmt.Errorf("pushing manifest of %s: %w", im.Repo, err)
	}
	return nil
}

func repository(addr, name string) (*remote.Repository, error) {
	repo, err := remote.NewRepository(addr + "/" + name)
	if err != nil {
		return nil, err
	}
	repo.PlainHTTP = true
	return repo, nil
}

func pushFile(ctx context.Context, repo *remote.Repository, desc ocispec.Descriptor, path string) error {
	if ok, err := repo.Exists(ctx, desc); err == nil && ok {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := repo.Push(ctx, desc, f); err != nil && !isExists(err) {
		return fmt.Errorf("pushing %s: %w", desc.Digest, err)
	}
	return nil
}

func isExists(err error) bool { return err != nil && strings.Contains(err.Error(), "already exists") }

// writeContentFile writes size bytes that compress about 2:1, like
// binaries: 1 MiB of random bytes, then 1 MiB of a repeated 4 KiB pattern.
func writeContentFile(path, seed string, size int64) (FileInfo, error) {
	f, err := os.Create(path)
	if err != nil {
		return FileInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	bw := io.MultiWriter(f, h)
	r := rng(seed)
	chunk := make([]byte, mib)
	pattern := make([]byte, 4*kib)
	for off, k := int64(0), 0; off < size; k++ {
		n := min(int64(len(chunk)), size-off)
		if k%2 == 0 {
			_, _ = r.Read(chunk[:n])
		} else {
			_, _ = r.Read(pattern)
			for p := 0; p < int(n); p += len(pattern) {
				copy(chunk[p:n], pattern)
			}
		}
		if _, err := bw.Write(chunk[:n]); err != nil {
			return FileInfo{}, err
		}
		off += n
	}
	if err := f.Close(); err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Name: filepath.Base(path), Path: path, SHA256: fmt.Sprintf("%x", h.Sum(nil)), Size: size}, nil
}

func hashFile(path string) (FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Name: filepath.Base(path), Path: path, SHA256: fmt.Sprintf("%x", h.Sum(nil)), Size: n}, nil
}

// writeChart writes a small Helm chart directory bench-chart-N 1.0.0 whose
// deployment runs image (charts are written per run: the image reference
// holds the source registry's port, and zdt discovers chart images).
func writeChart(root string, i int, image string) (ChartInfo, error) {
	name := fmt.Sprintf("bench-chart-%d", i)
	dir := filepath.Join(root, name)
	files := map[string]string{
		"Chart.yaml":  fmt.Sprintf("apiVersion: v2\nname: %s\nversion: 1.0.0\nappVersion: \"1.0\"\ndescription: zdt benchmark chart %d\n", name, i),
		"values.yaml": fmt.Sprintf("image: %s\nreplicas: 2\n", image),
		"templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: app
          image: {{ .Values.image }}
`,
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return ChartInfo{}, err
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			return ChartInfo{}, err
		}
	}
	return ChartInfo{Name: name, Version: "1.0.0", Dir: dir}, nil
}

// writeFileAtomic writes data to path through a synced temp file.
func writeFileAtomic(path string, data []byte) error { return fsutil.WritePath(path, data, 0o644) }
