package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// StoreOptions tune OpenStore. The zero value is valid.
type StoreOptions struct {
	// Concurrency bounds the blobs copied or verified at once (default
	// GOMAXPROCS).
	Concurrency int
	// CopyBlobs makes every Import copy the blobs even when the archive
	// could be kept by a hard link (see ImportOptions.CopyBlobs).
	CopyBlobs bool
	// Logger receives what is done (default: discard).
	Logger *slog.Logger
	// ReadOnly opens an existing store without creating anything (status);
	// OpenStore then fails with an error matching fs.ErrNotExist when
	// there is none.
	ReadOnly bool
}

// Store is the registry store of an install root (layout.RegistryDir:
// distribution's filesystem storage plus the bundle archives kept there)
// and the placements recorded for each bundle imported into it
// (layout.PlacementsDir), so a previous bundle can be served again
// (rollback) without its archive. It implements installer.Registry.
//
// Everything is reached through an os.Root opened at the install root: a
// symlink that leads out of the root (the store, its archives or blobs
// directory, the placements directory) is refused, not followed, so
// nothing is written, read or deleted outside the root. Distribution's
// filesystem driver, which takes a path, is given the store's path only
// after checking it is the directory the os.Root reached, and every path
// it is asked for is first resolved through the os.Root.
//
// Methods are not safe for concurrent use, except what NewHandler serves;
// imports, activations and prunes are serialized by the installer's lock.
// Close it once done.
type Store struct {
	root     *os.Root // the install root
	dir      *os.Root // layout.RegistryDir in it
	rootPath string   // the install root as given
	path     string   // the store directory's path (for distribution's driver and messages)
	opts     StoreOptions

	mu sync.Mutex
	// kept are the archives this Store kept (Import), with their file's
	// state right after it was verified: what Activate checks they still
	// are before serving them.
	kept map[digest.Digest]os.FileInfo
}

// StoreDir is where zdt keeps the registry storage under an install root:
// ROOT/var/lib/zdt/registry (layout.RegistryDir).
func StoreDir(root string) string { return filepath.Join(root, filepath.FromSlash(layout.RegistryDir)) }

