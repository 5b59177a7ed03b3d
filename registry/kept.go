package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// Kept archives. When the bundle archive is on the same filesystem as the
// store, Import (with LinkArchive) keeps the archive itself instead of
// copying its blobs: a hard link at STORE/archives/<root hex>.zdt, made
// only after every blob of the archive was hashed (here, or by the
// caller's check of the layers it reads in full: ImportOptions.Checked)
// and the file fsynced.
// The store then serves kept archives the way `zdt serve --bundle` serves
// archives (storeDriver): blob data at their archive offsets, and the
// repository and tag links synthesized in memory from their placements —
// all of them for the archive SetActive named (STORE/archives/active), the
// bundle's own repository for the others (what a rollback needs). Nothing
// is copied and no file is written per blob or link, so installing costs a
// verification. Distribution's own `registry serve` cannot read kept
// archives; `zdt serve --root` can.
//
// The link shares the archive's inode: overwriting the original bundle
// file in place (cp onto it, a shell redirection) changes the kept one too.
// Replacing it by a rename (how zdt writes bundles) does not. A kept archive
// whose root digest no longer matches its name is refused when opened.
const keptDir = layout.KeptDir

// errCannotLink says the archive cannot be kept by a hard link (another
// filesystem, a filesystem without hard links, an archive read from a
// stream); Import falls back to copying blobs.
var errCannotLink = errors.New("cannot hard-link the archive into the store")

func keptRel(root digest.Digest) string { return layout.Kept(root) }

// Kept is the path of a bundle's kept archive in the store, and whether
// it exists.
func (s *Store) Kept(root digest.Digest) (string, bool) {
	p := filepath.Join(s.path, filepath.FromSlash(keptRel(root)))
	fi, err := s.dir.Stat(keptRel(root))
	return p, err == nil && fi.Mode().IsRegular()
}

// RemoveKept removes a bundle's kept archive (nothing when it has none).
func (s *Store) RemoveKept(root digest.Digest) error {
	if _, ok := s.Kept(root); !ok {
		return nil
	}
	if err := s.dir.Remove(keptRel(root)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing kept archive: %w", err)
	}
	s.mu.Lock()
	delete(s.kept, root)
	s.mu.Unlock()
	return fsutil.SyncDir(s.dir, keptDir)
}

