package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/remote"
)

// The create pipeline's fetching half runs in phases that share one
// concurrency budget (CreateOptions.Concurrency) and never overlap:
//
//  1. charts: resolved, fetched and rendered, so the images they use can
//     join the bundle (CreateOptions.DiscoverImages);
//  2. items: every image is resolved (tag → digest) and its manifests are
//     read (from the store when present, else from the source) — no layer
//     is fetched yet; files and AMIs are staged;
//  3. blobs: every layer and config that the store lacks is fetched once,
//     however many images share it, largest first;
//  4. commit: each image's manifests are written bottom-up.
//
// The store only ever holds a manifest once everything it points at is
// there (phase 4 runs after phase 3, children before parents), so a
// manifest found in the store stands for its whole graph, and an
// interrupted create leaves at most whole blobs behind: the next create
// fetches only what is missing.

// PhaseCharts, PhaseResolve, PhaseFetch and PhaseWrite name the
// create phases reported to CreateOptions.PhaseProgress.
const (
	PhaseCharts  = "charts"          // done/total: charts
	PhaseResolve = "resolving"       // done/total: items
	PhaseFetch   = "fetching"        // done/total: bytes
	PhaseWrite   = "writing archive" // done/total: bytes (also CreateOptions.Progress)
)

// stagedManifest is a manifest read during planning, written to the store
// in the commit phase.
type stagedManifest struct {
	desc ocispec.Descriptor
	raw  []byte
}

// pendingBlob is a blob the store lacks and where to get it.
type pendingBlob struct {
	desc ocispec.Descriptor
	src  content.Fetcher
	item string
}

// fetchPlan collects the blobs every item needs, once each.
type fetchPlan struct {
	store *blobStore
	// deep makes the walk descend into manifests the store has (after a
	// cache entry failed its check: what it pointed at is fetched again).
	deep  bool
	mu    sync.Mutex
	blobs map[digest.Digest]*pendingBlob
	// walked holds the manifests some item's walk has claimed: each is
	// read and descended into once per create, however many indexes (and
	// items) list it.
	walked map[digest.Digest]bool
	// staged holds the manifests read while planning, by digest, for the
	// commit phase (children first) and so that none is fetched twice.
	staged    map[digest.Digest]stagedManifest
	committed map[digest.Digest]bool
	// counted holds the digests counted in cachedBlobs/cachedBytes.
	counted map[digest.Digest]bool
	// cached counts blobs and manifests found in the store while planning.
	cachedBlobs, cachedBytes atomic.Int64
	// resumed counts blobs finished from a partial, and the partial bytes
	// that were not fetched again.
	resumedBlobs, resumedBytes atomic.Int64
}

func newFetchPlan(store *blobStore) *fetchPlan {
	return &fetchPlan{store: store, blobs: map[digest.Digest]*pendingBlob{}, counted: map[digest.Digest]bool{},
		walked: map[digest.Digest]bool{}, staged: map[digest.Digest]stagedManifest{}, committed: map[digest.Digest]bool{}}
}

// maxGraphDepth bounds index nesting (an index of indexes of …): the
// reader's bound, so create makes nothing the reader refuses.
const maxGraphDepth = bundle.MaxGraphDepth

// MaxManifestsPerItem bounds the distinct manifests of one item's graph,
// and MaxRefsPerItem the descriptors its manifests list in all (the same
// manifest listed 19,000 times counts 19,000 times, but is fetched once).
const (
	MaxManifestsPerItem = 1024
	MaxRefsPerItem      = 100_000
)

// walkBudget counts what one item's walk has visited.
type walkBudget struct{ manifests, refs int }

// ErrTooManyManifests: an item's graph exceeds MaxManifestsPerItem or
// MaxRefsPerItem.
var ErrTooManyManifests = errors.New("too many manifests")

