package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// ImportOptions tune Import. The zero value is valid.
type ImportOptions struct {
	// Placements, if set, are the archive's placements (from Placements);
	// computed when nil.
	Placements []Placement
	// Concurrency is the number of blobs copied at once (default: the
	// store's).
	Concurrency int
	// Logger receives what is done (default: the store's).
	Logger *slog.Logger
	// Progress, if set, is called with the bytes of blobs handled so far
	// (copied, verified or found present) and the total; it may be called
	// from several goroutines at once.
	Progress func(done, total int64)
	// CopyBlobs copies the archive's blobs into the store. By default
	// (and unless StoreOptions.CopyBlobs) the archive itself is kept in
	// the store (a hard link, verified and fsynced; see Kept) when it is
	// on the store's filesystem, and blobs are copied only otherwise.
	CopyBlobs bool
	// Checked, if set, are layers the caller checks itself while Import
	// runs, each read in full from the same archive with its digest and
	// size checked (install places every file item it writes through
	// bundle.OpenContent), so that each of their bytes is hashed once.
	// See CheckedLayers.
	Checked *CheckedLayers
	// MetadataOnly imports only the bundle's metadata (MetadataPlacements:
	// its images' manifests, configs and tags, its root untagged), copied
	// (never kept) through the same verified path as a whole import; the
	// placements recorded are those.
	MetadataOnly bool
}

// CheckedLayers are layers of the archive being imported that the caller
// hashes and checks itself. When the archive is kept, Import leaves them
// out of its own hashing and waits for Wait before it keeps the archive:
// only when Wait returns nil (every check held) and the archive is still
// the file it verified is it kept; any error leaves nothing kept. Blobs
// copied into the store are hashed as they are copied whatever Checked
// says (a copy is a read of its own, which no other check covers).
type CheckedLayers struct {
	// Digests are the layers checked.
	Digests map[digest.Digest]bool
	// Wait returns once every check is done: nil when all held, else the
	// first failure (or ctx's error). Without it, Digests are hashed.
	Wait func(ctx context.Context) error
	// Since is the archive's file as stated before any check read it
	// (the caller's Archive.Stat, taken before its checks start). The
	// archive is kept only if it is still that file, unwritten since
	// (size, modification and change time): a check may hash a layer
	// before Import's own baseline, and a write after it would otherwise
	// go unseen. Without it, Digests are hashed.
	Since os.FileInfo
}

// ImportResult says what Import did.
type ImportResult struct {
	// Placements are what the store now serves for the archive.
	Placements []Placement
	// BlobsWritten/BytesWritten were copied; BlobsPresent were already in
	// the store (from this or another bundle) and not read again.
	BlobsWritten int
	BytesWritten int64
	BlobsPresent int
	// LinksWritten counts the repository/tag link files written.
	LinksWritten int
	// ArchiveKept is set when the archive was kept (not CopyBlobs) and no
	// blob was copied.
	ArchiveKept bool
}

// Import puts every blob and manifest of a (verified) archive into the
// store and links each repository and tag per Placements, so that `zdt
// serve --root` (or distribution's own `registry serve` over Dir) serves
// them; it records the placements (Recorded) for Activate and Prune.
//
// Blobs are copied straight from the archive's offsets into a temp file
// while being hashed (one pass), checked against their digest and size,
// and renamed into place. A blob already in the store with the right
// size is trusted (it was checked when written) and not read again, so a
// re-import writes nothing and an upgrade writes only new blobs. Link files
// are written temp + rename when missing or different, and the filesystem
// is synced once at the end. Every write goes through the store's os.Root.
// Safe to run again after an interruption: it converges.
func (s *Store) Import(ctx context.Context, a *bundle.Archive, opts ImportOptions) (ImportResult, error) {
	res, err := s.importArchive(ctx, a, opts)
	if err != nil {
		return ImportResult{}, err
	}
	if err := s.record(a.Root.Digest, res.Placements); err != nil {
		return ImportResult{}, err
	}
	return res, nil
}

