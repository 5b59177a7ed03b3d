package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
)

// What `zdt cache ls` and `zdt cache prune` see of the cache
// (CreateOptions.CacheDir). The cache's lock file (DIR/lock) is held
// shared by every create for its whole run and exclusively by a prune, so
// a prune never evicts what a running create relies on. A blob's access
// time is its last use: a create sets it on every blob it writes into an
// archive.

// cacheLockFile is the cache's lock, under the cache directory.
const cacheLockFile = "lock"

// ErrCacheBusy: a create is using the cache, so it cannot be pruned now.
var ErrCacheBusy = errors.New("the cache is in use by a running create")

// Cache entry kinds (CacheEntry.Kind).
const (
	CacheKindManifest = "manifest" // an image manifest or index
	CacheKindBlob     = "blob"     // a layer, config, file, chart or disk image
	CacheKindPartial  = "partial"  // the start of a blob an interrupted fetch left
)

// CacheEntry is one entry of the cache. Its fields are in the order
// `--output json` prints them (sorted).
type CacheEntry struct {
	Digest digest.Digest `json:"digest"`
	// Kind is CacheKindManifest, CacheKindBlob or CacheKindPartial.
	Kind string `json:"kind"`
	// LastUsed is when a create last wrote the entry into an archive (or,
	// for a partial, last added to it).
	LastUsed time.Time `json:"lastUsed"`
	// Size is the bytes on disk (of a partial: fetched so far).
	Size int64 `json:"size"`
}

// CacheTotals count a cache's entries (fields sorted, as CacheEntry's).
type CacheTotals struct {
	Blobs     int `json:"blobs"`
	Entries   int `json:"entries"`
	Manifests int `json:"manifests"`
	Partials  int `json:"partials"`
	// Size is the bytes of every entry, partials included.
	Size int64 `json:"size"`
}

func (t *CacheTotals) add(e CacheEntry) {
	t.Entries++
	t.Size += e.Size
	switch e.Kind {
	case CacheKindManifest:
		t.Manifests++
	case CacheKindPartial:
		t.Partials++
	default:
		t.Blobs++
	}
}

// CacheListing is what ListCache finds.
type CacheListing struct {
	// Entries, most recently used first.
	Entries []CacheEntry
	Totals  CacheTotals
}

// ListCache lists the cache in dir (read only; safe while creates run).
// A missing dir is an empty cache.
func ListCache(ctx context.Context, dir string) (CacheListing, error) {
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return CacheListing{}, nil
	}
	if err != nil {
		return CacheListing{}, fmt.Errorf("opening the cache: %w", err)
	}
	defer root.Close()
	sc, err := scanCache(ctx, root)
	if err != nil {
		return CacheListing{}, err
	}
	var l CacheListing
	for _, e := range sc.entries {
		l.Entries = append(l.Entries, e.CacheEntry)
		l.Totals.add(e.CacheEntry)
	}
	sort.SliceStable(l.Entries, func(i, j int) bool { return l.Entries[i].LastUsed.After(l.Entries[j].LastUsed) })
	return l, nil
}

// PruneOptions say what PruneCache removes.
type PruneOptions struct {
	// MaxSize: evict the least recently used entries until the cache
	// holds at most this many bytes. Evicting a blob evicts the manifests
	// that point at it, so a manifest in the cache still stands for its
	// whole graph.
	MaxSize int64
	// All empties the cache (MaxSize is ignored).
	All bool
	// Logger gets one line per entry removed (nil: discard).
	Logger *slog.Logger
}

// PruneResult says what PruneCache did.
type PruneResult struct {
	// Removed are the entries evicted, in the order they were.
	Removed []CacheEntry
	// RemovedSize is their bytes.
	RemovedSize int64
	// Kept counts what is left.
	Kept CacheTotals
}

