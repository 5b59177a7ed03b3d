package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// HandlerOptions configure NewHandler. Exactly one of Store and Archives
// is set.
type HandlerOptions struct {
	// Store is the registry store to serve (what Import fills). The
	// caller closes it after the Handler.
	Store *Store
	// Archives are opened bundles to serve read-only, straight from their
	// files. The caller keeps them open until Close and closes them after.
	Archives []*bundle.Archive
	// Htpasswd is an htpasswd file (bcrypt entries); when set, its users
	// may push to and delete from Store. Anonymous clients can only read,
	// and without Htpasswd nobody can write.
	Htpasswd string
	// Logger receives access logs (Info) and errors (default: discard).
	Logger *slog.Logger
}

// Handler is the registry as an http.Handler: the OCI distribution API
// under /v2/ (distribution's handlers.App in-process, plus the referrers
// API), the file items over plain HTTP under FilesPath (ServedFiles),
// /healthz and Prometheus /metrics. Safe for concurrent use; Close
// once when done.
type Handler struct {
	// Placements are what the archives are served as (nil for a store).
	Placements []Placement

	app      *handlers.App
	driver   storagedriver.StorageDriver
	ns       distribution.Namespace
	access   *htpasswd
	readOnly bool
	logger   *slog.Logger
	metrics  *metrics
	refs     sync.Map // digest → *manifestInfo
	mux      *http.ServeMux
	store    *storeDriver // for a store: closed by Close
	st       *Store       // for a store: its placement records (files)
	files    filesCache   // for a store: its file placements
}

const instanceDriverName = "zdt-instance"

var registerOnce sync.Once

// instanceFactory hands distribution the driver instance given in its
// parameters, so the App runs over a driver built here.
type instanceFactory struct{}

func (instanceFactory) Create(_ context.Context, p map[string]any) (storagedriver.StorageDriver, error) {
	d, ok := p["instance"].(storagedriver.StorageDriver)
	if !ok {
		return nil, errors.New("no storage driver instance")
	}
	return d, nil
}

// NewHandler builds the registry over a store or archives. ctx bounds the
// lifetime of distribution's App (which keeps it): cancel it or call Close
// to stop background work.
func NewHandler(ctx context.Context, opts HandlerOptions) (h *Handler, err error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bridgeLogrus(logger)
	registerOnce.Do(func() { factory.Register(instanceDriverName, instanceFactory{}) })
	h = &Handler{logger: logger, metrics: newMetrics()}
	switch {
	case opts.Store != nil && len(opts.Archives) > 0:
		return nil, fmt.Errorf("serve either a store or archives, not both: %w", ErrNoStorage)
	case opts.Store != nil:
		sd, err := newStoreDriver(ctx, opts.Store, logger)
		if err != nil {
			return nil, err
		}
		h.driver, h.store, h.st = sd, sd, opts.Store
		defer func() {
			if err != nil {
				sd.Close()
			}
		}()
	case len(opts.Archives) > 0:
		if opts.Htpasswd != "" {
			return nil, ErrPushNeedsStore
		}
		var all [][]Placement
		for _, a := range opts.Archives {
			ps, err := Placements(ctx, a)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", a.Path(), err)
			}
			all = append(all, ps)
			h.Placements = append(h.Placements, ps...)
		}
		if h.driver, err = newArchiveDriver(opts.Archives, all, logger); err != nil {
			return nil, err
		}
	default:
		return nil, ErrNoStorage
	}
	h.readOnly = opts.Htpasswd == ""
	if !h.readOnly {
		if h.access, err = newHtpasswd(opts.Htpasswd); err != nil {
			return nil, fmt.Errorf("htpasswd file: %w", err)
		}
	}
	if h.ns, err = storage.NewRegistry(ctx, h.driver); err != nil {
		return nil, err
	}

	cfg := &configuration.Configuration{}
	purge := map[any]any{"enabled": false}
	if !h.readOnly {
		purge = map[any]any{"enabled": true, "age": "168h", "interval": "24h", "dryrun": false}
	}
	cfg.Storage = configuration.Storage{
		instanceDriverName: configuration.Parameters{"instance": h.driver},
		"maintenance":      configuration.Parameters{"uploadpurging": purge, "readonly": map[any]any{"enabled": h.readOnly}},
		"delete":           configuration.Parameters{"enabled": !h.readOnly},
		"redirect":         configuration.Parameters{"disable": true},
		"cache":            configuration.Parameters{"blobdescriptor": "inmemory"},
	}
	cfg.HTTP.Secret = randHex() + randHex()
	cfg.Catalog.MaxEntries, cfg.Tags.MaxTags = 1000, 1000 // distribution's defaults
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("starting distribution: %v", r)
			}
		}()
		h.app = handlers.NewApp(ctx, cfg)
	}()
	if err != nil {
		return nil, err
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("/healthz", h.healthz)
	h.mux.Handle("/metrics", h.metrics.handler())
	h.mux.HandleFunc("/v2/", h.serveV2)
	h.mux.HandleFunc("/v2", h.serveV2)
	h.mux.HandleFunc(FilesPath, h.serveFiles)
	return h, nil
}

