package build

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/charts"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/remote"
)

// CreateOptions tune Create. Output is required; every other zero field has
// the documented default.
type CreateOptions struct {
	// Output is the archive path. It is written to a temp file in the same
	// directory and renamed into place only when complete.
	Output string
	// ToolVersion is recorded in the bundle config (default "dev").
	ToolVersion string
	// Lock, when set, pins every item: an item whose source no longer gives
	// the locked digest, or that the lock does not list, fails the create
	// (ErrLockMismatch).
	Lock *manifests.Lock
	// Platforms overrides the spec's platform filter for multi-arch images.
	Platforms []string
	// StrictPlatforms fails the create (ErrPlatformMismatch) on a
	// single-platform image whose platform is not among the platforms
	// (the spec's or Platforms); without it such an image is bundled with
	// a warning.
	StrictPlatforms bool
	// Base, when set, makes a delta bundle: the blobs this (open) bundle
	// holds are left out, and the root names it (Archive.Base), so the
	// delta is signed as a delta on exactly that bundle. Installing the
	// delta needs the base installed (or given); everything else reads it
	// through AttachBase.
	Base *bundle.Archive
	// Concurrency is the one budget for everything fetched at once: items
	// resolved, charts and files downloaded, image blobs fetched (default:
	// 2×GOMAXPROCS, at least 4).
	Concurrency int
	// CacheDir is a persistent blob cache shared by creates (see
	// DefaultCacheDir): blobs found there are not fetched again, and an
	// interrupted create resumes from what it holds. Empty: blobs are staged
	// in a temp dir next to Output, removed when Create returns.
	CacheDir string
	// Registries configures TLS, plain HTTP and credentials per registry
	// host (nil: defaults; see RegistryConfig).
	Registries *remote.RegistryConfig
	// DiscoverImages renders every chart and adds the images it uses (and
	// those of its images annotation) to the chart's component, unless the
	// spec lists them already. The lock file records them.
	DiscoverImages bool
	// DiscoveryRequired makes a chart that cannot be rendered within the
	// render limits (RenderTimeout, MaxRenderSize) fail the create; when
	// false it is skipped with a warning (only its images annotation is
	// used). The CLI sets it when --discover-images is given explicitly.
	DiscoveryRequired bool
	// RenderTimeout bounds the rendering of one chart during discovery
	// (default DefaultRenderTimeout); MaxRenderSize bounds its output
	// (default DefaultMaxRenderSize).
	RenderTimeout time.Duration
	MaxRenderSize int64
	// AllowChartRepos lists the extra hosts (HOST[:PORT], or a URL whose
	// scheme says whether plain http is allowed) a chart's dependencies may
	// be fetched from. A dependency's repository comes from the chart, so it
	// is untrusted: by default only the hosts of the spec's chart sources are
	// allowed, over https unless the spec or the registry config uses plain
	// http for that host (loopback hosts too).
	AllowChartRepos []string
	// RequireChartDigests refuses a Helm repository index entry without a
	// digest (else such a chart is downloaded unchecked, with a warning).
	RequireChartDigests bool
	// MaxChartIndexSize bounds a Helm repository's index.yaml (default
	// DefaultMaxChartIndexSize).
	MaxChartIndexSize int64
	// MaxDiskSize bounds the virtual size of an AMI's disk image (default
	// DefaultMaxDiskSize, 2 TiB): a larger one, real or crafted, fails the
	// create (ErrDiskImage) before it is converted.
	MaxDiskSize int64
	// StallTimeout fails a request (after retries) that receives less than
	// 1 KiB in a window this long: a registry, repository or file server
	// that stalls or trickles (default DefaultStallTimeout).
	StallTimeout time.Duration
	// PhaseProgress, if set, is called from several goroutines with the
	// progress of each phase (PhaseCharts, PhaseResolve: items;
	// PhaseFetch: bytes).
	PhaseProgress func(phase string, done, total int64)
	// Logger receives progress messages (default: discard).
	Logger *slog.Logger
	// Progress, if set, is called while the archive is written with the bytes
	// written so far and the total.
	Progress func(done, total int64)
	// Attach, if set, is called once the root is known and before the archive
	// is written. It may push blobs and manifests (signatures, attestations)
	// into store and returns the index.json entries for them; each must be
	// an attachment of root (see IsAttachment).
	Attach func(ctx context.Context, root ocispec.Descriptor, store content.Storage) ([]ocispec.Descriptor, error)
	// ArchiveWritten, if set, is called with the archive's sha256 (computed
	// while it was written) before it is renamed into place; an error
	// aborts the create. Used to sign the archive file without a second pass.
	ArchiveWritten func(ctx context.Context, sum digest.Digest, size int64) error
}