// PruneCache evicts cache entries, least recently used first. It fails
// with ErrCacheBusy while a create uses the cache, and removes temp files
// and records of blobs that are gone on the way.
func PruneCache(ctx context.Context, dir string, opts PruneOptions) (PruneResult, error) {
	if !opts.All && opts.MaxSize < 0 {
		return PruneResult{}, fmt.Errorf("max size %d is negative", opts.MaxSize)
	}
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return PruneResult{}, nil
	}
	if err != nil {
		return PruneResult{}, fmt.Errorf("opening the cache: %w", err)
	}
	defer root.Close()
	lock, err := lockCacheFile(root, syscall.LOCK_EX, false)
	if err != nil {
		return PruneResult{}, err
	}
	defer lock.Close()
	sc, err := scanCache(ctx, root)
	if err != nil {
		return PruneResult{}, err
	}
	evict := sc.evictions(opts)
	var res PruneResult
	gone := map[digest.Digest]bool{}
	for _, e := range evict {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := root.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("removing %s: %w", e.path, err)
		}
		if e.Kind == CacheKindPartial {
			_ = root.Remove(e.path + ".json")
		} else {
			gone[e.Digest] = true
		}
		if opts.Logger != nil {
			opts.Logger.Info("removed", "kind", e.Kind, "digest", e.Digest, "size", e.Size)
		}
		res.Removed = append(res.Removed, e.CacheEntry)
		res.RemovedSize += e.Size
	}
	removed := map[string]bool{}
	for _, e := range evict {
		removed[e.path] = true
	}
	for _, e := range sc.entries {
		if !removed[e.path] {
			res.Kept.add(e.CacheEntry)
		}
	}
	sc.cleanUp(root, gone, opts.All)
	return res, nil
}

// lockCacheFile opens the cache's lock file and takes a flock on it
// (LOCK_SH or LOCK_EX); wait says whether to wait for it, else a held
// lock is ErrCacheBusy. Closing the file releases the lock.
func lockCacheFile(root *os.Root, how int, wait bool) (*os.File, error) {
	f, err := root.OpenFile(cacheLockFile, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the cache lock: %w", err)
	}
	if wait {
		for {
			err = syscall.Flock(int(f.Fd()), how)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking the cache: %w", err)
		}
		return f, nil
	}
	ok, err := tryLock(f, how)
	if err != nil || !ok {
		f.Close()
		if err == nil {
			err = ErrCacheBusy
		}
		return nil, fmt.Errorf("locking the cache %s: %w", root.Name(), err)
	}
	return f, nil
}

// scannedEntry is an entry and where it is.
type scannedEntry struct {
	CacheEntry
	path string
}

// cacheScan is the cache's entries and, per blob, the manifests that
// point at it.
type cacheScan struct {
	entries []scannedEntry
	parents map[digest.Digest][]digest.Digest
	byDig   map[digest.Digest]int // index of a blob or manifest in entries
}

func scanCache(ctx context.Context, root *os.Root) (*cacheScan, error) {
	sc := &cacheScan{parents: map[digest.Digest][]digest.Digest{}, byDig: map[digest.Digest]int{}}
	for _, d := range []string{dirBlobsSHA, dirPartial} {
		ents, err := readDirIn(root, d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading the cache: %w", err)
		}
		for _, de := range ents {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			dg := digest.NewDigestFromEncoded(digest.SHA256, de.Name())
			if dg.Validate() != nil || !de.Type().IsRegular() {
				continue
			}
			fi, err := de.Info()
			if err != nil {
				continue
			}
			e := scannedEntry{CacheEntry: CacheEntry{Kind: CacheKindPartial, Digest: dg, Size: fi.Size(), LastUsed: lastUse(fi)}, path: path.Join(d, de.Name())}
			if d == dirBlobsSHA {
				e.Kind = CacheKindBlob
				if children, ok := manifestChildren(root, e.path, fi.Size()); ok {
					e.Kind = CacheKindManifest
					for _, c := range children {
						sc.parents[c] = append(sc.parents[c], dg)
					}
				}
				sc.byDig[dg] = len(sc.entries)
			}
			sc.entries = append(sc.entries, e)
		}
	}
	return sc, nil
}

// lastUse is a file's access time (set by the create that used it last),
// or its modification time if that is later.
func lastUse(fi fs.FileInfo) time.Time {
	t := fi.ModTime()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if a := time.Unix(st.Atim.Unix()); a.After(t) {
			t = a
		}
	}
	return t
}