// Close stops distribution's App. It does not close the archives given in
// HandlerOptions (it does close the store's kept archives).
func (h *Handler) Close() error {
	err := h.app.Shutdown()
	if h.store != nil {
		h.store.Close()
	}
	return err
}

// ServeHTTP serves the registry and writes one access log line per request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &recorder{ResponseWriter: w, status: http.StatusOK}
	route := routeOf(r.URL.Path)
	h.metrics.inFlight.Inc()
	h.mux.ServeHTTP(rw, r)
	h.metrics.inFlight.Dec()
	d := time.Since(start)
	h.metrics.observe(r.Method, route, rw.status, rw.bytes, d)
	user, _, _ := r.BasicAuth()
	h.logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("query", r.URL.RawQuery),
		slog.Int("status", rw.status), slog.Int64("bytes", rw.bytes), slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr), slog.String("user", user), slog.String("userAgent", r.UserAgent()))
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := h.driver.Stat(r.Context(), "/"); err != nil {
		h.logger.Error("health check", "err", err)
		http.Error(w, "storage unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

var (
	referrersPath = regexp.MustCompile(`^/v2/(.+)/referrers/([^/]*)$`)
	blobPath      = regexp.MustCompile(`^/v2/(.+)/blobs/([^/]+)$`)
	// repoPath matches the routes under a repository name (the name is
	// validated here: distribution answers 500 to a name too long).
	repoPath   = regexp.MustCompile(`^/v2/(.+)/(?:manifests/[^/]*|blobs/uploads/?[^/]*|blobs/[^/]*|tags/list|referrers/[^/]*)$`)
	tagPattern = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)
	// manifestPath names a manifest by tag or digest.
	manifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
)

func (h *Handler) serveV2(w http.ResponseWriter, r *http.Request) {
	// Distribution's errors of kind UNKNOWN carry the storage error as
	// detail (paths of the store among them): clients get a generic body.
	sw := &serverErrorWriter{ResponseWriter: w}
	defer sw.finish(h.logger, r)
	w = sw
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if h.readOnly && write {
		w.Header().Set("Allow", "GET, HEAD")
		writeOCIError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this registry is read-only")
		return
	}
	if h.access != nil {
		_, _, hasCreds := r.BasicAuth()
		if write || hasCreds {
			if !h.authorized(w, r) {
				return
			}
		}
	}
	if !h.validRequest(w, r) {
		return
	}
	if m := referrersPath.FindStringSubmatch(r.URL.Path); m != nil && !write {
		h.referrers(w, r, m[1], m[2])
		return
	}
	if m := blobPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodGet && m[2] != "uploads" {
		if h.serveBlob(w, r, m[1], m[2]) {
			return
		}
	}
	isManifest := strings.Contains(r.URL.Path, "/manifests/")
	if isManifest && !write {
		// Distribution refuses an OCI manifest to a client that does not
		// list OCI types in Accept; a client that lists none (or */*) gets
		// what is stored, as the spec intends.
		acc := strings.Join(r.Header.Values("Accept"), ",")
		if acc == "" || strings.Contains(acc, "*/*") {
			r.Header.Set("Accept", strings.Join([]string{
				manifests.MediaTypeOCIManifest, manifests.MediaTypeOCIIndex,
				manifests.MediaTypeDockerManifest, manifests.MediaTypeDockerManifestList,
			}, ", "))
		}
	}
	if isManifest && r.Method == http.MethodPut {
		// Referrers: say that the subject was processed (OCI-Subject), so
		// clients don't fall back to the tag schema.
		body, err := io.ReadAll(io.LimitReader(r.Body, bundle.MaxManifestSize+1))
		if err != nil {
			writeOCIError(w, http.StatusBadRequest, "MANIFEST_INVALID", "reading manifest: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var m manifestRefs
		if json.Unmarshal(body, &m) == nil && m.Subject != nil && m.Subject.Digest.Validate() == nil {
			w = &subjectWriter{ResponseWriter: w, subject: m.Subject.Digest}
		}
	}
	h.app.ServeHTTP(w, r)
}

// authorized checks Basic credentials against the htpasswd file as it is
// now (a success is cached while the file does not change: bcrypt is slow
// on purpose). On failure it writes the 401 challenge.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if ok {
		err := h.access.check(user, pass)
		if err == nil {
			return true
		}
		if !errors.Is(err, errBadCredentials) {
			h.logger.Error("checking credentials", "user", user, "err", err)
		}
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="zdt"`)
	writeOCIError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
	return false
}

// writeOCIError writes the spec's error body.
func writeOCIError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"code": code, "message": msg}}})
}

// manifestInfo is what the referrers API needs of one manifest.
type manifestInfo struct {
	subject digest.Digest
	desc    ocispec.Descriptor
}

// referrers serves GET /v2/<name>/referrers/<digest> (OCI distribution
// spec 1.1): an image index of the repository's manifests whose subject is
// digest, filtered by ?artifactType=. Never 404: no referrers is an empty
// index.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, name, dg string) {
	ctx := r.Context()
	named, err := reference.WithName(name)
	if err != nil {
		writeOCIError(w, http.StatusBadRequest, "NAME_INVALID", "invalid repository name")
		return
	}
	subject, err := digest.Parse(dg)
	if err != nil {
		writeOCIError(w, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest")
		return
	}
	found, err := h.findReferrers(ctx, named, subject)
	if err != nil {
		h.logger.Error("listing referrers", "repository", name, "subject", subject, "err", err)
		writeOCIError(w, http.StatusInternalServerError, "UNKNOWN", "listing referrers failed")
		return
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		found = slices.DeleteFunc(found, func(d ocispec.Descriptor) bool { return d.ArtifactType != at })
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: found}
	b, _ := json.Marshal(idx)
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

func (h *Handler) findReferrers(ctx context.Context, named reference.Named, subject digest.Digest) ([]ocispec.Descriptor, error) {
	found := []ocispec.Descriptor{}
	repo, err := h.ns.Repository(ctx, named)
	if err != nil {
		return found, nil
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	enum, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return nil, errors.New("manifest service can't enumerate")
	}
	err = enum.Enumerate(ctx, func(d digest.Digest) error {
		info, err := h.manifestInfo(ctx, ms, d)
		if err != nil {
			h.logger.Warn("referrers: skipping unreadable manifest", "repository", named.Name(), "digest", d, "err", err)
			return nil
		}
		if info.subject == subject {
			found = append(found, info.desc)
		}
		return nil
	})
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return nil, err
	}
	slices.SortFunc(found, func(a, b ocispec.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return found, nil
}

// manifestInfo reads a manifest once (manifests are immutable by digest).
func (h *Handler) manifestInfo(ctx context.Context, ms distribution.ManifestService, d digest.Digest) (*manifestInfo, error) {
	if v, ok := h.refs.Load(d); ok {
		return v.(*manifestInfo), nil
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	mt, payload, err := m.Payload()
	if err != nil {
		return nil, err
	}
	var refs manifestRefs
	if err := json.Unmarshal(payload, &refs); err != nil {
		return nil, err
	}
	info := &manifestInfo{desc: ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(payload)),
		ArtifactType: refs.ArtifactType, Annotations: refs.Annotations}}
	if info.desc.ArtifactType == "" && refs.Config != nil && mt == ocispec.MediaTypeImageManifest {
		info.desc.ArtifactType = refs.Config.MediaType
	}
	if refs.Subject != nil {
		info.subject = refs.Subject.Digest
	}
	h.refs.Store(d, info)
	return info, nil
}

// routeOf names the API route of a path for metrics.
func routeOf(p string) string {
	switch {
	case p == "/v2/" || p == "/v2":
		return "base"
	case p == "/v2/_catalog":
		return "catalog"
	case p == "/healthz" || p == "/metrics":
		return strings.TrimPrefix(p, "/")
	case strings.HasPrefix(p, FilesPath):
		return "files"
	case !strings.HasPrefix(p, "/v2/"):
		return "other"
	case strings.Contains(p, "/blobs/uploads"):
		return "upload"
	case referrersPath.MatchString(p):
		return "referrers"
	case strings.Contains(p, "/manifests/"):
		return "manifest"
	case strings.Contains(p, "/blobs/"):
		return "blob"
	case strings.HasSuffix(p, "/tags/list"):
		return "tags"
	}
	return "other"
}

// recorder captures the status and size of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// subjectWriter adds OCI-Subject to a successful manifest PUT.
type subjectWriter struct {
	http.ResponseWriter
	subject digest.Digest
}

func (s *subjectWriter) WriteHeader(code int) {
	if code == http.StatusCreated {
		s.Header().Set("OCI-Subject", s.subject.String())
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *subjectWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (r *recorder) ReadFrom(src io.Reader) (int64, error) { return copyPooled(writerOnly{r}, src) }

// validRequest answers 4xx to requests distribution would fail with 500:
// a repository name it can't parse (over 255 characters), a ?last= that
// is no repository name (catalog) or tag (tags list), and deleting what a kept bundle
// archive serves (which only uninstall or prune remove). It reports
// whether the request may go on.
func (h *Handler) validRequest(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if m := repoPath.FindStringSubmatch(p); m != nil {
		if _, err := reference.WithName(m[1]); err != nil {
			writeOCIError(w, http.StatusBadRequest, "NAME_INVALID", "invalid repository name: "+err.Error())
			return false
		}
	}
	if last := r.URL.Query().Get("last"); last != "" {
		switch {
		case p == "/v2/_catalog":
			if _, err := reference.WithName(last); err != nil {
				writeOCIError(w, http.StatusBadRequest, "NAME_INVALID", "last: not a repository name: "+err.Error())
				return false
			}
		case strings.HasSuffix(p, "/tags/list"):
			if !tagPattern.MatchString(last) {
				writeOCIError(w, http.StatusBadRequest, "TAG_INVALID", "last: not a tag")
				return false
			}
		}
	}
	if r.Method == http.MethodDelete && h.store != nil {
		var kept string
		if m := manifestPath.FindStringSubmatch(p); m != nil {
			if d, err := digest.Parse(m[2]); err == nil {
				kept = revisionLinkPath(m[1], d)
			} else {
				kept = path.Join(reposRoot, m[1], "_manifests/tags", m[2])
			}
		} else if m := blobPath.FindStringSubmatch(p); m != nil {
			if d, err := digest.Parse(m[2]); err == nil {
				kept = layerLinkPath(m[1], d)
			}
		}
		if kept != "" {
			if _, n := h.store.node(r.Context(), kept); n != nil {
				writeOCIError(w, http.StatusMethodNotAllowed, "UNSUPPORTED",
					"served from an installed bundle: it goes when the bundle is uninstalled or pruned")
				return false
			}
		}
	}
	return true
}

// serverErrorWriter replaces the body of a 5xx response with a generic
// one: distribution's UNKNOWN errors carry the storage error as detail,
// with the store's paths. What was replaced goes to the log (finish).
type serverErrorWriter struct {
	http.ResponseWriter
	status   int
	wrote    bool
	replaced bool
	detail   bytes.Buffer
}

const maxLoggedErrorBody = 2 << 10

func (s *serverErrorWriter) WriteHeader(code int) {
	if s.wrote {
		s.ResponseWriter.WriteHeader(code)
		return
	}
	s.wrote, s.status = true, code
	if code < 500 {
		s.ResponseWriter.WriteHeader(code)
		return
	}
	s.replaced = true
	s.Header().Del("Content-Length")
	writeOCIError(s.ResponseWriter, code, "UNKNOWN", "internal server error; the server log has the details")
}

func (s *serverErrorWriter) Write(b []byte) (int, error) {
	if !s.wrote {
		s.WriteHeader(http.StatusOK)
	}
	if s.replaced {
		if room := maxLoggedErrorBody - s.detail.Len(); room > 0 {
			s.detail.Write(b[:min(len(b), room)])
		}
		return len(b), nil
	}
	return s.ResponseWriter.Write(b)
}

func (s *serverErrorWriter) ReadFrom(src io.Reader) (int64, error) {
	return copyPooled(writerOnly{s}, src)
}

func (s *serverErrorWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *serverErrorWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// finish logs what a replaced 5xx body said.
func (s *serverErrorWriter) finish(logger *slog.Logger, r *http.Request) {
	if s.replaced {
		logger.Error("internal error", "method", r.Method, "path", r.URL.Path, "status", s.status,
			"detail", strings.TrimSpace(s.detail.String()))
	}
}