// CreateResult describes the archive Create wrote.
type CreateResult struct {
	// Path is the archive; Size its bytes; Digest the sha256 of the whole file.
	Path   string
	Size   int64
	Digest digest.Digest
	// Root is the root index's descriptor: the bundle's identity.
	Root ocispec.Descriptor
	// Items are the bundle's items in spec order.
	Items []bundle.Item
	// Lock records every item's resolved digest.
	Lock *manifests.Lock
	// Blobs and UniqueSize count the archive's blobs once each.
	Blobs      int
	UniqueSize int64
	// BaseBlobs and BaseSize count the blobs a delta left to its base.
	BaseBlobs int
	BaseSize  int64
	// Discovered lists the images found in charts (DiscoverImages).
	Discovered []DiscoveredImage
	// Fetch says what was fetched and what came from the cache.
	Fetch FetchStats
}

// resolved is one item after its content was staged.
type resolved struct {
	item bundle.Item
	desc ocispec.Descriptor // the item's top manifest
	lock manifests.LockItem
}

// Create builds a bundle archive from spec: it stages every item's blobs,
// checks them against opts.Lock if given, writes the root index and its
// config, and writes the archive deterministically. Nothing is left at
// opts.Output unless Create succeeds.
func Create(ctx context.Context, spec *manifests.Spec, opts CreateOptions) (CreateResult, error) {
	if opts.Output == "" {
		return CreateResult{}, errors.New("create: no output path")
	}
	if opts.ToolVersion == "" {
		opts.ToolVersion = "dev"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if opts.MaxChartIndexSize <= 0 {
		opts.MaxChartIndexSize = charts.DefaultMaxChartIndexSize
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = remote.DefaultStallTimeout
	}
	if opts.RenderTimeout <= 0 {
		opts.RenderTimeout = charts.DefaultRenderTimeout
	}
	if opts.MaxRenderSize <= 0 {
		opts.MaxRenderSize = charts.DefaultMaxRenderSize
	}
	platforms := spec.Platforms
	if len(opts.Platforms) > 0 {
		platforms = opts.Platforms
	}
	outDir := filepath.Dir(opts.Output)
	work := opts.CacheDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp(outDir, ".zdt-stage-*"); err != nil {
			return CreateResult{}, fmt.Errorf("creating staging dir: %w", err)
		}
		defer os.RemoveAll(work)
	}
	store, err := newBlobStore(work, opts.CacheDir != "")
	if err != nil {
		return CreateResult{}, err
	}
	defer store.close()
	if n := store.cleanStale(staleIngest); n > 0 {
		opts.Logger.Info("removed temp files of interrupted creates", "dir", work, "files", n)
	}
	rem := remote.New(opts.Registries, opts.Concurrency)
	rem.SetStallTimeout(opts.StallTimeout)
	res, err := create(ctx, spec, opts, platforms, store, rem, false)
	var bad *CorruptCacheError
	for attempt := 0; errors.As(err, &bad); attempt++ {
		// Staged blobs that do not match their digest (found while
		// writing the archive, or reading a manifest) are removed; a
		// second pass walks every graph and fetches them again.
		for _, d := range bad.Digests {
			if rerr := store.remove(d); rerr != nil {
				return CreateResult{}, errors.Join(err, rerr)
			}
		}
		if attempt > 0 {
			return CreateResult{}, fmt.Errorf("%w (again after fetching them anew: is something else writing to the cache %s?)", err, work)
		}
		opts.Logger.Warn("cache entries do not match their digest: removed, fetching them again", "blobs", bad.Digests)
		res, err = create(ctx, spec, opts, platforms, store, rem, true)
	}
	return res, err
}

