package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
)

const archiveDriverName = "zdt-archive"

// archiveDriver is a read-only distribution storage driver over bundle
// archives. It synthesizes distribution's layout (see layout.go) in memory
// from the archives' tar index and their placements: blob data are section
// readers at the blobs' archive offsets, link files are generated. Nothing
// is copied or extracted; every write fails with ErrReadOnly. Safe for
// concurrent use (immutable after construction).
type archiveDriver struct {
	nodes   map[string]*vnode
	modTime time.Time
}

// vnode is a file or directory of the synthesized tree.
type vnode struct {
	dir      bool
	children []string // sorted full paths (directories)
	data     []byte   // link file content
	blob     *bundle.Archive
	digest   digest.Digest
	size     int64
}

// newArchiveDriver builds the tree for archives and their placements (as
// Placements gives them, in the same order). When two archives place the
// same repository:tag, the later archive wins and logger is told.
func newArchiveDriver(archives []*bundle.Archive, placements [][]Placement, logger *slog.Logger) (*archiveDriver, error) {
	d := &archiveDriver{nodes: map[string]*vnode{"/": {dir: true}}, modTime: time.Unix(0, 0).UTC()}
	seenTag := map[string]Placement{}
	var all []Placement
	for i, a := range archives {
		for _, dg := range a.Digests() {
			size, _ := a.BlobSize(dg)
			d.add(blobDataPath(dg), &vnode{blob: a, digest: dg, size: size})
		}
		for _, p := range placements[i] {
			if p.Tag != "" {
				key := p.Repository + ":" + p.Tag
				if old, ok := seenTag[key]; ok && old.Digest != p.Digest && logger != nil {
					logger.Warn("tag given by two bundles; serving the later one", "tag", key, "old", old.Digest, "new", p.Digest, "bundle", a.Path())
				}
				seenTag[key] = p
			}
			all = append(all, p)
		}
	}
	for _, l := range layoutLinks(all) {
		d.add(l.path, &vnode{data: []byte(l.target.String()), size: int64(len(l.target.String()))})
	}
	for _, n := range d.nodes {
		if n.dir {
			sort.Strings(n.children)
		}
	}
	return d, nil
}

// add inserts a file and its parent directories.
func (d *archiveDriver) add(p string, n *vnode) {
	if _, ok := d.nodes[p]; ok {
		d.nodes[p] = n
		return
	}
	d.nodes[p] = n
	for child := p; child != "/"; {
		parent := path.Dir(child)
		pn, ok := d.nodes[parent]
		if !ok {
			pn = &vnode{dir: true}
			d.nodes[parent] = pn
		}
		pn.children = append(pn.children, child)
		if ok {
			return
		}
		child = parent
	}
}

// lookup validates a driver path and finds its node. Paths come from
// request URLs (repository names, tags, digests), so they are checked the
// way distribution's base driver checks them.
func (d *archiveDriver) lookup(p string) (*vnode, error) {
	if p != "/" && !storagedriver.PathRegexp.MatchString(p) {
		return nil, storagedriver.InvalidPathError{Path: p, DriverName: archiveDriverName}
	}
	n, ok := d.nodes[p]
	if !ok {
		return nil, storagedriver.PathNotFoundError{Path: p, DriverName: archiveDriverName}
	}
	return n, nil
}

func (d *archiveDriver) Name() string { return archiveDriverName }

func (d *archiveDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	n, err := d.lookup(p)
	if err != nil {
		return nil, err
	}
	if n.dir {
		return nil, storagedriver.PathNotFoundError{Path: p, DriverName: archiveDriverName}
	}
	if n.blob == nil {
		return append([]byte(nil), n.data...), nil
	}
	if n.size > bundle.MaxManifestSize {
		return nil, storagedriver.Error{DriverName: archiveDriverName, Detail: fmt.Errorf("%s: %d bytes is too large to read whole", p, n.size)}
	}
	r, err := n.blob.BlobReader(n.digest)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n.size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, storagedriver.Error{DriverName: archiveDriverName, Detail: err}
	}
	return b, nil
}

func (d *archiveDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	n, err := d.lookup(p)
	if err != nil {
		return nil, err
	}
	if n.dir {
		return nil, storagedriver.PathNotFoundError{Path: p, DriverName: archiveDriverName}
	}
	if offset < 0 || offset > n.size {
		return nil, storagedriver.InvalidOffsetError{Path: p, Offset: offset, DriverName: archiveDriverName}
	}
	if n.blob == nil {
		return io.NopCloser(strings.NewReader(string(n.data[offset:]))), nil
	}
	r, err := n.blob.BlobReader(n.digest)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.NewSectionReader(r, offset, n.size-offset)), nil
}

func (d *archiveDriver) Stat(ctx context.Context, p string) (storagedriver.FileInfo, error) {
	n, err := d.lookup(p)
	if err != nil {
		return nil, err
	}
	return storagedriver.FileInfoInternal{FileInfoFields: storagedriver.FileInfoFields{
		Path: p, Size: n.size, ModTime: d.modTime, IsDir: n.dir,
	}}, nil
}

func (d *archiveDriver) List(ctx context.Context, p string) ([]string, error) {
	n, err := d.lookup(p)
	if err != nil {
		return nil, err
	}
	if !n.dir {
		return nil, storagedriver.PathNotFoundError{Path: p, DriverName: archiveDriverName}
	}
	return append([]string(nil), n.children...), nil
}

func (d *archiveDriver) Walk(ctx context.Context, p string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	return storagedriver.WalkFallback(ctx, d, p, f, options...)
}

func (d *archiveDriver) RedirectURL(*http.Request, string) (string, error) { return "", nil }

func (d *archiveDriver) readOnly(p string) error {
	return storagedriver.Error{DriverName: archiveDriverName, Detail: fmt.Errorf("%s: %w", p, ErrReadOnly)}
}

func (d *archiveDriver) PutContent(ctx context.Context, p string, _ []byte) error {
	return d.readOnly(p)
}

func (d *archiveDriver) Writer(ctx context.Context, p string, _ bool) (storagedriver.FileWriter, error) {
	return nil, d.readOnly(p)
}

func (d *archiveDriver) Move(ctx context.Context, src, _ string) error { return d.readOnly(src) }

func (d *archiveDriver) Delete(ctx context.Context, p string) error { return d.readOnly(p) }

var _ storagedriver.StorageDriver = (*archiveDriver)(nil)
