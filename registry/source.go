package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/remote"
)

// BundleRef names a bundle in a registry, the way `zdt serve` and `zdt
// push` place it: REGISTRY/[PREFIX/]zdt/NAME[:VERSION|@DIGEST].
type BundleRef struct {
	// Host is the registry's HOST[:PORT].
	Host string
	// Prefix is the path before zdt/NAME ("" at the top): where `zdt push
	// --to HOST/PREFIX` put the bundle and its images.
	Prefix string
	// Name is the bundle's name.
	Name string
	// Tag is the version tag ("" with a digest).
	Tag string
	// Digest is the root digest ("" with a tag).
	Digest digest.Digest
}

// ErrBadBundleRef: a --from reference that is not REGISTRY/[PREFIX/]zdt/NAME[:VERSION|@DIGEST].
var ErrBadBundleRef = errors.New("not a bundle reference REGISTRY/[PREFIX/]zdt/NAME[:VERSION|@DIGEST]")

// ParseBundleRef parses REGISTRY/[PREFIX/]zdt/NAME[:VERSION|@DIGEST]. The
// registry must be named (no docker.io default), the digest is sha256, and
// without a version or digest the tag is "latest".
func ParseBundleRef(s string) (BundleRef, error) {
	n, err := reference.ParseNamed(s)
	if err != nil {
		return BundleRef{}, fmt.Errorf("%q: %v: %w", s, err, ErrBadBundleRef)
	}
	r := BundleRef{Host: reference.Domain(n)}
	p := reference.Path(n)
	switch i := strings.LastIndex(p, "zdt/"); {
	case p == "zdt" || i < 0 || (i > 0 && p[i-1] != '/') || strings.Contains(p[i+4:], "/"):
		return BundleRef{}, fmt.Errorf("%q: the repository %q is not [PREFIX/]zdt/NAME: %w", s, p, ErrBadBundleRef)
	default:
		r.Prefix, r.Name = strings.TrimSuffix(p[:i], "/"), p[i+4:]
	}
	if err := manifests.CheckBundleName(r.Name); err != nil {
		return BundleRef{}, fmt.Errorf("%q: %v: %w", s, err, ErrBadBundleRef)
	}
	if d, ok := n.(reference.Digested); ok {
		r.Digest = d.Digest()
		if r.Digest.Algorithm() != digest.SHA256 {
			return BundleRef{}, fmt.Errorf("%q: %w", s, bundle.ErrUnsupportedDigest)
		}
	}
	if t, ok := n.(reference.Tagged); ok && r.Digest == "" {
		r.Tag = t.Tag()
	} else if r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// Repository is the bundle's repository: [PREFIX/]zdt/NAME.
func (r BundleRef) Repository() string { return join(r.Prefix, RootRepository(r.Name)) }

// Registry is where the bundle's images are: HOST[/PREFIX].
func (r BundleRef) Registry() string { return strings.TrimSuffix(r.Host+"/"+r.Prefix, "/") }

// String is the reference, HOST/[PREFIX/]zdt/NAME:TAG or @DIGEST.
func (r BundleRef) String() string {
	if r.Digest != "" {
		return r.Host + "/" + r.Repository() + "@" + r.Digest.String()
	}
	return r.Host + "/" + r.Repository() + ":" + r.Tag
}

// Pinned is the reference by the root digest (once resolved).
func (r BundleRef) Pinned(root digest.Digest) BundleRef {
	r.Tag, r.Digest = "", root
	return r
}

// RemoteSource reads a bundle's blobs from the registry that holds it
// (bundle.BlobSource), by digest only, from the bundle's repository (which
// holds every manifest and blob of the bundle, see Placements). Nothing
// it reads is trusted: manifests are read bounded (bundle.MaxManifestSize)
// and the archive opened on it checks every digest. Requests run under
// the context it was opened with. Safe for concurrent use.
type RemoteSource struct {
	ctx    context.Context
	client orasremote.Client
	base   string // scheme://host/v2/REPOSITORY

	mu    sync.Mutex
	known map[digest.Digest]*remoteBlob
	err   error // the first request error (BlobSize cannot return it)
}

type remoteBlob struct {
	size     int64
	manifest []byte // a manifest's bytes, read once (nil for a blob)
}

// manifestAccept lists every manifest media type a bundle holds.
var manifestAccept = strings.Join([]string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
	manifests.MediaTypeDockerManifest, "application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.artifact.manifest.v1+json"}, ", ")

