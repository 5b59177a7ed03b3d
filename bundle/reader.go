package bundle

import (
	"archive/tar"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"zdt.dev/zdt/manifests"
)

// Bounds on untrusted archive content.
const (
	// MaxIndexSize bounds index.json.
	MaxIndexSize = 4 << 20
	// MaxManifestSize bounds every manifest, index and config zdt parses.
	MaxManifestSize = 4 << 20
	// MaxEntries bounds the number of tar entries of an archive: a bundle of
	// a thousand images of thirty layers each has some 30,000. The index
	// costs well under 100 bytes per entry.
	MaxEntries = 1 << 17
)

// entry is where a tar entry's content is in the archive.
type entry struct {
	off, size int64
}

// blobKey is a sha256 digest's raw bytes: the archive's index keys blobs by
// it (32 bytes instead of a 71-character string per entry).
type blobKey [32]byte

// keyOf is the index key of a digest; false for anything but a valid
// sha256 digest.
func keyOf(d digest.Digest) (blobKey, bool) {
	var k blobKey
	hx, ok := strings.CutPrefix(string(d), "sha256:")
	if !ok || len(hx) != 64 {
		return k, false
	}
	if _, err := hex.Decode(k[:], []byte(hx)); err != nil {
		return k, false
	}
	return k, true
}

func (k blobKey) digest() digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(k[:]))
}

// Archive is an open bundle file, indexed by its tar headers: blobs are read
// at their offsets, nothing is extracted. Open checks the archive's structure
// and reads its root; Verify checks every byte. Safe for concurrent reads;
// Close once when done.
type Archive struct {
	path string
	base BlobSource // a delta's base (AttachBase), nil otherwise
	// fromBase are the blobs the delta reaches and reads from base.
	fromBase map[digest.Digest]int64
	f        io.ReaderAt
	close    func() error
	size     int64
	blobs    map[blobKey]entry
	entries  int              // tar entries
	other    map[string]entry // oci-layout and index.json

	walkMu sync.Mutex
	graph  *Graph // Walk's result, once it succeeded

	// Index is the layout's index.json. Open checks it against the signed
	// root: the root's entry, the root's items exactly as the root lists
	// them, and the root's attachments, nothing else.
	Index ocispec.Index
	// Root is the descriptor of the bundle root, an OCI image index (its
	// digest is the bundle's identity).
	Root ocispec.Descriptor
	// RootIndex is the parsed root: its first manifest carries Config, the
	// others are the items.
	RootIndex ocispec.Index
	// ConfigManifest is the root's first manifest, whose config is Config.
	ConfigManifest ocispec.Manifest
	// Config is the parsed bundle config.
	Config Config
}

// OpenOptions tune Open. The zero value is valid.
type OpenOptions struct {
	// CheckIndex, if set, is called with the parsed index.json and the root
	// entry it names as soon as they are read: before the rest of the
	// archive is indexed when index.json comes first (as create writes it),
	// so a bundle the caller refuses anyway (an unsigned one, see
	// signing.IndexCheck) costs no more than reading index.json. Its error
	// is returned as is. Nothing in idx is trusted yet.
	CheckIndex func(idx ocispec.Index, root ocispec.Descriptor) error
	// MaxEntries bounds the archive's tar entries (default and at most
	// MaxEntries).
	MaxEntries int
}