// create is one pass of Create over a store. deep makes it walk the graphs
// of manifests the store has too (after some of its entries were found
// corrupt and removed).
func create(ctx context.Context, spec *manifests.Spec, opts CreateOptions, platforms []string, store *blobStore, rem *remote.Remotes, deep bool) (CreateResult, error) {
	c := &creator{spec: spec, store: store, opts: opts, platforms: platforms,
		remotes: rem, plan: newFetchPlan(store)}
	c.plan.deep = deep
	if opts.Lock != nil {
		if err := checkLockVersions(spec, opts.Lock); err != nil {
			return CreateResult{}, err
		}
	}
	if err := c.chartRepos(); err != nil {
		return CreateResult{}, err
	}

	// Resolve and stage every item (fetch.go); results keep spec order.
	results, discovered, err := c.stageAll(ctx)
	if err != nil {
		return CreateResult{}, err
	}
	lock, err := c.lock(results)
	if err != nil {
		return CreateResult{}, err
	}
	rootDesc, index, err := c.putRoot(ctx, lock, results)
	if err != nil {
		return CreateResult{}, err
	}
	blobs, err := c.archiveBlobs(ctx, rootDesc, &index)
	if err != nil {
		return CreateResult{}, err
	}
	blobs, baseBlobs, baseSize := c.leaveToBase(blobs)
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return CreateResult{}, err
	}
	sum, size, unique, err := c.writeArchive(ctx, indexJSON, blobs)
	if err != nil {
		return CreateResult{}, err
	}
	store.touch(blobs) // their last use, for `zdt cache prune`
	res := CreateResult{Path: opts.Output, Size: size, Digest: sum, Root: rootDesc, Lock: lock, Blobs: len(blobs), UniqueSize: unique,
		BaseBlobs: baseBlobs, BaseSize: baseSize, Discovered: discovered, Fetch: c.stats}
	if res.Items, err = c.itemSizes(ctx, results); err != nil {
		return CreateResult{}, err
	}
	return res, nil
}

// itemSizes gives the staged items with their Size and Blobs as a reader
// of the archive counts them (bundle.Graph): every blob the item reaches,
// its top manifest included, each once per item.
func (c *creator) itemSizes(ctx context.Context, results []resolved) ([]bundle.Item, error) {
	items := make([]bundle.Item, 0, len(results))
	for _, r := range results {
		blobs, err := collectBlobs(ctx, c.store, r.desc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.item, err)
		}
		it := r.item
		it.Size, it.Blobs = 0, len(blobs)
		for _, b := range blobs {
			it.Size += b.Size
		}
		items = append(items, it)
	}
	return items, nil
}

// lock records the staged items' digests and checks them against
// opts.Lock, if given.
func (c *creator) lock(results []resolved) (*manifests.Lock, error) {
	lock := &manifests.Lock{APIVersion: manifests.APIVersion, Kind: manifests.KindLock,
		Metadata: manifests.Metadata{Name: c.spec.Metadata.Name, Version: c.spec.Metadata.Version}}
	for _, r := range results {
		lock.Items = append(lock.Items, r.lock)
	}
	if c.opts.Lock != nil {
		if err := checkLock(c.opts.Lock, lock); err != nil {
			return nil, err
		}
	}
	return lock, nil
}

// putRoot stores the bundle config, its manifest and the root index that
// names every item, and returns the root's descriptor and the archive's
// index.json (root entry first, then the items).
func (c *creator) putRoot(ctx context.Context, lock *manifests.Lock, results []resolved) (ocispec.Descriptor, ocispec.Index, error) {
	spec, opts, store := c.spec, c.opts, c.store
	meta, err := c.putConfig(ctx, lock)
	if err != nil {
		return ocispec.Descriptor{}, ocispec.Index{}, err
	}
	root := ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: manifests.ArtifactTypeBundle,
		Manifests:    []ocispec.Descriptor{meta},
		Annotations: map[string]string{
			ocispec.AnnotationTitle:   spec.Metadata.Name,
			ocispec.AnnotationVersion: spec.Metadata.Version,
		},
	}
	if opts.Base != nil {
		root.Annotations[manifests.AnnotationBase] = opts.Base.Root.Digest.String()
	}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, r := range results {
		d := itemEntry(r)
		root.Manifests = append(root.Manifests, d)
		index.Manifests = append(index.Manifests, d)
	}
	rootJSON, err := json.Marshal(root)
	if err != nil {
		return ocispec.Descriptor{}, ocispec.Index{}, err
	}
	rootDesc, err := store.PutBytes(ctx, ocispec.MediaTypeImageIndex, rootJSON)
	if err != nil {
		return ocispec.Descriptor{}, ocispec.Index{}, err
	}
	rootDesc.ArtifactType = manifests.ArtifactTypeBundle
	rootEntry := rootDesc
	rootEntry.Annotations = map[string]string{
		manifests.AnnotationBundleRoot: "true",
		manifests.AnnotationRefName:    bundle.RootRef(spec.Metadata.Name, spec.Metadata.Version),
		// cosign's own layout annotation: `cosign verify --local-image DIR`
		// finds the signed index of an extracted bundle by it.
		"kind": "dev.cosignproject.cosign/imageIndex",
	}
	index.Manifests = append([]ocispec.Descriptor{rootEntry}, index.Manifests...)
	return rootDesc, index, nil
}

