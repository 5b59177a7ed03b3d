package registry

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/manifests"
)

// FilesPath is where the handler serves the file items of what it serves
// over plain HTTP(S), for hosts that have curl but no registry client
// (node bootstrap): GET FilesPath+NAME is the file's content, GET
// FilesPath the listing.
const FilesPath = "/files/"

// ServedFile is a file item served under FilesPath: one that a served
// bundle's tag files/NAME:VERSION names right now.
type ServedFile struct {
	// Name is the item's name (the repository files/NAME without files/).
	Name string `json:"name"`
	// Version is the tag (the bundle's version).
	Version string `json:"version"`
	// Size and Digest are those of the content as installed (decompressed
	// when zdt compressed it).
	Size   int64         `json:"size"`
	Digest digest.Digest `json:"digest"`
	// Compressed is true when the bundle stores it zstd-compressed: it is
	// decoded while it is sent.
	Compressed bool `json:"compressed"`
	// URL is its path on the server: FilesPath+NAME, with ?version= when
	// another version of the name is the default one.
	URL string `json:"url"`

	content bundle.Content
}

// filesListing is the JSON listing of FilesPath.
type filesListing struct {
	Files []ServedFile `json:"files"`
}

// ServedFiles lists the file items served now, by name, the default
// version of a name first (the highest version, compared number by
// number: a delta served beside its base, or bundles side by side).
// Only files whose tag resolves to their manifest are listed (in a store:
// those of the installed bundles, not of a previous generation), and each
// one's manifest and layer are checked as a pull would (the manifest's
// digest, one layer, its size and content annotations).
func (h *Handler) ServedFiles(ctx context.Context) ([]ServedFile, error) {
	cands, err := h.fileCandidates()
	if err != nil {
		return nil, err
	}
	var out []ServedFile
	seen := map[string]bool{}
	for _, p := range cands {
		key := p.Repository + ":" + p.Tag + "@" + p.Digest.String()
		if p.Kind != manifests.KindFile || p.Tag == "" || seen[key] {
			continue
		}
		seen[key] = true
		f, err := h.servedFile(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			h.logger.Debug("file not served", "repository", p.Repository, "tag", p.Tag, "err", err)
			continue
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b ServedFile) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), -compareVersions(a.Version, b.Version), strings.Compare(string(a.Digest), string(b.Digest)))
	})
	for i := range out {
		out[i].URL = FilesPath + out[i].Name
		if i > 0 && out[i-1].Name == out[i].Name {
			out[i].URL += "?version=" + out[i].Version
		}
	}
	return out, nil
}

// filesCache keeps the file placements of a store's records while the
// records do not change (their names, sizes and modification times).
type filesCache struct {
	mu  sync.Mutex
	sig string
	ps  []Placement
}

// fileCandidates are the placements that may be served files: the
// archives' (serve --bundle), or every bundle recorded in the store (read
// again only when a record changed).
func (h *Handler) fileCandidates() ([]Placement, error) {
	if h.st == nil {
		return h.Placements, nil
	}
	roots, err := h.st.recorded()
	if err != nil {
		return nil, err
	}
	slices.Sort(roots)
	var sig strings.Builder
	for _, d := range roots {
		fi, err := h.st.root.Stat(layout.Placements(d))
		if err != nil {
			continue
		}
		fmt.Fprintf(&sig, "%s %d %d\n", d, fi.Size(), fi.ModTime().UnixNano())
	}
	h.files.mu.Lock()
	defer h.files.mu.Unlock()
	if h.files.ps != nil && h.files.sig == sig.String() {
		return h.files.ps, nil
	}
	out := []Placement{}
	for _, d := range roots {
		ps, err := h.st.Recorded(d)
		if err != nil {
			h.logger.Warn("files: skipping a bundle whose placements can't be read", "bundle", d, "err", err)
			continue
		}
		for _, p := range ps {
			if p.Kind == manifests.KindFile {
				out = append(out, p)
			}
		}
	}
	h.files.sig, h.files.ps = sig.String(), out
	return out, nil
}