// Open indexes the archive at path by its tar headers and reads its root.
// It refuses entries that are not part of an OCI layout (absolute or `..`
// paths, links, devices, duplicates), truncated archives, bytes after the
// end-of-archive marker, more than MaxEntries entries, oversized metadata
// and an index.json that differs from the root, naming the offending entry.
func Open(ctx context.Context, p string) (*Archive, error) {
	return OpenWith(ctx, p, OpenOptions{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, p string, opts OpenOptions) (*Archive, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	a, err := OpenReaderWith(ctx, f, fi.Size(), opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	a.path, a.close = p, f.Close
	return a, nil
}

// OpenReader is Open for an archive of size bytes read through r (a file,
// a device, a memory buffer). Close does not close r.
func OpenReader(ctx context.Context, r io.ReaderAt, size int64) (*Archive, error) {
	return OpenReaderWith(ctx, r, size, OpenOptions{})
}

// OpenReaderWith is OpenReader with options.
func OpenReaderWith(ctx context.Context, r io.ReaderAt, size int64, opts OpenOptions) (*Archive, error) {
	a := &Archive{f: r, size: size, blobs: map[blobKey]entry{}, close: func() error { return nil }}
	if err := a.index(ctx, opts); err != nil {
		return nil, err
	}
	return a, nil
}

// Close releases the archive file.
func (a *Archive) Close() error { return a.close() }

// Stat describes the open file the archive is read from (an error when it
// was opened from a reader that is not a file): what a caller that links
// or copies the file at Path compares with, since that path may have been
// replaced since Open.
func (a *Archive) Stat() (os.FileInfo, error) {
	f, ok := a.f.(*os.File)
	if !ok {
		return nil, errors.New("archive is not read from a file")
	}
	return f.Stat()
}

// Path is the file the archive was opened from.
func (a *Archive) Path() string { return a.path }

// Size is the archive file's size in bytes.
func (a *Archive) Size() int64 { return a.size }

func (a *Archive) index(ctx context.Context, opts OpenOptions) error {
	indexChecked, err := a.scan(ctx, opts)
	if err != nil {
		return err
	}
	if err := a.checkLayout(); err != nil {
		return err
	}
	if !indexChecked {
		if err := a.readIndex(a.other[entryIndex]); err != nil {
			return err
		}
		if opts.CheckIndex != nil {
			if err := opts.CheckIndex(a.Index, a.Root); err != nil {
				return err
			}
		}
	}
	if err := a.readRoot(ctx); err != nil {
		return err
	}
	return a.checkIndexAgainstRoot()
}

// tarScan is what scan has seen of the archive's entries so far.
type tarScan struct {
	special map[string]entry // oci-layout and index.json
	dirs    map[string]bool
	// indexChecked says index.json was read and opts.CheckIndex ran on it.
	indexChecked bool
}

// scan reads every tar header (checking limits before anything else),
// records where each blob and special entry is, and checks that the
// archive ends with the end-of-archive marker. When opts.CheckIndex is set
// it runs as soon as index.json is seen; indexChecked says it did.
func (a *Archive) scan(ctx context.Context, opts OpenOptions) (indexChecked bool, err error) {
	br := &blockReader{r: a.f, size: a.size}
	tr := tar.NewReader(br)
	s := tarScan{special: map[string]entry{}, dirs: map[string]bool{}}
	limit := MaxEntries
	if opts.MaxEntries > 0 && opts.MaxEntries < limit {
		limit = opts.MaxEntries
	}
	var lastEnd int64 // end of the last entry's padded content
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			// A whole archive ends with two zero blocks; EOF right after an
			// entry (a copy cut at an entry boundary) is a truncation.
			if err := a.checkTrailer(ctx, lastEnd); err != nil {
				return false, err
			}
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return false, fmt.Errorf("after entry %d: %w", a.entries, ErrTruncated)
			}
			return false, fmt.Errorf("reading tar header after entry %d: %v: %w", a.entries, err, ErrNotBundle)
		}
		if a.entries >= limit {
			return false, fmt.Errorf("more than %d entries: %w", limit, ErrTooLarge)
		}
		a.entries++
		if err := checkEntryName(h.Name, h); err != nil {
			return false, &EntryError{Name: h.Name, Err: err}
		}
		off := br.pos
		lastEnd = off + (h.Size+511)/512*512
		if err := a.addEntry(&s, h, off, opts); err != nil {
			return false, err
		}
	}
	a.other = s.special
	return s.indexChecked, nil
}