// OpenStore opens (creating, unless ReadOnly) the registry store under
// the install root rootDir. It fails, naming the path, when the store
// directory or one of its parents is a symlink leading out of the root.
func OpenStore(rootDir string, opts StoreOptions) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = runtime.GOMAXPROCS(0)
	}
	if rootDir == "" {
		rootDir = "/"
	}
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return nil, fmt.Errorf("opening install root %s: %w", rootDir, err)
	}
	s := &Store{root: root, rootPath: rootDir, path: StoreDir(rootDir), opts: opts, kept: map[digest.Digest]os.FileInfo{}}
	if err := s.open(); err != nil {
		root.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open() error {
	if !s.opts.ReadOnly {
		if err := s.root.MkdirAll(layout.RegistryDir, 0o755); err != nil {
			return fmt.Errorf("creating registry store: %w", rootedError(s.root, s.rootPath, layout.RegistryDir, err))
		}
	}
	dir, err := s.root.OpenRoot(layout.RegistryDir)
	if err != nil {
		return fmt.Errorf("opening registry store: %w", rootedError(s.root, s.rootPath, layout.RegistryDir, err))
	}
	// The path distribution's driver is given must lead to the directory
	// the os.Root reached (os.Root refuses escaping symlinks; a path is
	// resolved by the kernel, symlinks and all).
	in, err := dir.Stat(".")
	if err == nil {
		var at os.FileInfo
		if at, err = os.Stat(s.path); err == nil && !os.SameFile(in, at) {
			err = fmt.Errorf("%s is not the directory reached inside the root: %w", s.path, ErrOutsideRoot)
		}
	}
	if err != nil {
		dir.Close()
		return fmt.Errorf("opening registry store: %w", err)
	}
	s.dir = dir
	return nil
}

// Close releases the store's directories.
func (s *Store) Close() error {
	if s == nil || s.root == nil {
		return nil
	}
	s.dir.Close()
	err := s.root.Close()
	s.root, s.dir = nil, nil
	return err
}

// Dir is the store directory's path (for messages and distribution's own
// `registry serve`).
func (s *Store) Dir() string { return s.path }

// rootedError explains err, from an operation on rel under root: when a
// component of rel is a symlink leading out of the root, the error names
// it and matches ErrOutsideRoot.
func rootedError(root *os.Root, rootPath, rel string, err error) error {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parts := strings.Split(path.Clean(rel), "/")
	for i := range parts {
		p := path.Join(parts[:i+1]...)
		fi, lerr := root.Lstat(p)
		if lerr != nil {
			break
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if _, serr := root.Stat(p); serr != nil && !errors.Is(serr, fs.ErrNotExist) {
				return &OutsideRootError{Path: filepath.Join(rootPath, filepath.FromSlash(p)), Root: rootPath, Err: err}
			}
		}
	}
	return err
}

// OutsideRootError is returned when a path zdt uses under an install root
// is (or goes through) a symlink that leads out of the root. It matches
// ErrOutsideRoot.
type OutsideRootError struct {
	Path, Root string
	Err        error
}

func (e *OutsideRootError) Error() string {
	return fmt.Sprintf("%s is a symlink leading out of the install root %s; refusing to follow it (%v)", e.Path, e.Root, e.Err)
}

func (e *OutsideRootError) Unwrap() []error { return []error{ErrOutsideRoot, e.Err} }

// Placement records: what each bundle imported into the store serves,
// under layout.PlacementsDir of the install root.

// record writes a bundle's placements record (when it differs).
func (s *Store) record(root digest.Digest, ps []Placement) error {
	b, err := encodePlacements(ps)
	if err != nil {
		return err
	}
	rel := layout.Placements(root)
	if old, err := s.root.ReadFile(rel); err == nil && string(old) == string(b) {
		return nil
	}
	if err := fsutil.WriteFileAtomic(s.root, rel, b, 0o644); err != nil {
		return fmt.Errorf("recording placements of %s: %w", root, rootedError(s.root, s.rootPath, rel, err))
	}
	return nil
}

// Recorded returns the placements recorded for the bundle whose root is
// root (an error matching fs.ErrNotExist when none are).
func (s *Store) Recorded(root digest.Digest) ([]Placement, error) {
	b, err := s.root.ReadFile(layout.Placements(root))
	if err != nil {
		return nil, fmt.Errorf("placements of bundle %s: %w", root, rootedError(s.root, s.rootPath, layout.Placements(root), err))
	}
	ps, err := decodePlacements(b)
	if err != nil {
		return nil, fmt.Errorf("placements of bundle %s: %w", root, err)
	}
	return ps, nil
}

// recorded lists the bundle roots whose placements are recorded.
func (s *Store) recorded() ([]digest.Digest, error) {
	f, err := s.root.Open(layout.PlacementsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, rootedError(s.root, s.rootPath, layout.PlacementsDir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, n := range names {
		if hex, ok := strings.CutSuffix(n, ".json"); ok && !strings.HasPrefix(hex, ".") {
			out = append(out, digest.NewDigestFromEncoded(digest.SHA256, hex))
		}
	}
	return out, nil
}

// forget removes a bundle's placements record.
func (s *Store) forget(root digest.Digest) error {
	if err := s.root.Remove(layout.Placements(root)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Activate serves exactly the items of roots (one bundle per installed
// bundle name; several side by side): their kept archives are made the
// active ones, or (blobs copied) their links are (re)created, and every
// other recorded bundle keeps only its bundle repository (all its content
// by digest, for a later rollback). What two active bundles both place
// (a shared image) is linked once.
//
// A kept archive is checked before it is served: an archive this Store
// kept must still be the file it verified (not truncated or written to
// since), and any kept archive must open and hold its bundle. A damaged
// archive is never activated: the active ones stay, the damaged one is
// removed when this Store kept it (so the store stays servable), and the
// error says to install again. Archives this Store kept for other bundles
// (an install that failed after its import) are checked the same way and
// removed when damaged.
func (s *Store) Activate(ctx context.Context, roots ...digest.Digest) error {
	active := map[digest.Digest]bool{}
	var keep []Placement
	for _, root := range roots {
		if root == "" || active[root] {
			continue
		}
		active[root] = true
		ps, err := s.Recorded(root)
		if err != nil {
			return err
		}
		keep = append(keep, ps...)
	}
	if err := s.dropDamaged(ctx, active); err != nil {
		return err
	}
	var list []digest.Digest
	for root := range active {
		list = append(list, root)
	}
	slices.Sort(list)
	for _, root := range list {
		if _, kept := s.Kept(root); kept {
			if err := s.checkKept(ctx, root); err != nil {
				return err
			}
		} else {
			ps, err := s.Recorded(root)
			if err != nil {
				return err
			}
			if _, err := s.link(ctx, ps); err != nil {
				return err
			}
		}
	}
	if err := s.SetActive(list...); err != nil { // those kept
		return err
	}
	others, err := s.recorded()
	if err != nil {
		return err
	}
	var remove []Placement
	for _, o := range others {
		if active[o] {
			continue
		}
		ops, err := s.Recorded(o)
		if err != nil {
			return err
		}
		remove = append(remove, ops...)
		keep = append(keep, BundleOnly(ops)...)
	}
	if len(remove) == 0 {
		return nil
	}
	_, err = s.PrunePlacements(ctx, PruneOptions{Remove: remove, Keep: keep})
	return err
}

// Prune deletes every recorded bundle not in keep (nor the base of a delta
// in keep): its links, its placements record, its kept archive, and the
// blobs no kept bundle references.
func (s *Store) Prune(ctx context.Context, keep []digest.Digest) error {
	all, err := s.recorded()
	if err != nil {
		return err
	}
	kept := map[digest.Digest]bool{}
	// A kept bundle that is a delta needs its base (and that its own).
	for len(keep) > 0 {
		k := keep[0]
		keep = keep[1:]
		if kept[k] {
			continue
		}
		kept[k] = true
		if b := s.keptBase(ctx, k); b != "" {
			keep = append(keep, b)
		}
	}
	var remove, keepPs []Placement
	var drop []digest.Digest
	for _, d := range all {
		ps, err := s.Recorded(d)
		if err != nil {
			return err
		}
		if kept[d] {
			keepPs = append(keepPs, ps...)
		} else {
			remove = append(remove, ps...)
			drop = append(drop, d)
		}
	}
	if len(remove) == 0 {
		return nil
	}
	if _, err := s.PrunePlacements(ctx, PruneOptions{Remove: remove, Keep: keepPs}); err != nil {
		return err
	}
	for _, d := range drop {
		// The kept archive goes before the record that names it, so a
		// crash in between leaves a record whose content is gone from
		// the store, not an archive nothing will ever remove.
		if err := s.RemoveKept(d); err != nil {
			return err
		}
		if err := s.forget(d); err != nil {
			return err
		}
	}
	return nil
}

// Health reads the store the way `zdt serve --root` does and checks that
// every placement resolves: its tag names its digest and every manifest
// and blob it needs is there (kept or copied). It reads link files and
// stats blobs; it does not hash blob content (install did).
func (s *Store) Health(ctx context.Context, ps []Placement) (Health, error) {
	var h Health
	var err error
	if h.CopiedBlobs, h.CopiedBytes, err = countBlobs(s.dir); err != nil {
		return h, err
	}
	if names, err := s.keptNames(); err == nil {
		for _, n := range names {
			h.KeptArchives = append(h.KeptArchives, filepath.Join(s.path, layout.KeptDir, n))
		}
	}
	d, err := newStoreDriver(ctx, s, nil)
	if err != nil {
		return h, err
	}
	defer d.Close()
	checkPlacements(ctx, d, ps, &h)
	return h, nil
}

// keptNames lists the kept archives' file names (<hex>.zdt).
func (s *Store) keptNames() ([]string, error) {
	f, err := s.dir.Open(layout.KeptDir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".zdt") && !strings.HasPrefix(e.Name(), ".") && e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// rootedDriver is distribution's filesystem driver over the store's
// directory, each path resolved through the store's os.Root first: a
// path that goes through a symlink leading out of the store is refused,
// so garbage collection, pushes and reads stay inside.
type rootedDriver struct {
	storagedriver.StorageDriver
	root *os.Root
}

func (d rootedDriver) check(p string) error {
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		return nil
	}
	if _, err := d.root.Stat(rel); escapes(err) {
		return storagedriver.Error{DriverName: d.Name(), Detail: fmt.Errorf("%s: %w: %w", p, ErrOutsideRoot, err)}
	}
	return nil
}

// escapes reports whether err is os.Root's refusal of a path that leaves
// the root (through a symlink, or "..").
func escapes(err error) bool { return fsutil.Escapes(err) }

func (d rootedDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if err := d.check(p); err != nil {
		return nil, err
	}
	return d.StorageDriver.GetContent(ctx, p)
}

func (d rootedDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if err := d.check(p); err != nil {
		return err
	}
	return d.StorageDriver.PutContent(ctx, p, b)
}

func (d rootedDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := d.check(p); err != nil {
		return nil, err
	}
	return d.StorageDriver.Reader(ctx, p, offset)
}

func (d rootedDriver) Writer(ctx context.Context, p string, append bool) (storagedriver.FileWriter, error) {
	if err := d.check(p); err != nil {
		return nil, err
	}
	return d.StorageDriver.Writer(ctx, p, append)
}

func (d rootedDriver) Stat(ctx context.Context, p string) (storagedriver.FileInfo, error) {
	if err := d.check(p); err != nil {
		return nil, err
	}
	return d.StorageDriver.Stat(ctx, p)
}

func (d rootedDriver) List(ctx context.Context, p string) ([]string, error) {
	if err := d.check(p); err != nil {
		return nil, err
	}
	return d.StorageDriver.List(ctx, p)
}

func (d rootedDriver) Move(ctx context.Context, src, dst string) error {
	if err := d.check(src); err != nil {
		return err
	}
	if err := d.check(dst); err != nil {
		return err
	}
	return d.StorageDriver.Move(ctx, src, dst)
}

func (d rootedDriver) Delete(ctx context.Context, p string) error {
	if err := d.check(p); err != nil {
		return err
	}
	return d.StorageDriver.Delete(ctx, p)
}

func (d rootedDriver) Walk(ctx context.Context, p string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	return storagedriver.WalkFallback(ctx, d, p, f, options...)
}