// errNotFound is a 404 from the registry.
var errNotFound = errors.New("not found")

// OpenRemote opens the bundle ref names in its registry: the root is
// resolved to a digest once (a tag's manifest is read and hashed; a digest
// is fetched by digest and checked), the root's signature and attestation
// manifests are read by cosign's tags (sha256-<hex>.sig, .att) and named
// by the digest of the bytes read, and bundle.OpenSource opens the rest
// through the returned RemoteSource, with opts (opts.CheckIndex sees the
// signature before the root is read). The bundle config must name ref's
// bundle. remotes gives the registry's TLS and credentials.
func OpenRemote(ctx context.Context, ref BundleRef, remotes *remote.Remotes, opts bundle.OpenOptions) (*bundle.Archive, *RemoteSource, error) {
	repo, err := remotes.Repository(ref.Host, ref.Repository())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	scheme := "https"
	if repo.PlainHTTP {
		scheme = "http"
	}
	s := &RemoteSource{ctx: ctx, client: repo.Client, base: scheme + "://" + ref.Host + "/v2/" + ref.Repository(), known: map[digest.Digest]*remoteBlob{}}
	want := ref.Tag
	if ref.Digest != "" {
		want = ref.Digest.String()
	}
	rb, mt, err := s.getManifest(want)
	if errors.Is(err, errNotFound) {
		return nil, nil, fmt.Errorf("%s: no such bundle in the registry: %w", ref, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading the bundle root: %w", ref, err)
	}
	rootDigest := digest.FromBytes(rb)
	if ref.Digest != "" && rootDigest != ref.Digest {
		return nil, nil, fmt.Errorf("%s: the registry's root hashes to %s: %w", ref, rootDigest, bundle.ErrDigestMismatch)
	}
	root := ocispec.Descriptor{MediaType: mt, Digest: rootDigest, Size: int64(len(rb))}
	s.remember(rootDigest, rb)
	var atts []ocispec.Descriptor
	tag := strings.ReplaceAll(rootDigest.String(), ":", "-")
	for _, suffix := range []string{".sig", ".att"} {
		b, mt, err := s.getManifest(tag + suffix)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: reading %s: %w", ref, tag+suffix, err)
		}
		d := digest.FromBytes(b)
		s.remember(d, b)
		atts = append(atts, ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b)),
			Annotations: map[string]string{manifests.AnnotationRefName: tag + suffix}})
	}
	a, err := bundle.OpenSource(ctx, ref.Pinned(rootDigest).String(), s, root, atts, opts)
	if err != nil {
		return nil, nil, s.explain(err)
	}
	if a.Config.Name != ref.Name {
		return nil, nil, fmt.Errorf("%s: the registry serves bundle %q there: %w", ref, a.Config.Name, bundle.ErrNotBundle)
	}
	return a, s, nil
}

// Err is the first request error the source met, if any: a blob it could
// not reach reads as missing, and this says why.
func (s *RemoteSource) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// explain adds the first request error to err (a missing blob's cause).
func (s *RemoteSource) explain(err error) error {
	if err == nil {
		return nil
	}
	if rerr := s.Err(); rerr != nil && errors.Is(err, bundle.ErrMissingBlob) {
		return fmt.Errorf("%w (the registry: %w)", err, rerr)
	}
	return err
}

// Explain is explain for callers of the archive: an error that says a
// blob is missing also says what the registry answered.
func (s *RemoteSource) Explain(err error) error { return s.explain(err) }

func (s *RemoteSource) remember(d digest.Digest, manifest []byte) {
	s.mu.Lock()
	s.known[d] = &remoteBlob{size: int64(len(manifest)), manifest: manifest}
	s.mu.Unlock()
}

func (s *RemoteSource) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// do sends a request to the repository's endpoint path (blobs/…,
// manifests/…) with the registry's client (auth, retries, TLS).
func (s *RemoteSource) do(method, path string, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(s.ctx, method, s.base+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, req.URL.Redacted(), err)
	}
	return resp, nil
}

// getManifest reads the manifest ref (a tag or digest) from the
// repository, at most bundle.MaxManifestSize bytes, and its media type
// (the content's own mediaType field, else the Content-Type).
func (s *RemoteSource) getManifest(ref string) ([]byte, string, error) {
	resp, err := s.do(http.MethodGet, "manifests/"+ref, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, "", fmt.Errorf("manifest %s: %w", ref, errNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("manifest %s: %s", ref, resp.Status)
	}
	b, err := readBounded(resp.Body, bundle.MaxManifestSize)
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", ref, err)
	}
	return b, manifestMediaType(b, resp.Header.Get("Content-Type")), nil
}