// addEntry records the entry of h, whose content starts at off and whose
// name checkEntryName accepted: a directory, a blob or a special entry,
// each at most once. The content must lie within the file.
func (a *Archive) addEntry(s *tarScan, h *tar.Header, off int64, opts OpenOptions) error {
	name := h.Name
	twice := &EntryError{Name: name, Err: fmt.Errorf("appears twice: %w", ErrUnsafeEntry)}
	if h.Typeflag == tar.TypeDir {
		key := strings.TrimSuffix(name, "/")
		if s.dirs[key] {
			return twice
		}
		s.dirs[key] = true
		return nil
	}
	if h.Size < 0 || off+h.Size > a.size {
		return &EntryError{Name: name, Err: fmt.Errorf("%d bytes at offset %d run past the end of the file (%d bytes): %w", h.Size, off, a.size, ErrTruncated)}
	}
	e := entry{off: off, size: h.Size}
	if hx, ok := strings.CutPrefix(name, dirSHA256); ok {
		var k blobKey
		_, _ = hex.Decode(k[:], []byte(hx)) // checkEntryName checked the hex
		if _, dup := a.blobs[k]; dup {
			return twice
		}
		a.blobs[k] = e
		return nil
	}
	if _, dup := s.special[name]; dup {
		return twice
	}
	s.special[name] = e
	if name == entryIndex && opts.CheckIndex != nil {
		// Refuse early what the caller will refuse anyway.
		if err := a.readIndex(e); err != nil {
			return err
		}
		if err := opts.CheckIndex(a.Index, a.Root); err != nil {
			return err
		}
		s.indexChecked = true
	}
	return nil
}

// checkLayout checks that the archive has oci-layout and index.json
// entries, and that oci-layout names the OCI image layout version.
func (a *Archive) checkLayout() error {
	if _, ok := a.other[entryLayout]; !ok {
		return fmt.Errorf("no %s or %s entry: %w", entryLayout, entryIndex, ErrNotBundle)
	}
	if _, ok := a.other[entryIndex]; !ok {
		return fmt.Errorf("no %s or %s entry: %w", entryLayout, entryIndex, ErrNotBundle)
	}
	lb, err := a.readEntry(a.other[entryLayout], 4096, entryLayout)
	if err != nil {
		return err
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(lb, &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		return fmt.Errorf("%s: not an OCI image layout %s: %w", entryLayout, ocispec.ImageLayoutVersion, ErrNotBundle)
	}
	return nil
}

// readRoot reads and parses the root index named by index.json, its bundle
// config manifest and the bundle config.
func (a *Archive) readRoot(ctx context.Context) error {
	rb, err := a.ReadSmall(ctx, a.Root)
	if err != nil {
		return fmt.Errorf("reading root index: %w", err)
	}
	if err := json.Unmarshal(rb, &a.RootIndex); err != nil {
		return fmt.Errorf("root %s: %v: %w", a.Root.Digest, err, ErrNotBundle)
	}
	if a.RootIndex.ArtifactType != manifests.ArtifactTypeBundle || len(a.RootIndex.Manifests) == 0 ||
		a.RootIndex.Manifests[0].ArtifactType != manifests.MediaTypeBundleConfig {
		return fmt.Errorf("root %s has artifactType %q and no bundle config manifest: %w", a.Root.Digest, a.RootIndex.ArtifactType, ErrNotBundle)
	}
	mb, err := a.ReadSmall(ctx, a.RootIndex.Manifests[0])
	if err != nil {
		return fmt.Errorf("reading bundle config manifest: %w", err)
	}
	if err := json.Unmarshal(mb, &a.ConfigManifest); err != nil || a.ConfigManifest.Config.MediaType != manifests.MediaTypeBundleConfig {
		return fmt.Errorf("bundle config manifest %s: %w", a.RootIndex.Manifests[0].Digest, ErrNotBundle)
	}
	cb, err := a.ReadSmall(ctx, a.ConfigManifest.Config)
	if err != nil {
		return fmt.Errorf("reading bundle config: %w", err)
	}
	if err := json.Unmarshal(cb, &a.Config); err != nil {
		return fmt.Errorf("bundle config %s: %v: %w", a.ConfigManifest.Config.Digest, err, ErrNotBundle)
	}
	return nil
}

// readIndex reads and parses index.json and finds the root entry in it.
func (a *Archive) readIndex(e entry) error {
	ib, err := a.readEntry(e, MaxIndexSize, entryIndex)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(ib, &a.Index); err != nil {
		return fmt.Errorf("%s: %v: %w", entryIndex, err, ErrNotBundle)
	}
	if len(a.Index.Manifests) > MaxEntries {
		return fmt.Errorf("%s has %d entries, more than %d: %w", entryIndex, len(a.Index.Manifests), MaxEntries, ErrTooLarge)
	}
	for _, d := range a.Index.Manifests {
		if d.Annotations[manifests.AnnotationBundleRoot] != "true" {
			continue
		}
		if a.Root.Digest != "" {
			return fmt.Errorf("%s names two bundle roots: %w", entryIndex, ErrNotBundle)
		}
		a.Root = d
	}
	if a.Root.Digest == "" || a.Root.MediaType != ocispec.MediaTypeImageIndex {
		return fmt.Errorf("%s names no bundle root (annotation %s): %w", entryIndex, manifests.AnnotationBundleRoot, ErrNotBundle)
	}
	return nil
}

// checkTrailer checks that the archive ends at off with the end-of-archive
// marker (two zero blocks) and nothing but zero padding after it: bytes
// there are invisible to this reader but not to every tar (GNU tar lists an
// entry smuggled after the marker).
func (a *Archive) checkTrailer(ctx context.Context, off int64) error {
	if off+2*blockSize > a.size {
		return fmt.Errorf("no end-of-archive marker after entry %d: %w", a.entries, ErrTruncated)
	}
	buf := make([]byte, 1<<20)
	for pos := off; pos < a.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(buf)), a.size-pos))
		if _, err := a.f.ReadAt(buf[:n], pos); err != nil {
			return fmt.Errorf("reading the end of the archive: %v: %w", err, ErrTruncated)
		}
		for i, c := range buf[:n] {
			if c != 0 {
				at := pos + int64(i)
				if at < off+2*blockSize {
					return fmt.Errorf("no end-of-archive marker after entry %d: %w", a.entries, ErrTruncated)
				}
				return &EntryError{Name: fmt.Sprintf("(data at offset %d)", at), Err: fmt.Errorf("bytes after the end-of-archive marker at offset %d: %w", off, ErrUnsafeEntry)}
			}
		}
		pos += int64(n)
	}
	return nil
}