func (b *walkBudget) ref(d digest.Digest) error {
	b.refs++
	if b.refs > MaxRefsPerItem {
		return fmt.Errorf("manifest %s: the graph lists more than %d descriptors: %w", d, MaxRefsPerItem, ErrTooManyManifests)
	}
	return nil
}

func (b *walkBudget) manifest(d digest.Digest) error {
	b.manifests++
	if b.manifests > MaxManifestsPerItem {
		return fmt.Errorf("manifest %s: the graph has more than %d manifests: %w", d, MaxManifestsPerItem, ErrTooManyManifests)
	}
	return nil
}

// retryTransient runs fn up to three times, with backoff, while it fails
// in a way a retry may fix: a body that stalled or broke off. (Requests
// that get no answer are retried by the transport, see retryPolicy.)
func retryTransient(ctx context.Context, fn func() error) error {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
			}
		}
		if err = fn(); err == nil || ctx.Err() != nil || !isTransient(err) {
			return err
		}
	}
	return err
}

// isTransient reports errors a retry may fix.
func isTransient(err error) bool {
	var se *remote.StallError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// readManifest reads a manifest from the store if present, else from src,
// checking its digest and size. fromStore says where it came from.
func (p *fetchPlan) readManifest(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor) (raw []byte, fromStore bool, err error) {
	if desc.Size > bundle.MaxManifestSize {
		return nil, false, fmt.Errorf("manifest %s is %d bytes (limit %d): %w", desc.Digest, desc.Size, bundle.MaxManifestSize, bundle.ErrTooLarge)
	}
	p.mu.Lock()
	sm, ok := p.staged[desc.Digest]
	p.mu.Unlock()
	if ok {
		return sm.raw, false, nil
	}
	if ok, _ := p.store.Exists(ctx, desc); ok {
		// FetchAll checks the digest: a poisoned entry is fetched again.
		if raw, err := content.FetchAll(ctx, p.store, desc); err == nil {
			return raw, true, nil
		}
		_ = p.store.remove(desc.Digest)
	}
	err = retryTransient(ctx, func() error {
		var err error
		raw, err = content.FetchAll(ctx, src, desc)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("fetching manifest %s: %w", desc.Digest, err)
	}
	p.mu.Lock()
	p.staged[desc.Digest] = stagedManifest{desc: desc, raw: raw}
	p.mu.Unlock()
	return raw, false, nil
}

// walk plans the graph under desc: manifests missing from the store are
// read from src and appended to out in post-order (children first); blobs
// missing from the store are added to the plan. A manifest present in the
// store is complete (see above) and is not descended into.
//
// Each manifest is walked once per create (the first item to reach it
// claims it); budget counts what this item's walk visited.
func (p *fetchPlan) walk(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor, item string, depth int, out *[]stagedManifest, budget *walkBudget) error {
	if depth > maxGraphDepth {
		return fmt.Errorf("manifest %s: nested deeper than %d", desc.Digest, maxGraphDepth)
	}
	if err := budget.ref(desc.Digest); err != nil {
		return err
	}
	if !bundle.IsManifest(desc.MediaType) {
		return p.addBlob(ctx, src, desc, item)
	}
	p.mu.Lock()
	claimed := p.walked[desc.Digest]
	p.walked[desc.Digest] = true
	p.mu.Unlock()
	if claimed {
		return nil
	}
	if err := budget.manifest(desc.Digest); err != nil {
		return err
	}
	if ok, err := p.store.Exists(ctx, desc); err != nil {
		return err
	} else if ok && !p.deep {
		p.countCached(ctx, desc, depth)
		return nil
	}
	raw, _, err := p.readManifest(ctx, src, desc)
	if err != nil {
		return err
	}
	children, err := bundle.Successors(raw)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	for _, c := range children {
		if c.Role == "subject" {
			continue // a referrer's subject is not part of the image
		}
		if err := p.walk(ctx, src, c.Desc, item, depth+1, out, budget); err != nil {
			return err
		}
	}
	*out = append(*out, stagedManifest{desc: desc, raw: raw})
	return nil
}

// countCached adds a stored graph to the cache statistics, each blob once.
func (p *fetchPlan) countCached(ctx context.Context, desc ocispec.Descriptor, depth int) {
	p.mu.Lock()
	seen := p.counted[desc.Digest]
	p.counted[desc.Digest] = true
	p.mu.Unlock()
	if seen {
		return
	}
	p.cachedBlobs.Add(1)
	p.cachedBytes.Add(desc.Size)
	if !bundle.IsManifest(desc.MediaType) || depth > maxGraphDepth {
		return
	}
	raw, err := content.FetchAll(ctx, p.store, desc)
	if err != nil {
		return
	}
	children, err := bundle.Successors(raw)
	if err != nil {
		return
	}
	for _, c := range children {
		if c.Role != "subject" {
			p.countCached(ctx, c.Desc, depth+1)
		}
	}
}

// addBlob plans a non-manifest blob unless the store has it.
func (p *fetchPlan) addBlob(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor, item string) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("blob %q: %w", desc.Digest, err)
	}
	if desc.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("blob %s: %w", desc.Digest, bundle.ErrUnsupportedDigest)
	}
	p.mu.Lock()
	_, planned := p.blobs[desc.Digest]
	p.mu.Unlock()
	if planned {
		return nil
	}
	if ok, err := p.store.Exists(ctx, desc); err != nil {
		return err
	} else if ok && (!p.deep || p.store.verify(ctx, desc)) {
		// After corrupt entries were found (deep), each is hashed first.
		p.countCached(ctx, desc, 0)
		return nil
	}
	p.mu.Lock()
	if _, planned := p.blobs[desc.Digest]; !planned {
		p.blobs[desc.Digest] = &pendingBlob{desc: ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, src: src, item: item}
	}
	p.mu.Unlock()
	return nil
}