// keepArchive links a's file into the store as its kept archive: hard
// link to a temp name, verify every blob, fsync, rename. An archive kept
// by an earlier install is not read again. It returns an error wrapping
// errCannotLink when no hard link can be made.
//
// The link is made in the archives directory opened through the store's
// os.Root (linkat relative to it), so a symlinked archives directory
// cannot send it out of the root; a symlink given as the bundle's path
// is followed to the file it names (the file that was opened).
func (s *Store) keepArchive(ctx context.Context, a *bundle.Archive, opts ImportOptions) error {
	root := s.dir
	rel := keptRel(a.Root.Digest)
	if fi, err := root.Stat(rel); err == nil && fi.Mode().IsRegular() && fi.Size() == a.Size() {
		return nil // verified and synced when it was kept
	}
	if a.Path() == "" {
		return fmt.Errorf("%w: the archive has no file", errCannotLink)
	}
	if err := root.MkdirAll(keptDir, 0o755); err != nil {
		return fmt.Errorf("keeping archive: %w", rootedError(root, s.path, keptDir, err))
	}
	if err := fsutil.RemoveTemps(root, []string{keptDir}); err != nil { // left by a killed install
		return fmt.Errorf("keeping archive: %w", err)
	}
	// A delta's base is the store's own content (InstalledBase), verified
	// when it was installed: only the delta's own blobs are hashed. File
	// and disk content is checked by install as it places it, and the
	// layers it places (opts.Checked) are hashed there only: their check
	// is waited for here, before anything is kept. Those checks may have
	// read their layers before this point, so the file must be unwritten
	// since the caller's stat taken before they started (Checked.Since):
	// its change time, which no write can set back, must not have moved.
	// Without that stat every layer is hashed here. (A write between this
	// stat and the link, microseconds, would be hidden by the link's own
	// move of the change time; the link cannot be made before the checks,
	// which run beside the whole import.)
	var checked map[digest.Digest]bool
	if c := opts.Checked; c != nil && c.Wait != nil && c.Since != nil {
		checked = c.Digests
		pre, err := a.Stat()
		if err != nil {
			return fmt.Errorf("%w: %w", errCannotLink, err)
		}
		if changed(c.Since, pre) {
			return modifiedError(a)
		}
	}
	tmp := fsutil.TempName(rel)
	if err := linkInto(root, a.Path(), tmp); err != nil {
		return fmt.Errorf("%w: %w", errCannotLink, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = root.Remove(tmp)
		}
	}()
	// The link must be the file a reads (the path may have been replaced
	// since it was opened): then it shares the bytes Verify reads through
	// a, and what is kept is what was verified.
	afi, err := a.Stat()
	if err != nil {
		return fmt.Errorf("%w: %w", errCannotLink, err)
	}
	lfi, err := root.Stat(tmp)
	if err != nil || !os.SameFile(afi, lfi) {
		return fmt.Errorf("keeping archive: %s was replaced while being installed; run zdt install again", a.Path())
	}
	// The link itself moved the change time: from Since to here, size
	// and modification time only (the stat just before the link compared
	// the change time).
	if checked != nil && contentChanged(opts.Checked.Since, lfi) {
		return modifiedError(a)
	}
	if _, err := a.Verify(ctx, bundle.VerifyOptions{Concurrency: opts.Concurrency, Progress: opts.Progress, SkipBase: true, SkipContent: true,
		SkipBlobs: checked}); err != nil {
		return err
	}
	if checked != nil {
		if err := opts.Checked.Wait(ctx); err != nil {
			return fmt.Errorf("keeping archive: the layers checked beside the import: %w", err)
		}
	}
	f, err := root.Open(tmp)
	if err != nil {
		return fmt.Errorf("keeping archive: %w", err)
	}
	err = f.Sync() // cheap when the archive is already on disk (zdt bundle create syncs it)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("keeping archive: %w", err)
	}
	// Written to (truncated, overwritten in place, its modification time
	// set back or not) while it was verified: what would be kept is not
	// what was verified.
	if now, err := root.Stat(tmp); err != nil || changed(lfi, now) {
		return modifiedError(a)
	}
	if err := root.Rename(tmp, rel); err != nil {
		return fmt.Errorf("keeping archive: %w", err)
	}
	ok = true
	// The rename moves the change time too: what checkKept compares later
	// is the file as renamed.
	kept, err := root.Stat(rel)
	if err != nil || contentChanged(lfi, kept) {
		_ = root.Remove(rel)
		return modifiedError(a)
	}
	s.mu.Lock()
	s.kept[a.Root.Digest] = kept
	s.mu.Unlock()
	return fsutil.SyncDir(root, keptDir)
}

// modifiedError says a's file was written to while it was installed.
func modifiedError(a *bundle.Archive) error {
	return fmt.Errorf("keeping archive: %s was modified while being installed: %w; run zdt install again", a.Path(), ErrBadStore)
}

// linkInto hard-links the file at src (following a symlink there) to rel
// in dir, relative to rel's directory opened through dir.
func linkInto(dir *os.Root, src, rel string) error {
	d, err := dir.Open(path.Dir(rel))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Linkat(unix.AT_FDCWD, src, int(d.Fd()), path.Base(rel), unix.AT_SYMLINK_FOLLOW); err != nil {
		return &os.LinkError{Op: "link", Old: src, New: rel, Err: err}
	}
	return nil
}

// changed reports whether a file's content may have changed between two
// stats of it: another file, or its size, modification time or change
// time moved. A write or truncation moves them; the owner can set the
// modification time back, not the change time (which links, renames and
// chmod move too: a false alarm, never a miss).
func changed(before, after os.FileInfo) bool {
	return contentChanged(before, after) || !changeTime(before).Equal(changeTime(after))
}