// blockReader reads an archive's tar headers through a buffer (a bundle of
// many small entries costs a read per 64 KiB, not per 512-byte header) and
// seeks over content (tar.Reader skips an entry it does not read by
// seeking).
type blockReader struct {
	r        io.ReaderAt
	size     int64
	pos      int64 // logical position
	buf      []byte
	bufStart int64 // archive offset of buf[0]
}

func (b *blockReader) Read(p []byte) (int, error) {
	if b.pos >= b.size {
		return 0, io.EOF
	}
	if b.pos < b.bufStart || b.pos >= b.bufStart+int64(len(b.buf)) {
		if cap(b.buf) == 0 {
			b.buf = make([]byte, 64<<10)
		}
		n := int(min(int64(cap(b.buf)), b.size-b.pos))
		m, err := b.r.ReadAt(b.buf[:n], b.pos)
		if m < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.buf = b.buf[:0]
			return 0, err
		}
		b.buf, b.bufStart = b.buf[:n], b.pos
	}
	n := copy(p, b.buf[b.pos-b.bufStart:])
	b.pos += int64(n)
	return n, nil
}

func (b *blockReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += b.pos
	case io.SeekEnd:
		off += b.size
	default:
		return 0, errors.New("bad whence")
	}
	if off < 0 {
		return 0, errors.New("negative position")
	}
	b.pos = off
	return off, nil
}