// fetchStats says what the fetch phase did.
type fetchStats struct {
	Blobs int
	Bytes int64
}

// fetchAll fetches every planned blob into the store, at most conc at
// once, largest first. progress gets the bytes fetched so far and the total.
func (p *fetchPlan) fetchAll(ctx context.Context, conc int, progress func(done, total int64)) (fetchStats, error) {
	list := make([]*pendingBlob, 0, len(p.blobs))
	var total int64
	for _, b := range p.blobs {
		if b.desc.Size < 0 || b.desc.Size > math.MaxInt64-total {
			return fetchStats{}, &bundle.BlobError{Digest: b.desc.Digest, Item: b.item, Role: "fetching", Err: fmt.Errorf("claims %d bytes: %w", b.desc.Size, bundle.ErrTooLarge)}
		}
		list = append(list, b)
		total += b.desc.Size
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].desc.Size != list[j].desc.Size {
			return list[i].desc.Size > list[j].desc.Size
		}
		return list[i].desc.Digest < list[j].desc.Digest
	})
	if len(list) > 0 {
		big := list[0]
		if err := checkFreeSpace(p.store.dir, big.desc.Size, "blob "+big.desc.Digest.String()+" of "+big.item); err != nil {
			return fetchStats{}, err
		}
		if err := checkFreeSpace(p.store.dir, total, fmt.Sprintf("fetching %d blobs", len(list))); err != nil {
			return fetchStats{}, err
		}
	}
	var done atomic.Int64
	report := func(n int64) {
		d := done.Add(n)
		if progress != nil {
			progress(d, total)
		}
	}
	if progress != nil {
		progress(0, total)
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(conc)
	for _, b := range list {
		eg.Go(func() error {
			if err := p.fetchBlob(ectx, b, report); err != nil {
				return &bundle.BlobError{Digest: b.desc.Digest, Item: b.item, Role: "fetching", Err: err}
			}
			return nil
		})
	}
	err := eg.Wait()
	return fetchStats{Blobs: len(list), Bytes: total}, err
}