func (s *Store) importArchive(ctx context.Context, a *bundle.Archive, opts ImportOptions) (ImportResult, error) {
	if opts.Logger == nil {
		opts.Logger = s.opts.Logger
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = s.opts.Concurrency
	}
	ps := opts.Placements
	if ps == nil {
		var err error
		if ps, err = Placements(ctx, a); err != nil {
			return ImportResult{}, err
		}
	}
	if opts.MetadataOnly {
		var err error
		if ps, err = MetadataPlacements(ctx, a, ps); err != nil {
			return ImportResult{}, err
		}
	}
	blobs, total, err := neededBlobs(a, ps)
	if err != nil {
		return ImportResult{}, err
	}
	if !opts.CopyBlobs && !s.opts.CopyBlobs && !opts.MetadataOnly {
		err := s.keepArchive(ctx, a, opts)
		switch {
		case err == nil:
			if opts.Progress != nil {
				opts.Progress(total, total)
			}
			// No link files: the store synthesizes them from the kept
			// archive (its bundle repository now, all once active).
			opts.Logger.Info("kept bundle archive in the registry store", "store", s.path, "bundle", a.Config.Name+":"+a.Config.Version,
				"archive", layout.Kept(a.Root.Digest))
			return ImportResult{Placements: ps, ArchiveKept: true, BlobsPresent: len(blobs)}, nil
		case errors.Is(err, errCannotLink):
			opts.Logger.Info("copying blobs into the registry store", "reason", err.Error())
		default:
			return ImportResult{}, err
		}
	}
	res, err := s.copyBlobs(ctx, a, blobs, total, opts)
	if err != nil {
		return ImportResult{}, err
	}
	root := s.dir
	if res.LinksWritten, err = writeLinks(ctx, root, ps); err != nil {
		return ImportResult{}, outsideErr(err)
	}
	_, jerr := root.Stat(importJournal)
	journal := jerr == nil // this import's, or an unfinished one's whose blobs were re-checked
	if res.BlobsWritten > 0 || res.LinksWritten > 0 || journal {
		if err := fsutil.SyncFS(root); err != nil {
			return ImportResult{}, fmt.Errorf("syncing store: %w", err)
		}
	}
	// The journal goes once what it guards is synced.
	if journal {
		if err := root.Remove(importJournal); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ImportResult{}, fmt.Errorf("finishing import: %w", err)
		}
		if err := fsutil.SyncFS(root); err != nil {
			return ImportResult{}, fmt.Errorf("syncing store: %w", err)
		}
	}
	res.Placements = ps
	opts.Logger.Info("imported bundle into registry store", "store", s.path, "bundle", a.Config.Name+":"+a.Config.Version,
		"blobsWritten", res.BlobsWritten, "bytesWritten", res.BytesWritten, "blobsPresent", res.BlobsPresent, "links", res.LinksWritten)
	return res, nil
}

// neededBlobs lists every blob the placements need (manifests included:
// distribution keeps them as blobs too), largest first (which keeps the
// workers busy to the end), and their total size.
func neededBlobs(a *bundle.Archive, ps []Placement) ([]digest.Digest, int64, error) {
	need := map[digest.Digest]bool{}
	for _, p := range ps {
		for _, d := range p.Manifests {
			need[d] = true
		}
		for _, d := range p.Blobs {
			need[d] = true
		}
	}
	blobs := sortedKeys(need)
	var total int64
	for _, d := range blobs {
		size, ok := a.BlobSize(d)
		if !ok {
			return nil, 0, &bundle.BlobError{Digest: d, Err: bundle.ErrMissingBlob}
		}
		total += size
	}
	sort.SliceStable(blobs, func(i, j int) bool {
		si, _ := a.BlobSize(blobs[i])
		sj, _ := a.BlobSize(blobs[j])
		return si > sj
	})
	return blobs, total, nil
}