// checkEntryName allows exactly the entries of an OCI layout: oci-layout,
// index.json, blobs/, blobs/sha256/ and blobs/sha256/<64 hex>, as regular
// files or those two directories.
func checkEntryName(name string, h *tar.Header) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return fmt.Errorf("absolute or empty path: %w", ErrUnsafeEntry)
	}
	for _, part := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if part == ".." || part == "." || part == "" {
			return fmt.Errorf("path with %q: %w", part, ErrUnsafeEntry)
		}
	}
	if path.Clean(name) != strings.TrimSuffix(name, "/") {
		return fmt.Errorf("unclean path: %w", ErrUnsafeEntry)
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse") {
			return fmt.Errorf("sparse entry: %w", ErrUnsafeEntry)
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if name != dirBlobs && name != dirSHA256 && name != "blobs" && name != "blobs/sha256" {
			return fmt.Errorf("unexpected directory: %w", ErrUnsafeEntry)
		}
		return nil
	case tar.TypeReg:
	case tar.TypeSymlink, tar.TypeLink:
		return fmt.Errorf("link to %q: links are not allowed: %w", h.Linkname, ErrUnsafeEntry)
	default:
		return fmt.Errorf("entry type %q is not a regular file: %w", h.Typeflag, ErrUnsafeEntry)
	}
	if name == entryLayout || name == entryIndex {
		return nil
	}
	hex, ok := strings.CutPrefix(name, dirSHA256)
	if !ok {
		return fmt.Errorf("not part of an OCI layout: %w", ErrUnsafeEntry)
	}
	if err := digest.NewDigestFromEncoded(digest.SHA256, hex).Validate(); err != nil {
		return fmt.Errorf("blob name is not a sha256 hex digest: %w", ErrUnsafeEntry)
	}
	return nil
}

func (a *Archive) readEntry(e entry, limit int64, what string) ([]byte, error) {
	if e.size > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than %d: %w", what, e.size, limit, ErrTooLarge)
	}
	b := make([]byte, e.size)
	if _, err := a.f.ReadAt(b, e.off); err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return b, nil
}

// ReadSmall reads a manifest, index or config blob (at most MaxManifestSize)
// and checks its size and digest.
func (a *Archive) ReadSmall(_ context.Context, desc ocispec.Descriptor) ([]byte, error) {
	size, ok := a.BlobSize(desc.Digest)
	if !ok {
		return nil, &BlobError{Digest: desc.Digest, Err: a.missing()}
	}
	if desc.Size != size {
		return nil, &BlobError{Digest: desc.Digest, Err: fmt.Errorf("descriptor says %d bytes, archive holds %d: %w", desc.Size, size, ErrDigestMismatch)}
	}
	if size > MaxManifestSize {
		return nil, &BlobError{Digest: desc.Digest, Err: fmt.Errorf("%d bytes (limit %d): %w", size, MaxManifestSize, ErrTooLarge)}
	}
	r, err := a.BlobReader(desc.Digest)
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", desc.Digest, err)
	}
	if got := digest.FromBytes(b); got != desc.Digest {
		return nil, &BlobError{Digest: desc.Digest, Err: fmt.Errorf("content hashes to %s: %w", got, ErrDigestMismatch)}
	}
	return b, nil
}

func (a *Archive) special(name string) entry { return a.other[name] }

// Attachments are the index.json entries attached to the root rather than
// reachable from it: signatures and attestations, named the way cosign
// names them (sha256-<root hex>.sig, .att, .sbom) or pointing at the root as
// their OCI 1.1 subject (annotation dev.zdt.subject = root digest).
func (a *Archive) Attachments() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, m := range a.Index.Manifests {
		if IsAttachment(a.Root.Digest, m) {
			out = append(out, m)
		}
	}
	return out
}

// IsAttachment reports whether an index.json entry is attached to root.
func IsAttachment(root digest.Digest, m ocispec.Descriptor) bool {
	if m.Annotations[manifests.AnnotationSubject] == root.String() {
		return true
	}
	tag := strings.ReplaceAll(root.String(), ":", "-")
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		if m.Annotations[manifests.AnnotationRefName] == tag+suffix {
			return true
		}
	}
	return false
}

// BlobSource is what a delta bundle reads the blobs it leaves out from: its
// base bundle (an *Archive), or an install's registry storage.
type BlobSource interface {
	BlobReader(d digest.Digest) (*io.SectionReader, error)
	BlobSize(d digest.Digest) (int64, bool)
}

// Base is the root digest of the bundle this one is a delta on: it holds
// only the blobs that bundle lacks (bundle create --base). "" for a whole
// bundle.
func (a *Archive) Base() digest.Digest {
	return digest.Digest(a.RootIndex.Annotations[manifests.AnnotationBase])
}