// fetchBlob copies one blob into the store (digest-checked by the store),
// trying again after a broken transfer. A large blob from a registry goes
// through a partial (partial.go), so a retry, or the next create after a
// kill, fetches only the rest.
func (p *fetchPlan) fetchBlob(ctx context.Context, b *pendingBlob, report func(int64)) error {
	rs, resumable := asRangeSource(b.src)
	resumable = resumable && b.desc.Size >= minResumable
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
			}
		}
		err = errPartialBusy
		if resumable {
			var res resumeResult
			res, err = p.store.fetchResumable(ctx, b.desc, rs, report)
			if err == nil && res.Resumed > 0 {
				p.resumedBlobs.Add(1)
				p.resumedBytes.Add(res.Resumed)
			}
			resumable = !errors.Is(err, errPartialBusy)
		}
		var sent int64
		if errors.Is(err, errPartialBusy) {
			err = func() error {
				rc, err := b.src.Fetch(ctx, b.desc)
				if err != nil {
					return err
				}
				defer rc.Close()
				counted := &countingReader{r: rc, fn: func(n int) { sent += int64(n); report(int64(n)) }}
				return p.store.Push(ctx, b.desc, counted)
			}()
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		report(-sent)
		if isPermanent(err) {
			return err
		}
	}
	return err
}

// isPermanent reports errors a retry will not fix.
func isPermanent(err error) bool {
	return errors.Is(err, bundle.ErrUnsupportedDigest) || errors.Is(err, bundle.ErrTooLarge) || errors.Is(err, errdef.ErrNotFound)
}

type countingReader struct {
	r  io.Reader
	fn func(int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.fn(n)
	}
	return n, err
}

// commit writes planned manifests to the store, each after the manifests
// it points at (another item's walk may have planned those).
func (p *fetchPlan) commit(ctx context.Context, ms []stagedManifest) error {
	for _, m := range ms {
		if err := p.commitOne(ctx, m, 0); err != nil {
			return err
		}
	}
	return nil
}

func (p *fetchPlan) commitOne(ctx context.Context, m stagedManifest, depth int) error {
	if p.committed[m.desc.Digest] || depth > maxGraphDepth {
		return nil
	}
	if children, err := bundle.Successors(m.raw); err == nil {
		for _, c := range children {
			if child, ok := p.staged[c.Desc.Digest]; ok && c.Role != "subject" {
				if err := p.commitOne(ctx, child, depth+1); err != nil {
					return err
				}
			}
		}
	}
	p.committed[m.desc.Digest] = true
	if ok, _ := p.store.Exists(ctx, m.desc); ok && !p.deep {
		return nil
	}
	if err := p.store.Push(ctx, m.desc, bytes.NewReader(m.raw)); err != nil {
		return fmt.Errorf("storing manifest %s: %w", m.desc.Digest, err)
	}
	return nil
}