// readBounded reads r to its end, refusing more than limit bytes.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("more than %d bytes: %w", limit, bundle.ErrTooLarge)
	}
	return b, nil
}

// manifestMediaType is the media type a manifest's bytes give
// (mediaType), else the one the registry sent.
func manifestMediaType(b []byte, contentType string) string {
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(b, &m) == nil && m.MediaType != "" {
		return m.MediaType
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt
}

// BlobSize is the size of blob d as the registry says (a HEAD of the
// blob, or the manifest of that digest, read once); false when it has
// none (or could not be asked: Err says why).
func (s *RemoteSource) BlobSize(d digest.Digest) (int64, bool) {
	b, err := s.lookup(d)
	if err != nil {
		if !errors.Is(err, errNotFound) {
			s.fail(err)
		}
		return 0, false
	}
	return b.size, true
}

func (s *RemoteSource) lookup(d digest.Digest) (*remoteBlob, error) {
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("blob %q: %w", d, errNotFound)
	}
	s.mu.Lock()
	b, ok := s.known[d]
	s.mu.Unlock()
	if ok {
		return b, nil
	}
	resp, err := s.do(http.MethodHead, "blobs/"+d.String(), nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		size, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("blob %s: no size in the registry's answer", d)
		}
		b = &remoteBlob{size: size}
	case resp.StatusCode == http.StatusNotFound:
		// Manifests are served from the manifests endpoint only.
		m, _, err := s.getManifest(d.String())
		if err != nil {
			return nil, err
		}
		b = &remoteBlob{size: int64(len(m)), manifest: m}
	default:
		return nil, fmt.Errorf("blob %s: %s", d, resp.Status)
	}
	s.mu.Lock()
	s.known[d] = b
	s.mu.Unlock()
	return b, nil
}

// BlobReader reads blob d from the registry: a manifest from the bytes
// read once, any other blob through a reader that streams it (one request
// for sequential reads, a Range request where a read jumps). The bytes
// are the registry's: the caller checks the digest.
func (s *RemoteSource) BlobReader(d digest.Digest) (*io.SectionReader, error) {
	b, err := s.lookup(d)
	if err != nil {
		if !errors.Is(err, errNotFound) {
			s.fail(err)
		}
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	if b.manifest != nil {
		return io.NewSectionReader(bytes.NewReader(b.manifest), 0, b.size), nil
	}
	return io.NewSectionReader(&blobReaderAt{s: s, d: d, size: b.size}, 0, b.size), nil
}

// blobReaderAt reads one blob: sequential ReadAt calls share one response.
type blobReaderAt struct {
	s    *RemoteSource
	d    digest.Digest
	size int64

	mu   sync.Mutex
	body io.ReadCloser
	pos  int64
}

func (r *blobReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off >= r.size {
		return 0, io.EOF
	}
	if r.body == nil || off != r.pos {
		if err := r.open(off); err != nil {
			r.s.fail(err)
			return 0, err
		}
	}
	n, err := io.ReadFull(r.body, p)
	r.pos += int64(n)
	if r.pos >= r.size || err != nil {
		r.body.Close()
		r.body = nil
	}
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		if r.pos < r.size {
			return n, fmt.Errorf("blob %s: the registry's answer ended at byte %d of %d: %w", r.d, r.pos, r.size, io.ErrUnexpectedEOF)
		}
		err = io.EOF
	}
	return n, err
}

func (r *blobReaderAt) open(off int64) error {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	h := http.Header{}
	if off > 0 {
		h.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := r.s.do(http.MethodGet, "blobs/"+r.d.String(), h)
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		// The bytes must start where they were asked for: shifted bytes
		// would only be caught by the digest at the very end.
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", off)) {
			resp.Body.Close()
			return fmt.Errorf("blob %s: asked for bytes from %d, the registry answered range %q", r.d, off, cr)
		}
	case resp.StatusCode == http.StatusOK:
		// No range support: skip to off.
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			return fmt.Errorf("blob %s: skipping to byte %d: %w", r.d, off, err)
		}
	default:
		resp.Body.Close()
		return fmt.Errorf("blob %s: %s", r.d, resp.Status)
	}
	r.body, r.pos = resp.Body, off
	return nil
}