// putConfig stores the bundle config (spec, lock, values) and the manifest
// that carries it, and returns that manifest's root index entry.
func (c *creator) putConfig(ctx context.Context, lock *manifests.Lock) (ocispec.Descriptor, error) {
	spec, opts, store := c.spec, c.opts, c.store
	lockYAML, err := lock.Marshal(opts.ToolVersion)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	values, err := c.values()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	cfg := bundle.Config{
		Name: spec.Metadata.Name, Version: spec.Metadata.Version, Description: spec.Metadata.Description,
		ToolVersion: opts.ToolVersion, Platforms: c.platforms,
		Spec: string(spec.Raw), Lock: string(lockYAML), Values: values,
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	cfgDesc, err := store.PutBytes(ctx, manifests.MediaTypeBundleConfig, cfgJSON)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	empty, err := store.PutBytes(ctx, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	meta, err := store.putManifest(ctx, manifests.MediaTypeBundleConfig, cfgDesc, []ocispec.Descriptor{empty}, nil)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	meta.Annotations = map[string]string{manifests.AnnotationKind: bundle.KindBundleConfig}
	return meta, nil
}

// itemEntry is an item's entry in the root index and index.json: its top
// manifest annotated with what the installer needs to place it.
func itemEntry(r resolved) ocispec.Descriptor {
	d := r.desc
	d.Annotations = map[string]string{
		manifests.AnnotationComponent: r.item.Component,
		manifests.AnnotationKind:      r.item.Kind,
		manifests.AnnotationName:      r.item.Name,
		manifests.AnnotationRefName:   r.item.Ref,
	}
	if r.item.Target != "" {
		d.Annotations[manifests.AnnotationTarget] = r.item.Target
		d.Annotations[manifests.AnnotationMode] = r.item.Mode
		if r.item.AllowSpecialBits {
			d.Annotations[manifests.AnnotationAllowSpecialBits] = "true"
		}
	}
	return d
}

// archiveBlobs lists the blobs of the root's graph and, with opts.Attach,
// those of the attachments it returns, which it adds to index.
func (c *creator) archiveBlobs(ctx context.Context, rootDesc ocispec.Descriptor, index *ocispec.Index) ([]ocispec.Descriptor, error) {
	store := c.store
	blobs, err := collectBlobs(ctx, store, rootDesc)
	if err != nil {
		return nil, err
	}
	if c.opts.Attach != nil {
		extra, err := c.opts.Attach(ctx, rootDesc, store)
		if err != nil {
			return nil, fmt.Errorf("attaching to the root: %w", err)
		}
		for _, e := range extra {
			if !bundle.IsAttachment(rootDesc.Digest, e) {
				return nil, fmt.Errorf("attachment %s is not attached to the root", e.Digest)
			}
			more, err := collectBlobs(ctx, store, e)
			if err != nil {
				return nil, fmt.Errorf("attachment %s: %w", e.Digest, err)
			}
			blobs = append(blobs, more...)
			index.Manifests = append(index.Manifests, e)
		}
		blobs = dedupDescriptors(blobs)
	}
	return blobs, nil
}

// leaveToBase drops, for a delta bundle (opts.Base), the blobs the base
// holds, and counts them.
func (c *creator) leaveToBase(blobs []ocispec.Descriptor) (kept []ocispec.Descriptor, baseBlobs int, baseSize int64) {
	opts := c.opts
	if opts.Base == nil {
		return blobs, 0, 0
	}
	kept = blobs[:0]
	for _, b := range blobs {
		if opts.Base.HasLocal(b.Digest) {
			baseBlobs++
			baseSize += b.Size
			continue
		}
		kept = append(kept, b)
	}
	opts.Logger.Info("delta bundle", "base", opts.Base.Root.Digest, "leftToBase", baseBlobs, "bytes", baseSize)
	return kept, baseBlobs, baseSize
}

// writeArchive writes the archive to opts.Output (see writeAtomic) and
// returns its digest, its size and the blobs' total size.
func (c *creator) writeArchive(ctx context.Context, indexJSON []byte, blobs []ocispec.Descriptor) (sum digest.Digest, size, unique int64, err error) {
	opts, store := c.opts, c.store
	for _, b := range blobs {
		unique += b.Size
	}
	opts.Logger.Info("writing archive", "path", opts.Output, "blobs", len(blobs), "bytes", unique)
	if err := checkFreeSpace(filepath.Dir(opts.Output), unique, "the archive "+opts.Output); err != nil {
		return "", 0, 0, err
	}
	sum, size, err = writeAtomic(ctx, opts.Output, opts.ArchiveWritten, func(w *os.File, th *trailHasher) error {
		var done int64
		check := func(d ocispec.Descriptor) bool { return !store.isFresh(d.Digest) }
		return bundle.WriteArchive(ctx, w, store, indexJSON, blobs, func(n int64) {
			done += n
			if opts.Progress != nil {
				opts.Progress(done, unique)
			}
		}, th, check)
	})

	if err != nil {
		return "", 0, 0, fmt.Errorf("writing %s: %w", opts.Output, err)
	}
	return sum, size, unique, nil
}

// writeAtomic writes a file through a temp file in the same directory,
// then fsyncs it and renames it into place. write reports how far it got
// through th.Advance: a hasher follows it through the page cache (the file's
// sha256 costs no pass of its own), and the disk is asked to start writing
// every few MiB (so the final fsync waits for little more than the tail).
// Ranges of the file that write registers with th.expect are checked
// against their digest in the same pass; a mismatch fails writeAtomic with
// a *CorruptCacheError before written is called. written (the callback),
// if set, sees the digest before the rename.
func writeAtomic(ctx context.Context, path string, written func(context.Context, digest.Digest, int64) error, write func(f *os.File, th *trailHasher) error) (digest.Digest, int64, error) {
	f, err := os.CreateTemp(filepath.Dir(path), fsutil.TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return "", 0, err
	}
	tmp := f.Name()
	ok := false
	th := newTrailHasher(ctx, f)
	defer func() {
		th.close()
		th.wait()
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	var kicked int64
	th.written = func(end int64) {
		if end-kicked >= writebackChunk {
			_ = unix.SyncFileRange(int(f.Fd()), kicked, end-kicked, unix.SYNC_FILE_RANGE_WRITE) // a hint: errors change nothing
			kicked = end
		}
	}
	if err := write(f, th); err != nil {
		return "", 0, err
	}
	if err := ctx.Err(); err != nil {
		return "", 0, err
	}
	th.close()
	var sum digest.Digest
	var size int64
	eg := errgroup.Group{}
	eg.Go(f.Sync)
	eg.Go(func() error {
		var err error
		sum, size, err = th.wait()
		return err
	})
	if err := eg.Wait(); err != nil {
		return "", 0, err
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		return "", 0, fmt.Errorf("hashed %d bytes of %s, the file has %v: %w", size, tmp, fi.Size(), err)
	}
	if err := f.Chmod(0o644); err != nil {
		return "", 0, err
	}
	if written != nil {
		if err := written(ctx, sum, size); err != nil {
			return "", 0, err
		}
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", 0, err
	}
	ok = true
	return sum, size, nil
}

// writebackChunk is how much written data writeAtomic lets accumulate
// before asking the disk to start on it.
const writebackChunk = 32 << 20

// trailHasher hashes a file while it is written, following the writer:
// Advance(end) says [0, end) is written, close that nothing more will be,
// and wait returns the digest of everything up to the last end.
type trailHasher struct {
	f    *os.File
	mu   sync.Mutex
	cond *sync.Cond
	end  int64
	shut bool
	once sync.Once
	done chan struct{}
	sum  digest.Digest
	n    int64
	err  error
	// written, if set, is called by advance (from the writer's goroutine).
	written func(end int64)
	// checks are the ranges to check against a digest (expect), in order;
	// bad collects those that did not match.
	checks []rangeCheck
	bad    []digest.Digest
}

// rangeCheck is a range of the file that must hash to want.
type rangeCheck struct {
	off, size int64
	want      digest.Digest
}

// CorruptCacheError lists staged blobs whose bytes did not match their
// digest when the archive was written (a cache entry changed since it was
// stored, or planted). Create removes them and fetches them again.
type CorruptCacheError struct {
	Digests []digest.Digest
}

func (e *CorruptCacheError) Error() string {
	return fmt.Sprintf("%d staged blobs do not match their digest (first %s): %v", len(e.Digests), e.Digests[0], bundle.ErrDigestMismatch)
}

func (e *CorruptCacheError) Unwrap() error { return bundle.ErrDigestMismatch }

// Expect registers [off, off+d.Size) as d's bytes, before the writer
// advances past off.
func (t *trailHasher) Expect(off int64, d ocispec.Descriptor) {
	t.mu.Lock()
	t.checks = append(t.checks, rangeCheck{off: off, size: d.Size, want: d.Digest})
	t.mu.Unlock()
}

func newTrailHasher(ctx context.Context, f *os.File) *trailHasher {
	t := &trailHasher{f: f, done: make(chan struct{})}
	t.cond = sync.NewCond(&t.mu)
	go t.run(ctx)
	return t
}

func (t *trailHasher) Advance(end int64) {
	t.mu.Lock()
	if end > t.end {
		t.end = end
		t.cond.Signal()
	}
	t.mu.Unlock()
	if t.written != nil {
		t.written(end)
	}
}

func (t *trailHasher) close() {
	t.once.Do(func() {
		t.mu.Lock()
		t.shut = true
		t.cond.Signal()
		t.mu.Unlock()
	})
}

func (t *trailHasher) wait() (digest.Digest, int64, error) {
	<-t.done
	return t.sum, t.n, t.err
}

func (t *trailHasher) run(ctx context.Context) {
	defer close(t.done)
	h := sha256.New()
	buf := make([]byte, 4<<20)
	bh := sha256.New() // the current range check's
	next := 0          // index of the current range check
	for {
		t.mu.Lock()
		for t.n >= t.end && !t.shut {
			t.cond.Wait()
		}
		end, shut := t.end, t.shut
		checks := t.checks
		t.mu.Unlock()
		if t.n >= end && shut {
			t.sum = digest.NewDigest(digest.SHA256, h)
			if len(t.bad) > 0 {
				t.err = &CorruptCacheError{Digests: t.bad}
			}
			return
		}
		for t.n < end {
			if err := ctx.Err(); err != nil {
				t.err = err
				return
			}
			m := int(min(int64(len(buf)), end-t.n))
			if _, err := t.f.ReadAt(buf[:m], t.n); err != nil {
				t.err = err
				return
			}
			h.Write(buf[:m])
			next = t.checkRanges(checks, next, bh, buf[:m], t.n)
			t.n += int64(m)
		}
	}
}

// checkRanges feeds the part of chunk (at file offset off) that falls in
// range checks to their hash, from checks[next] on, records the ranges
// that end in it and do not match, and returns the next unfinished check.
func (t *trailHasher) checkRanges(checks []rangeCheck, next int, bh hash.Hash, chunk []byte, off int64) int {
	end := off + int64(len(chunk))
	for next < len(checks) {
		c := checks[next]
		if c.off >= end {
			return next
		}
		from, to := max(c.off, off), min(c.off+c.size, end)
		if to > from {
			bh.Write(chunk[from-off : to-off])
		}
		if c.off+c.size > end {
			return next // continues in the next chunk
		}
		if digest.NewDigest(digest.SHA256, bh) != c.want {
			t.bad = append(t.bad, c.want)
		}
		bh.Reset()
		next++
	}
	return next
}

// collectBlobs lists every blob reachable from root in the staging store.
func collectBlobs(ctx context.Context, store *blobStore, root ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	seen := map[digest.Digest]bool{}
	var out []ocispec.Descriptor
	var visit func(d ocispec.Descriptor) error
	visit = func(d ocispec.Descriptor) error {
		if seen[d.Digest] {
			return nil
		}
		seen[d.Digest] = true
		out = append(out, d)
		if !bundle.IsManifest(d.MediaType) {
			return nil
		}
		rc, err := store.Fetch(ctx, d)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(rc, bundle.MaxManifestSize+1))
		rc.Close()
		if err != nil {
			return err
		}
		if int64(len(b)) != d.Size || digest.FromBytes(b) != d.Digest {
			return &CorruptCacheError{Digests: []digest.Digest{d.Digest}}
		}
		children, err := bundle.Successors(b)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		for _, c := range children {
			if err := visit(c.Desc); err != nil {
				return err
			}
		}
		return nil
	}
	return out, visit(root)
}

func dedupDescriptors(in []ocispec.Descriptor) []ocispec.Descriptor {
	seen := map[digest.Digest]bool{}
	out := in[:0]
	for _, d := range in {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			out = append(out, d)
		}
	}
	return out
}

// checkLock compares what was resolved with the lock file.
func checkLock(want, got *manifests.Lock) error {
	var errs []error
	for _, g := range got.Items {
		w, ok := findLocked(want, g.Kind, g.Name)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s %q is not in the lock file%s: %w", g.Kind, g.Name, lockedVersions(want, g), bundle.ErrLockMismatch))
		case w.Digest != g.Digest:
			errs = append(errs, fmt.Errorf("%s %q: locked %s, source now gives %s: %w", g.Kind, g.Name, w.Digest, g.Digest, bundle.ErrLockMismatch))
		}
	}
	for _, w := range want.Items {
		if _, ok := findLocked(got, w.Kind, w.Name); !ok {
			errs = append(errs, fmt.Errorf("%s %q is locked but not in the spec: %w", w.Kind, w.Name, bundle.ErrLockMismatch))
		}
	}
	return errors.Join(errs...)
}