// ChangedWithin reports whether fi's file changed (its change time)
// less than d before now, or after now: a write within the same tick of
// its timestamps might leave them as they are.
func ChangedWithin(fi os.FileInfo, now time.Time, d time.Duration) bool {
	return now.Sub(changeTime(fi)) < d
}

// contentChanged is changed without the change time, across a link or
// rename of the file's own making.
func contentChanged(before, after os.FileInfo) bool {
	return !os.SameFile(before, after) || before.Size() != after.Size() || !before.ModTime().Equal(after.ModTime())
}

// checkKept checks a bundle's kept archive can be served: one this Store
// kept is still the file it verified, and any opens and holds its bundle.
// A damaged archive this Store kept is removed (nothing serves it yet);
// the error matches ErrBadStore and says to install again.
func (s *Store) checkKept(ctx context.Context, root digest.Digest) error {
	rel := keptRel(root)
	s.mu.Lock()
	verified, mine := s.kept[root]
	s.mu.Unlock()
	bad := func(why string) error {
		if mine {
			if err := s.RemoveKept(root); err != nil {
				s.opts.Logger.Error("removing a damaged kept archive", "archive", rel, "err", err)
			}
			why += "; removed it"
		}
		return fmt.Errorf("kept archive of %s %s: %w (the bundle file was truncated or overwritten in place? run zdt install again)", root, why, ErrBadStore)
	}
	fi, err := s.dir.Stat(rel)
	if err != nil {
		return bad(err.Error())
	}
	if mine && changed(verified, fi) {
		return bad("was modified after it was verified")
	}
	f, err := s.dir.Open(rel)
	if err != nil {
		return bad(err.Error())
	}
	defer f.Close()
	a, err := bundle.OpenReader(ctx, f, fi.Size())
	if err != nil {
		return bad(err.Error())
	}
	defer a.Close()
	if a.Root.Digest != root {
		return bad("holds bundle " + a.Root.Digest.String())
	}
	return nil
}

// dropDamaged checks the archives this Store kept for bundles other than
// except (an install that failed after its import) and removes those
// damaged since, so that a store left by a failed upgrade serves again.
func (s *Store) dropDamaged(ctx context.Context, except map[digest.Digest]bool) error {
	s.mu.Lock()
	var mine []digest.Digest
	for d := range s.kept {
		if !except[d] {
			mine = append(mine, d)
		}
	}
	s.mu.Unlock()
	for _, d := range mine {
		if err := s.checkKept(ctx, d); err != nil {
			s.opts.Logger.Warn("dropped a damaged kept archive", "bundle", d, "err", err)
		}
	}
	return nil
}

// activeRel names the kept archives whose placements are all served, one
// root hex per line (a store from before bundles were installed side by
// side has one).
const activeRel = layout.ActiveKept

// maxActiveFile bounds what is read of activeRel: 65 bytes a line.
const maxActiveFile = 1 << 20

// SetActive makes the kept archives of roots the ones whose placements are
// all served (the others serve only their bundle repository); roots
// without a kept archive (empty, or blobs copied) are left out, and none
// makes none active. Activate checks the archives first and prunes what
// other bundles placed; SetActive only moves the pointer.
func (s *Store) SetActive(roots ...digest.Digest) error {
	r := s.dir
	if err := fsutil.RemoveTemps(r, []string{keptDir}); err != nil { // left by a killed install
		return rootedError(r, s.path, keptDir, err)
	}
	var lines []string
	for _, root := range roots {
		if root == "" {
			continue
		}
		if _, ok := s.Kept(root); ok {
			lines = append(lines, root.Encoded()+"\n")
		}
	}
	if len(lines) > 0 {
		slices.Sort(lines)
		want := []byte(strings.Join(slices.Compact(lines), ""))
		if got, err := r.ReadFile(activeRel); err == nil && string(got) == string(want) {
			return nil
		}
		return fsutil.WriteFileAtomic(r, activeRel, want, 0o644)
	}
	if err := r.Remove(activeRel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// activeNames reads activeRel: the file names of the active kept archives.
func activeNames(store *os.Root) map[string]bool {
	out := map[string]bool{}
	b, err := readSmallFile(store, activeRel, maxActiveFile)
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out[l+".zdt"] = true
		}
	}
	return out
}