// AttachBase gives a delta bundle the source of the blobs it leaves out;
// from then on the archive reads, walks, verifies, extracts and serves as
// the whole bundle (Verify hashes the base's blobs like its own unless told
// otherwise). Only the blobs the delta reaches are taken from src, and all
// of them must be there. src must be the base bundle itself when it is an
// *Archive. Call it before the archive is shared: it is not safe
// concurrently with reads.
func (a *Archive) AttachBase(ctx context.Context, src BlobSource) error {
	if a.Base() == "" {
		return fmt.Errorf("%s is a whole bundle, not a delta: %w", a.Root.Digest, ErrWrongBase)
	}
	if b, ok := src.(*Archive); ok && b.Root.Digest != a.Base() {
		return fmt.Errorf("%s is bundle %s %s (%s), the delta is on %s: %w", b.path, b.Config.Name, b.Config.Version, b.Root.Digest, a.Base(), ErrWrongBase)
	}
	a.base, a.fromBase, a.graph = src, nil, nil
	g, err := a.Walk(ctx)
	if err != nil {
		a.base = nil
		return fmt.Errorf("delta on %s: %w", a.Base(), err)
	}
	from := map[digest.Digest]int64{}
	for d := range g.Blobs {
		if !a.HasLocal(d) {
			size, _ := src.BlobSize(d)
			from[d] = size
		}
	}
	a.fromBase = from
	return nil
}

// BaseAttached reports whether AttachBase gave the delta its base.
func (a *Archive) BaseAttached() bool { return a.fromBase != nil }

// fromBaseSize finds a blob the delta takes from its base: during
// AttachBase's walk any blob of the base, afterwards only those reached.
func (a *Archive) fromBaseSize(d digest.Digest) (int64, bool) {
	if a.base == nil {
		return 0, false
	}
	if a.fromBase != nil {
		size, ok := a.fromBase[d]
		return size, ok
	}
	return a.base.BlobSize(d)
}

// HasLocal reports whether the archive file itself holds the blob (not its
// base).
func (a *Archive) HasLocal(d digest.Digest) bool {
	_, ok := a.local(d)
	return ok
}

// local finds a blob in the archive file itself.
func (a *Archive) local(d digest.Digest) (entry, bool) {
	k, ok := keyOf(d)
	if !ok {
		return entry{}, false
	}
	e, ok := a.blobs[k]
	return e, ok
}

// missing is the error for a blob neither the archive nor its base has.
func (a *Archive) missing() error {
	if a.Base() != "" && a.base == nil {
		return fmt.Errorf("%w (base %s): %w", ErrNeedsBase, a.Base(), ErrMissingBlob)
	}
	return ErrMissingBlob
}

// Exists reports whether the archive (or its base) holds the blob.
func (a *Archive) Exists(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	_, ok := a.BlobSize(desc.Digest)
	return ok, nil
}

// Fetch returns a reader of the blob's bytes straight from the archive. It
// does not re-check the digest: call Verify first, or check while reading.
func (a *Archive) Fetch(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	r, err := a.BlobReader(desc.Digest)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(r), nil
}

// BlobReader returns a random-access reader of a blob's bytes (from the
// base for a blob a delta leaves out).
func (a *Archive) BlobReader(d digest.Digest) (*io.SectionReader, error) {
	e, ok := a.local(d)
	if !ok {
		if _, ok := a.fromBaseSize(d); ok {
			return a.base.BlobReader(d)
		}
		return nil, fmt.Errorf("%s: %w", d, errdef.ErrNotFound)
	}
	return io.NewSectionReader(a.f, e.off, e.size), nil
}

// BlobSize is the size of a blob in the archive (or its base) and whether
// it exists.
func (a *Archive) BlobSize(d digest.Digest) (int64, bool) {
	e, ok := a.local(d)
	if !ok {
		return a.fromBaseSize(d)
	}
	return e.size, ok
}

// Digests lists every blob in the archive and, for a delta with its base
// attached, the base's blobs it reaches: the whole bundle's blobs.
func (a *Archive) Digests() []digest.Digest {
	out := make([]digest.Digest, 0, len(a.blobs)+len(a.fromBase))
	for k := range a.blobs {
		out = append(out, k.digest())
	}
	for d := range a.fromBase {
		out = append(out, d)
	}
	return out
}