// findLocked finds an item in a lock, an image by its normalized reference.
func findLocked(l *manifests.Lock, kind, name string) (manifests.LockItem, bool) {
	if kind == manifests.KindImage {
		return l.FindImage(name)
	}
	return l.Find(kind, name)
}

// checkLockVersions refuses, before anything is fetched, a --lock create
// whose spec asks for another version of an item than the lock holds: an
// image whose repository is locked at another tag, a chart locked at a
// version outside the spec's. Each error names the item, what the spec
// asks for and what the lock has.
func checkLockVersions(spec *manifests.Spec, lock *manifests.Lock) error {
	var errs []error
	for _, comp := range spec.Components {
		for _, im := range comp.Images {
			n, err := NormalizeRef(im.Ref)
			if err != nil {
				continue // Create reports it
			}
			if _, ok := lock.FindImage(n); ok {
				continue
			}
			repo := manifests.ImageRepository(n)
			for _, l := range lock.Items {
				if l.Kind != manifests.KindImage {
					continue
				}
				if ln, err := NormalizeRef(l.Name); err == nil && manifests.ImageRepository(ln) == repo {
					errs = append(errs, fmt.Errorf("image %s: the spec asks for %s, the lock has %s (run without --lock to update the lock): %w", repo, n, ln, bundle.ErrLockMismatch))
				}
			}
		}
		for _, ch := range comp.Charts {
			l, ok := lock.Find(manifests.KindChart, ch.Name)
			if !ok || l.Version == "" || ch.Version == "" || chartVersionOK(ch.Version, l.Version) {
				continue
			}
			errs = append(errs, fmt.Errorf("chart %s: the spec asks for version %s, the lock has %s (run without --lock to update the lock): %w", ch.Name, ch.Version, l.Version, bundle.ErrLockMismatch))
		}
	}
	return errors.Join(errs...)
}