// filterManifest plans a platform-filtered copy of an index: the kept
// children are walked, and the new index (every other field of the
// original kept) is appended last. With every platform kept, the original
// index is used as it is.
func (p *fetchPlan) filterIndex(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor, platforms []string, item string, out *[]stagedManifest) (ocispec.Descriptor, error) {
	raw, _, err := p.readManifest(ctx, src, desc)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var doc map[string]json.RawMessage
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &doc); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		return ocispec.Descriptor{}, err
	}
	var kept []ocispec.Descriptor
	for _, m := range idx.Manifests {
		if m.Platform != nil && platformWanted(platforms, m.Platform) {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		var have []string
		for _, m := range idx.Manifests {
			if m.Platform != nil {
				have = append(have, platformString(m.Platform))
			}
		}
		return ocispec.Descriptor{}, fmt.Errorf("none of its platforms %v is in %v", have, platforms)
	}
	budget := &walkBudget{}
	for _, m := range kept {
		if err := p.walk(ctx, src, m, item, 1, out, budget); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if len(kept) == len(idx.Manifests) {
		*out = append(*out, stagedManifest{desc: desc, raw: raw})
		return desc, nil
	}
	doc["manifests"], _ = json.Marshal(kept)
	filtered, err := json.Marshal(doc)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	fd := content.NewDescriptorFromBytes(desc.MediaType, filtered)
	*out = append(*out, stagedManifest{desc: fd, raw: filtered})
	return fd, nil
}

func platformString(p *ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// imageJob is an image to stage: from the spec or discovered in a chart.
type imageJob struct {
	comp string
	im   manifests.Image
	// from names the chart the image was discovered in ("" for spec images).
	from string
	// fetch, if set, is the reference to fetch the image from instead of
	// its name (a chart's images override).
	fetch string
	// pos is where the spec names the image, or the chart it was found in.
	pos manifests.Pos
}

// stageAll runs the phases above and returns every item in spec order:
// per component its images (spec order, then discovered ones), charts,
// files and AMIs.
func (c *creator) stageAll(ctx context.Context) ([]resolved, []DiscoveredImage, error) {
	// Phase 1: charts, so that their images can be planned with the rest.
	charts, chartRes, err := c.stageCharts(ctx)
	if err != nil {
		return nil, nil, err
	}
	images, discovered := c.imageJobs(charts, chartRes)

	// Phase 2: resolve every item; plan image blobs; stage files and AMIs.
	results, commits, err := c.resolveAll(ctx, c.stageJobs(images, chartRes))
	if err != nil {
		return nil, nil, err
	}

	// Phase 3: fetch the missing blobs, once each.
	st, err := c.plan.fetchAll(ctx, c.opts.Concurrency, func(done, total int64) { c.phase(PhaseFetch, done, total) })
	c.stats.FetchedBlobs, c.stats.FetchedBytes = st.Blobs, st.Bytes
	c.stats.CachedBlobs, c.stats.CachedBytes = int(c.plan.cachedBlobs.Load()), c.plan.cachedBytes.Load()
	c.stats.ResumedBlobs, c.stats.ResumedBytes = int(c.plan.resumedBlobs.Load()), c.plan.resumedBytes.Load()
	c.opts.Logger.Info("fetched blobs", "fetched", st.Blobs, "bytes", st.Bytes, "cached", c.stats.CachedBlobs, "cachedBytes", c.stats.CachedBytes)
	if err != nil {
		return nil, nil, err
	}

	// Phase 4: manifests, children first.
	for _, cm := range commits {
		if err := c.plan.commit(ctx, cm); err != nil {
			return nil, nil, err
		}
	}
	return results, discovered, nil
}

// phase reports a phase's progress to opts.PhaseProgress, if set.
func (c *creator) phase(name string, done, total int64) {
	if c.opts.PhaseProgress != nil {
		c.opts.PhaseProgress(name, done, total)
	}
}

// chartJob is a chart of the spec to stage.
type chartJob struct {
	comp string
	ch   manifests.Chart
}

// stageJob resolves and stages one item; it returns the item and the
// manifests to commit once the blobs are fetched.
type stageJob func(context.Context) (resolved, []stagedManifest, error)

// stageCharts stages every chart of the spec (phase 1), in spec order,
// opts.Concurrency at a time.
func (c *creator) stageCharts(ctx context.Context) ([]chartJob, []chartResult, error) {
	var charts []chartJob
	for _, comp := range c.spec.Components {
		for _, ch := range comp.Charts {
			charts = append(charts, chartJob{comp.Name, ch})
		}
	}
	chartRes := make([]chartResult, len(charts))
	var chartsDone atomic.Int64
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(c.opts.Concurrency)
	for i, j := range charts {
		eg.Go(func() error {
			r, err := c.chart(ectx, j.comp, j.ch)
			chartRes[i] = r
			c.phase(PhaseCharts, chartsDone.Add(1), int64(len(charts)))
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, nil, err
	}
	return charts, chartRes, nil
}

// imageJobs gives the images of each component: the spec's, then the
// discovered ones that no component lists (by normalized reference).
func (c *creator) imageJobs(charts []chartJob, chartRes []chartResult) (map[string][]imageJob, []DiscoveredImage) {
	known := map[string]bool{}
	for _, comp := range c.spec.Components {
		for _, im := range comp.Images {
			if n, err := NormalizeRef(im.Ref); err == nil {
				known[n] = true
			}
		}
	}
	var discovered []DiscoveredImage
	images := map[string][]imageJob{}
	first := map[string]string{} // normalized → the spelling bundled
	for _, comp := range c.spec.Components {
		for _, im := range comp.Images {
			if n, err := NormalizeRef(im.Ref); err == nil {
				if prev, dup := first[n]; dup {
					// The spec allows one image in several spellings
					// (busybox, docker.io/library/busybox:latest); it is
					// one item.
					c.opts.Logger.Warn("image listed twice in the spec; bundled once", "ref", n, "as", im.Ref, "first", prev, "component", comp.Name)
					continue
				}
				first[n] = im.Ref
			}
			images[comp.Name] = append(images[comp.Name], imageJob{comp: comp.Name, im: im, pos: im.Pos})
		}
	}
	for i, j := range charts {
		adj := newChartAdjust(j.ch)
		for _, ref := range chartRes[i].images {
			d := DiscoveredImage{Component: j.comp, Chart: j.ch.Name, Ref: ref}
			d.Excluded = adj.excluded(ref)
			d.FetchFrom = adj.replacement(ref)
			d.Added = !known[ref] && !d.Excluded
			discovered = append(discovered, d)
			if d.Added {
				known[ref] = true
				images[j.comp] = append(images[j.comp], imageJob{comp: j.comp, im: manifests.Image{Ref: ref}, from: j.ch.Name, fetch: d.FetchFrom, pos: j.ch.Pos})
			}
		}
		for _, ref := range adj.unused() {
			c.opts.Logger.Warn("the chart does not use an image its exclude or images lists", "chart", j.ch.Name, "component", j.comp, "ref", ref)
		}
	}
	for _, d := range discovered {
		c.opts.Logger.Info("discovered image", "component", d.Component, "chart", d.Chart, "ref", d.Ref, "added", d.Added, "excluded", d.Excluded, "fetchFrom", d.FetchFrom)
	}
	return images, discovered
}

// imageError says where the spec names a failed image — its line, or the
// chart it was discovered in and the chart's line — so that the error
// alone (no -v) leads to what to change.
func (c *creator) imageError(j imageJob, err error) error {
	at := c.at(j.pos)
	if j.from != "" {
		return fmt.Errorf("%schart %s (component %s) uses %w; leave it out with exclude: [%s] or fetch it from elsewhere with images: {%s: REF} on the chart",
			at, j.from, j.comp, err, j.im.Ref, j.im.Ref)
	}
	return fmt.Errorf("%s%w", at, err)
}

// chartAdjust is a chart's exclude and images (the spec's), normalized,
// and which of them a discovered image used.
type chartAdjust struct {
	exclude map[string]string // normalized → as written
	replace map[string]string // normalized → normalized reference to fetch
	written map[string]string // normalized → as written (images keys)
	used    map[string]bool
}

func newChartAdjust(ch manifests.Chart) *chartAdjust {
	a := &chartAdjust{exclude: map[string]string{}, replace: map[string]string{}, written: map[string]string{}, used: map[string]bool{}}
	for _, ref := range ch.Exclude {
		if n, err := NormalizeRef(ref); err == nil {
			a.exclude[n] = ref
		}
	}
	for from, to := range ch.Images {
		n, err := NormalizeRef(from)
		t, err2 := NormalizeRef(to)
		if err == nil && err2 == nil {
			a.replace[n], a.written[n] = t, from
		}
	}
	return a
}

func (a *chartAdjust) excluded(ref string) bool {
	_, ok := a.exclude[ref]
	a.used[ref] = a.used[ref] || ok
	return ok
}

func (a *chartAdjust) replacement(ref string) string {
	to, ok := a.replace[ref]
	a.used[ref] = a.used[ref] || ok
	return to
}

// unused lists, as written, the entries no discovered image matched.
func (a *chartAdjust) unused() []string {
	var out []string
	for n, w := range a.exclude {
		if !a.used[n] {
			out = append(out, w)
		}
	}
	for n, w := range a.written {
		if !a.used[n] {
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// stageJobs lists a job per item in spec order: per component its images,
// its (already staged) charts, files and AMIs.
func (c *creator) stageJobs(images map[string][]imageJob, chartRes []chartResult) []stageJob {
	var jobs []stageJob
	chartIdx := 0
	for _, comp := range c.spec.Components {
		for _, j := range images[comp.Name] {
			jobs = append(jobs, func(ctx context.Context) (resolved, []stagedManifest, error) {
				r, cm, err := c.image(ctx, j.comp, j.im, j.fetch)
				if err != nil {
					return r, cm, c.imageError(j, err)
				}
				return r, cm, nil
			})
		}
		for range comp.Charts {
			r := chartRes[chartIdx]
			chartIdx++
			jobs = append(jobs, func(context.Context) (resolved, []stagedManifest, error) { return r.resolved, r.commit, nil })
		}
		for _, f := range comp.Files {
			jobs = append(jobs, func(ctx context.Context) (resolved, []stagedManifest, error) {
				r, err := c.file(ctx, comp.Name, f)
				return r, nil, err
			})
		}
		for _, a := range comp.AMIs {
			jobs = append(jobs, func(ctx context.Context) (resolved, []stagedManifest, error) {
				r, err := c.ami(ctx, comp.Name, a)
				return r, nil, err
			})
		}
	}
	return jobs
}

// resolveAll runs the jobs (phase 2), opts.Concurrency at a time, and
// returns their items and manifests to commit in job order.
func (c *creator) resolveAll(ctx context.Context, jobs []stageJob) ([]resolved, [][]stagedManifest, error) {
	results := make([]resolved, len(jobs))
	commits := make([][]stagedManifest, len(jobs))
	var itemsDone atomic.Int64
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(c.opts.Concurrency)
	for i, job := range jobs {
		eg.Go(func() error {
			r, cm, err := job(ectx)
			results[i], commits[i] = r, cm
			c.phase(PhaseResolve, itemsDone.Add(1), int64(len(jobs)))
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, nil, err
	}
	return results, commits, nil
}

// DiscoveredImage is an image reference found in a chart (rendered
// templates or its images annotation).
type DiscoveredImage struct {
	Component string `json:"component"`
	Chart     string `json:"chart"`
	// Ref is the normalized reference.
	Ref string `json:"ref"`
	// Added is false when the spec lists the image already, or the
	// chart's exclude does.
	Added bool `json:"added"`
	// Excluded says the chart's exclude lists the image.
	Excluded bool `json:"excluded,omitempty"`
	// FetchFrom is the reference the chart's images override fetches it
	// from (the bundle names it Ref).
	FetchFrom string `json:"fetchFrom,omitempty"`
}

// FetchStats says how much content came from the sources and how much was
// in the store (the cache) already.
type FetchStats struct {
	// FetchedBlobs/FetchedBytes: image blobs fetched from their sources.
	FetchedBlobs int   `json:"fetchedBlobs"`
	FetchedBytes int64 `json:"fetchedBytes"`
	// CachedBlobs/CachedBytes: image blobs and manifests found in the store.
	CachedBlobs int   `json:"cachedBlobs"`
	CachedBytes int64 `json:"cachedBytes"`
	// ResumedBlobs counts fetched blobs finished from the partial an
	// interrupted fetch left; ResumedBytes is what those partials held
	// (counted in FetchedBytes, but not downloaded again).
	ResumedBlobs int   `json:"resumedBlobs"`
	ResumedBytes int64 `json:"resumedBytes"`
}