// servedFile checks that p is served now and reads what its content is.
func (h *Handler) servedFile(ctx context.Context, p Placement) (ServedFile, error) {
	name, ok := strings.CutPrefix(p.Repository, "files/")
	if !ok || name == "" {
		return ServedFile{}, fmt.Errorf("repository %s is not under files/", p.Repository)
	}
	named, err := reference.WithName(p.Repository)
	if err != nil {
		return ServedFile{}, err
	}
	repo, err := h.ns.Repository(ctx, named)
	if err != nil {
		return ServedFile{}, err
	}
	desc, err := repo.Tags(ctx).Get(ctx, p.Tag)
	if err != nil {
		return ServedFile{}, err
	}
	if desc.Digest != p.Digest {
		return ServedFile{}, fmt.Errorf("tag %s names %s now, not %s", p.Tag, desc.Digest, p.Digest)
	}
	b, err := h.readManifest(ctx, p.Digest)
	if err != nil {
		return ServedFile{}, err
	}
	c, err := bundle.FileContent("file "+name, p.Digest, b)
	if err != nil {
		return ServedFile{}, err
	}
	ld, err := repo.Blobs(ctx).Stat(ctx, c.Layer.Digest)
	if err != nil {
		return ServedFile{}, fmt.Errorf("layer %s: %w", c.Layer.Digest, err)
	}
	if ld.Size != c.Layer.Size {
		return ServedFile{}, fmt.Errorf("layer %s is %d bytes, its descriptor says %d: %w", c.Layer.Digest, ld.Size, c.Layer.Size, bundle.ErrDigestMismatch)
	}
	return ServedFile{Name: name, Version: p.Tag, Size: c.Size, Digest: c.Digest, Compressed: c.Compressed(), content: c}, nil
}

// readManifest reads a manifest blob (at most bundle.MaxManifestSize) and
// checks it against its digest.
func (h *Handler) readManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	p := blobDataPath(d)
	fi, err := h.driver.Stat(ctx, p)
	if err != nil {
		return nil, err
	}
	if fi.Size() > bundle.MaxManifestSize {
		return nil, fmt.Errorf("manifest %s is %d bytes: %w", d, fi.Size(), bundle.ErrTooLarge)
	}
	b, err := h.driver.GetContent(ctx, p)
	if err != nil {
		return nil, err
	}
	if d.Algorithm() != digest.SHA256 || digest.FromBytes(b) != d {
		return nil, fmt.Errorf("manifest %s: %w", d, bundle.ErrDigestMismatch)
	}
	return b, nil
}

// serveFiles answers GET and HEAD of FilesPath (the listing: text, or
// JSON when the client accepts application/json) and of FilesPath+NAME
// (the file, ?version= picking another version than the default).
func (h *Handler) serveFiles(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	files, err := h.ServedFiles(r.Context())
	if err != nil {
		h.logger.Error("listing files", "err", err)
		http.Error(w, "internal server error; the server log has the details", http.StatusInternalServerError)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, FilesPath)
	if name == "" {
		h.listFiles(w, r, files)
		return
	}
	version := r.URL.Query().Get("version")
	i := slices.IndexFunc(files, func(f ServedFile) bool { return f.Name == name && (version == "" || f.Version == version) })
	if i < 0 {
		http.Error(w, "file not found", http.StatusNotFound)
		return
	}
	h.serveFile(w, r, files[i])
}

// listFiles writes the listing: JSON (filesListing) when the client
// accepts application/json, else one line per file: name, version,
// size, sha256 and URL, tab-separated.
func (h *Handler) listFiles(w http.ResponseWriter, r *http.Request, files []ServedFile) {
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Add("Vary", "Accept")
	if strings.Contains(strings.Join(r.Header.Values("Accept"), ","), "application/json") {
		if files == nil {
			files = []ServedFile{}
		}
		b, _ := json.MarshalIndent(filesListing{Files: files}, "", "  ")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
		if r.Method != http.MethodHead {
			_, _ = w.Write(append(b, '\n'))
		}
		return
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, f := range files {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", f.Name, f.Version, f.Size, f.Digest, f.URL)
	}
	tw.Flush()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, b.String())
	}
}

// serveFile sends a file's content with its sha256 in Digest (RFC 3230),
// Repr-Digest (RFC 9530) and X-Checksum-Sha256, conditional requests
// against its ETag (the sha256), and Range requests: a file stored as is
// is read at the range's offset; one zdt compressed is decoded from its
// start up to the range (a request of several ranges gets the whole file).
// A response that runs to the end of the file is checked against the
// content digest before its last bytes go out: a mismatch cuts the
// connection, so the client sees a truncated transfer, never a wrong file.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, f ServedFile) {
	sum, _ := hex.DecodeString(f.Digest.Encoded())
	b64 := base64.StdEncoding.EncodeToString(sum)
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream") // also: ServeContent does not sniff
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("ETag", `"`+f.Digest.String()+`"`)
	hd.Set("Cache-Control", "no-cache") // the name may serve other content after an install
	hd.Set("Digest", "sha-256="+b64)
	hd.Set("Repr-Digest", "sha-256=:"+b64+":")
	hd.Set("X-Checksum-Sha256", f.Digest.Encoded())
	if f.Compressed && strings.Contains(r.Header.Get("Range"), ",") {
		r.Header.Del("Range") // each range would decode from the start again
	}
	cs := &contentSeeker{ctx: r.Context(), driver: h.driver, c: f.content}
	defer cs.Close()
	http.ServeContent(w, r, "", time.Time{}, cs)
	if cs.err != nil {
		h.logger.Error("serving file", "name", f.Name, "version", f.Version, "err", cs.err)
	}
}