// chartVersionOK reports whether a locked chart version is what the spec's
// version (exact, or a semver constraint) asks for.
func chartVersionOK(want, locked string) bool {
	if want == locked || strings.TrimPrefix(want, "v") == strings.TrimPrefix(locked, "v") {
		return true
	}
	v, err := semver.NewVersion(locked)
	if err != nil {
		return false
	}
	if _, err := semver.StrictNewVersion(strings.TrimPrefix(want, "v")); err == nil {
		return false // an exact version, and another
	}
	cons, err := semver.NewConstraint(want)
	return err == nil && cons.Check(v)
}

// lockedVersions names, for an image the lock lacks, the versions of its
// repository the lock has (a chart's discovered image moved to another
// tag): " (the lock has REF, …; run without --lock to update it)".
func lockedVersions(lock *manifests.Lock, it manifests.LockItem) string {
	if it.Kind != manifests.KindImage {
		return ""
	}
	repo := manifests.ImageRepository(it.Name)
	var have []string
	for _, l := range lock.Items {
		if l.Kind == manifests.KindImage {
			if n, err := NormalizeRef(l.Name); err == nil && manifests.ImageRepository(n) == repo {
				have = append(have, n)
			}
		}
	}
	if len(have) == 0 {
		return ""
	}
	return " (the lock has " + strings.Join(have, ", ") + "; run without --lock to update it)"
}