// BundleOnly keeps the placements that hold a bundle's whole content by
// digest (its own repository and its signatures), not its items' names.
func BundleOnly(ps []Placement) []Placement {
	var out []Placement
	for _, p := range ps {
		if p.Kind == "bundle" || p.Kind == "attachment" {
			out = append(out, p)
		}
	}
	return out
}

// storeDriver is distribution's filesystem driver over a store, overlaid
// with the tree synthesized from its kept archives (an archiveDriver): a
// path in the tree is read from it, any other from the filesystem, and a
// directory lists both. Writes go to the filesystem; deleting a kept blob
// is a no-op (garbage collection may try: the archive goes as a whole when
// its bundle is pruned), deleting anything else of the tree fails.
//
// An install may keep, activate or remove archives while the store is
// served: every operation stats the archives directory and rebuilds the
// tree when it changed. Archives removed from it stay open (their blobs
// readable by digest) until Close.
type storeDriver struct {
	storagedriver.StorageDriver
	store  *os.Root // the store directory
	dir    string   // STORE/archives, for messages
	logger *slog.Logger

	mu    sync.Mutex                 // serializes rebuilds
	open  map[string]*bundle.Archive // by file name, every archive opened
	files map[string]*os.File        // their files
	ps    map[string][]Placement     // their placements
	state atomic.Pointer[keptState]
	// copied reads blobs copied into the store, for kept deltas whose
	// base was copied.
	copied *storeBlobs
}

// keptState is the tree for one state of the archives directory.
type keptState struct {
	dirStat os.FileInfo // nil: no archives directory
	read    time.Time   // when the directory was read
	sig     string      // the archive names and the active one
	tree    *archiveDriver
}

// racyWindow: a directory may change twice within one tick of its
// modification time (timestamps tick in jiffies), so a state read within
// this window of the last change is checked again (the listing compared)
// rather than trusted on the time alone.
const racyWindow = 2 * time.Second