// copyBlobs copies the blobs the store lacks (of blobs, total bytes) from
// the archive, opts.Concurrency at a time, under an import journal.
//
// A journal marks an import whose blobs are not synced yet. Blobs are
// written without a per-file fsync (one syncfs at the end makes them
// durable), so after a power loss during an import a blob of the right
// size may hold torn bytes: while the journal of an unfinished import is
// present, blobs already in the store are hashed before being trusted. A
// finished import leaves no journal (the caller removes it once synced),
// and then existing blobs are trusted without reading them (they were
// checked when written).
func (s *Store) copyBlobs(ctx context.Context, a *bundle.Archive, blobs []digest.Digest, total int64, opts ImportOptions) (ImportResult, error) {
	root := s.dir
	var done, written atomic.Int64
	var nWritten, nPresent atomic.Int64
	report := func(n int64) {
		v := done.Add(n)
		if opts.Progress != nil {
			opts.Progress(v, total)
		}
	}
	distrust := false
	if _, err := root.Stat(importJournal); err == nil {
		distrust = true
		opts.Logger.Warn("an earlier import did not finish: re-checking the blobs already in the store")
	}
	var missing []digest.Digest
	for _, d := range blobs {
		size, _ := a.BlobSize(d)
		rel := strings.TrimPrefix(blobDataPath(d), "/")
		fi, err := root.Stat(rel)
		if err == nil && fi.Mode().IsRegular() && fi.Size() == size && (!distrust || storedBlobOK(ctx, root, rel, d)) {
			nPresent.Add(1)
			report(size)
			continue
		}
		missing = append(missing, d)
	}
	if len(missing) > 0 {
		if err := fsutil.RemoveTemps(root, []string{"."}); err != nil { // a journal write a kill interrupted
			return ImportResult{}, fmt.Errorf("starting import: %w", err)
		}
		if err := fsutil.WriteFileAtomic(root, importJournal, []byte(a.Root.Digest.String()+"\n"), 0o644); err != nil {
			return ImportResult{}, fmt.Errorf("starting import: %w", err)
		}
		if err := fsutil.SyncFS(root); err != nil {
			return ImportResult{}, fmt.Errorf("starting import: %w", err)
		}
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 4<<20); return &b }}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(opts.Concurrency)
	for _, d := range missing {
		eg.Go(func() error {
			size, _ := a.BlobSize(d)
			rel := strings.TrimPrefix(blobDataPath(d), "/")
			buf := bufs.Get().(*[]byte)
			defer bufs.Put(buf)
			if err := importBlob(ectx, root, a, d, size, rel, *buf, report); err != nil {
				return err
			}
			nWritten.Add(1)
			written.Add(size)
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return ImportResult{}, outsideErr(err)
	}
	return ImportResult{BlobsWritten: int(nWritten.Load()), BlobsPresent: int(nPresent.Load()), BytesWritten: written.Load()}, nil
}

// link (re)creates the repository and tag links of placements whose blobs
// are in the store already (imported or kept before, kept by Prune): how a
// rollback serves a previous bundle again without its archive. It returns
// the number of links written.
func (s *Store) link(ctx context.Context, ps []Placement) (int, error) {
	root := s.dir
	kept, err := newStoreDriver(ctx, s, nil)
	if err != nil {
		return 0, err
	}
	defer kept.Close()
	for _, p := range ps {
		for _, d := range append(append([]digest.Digest(nil), p.Manifests...), p.Blobs...) {
			if kept.has(ctx, d) {
				continue
			}
			if _, err := root.Stat(strings.TrimPrefix(blobDataPath(d), "/")); err != nil {
				return 0, fmt.Errorf("linking %s: blob %s is not in the store: %w", p.Repository, d, err)
			}
		}
	}
	n, err := writeLinks(ctx, root, ps)
	if err == nil && n > 0 {
		err = fsutil.SyncFS(root)
	}
	return n, err
}

// writeLinks writes the link files of placements that are missing or
// different, a few at a time (each is a handful of small metadata
// operations), and returns how many it wrote.
func writeLinks(ctx context.Context, root *os.Root, ps []Placement) (int, error) {
	var n atomic.Int64
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(linkConcurrency)
	for _, l := range layoutLinks(ps) {
		eg.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			w, err := writeLink(root, strings.TrimPrefix(l.path, "/"), l.target)
			if err != nil {
				return fmt.Errorf("linking %s: %w", l.path, err)
			}
			if w {
				n.Add(1)
			}
			return nil
		})
	}
	err := eg.Wait()
	return int(n.Load()), err
}