// manifestChildren reads a blob that may be a manifest or index and lists
// what it points at (false: not a manifest). The bytes are not checked
// against their digest: a planted one can only make a prune evict more.
func manifestChildren(root *os.Root, p string, size int64) ([]digest.Digest, bool) {
	if size > bundle.MaxManifestSize || size < 2 {
		return nil, false
	}
	f, err := root.Open(p)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var first [1]byte
	if _, err := io.ReadFull(f, first[:]); err != nil || first[0] != '{' {
		return nil, false
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, false
	}
	raw, err := io.ReadAll(io.LimitReader(f, bundle.MaxManifestSize))
	if err != nil {
		return nil, false
	}
	var m struct {
		MediaType     string           `json:"mediaType"`
		SchemaVersion int              `json:"schemaVersion"`
		Manifests     []any            `json:"manifests"`
		Config        *json.RawMessage `json:"config"`
		Layers        []any            `json:"layers"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return nil, false
	}
	isManifest := bundle.IsManifest(m.MediaType) ||
		(m.MediaType == "" && m.SchemaVersion == 2 && (m.Manifests != nil || (m.Config != nil && m.Layers != nil)))
	if !isManifest {
		return nil, false
	}
	edges, err := bundle.Successors(raw)
	if err != nil {
		return nil, true
	}
	out := make([]digest.Digest, 0, len(edges))
	for _, e := range edges {
		out = append(out, e.Desc.Digest)
	}
	return out, true
}

// evictions lists what a prune removes, in an order that keeps the cache
// consistent if the prune is stopped half-way: a manifest before what it
// points at.
func (sc *cacheScan) evictions(opts PruneOptions) []scannedEntry {
	order := make([]int, len(sc.entries))
	var total int64
	for i, e := range sc.entries {
		order[i] = i
		total += e.Size
	}
	sort.SliceStable(order, func(a, b int) bool {
		ea, eb := sc.entries[order[a]], sc.entries[order[b]]
		if !ea.LastUsed.Equal(eb.LastUsed) {
			return ea.LastUsed.Before(eb.LastUsed)
		}
		return ea.path < eb.path
	})
	picked := make([]bool, len(sc.entries))
	var out []scannedEntry
	// pick adds an entry after the manifests that point at it.
	var pick func(i int)
	pick = func(i int) {
		if picked[i] {
			return
		}
		picked[i] = true
		e := sc.entries[i]
		if e.Kind != CacheKindPartial {
			for _, p := range sc.parents[e.Digest] {
				if j, ok := sc.byDig[p]; ok {
					pick(j)
				}
			}
		}
		total -= e.Size
		out = append(out, e)
	}
	for _, i := range order {
		if !opts.All && total <= opts.MaxSize {
			break
		}
		pick(i)
	}
	return out
}

// cleanUp removes, with the cache locked (no create running), every temp
// file, the identity records of partials that are gone, the source records
// of evicted blobs, and with all the journal (no blob is left to check).
func (sc *cacheScan) cleanUp(root *os.Root, gone map[digest.Digest]bool, all bool) {
	if ents, err := readDirIn(root, "blobs"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), fsutil.TempPrefix) || strings.HasPrefix(e.Name(), legacyIngestPrefix) {
				_ = root.Remove(path.Join("blobs", e.Name()))
			}
		}
	}
	if ents, err := readDirIn(root, dirPartial); err == nil {
		for _, e := range ents {
			if hex, ok := strings.CutSuffix(e.Name(), ".json"); ok {
				if _, err := root.Lstat(path.Join(dirPartial, hex)); err != nil {
					_ = root.Remove(path.Join(dirPartial, e.Name()))
				}
			}
		}
	}
	if ents, err := readDirIn(root, "sources/sha256"); err == nil {
		for _, e := range ents {
			p := path.Join("sources/sha256", e.Name())
			if all {
				_ = root.Remove(p)
				continue
			}
			b, err := fsutil.ReadFileIn(root, p, maxRecordSize)
			var rec sourceEntry
			if err != nil || json.Unmarshal(b, &rec) != nil || gone[rec.Layer.Digest] {
				_ = root.Remove(p)
			}
		}
	}
	if all {
		_ = root.Remove(cacheJournal)
	}
}

// readDirIn lists a directory under root.
func readDirIn(root *os.Root, dir string) ([]fs.DirEntry, error) {
	f, err := root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// touch records that a create used these blobs now (their access time:
// the last use `zdt cache ls` shows and `zdt cache prune` evicts by).
// Errors are ignored: a failure only makes a blob look older.
func (s *blobStore) touch(blobs []ocispec.Descriptor) {
	if !s.persistent {
		return
	}
	now := time.Now()
	for _, b := range blobs {
		if p, err := s.path(b.Digest); err == nil {
			_ = s.root.Chtimes(p, now, time.Time{})
		}
	}
}