// newStoreDriver is the driver over a store and its kept archives. Close
// it once done (before the store).
func newStoreDriver(ctx context.Context, s *Store, logger *slog.Logger) (*storeDriver, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &storeDriver{
		StorageDriver: rootedDriver{
			StorageDriver: filesystem.New(filesystem.DriverParameters{RootDirectory: s.path, MaxThreads: 100}),
			root:          s.dir,
		},
		store:  s.dir,
		dir:    filepath.Join(s.path, keptDir),
		logger: logger,
		open:   map[string]*bundle.Archive{},
		files:  map[string]*os.File{},
		ps:     map[string][]Placement{},
	}
	if _, err := d.refresh(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// refresh returns the tree for the archives directory as it is now,
// rebuilding it when the directory changed since the last time.
func (d *storeDriver) refresh(ctx context.Context) (*keptState, error) {
	fi, err := d.store.Stat(keptDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("kept archives %s: %w", d.dir, outsideErr(err))
	}
	same := func(st *keptState) bool {
		if st == nil {
			return false
		}
		if fi == nil || st.dirStat == nil {
			return fi == nil && st.dirStat == nil
		}
		// A state read less than racyWindow after the directory's last
		// change may have missed a change in the same timestamp tick.
		return os.SameFile(fi, st.dirStat) && fi.ModTime().Equal(st.dirStat.ModTime()) && st.read.After(fi.ModTime().Add(racyWindow))
	}
	if st := d.state.Load(); same(st) {
		return st, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if st := d.state.Load(); same(st) {
		return st, nil
	}
	st := &keptState{dirStat: fi, read: time.Now()}
	if fi == nil {
		st.tree, _ = newArchiveDriver(nil, nil, d.logger)
		d.state.Store(st)
		return st, nil
	}
	ents, err := readDir(d.store, keptDir)
	if err != nil {
		return nil, fmt.Errorf("kept archives %s: %w", d.dir, outsideErr(err))
	}
	active := activeNames(d.store)
	var sig strings.Builder
	for _, n := range slices.Sorted(maps.Keys(active)) {
		sig.WriteString(n + " ")
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".zdt") && !strings.HasPrefix(e.Name(), ".") {
			sig.WriteString("\n" + e.Name())
		}
	}
	st.sig = sig.String()
	if old := d.state.Load(); old != nil && old.sig == st.sig && old.dirStat != nil {
		st.tree = old.tree // same archives, same active: only the time moved
		d.state.Store(st)
		return st, nil
	}
	if err := d.openNew(ctx, ents); err != nil {
		return nil, err
	}
	var archives []*bundle.Archive
	var placements [][]Placement
	var acts []string
	for _, e := range ents {
		a := d.open[e.Name()]
		if a == nil || d.ps[e.Name()] == nil {
			continue
		}
		if active[e.Name()] {
			acts = append(acts, e.Name())
			continue
		}
		archives = append(archives, a)
		placements = append(placements, BundleOnly(d.ps[e.Name()]))
	}
	for _, n := range acts { // last: their tags win
		archives = append(archives, d.open[n])
		placements = append(placements, d.ps[n])
	}
	if st.tree, err = newArchiveDriver(archives, placements, d.logger); err != nil {
		return nil, err
	}
	d.state.Store(st)
	return st, nil
}

// openNew opens the kept archives of ents not open yet, checking each
// holds the bundle it is named after, and computes the placements of
// those newly opened or not served yet (a base was missing). Called with
// d.mu held.
func (d *storeDriver) openNew(ctx context.Context, ents []fs.DirEntry) error {
	for _, e := range ents {
		hex, ok := strings.CutSuffix(e.Name(), ".zdt")
		if !ok || strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() || d.open[e.Name()] != nil {
			continue
		}
		p := filepath.Join(d.dir, e.Name())
		f, a, err := openKept(ctx, d.store, path.Join(keptDir, e.Name()))
		if err != nil {
			return fmt.Errorf("kept archive %s: %w (changed since it was installed? run zdt install again)", p, err)
		}
		if a.Root.Digest.Encoded() != hex {
			a.Close()
			f.Close()
			return fmt.Errorf("kept archive %s holds bundle %s, not sha256:%s: %w (overwritten in place since it was installed? run zdt install again)",
				p, a.Root.Digest, hex, ErrBadStore)
		}
		d.open[e.Name()], d.files[e.Name()] = a, f
	}
	var fresh []string
	for _, e := range ents {
		if d.open[e.Name()] != nil && d.ps[e.Name()] == nil {
			fresh = append(fresh, e.Name())
		}
	}
	for _, name := range fresh {
		if err := d.attachBase(ctx, d.open[name], map[string]bool{}); err != nil {
			return err
		}
		ps, err := Placements(ctx, d.open[name])
		if err != nil {
			return fmt.Errorf("kept archive %s: %w", filepath.Join(d.dir, name), err)
		}
		d.ps[name] = ps
	}
	return nil
}

// attachBase gives a kept delta its base: the base's kept archive (itself
// given its base first), else the blobs copied into the store.
func (d *storeDriver) attachBase(ctx context.Context, a *bundle.Archive, seen map[string]bool) error {
	if a.Base() == "" || a.BaseAttached() {
		return nil
	}
	name := a.Base().Encoded() + ".zdt"
	if seen[name] {
		return fmt.Errorf("kept archive of %s: its bases form a loop: %w", a.Root.Digest, ErrBadStore)
	}
	seen[name] = true
	var src bundle.BlobSource
	if b := d.open[name]; b != nil {
		if err := d.attachBase(ctx, b, seen); err != nil {
			return err
		}
		src = b
	} else {
		if d.copied == nil {
			d.copied = &storeBlobs{dir: d.store, open: map[digest.Digest]*os.File{}}
		}
		src = d.copied
	}
	if err := a.AttachBase(ctx, src); err != nil {
		return fmt.Errorf("kept archive of %s: %w", a.Root.Digest, err)
	}
	return nil
}

// tree is the current synthesized tree; on an error reading the archives
// directory the last good one is kept (and the error logged).
func (d *storeDriver) tree(ctx context.Context) *archiveDriver {
	st, err := d.refresh(ctx)
	if err != nil {
		d.logger.Error("reading kept archives", "dir", d.dir, "err", err)
		st = d.state.Load()
	}
	return st.tree
}

// node finds p in the current tree.
func (d *storeDriver) node(ctx context.Context, p string) (*archiveDriver, *vnode) {
	t := d.tree(ctx)
	return t, t.nodes[p]
}

// has reports whether a kept archive holds blob dg.
func (d *storeDriver) has(ctx context.Context, dg digest.Digest) bool {
	_, n := d.node(ctx, blobDataPath(dg))
	return n != nil && n.blob != nil
}

// Close closes every archive the driver opened.
func (d *storeDriver) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.open {
		a.Close()
	}
	for _, f := range d.files {
		f.Close()
	}
	if d.copied != nil {
		d.copied.Close()
	}
	d.open, d.files, d.ps = map[string]*bundle.Archive{}, map[string]*os.File{}, map[string][]Placement{}
}

func (d *storeDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if t, n := d.node(ctx, p); n != nil && !n.dir {
		return t.GetContent(ctx, p)
	}
	return d.StorageDriver.GetContent(ctx, p)
}

func (d *storeDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if t, n := d.node(ctx, p); n != nil && !n.dir {
		return t.Reader(ctx, p, offset)
	}
	return d.StorageDriver.Reader(ctx, p, offset)
}

func (d *storeDriver) Stat(ctx context.Context, p string) (storagedriver.FileInfo, error) {
	if t, n := d.node(ctx, p); n != nil {
		return t.Stat(ctx, p)
	}
	return d.StorageDriver.Stat(ctx, p)
}

// List merges the tree's and the filesystem's entries of a directory.
func (d *storeDriver) List(ctx context.Context, p string) ([]string, error) {
	t, n := d.node(ctx, p)
	fsList, err := d.StorageDriver.List(ctx, p)
	if n == nil || !n.dir {
		return fsList, err
	}
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return nil, err
	}
	tl, _ := t.List(ctx, p)
	seen := map[string]bool{}
	out := make([]string, 0, len(tl)+len(fsList))
	for _, c := range append(tl, fsList...) {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (d *storeDriver) Walk(ctx context.Context, p string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	return storagedriver.WalkFallback(ctx, d, p, f, options...)
}

func (d *storeDriver) Delete(ctx context.Context, p string) error {
	if _, n := d.node(ctx, p); n != nil {
		err := d.StorageDriver.Delete(ctx, p) // whatever the filesystem has there
		var nf storagedriver.PathNotFoundError
		if err != nil && !errors.As(err, &nf) {
			return err
		}
		if strings.HasPrefix(p, blobsRoot+"/") {
			return nil // a kept blob goes with its archive
		}
		return storagedriver.Error{DriverName: d.Name(), Detail: fmt.Errorf("%s is served from a kept bundle archive: %w", p, ErrReadOnly)}
	}
	return d.StorageDriver.Delete(ctx, p)
}

// openKept opens the kept archive at rel in the store (through its
// os.Root). Close both the archive and the file.
func openKept(ctx context.Context, store *os.Root, rel string) (*os.File, *bundle.Archive, error) {
	f, err := store.Open(rel)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	a, err := bundle.OpenReader(ctx, f, fi.Size())
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, a, nil
}

// readDir lists a directory through root.
func readDir(root *os.Root, rel string) ([]fs.DirEntry, error) {
	f, err := root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}