// contentSeeker is a file's content as an io.ReadSeeker for
// http.ServeContent, read from the storage driver: Seek only moves the
// offset; the next Read opens the content there. Not safe for concurrent
// use.
type contentSeeker struct {
	ctx    context.Context
	driver storagedriver.StorageDriver
	c      bundle.Content
	off    int64         // where the next Read reads
	r      io.ReadCloser // the content from pos on (nil: not open)
	pos    int64
	// checked is true when r reads the content from its start through
	// bundle.DecodeContent: its end checks the content digest.
	checked bool
	err     error // a read error, for the log
}

func (s *contentSeeker) Seek(offset int64, whence int) (int64, error) {
	abs := offset
	switch whence {
	case io.SeekCurrent:
		abs += s.off
	case io.SeekEnd:
		abs += s.c.Size
	}
	if abs < 0 {
		return 0, errors.New("seek before the start of the file")
	}
	s.off = abs
	return abs, nil
}

// open opens the content at s.off: the layer's bytes there for a file
// stored as is read from past its start, else the checked content
// reader, decoded up to s.off.
func (s *contentSeeker) open() error {
	s.Close()
	layer := &driverFile{ctx: s.ctx, driver: s.driver, path: blobDataPath(s.c.Layer.Digest), size: s.c.Layer.Size}
	if !s.c.Compressed() && s.off > 0 {
		if _, err := layer.Seek(s.off, io.SeekStart); err != nil {
			return err
		}
		s.r, s.pos, s.checked = layer, s.off, false
		return nil
	}
	cr, err := bundle.DecodeContent(s.ctx, s.c, layer)
	if err != nil {
		return err
	}
	s.r, s.pos, s.checked = multiCloser{cr, layer}, 0, true
	if s.off > 0 {
		n, err := io.CopyN(io.Discard, cr, s.off)
		s.pos = n
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *contentSeeker) Read(p []byte) (int, error) {
	if s.off >= s.c.Size {
		return 0, io.EOF
	}
	if s.r == nil || s.pos != s.off {
		if err := s.open(); err != nil {
			s.err = err
			return 0, err
		}
	}
	if rest := s.c.Size - s.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := s.r.Read(p)
	s.pos += int64(n)
	s.off = s.pos
	switch {
	case err == io.EOF && s.pos == s.c.Size:
		err = nil // a checked reader's EOF: the content checked out
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	case err == nil && s.pos == s.c.Size && s.checked:
		// The last bytes: the digest is checked before they go out.
		var one [1]byte
		if _, cerr := s.r.Read(one[:]); cerr != io.EOF {
			err = cerr
			if err == nil {
				err = fmt.Errorf("content of %s is larger than its recorded %d bytes: %w", s.c.Item, s.c.Size, bundle.ErrTooLarge)
			}
		}
	}
	if err != nil {
		s.err = err
		return 0, err
	}
	return n, nil
}

// Close closes what Read opened.
func (s *contentSeeker) Close() error {
	if s.r == nil {
		return nil
	}
	err := s.r.Close()
	s.r = nil
	return err
}

// multiCloser closes a reader and what it reads from.
type multiCloser struct {
	io.ReadCloser
	src io.Closer
}

func (m multiCloser) Close() error { return errors.Join(m.ReadCloser.Close(), m.src.Close()) }

// compareVersions compares two versions number by number ("1.10" after
// "1.9"), the other parts as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := leadingDigits(a), leadingDigits(b)
		switch {
		case da > 0 && db > 0:
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Or(cmp.Compare(len(na), len(nb)), strings.Compare(na, nb)); c != 0 {
				return c
			}
		default:
			da, db = max(da, nonDigits(a)), max(db, nonDigits(b))
			if c := strings.Compare(a[:da], b[:db]); c != 0 {
				return c
			}
		}
		a, b = a[da:], b[db:]
	}
	return cmp.Compare(len(a), len(b))
}

func leadingDigits(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

func nonDigits(s string) int {
	i := 0
	for i < len(s) && (s[i] < '0' || s[i] > '9') {
		i++
	}
	return i
}