// linkConcurrency is how many link files are written at once.
const linkConcurrency = 8

// importJournal, at the store's top, marks an import not finished yet.
const importJournal = layout.ImportJournal

// storedBlobOK hashes a blob already in the store.
func storedBlobOK(ctx context.Context, root *os.Root, rel string, d digest.Digest) bool {
	f, err := root.Open(rel)
	if err != nil {
		return false
	}
	defer f.Close()
	_, _, err = fsutil.CopyVerified(ctx, io.Discard, f, d, -1, nil, nil)
	return err == nil
}

// importBlob copies one blob from the archive into the store: temp file in
// the blob's directory, hashed while written, checked, fsynced, renamed.
func importBlob(ctx context.Context, root *os.Root, a *bundle.Archive, d digest.Digest, size int64, rel string, buf []byte, report func(int64)) error {
	src, err := a.BlobReader(d)
	if err != nil {
		return &bundle.BlobError{Digest: d, Err: bundle.ErrMissingBlob}
	}
	dir := path.Dir(rel)
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("importing blob %s: %w", d, err)
	}
	// A killed import may have left its temp file for this blob here.
	if err := fsutil.RemoveTemps(root, []string{dir}); err != nil {
		return fmt.Errorf("importing blob %s: %w", d, err)
	}
	tmp := fsutil.TempName(rel)
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("importing blob %s: %w", d, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			_ = root.Remove(tmp)
		}
	}()
	_, _, err = fsutil.CopyVerified(ctx, f, src, d, size, buf, report)
	var mm *fsutil.MismatchError
	var re *fsutil.ReadError
	switch {
	case errors.As(err, &mm):
		return &bundle.BlobError{Digest: d, Err: fmt.Errorf("archive bytes hash to %s (%d bytes), want %d bytes: %w", mm.Got, mm.Size, size, bundle.ErrDigestMismatch)}
	case errors.As(err, &re):
		return fmt.Errorf("importing blob %s: reading archive: %w", d, re.Err)
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("importing blob %s: %w", d, err)
	}
	// No fsync here: Import syncs the whole store once at the end, and its
	// journal makes a re-run after a crash re-check what this wrote.
	if err := f.Close(); err != nil {
		return fmt.Errorf("importing blob %s: %w", d, err)
	}
	if err := root.Rename(tmp, rel); err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("importing blob %s: %w", d, err)
	}
	ok = true
	return nil
}

// writeLink makes rel hold target's digest string; it reports whether it
// wrote (false when the link was already right). The link's directory is
// opened once and everything else is done in it. The temp file has a fixed
// name, so one a killed import left is simply overwritten (imports never
// run concurrently: the installer holds its lock); the store is synced
// once at the end by the caller.
func writeLink(root *os.Root, rel string, target digest.Digest) (bool, error) {
	want := []byte(target.String())
	dir, name := path.Dir(rel), path.Base(rel)
	d, err := root.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return false, err
		}
		d, err = root.OpenRoot(dir)
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	if got, err := readSmallFile(d, name, 256); err == nil && bytes.Equal(got, want) {
		return false, nil
	}
	tmp := fsutil.TempPrefix + name
	f, err := d.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return false, err
	}
	_, err = f.Write(want)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.Rename(tmp, name)
	}
	if err != nil {
		_ = d.Remove(tmp)
		return false, err
	}
	return true, nil
}

// readSmallFile is fsutil.ReadFileIn, a file too large marked ErrBadStore.
func readSmallFile(root *os.Root, rel string, limit int64) ([]byte, error) {
	b, err := fsutil.ReadFileIn(root, rel, limit)
	if errors.Is(err, fsutil.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %w", err, ErrBadStore)
	}
	return b, err
}

func randHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
