package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/remote"
)

// The tests in this file attack `bundle create` the way a compromised
// upstream would (issue 17): each serves crafted content from an
// in-process server and expects a prompt, clear failure or the right
// result at a bounded cost.

// createErr runs Create with a deadline and returns its error.
func createErr(t *testing.T, dir, body string, opts CreateOptions) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	spec := writeSpec(t, dir, body)
	opts.Output = filepath.Join(dir, "out.zdt")
	_, err := Create(ctx, spec, opts)
	if ctx.Err() != nil {
		t.Fatalf("create did not finish in time: %v", err)
	}
	return err
}

func chartSpec(source, name, version string) string {
	return fmt.Sprintf("components:\n  - name: apps\n    charts:\n      - name: %s\n        source: %s\n        version: %s\n", name, source, version)
}

// TestChartDependencyLoop: a depends on b depends on a, served by one Helm
// repository; the create fails naming the chain instead of growing
// without end.
func TestChartDependencyLoop(t *testing.T) {
	repo := newHelmRepo(t)
	src := t.TempDir()
	for _, c := range [][2]string{{"a", "b"}, {"b", "a"}} {
		d := chartDir(t, filepath.Join(src, c[0]), map[string]string{
			"Chart.yaml": fmt.Sprintf("apiVersion: v2\nname: %s\nversion: 1.0.0\ndependencies:\n  - name: %s\n    version: 1.0.0\n    repository: %s\n", c[0], c[1], repo.srv.URL),
		})
		repo.add(c[0], "1.0.0", packageDir(t, d))
	}
	err := createErr(t, t.TempDir(), chartSpec(repo.srv.URL, "a", "1.0.0"), CreateOptions{})
	if !errors.Is(err, bundle.ErrChartCycle) || !strings.Contains(err.Error(), "a 1.0.0 → b 1.0.0 → a 1.0.0") {
		t.Fatalf("err = %v, want a loop naming a 1.0.0 → b 1.0.0 → a 1.0.0", err)
	}
}

// TestChartDependencyHosts: a chart's dependency may only come from a host
// the spec (or AllowChartRepos) allows.
func TestChartDependencyHosts(t *testing.T) {
	other := newHelmRepo(t)
	sub := chartDir(t, filepath.Join(t.TempDir(), "sub"), map[string]string{"Chart.yaml": "apiVersion: v2\nname: sub\nversion: 1.0.0\n"})
	other.add("sub", "1.0.0", packageDir(t, sub))
	var otherHits atomic.Int32
	inner := other.srv.Config.Handler
	other.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { otherHits.Add(1); inner.ServeHTTP(w, r) })

	repo := newHelmRepo(t)
	web := chartDir(t, filepath.Join(t.TempDir(), "web"), map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\ndependencies:\n  - name: sub\n    version: 1.0.0\n    repository: " + other.srv.URL + "\n",
	})
	repo.add("web", "1.0.0", packageDir(t, web))

	err := createErr(t, t.TempDir(), chartSpec(repo.srv.URL, "web", "1.0.0"), CreateOptions{})
	if !errors.Is(err, bundle.ErrChartRepoNotAllowed) || !strings.Contains(err.Error(), other.srv.Listener.Addr().String()) {
		t.Fatalf("err = %v, want the dependency's host refused", err)
	}
	if otherHits.Load() != 0 {
		t.Fatalf("the refused host got %d requests", otherHits.Load())
	}
	if err := createErr(t, t.TempDir(), chartSpec(repo.srv.URL, "web", "1.0.0"), CreateOptions{AllowChartRepos: []string{other.srv.URL}}); err != nil {
		t.Fatalf("with --allow-chart-repo: %v", err)
	}

	// Plain http only where the spec, the registry config or loopback says so.
	c := &creator{spec: writeSpec(t, t.TempDir(), chartSpec("https://charts.example", "web", "1.0.0")),
		opts: CreateOptions{AllowChartRepos: []string{"mirror.example", "http://plain.example"}}, remotes: remote.New(nil, 4)}
	if err := c.chartRepos(); err != nil {
		t.Fatal(err)
	}
	for repo, ok := range map[string]bool{
		"https://charts.example/stable": true, "oci://charts.example/x": true, "http://charts.example": false,
		"https://mirror.example": true, "http://mirror.example": false, "http://plain.example": true,
		"https://evil.example": false, "http://127.0.0.1:1": false,
	} {
		if err := c.checkDepRepo(repo); (err == nil) != ok {
			t.Errorf("%s: err = %v, want allowed %v", repo, err, ok)
		}
	}
}

// evilRegistry is a minimal OCI distribution API serving whatever the test
// puts in it, counting GETs per path; handle, if set, may answer a request
// first (returning true).
type evilRegistry struct {
	srv       *httptest.Server
	host      string
	mu        sync.Mutex
	manifests map[string]evilObj // by tag and by digest
	blobs     map[digest.Digest][]byte
	gets      countMap
	handle    func(w http.ResponseWriter, r *http.Request) bool
}

type evilObj struct {
	mediaType string
	raw       []byte
}

func newEvilRegistry(t testing.TB) *evilRegistry {
	r := &evilRegistry{manifests: map[string]evilObj{}, blobs: map[digest.Digest][]byte{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	r.host = r.srv.Listener.Addr().String()
	return r
}

func (r *evilRegistry) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method == http.MethodGet {
		r.gets.add(req.URL.Path)
	}
	if r.handle != nil && r.handle(w, req) {
		return
	}
	p := req.URL.Path
	if p == "/v2/" {
		return
	}
	i := strings.LastIndex(p, "/")
	ref := p[i+1:]
	r.mu.Lock()
	var o evilObj
	var ok bool
	switch {
	case strings.HasSuffix(p[:i], "/manifests"):
		o, ok = r.manifests[ref]
	case strings.HasSuffix(p[:i], "/blobs"):
		var b []byte
		b, ok = r.blobs[digest.Digest(ref)]
		o = evilObj{mediaType: "application/octet-stream", raw: b}
	}
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Type", o.mediaType)
	w.Header().Set("Docker-Content-Digest", digest.FromBytes(o.raw).String())
	w.Header().Set("Content-Length", fmt.Sprint(len(o.raw)))
	if req.Method == http.MethodGet {
		w.Write(o.raw)
	}
}

func (r *evilRegistry) putManifest(mediaType string, raw []byte, tags ...string) ocispec.Descriptor {
	d := content.NewDescriptorFromBytes(mediaType, raw)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.manifests[d.Digest.String()] = evilObj{mediaType, raw}
	for _, t := range tags {
		r.manifests[t] = evilObj{mediaType, raw}
	}
	return d
}

func (r *evilRegistry) putBlob(mediaType string, b []byte) ocispec.Descriptor {
	d := content.NewDescriptorFromBytes(mediaType, b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs[d.Digest] = b
	return d
}

// putImage stores a small image (config and one layer) and returns its
// manifest's descriptor.
func (r *evilRegistry) putImage(t testing.TB, layer []byte, tags ...string) ocispec.Descriptor {
	cfg := r.putBlob(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	l := r.putBlob(ocispec.MediaTypeImageLayer, layer)
	raw, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{l}})
	if err != nil {
		t.Fatal(err)
	}
	return r.putManifest(ocispec.MediaTypeImageManifest, raw, tags...)
}

func (r *evilRegistry) ref(repoTag string) string { return r.host + "/" + repoTag }

func rawIndex(t testing.TB, children []ocispec.Descriptor) []byte {
	b, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: children})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDuplicateManifestsFetchedOnce: an index whose 19,000 entries point
// at one manifest, and an index of such indexes, fetch each manifest once;
// a graph over the caps fails naming the limit.
func TestDuplicateManifestsFetchedOnce(t *testing.T) {
	reg := newEvilRegistry(t)
	img := reg.putImage(t, []byte("layer"))
	wide := make([]ocispec.Descriptor, 19000)
	for i := range wide {
		wide[i] = img
	}
	inner := reg.putManifest(ocispec.MediaTypeImageIndex, rawIndex(t, wide))
	outer := make([]ocispec.Descriptor, 50)
	for i := range outer {
		outer[i] = inner
	}
	reg.putManifest(ocispec.MediaTypeImageIndex, rawIndex(t, outer), "nested")

	dir := t.TempDir()
	start := time.Now()
	res := createIn(t, dir, "dup", writeSpec(t, dir, imagesSpec(reg.ref("app/img:nested"))), CreateOptions{})
	if len(res.Items) != 1 {
		t.Fatalf("items %v", res.Items)
	}
	for _, d := range []digest.Digest{img.Digest, inner.Digest} {
		if n := reg.gets.get("/v2/app/img/manifests/" + d.String()); n != 1 {
			t.Errorf("manifest %s fetched %d times, want once", d, n)
		}
	}
	t.Logf("nested 50 × 19,000 entries: %s", time.Since(start))

	t.Run("too many references", func(t *testing.T) {
		var many []ocispec.Descriptor
		for i := range 6 { // six distinct wide indexes: 114,000 entries
			w := append([]ocispec.Descriptor(nil), wide...)
			w[0].Annotations = map[string]string{"n": fmt.Sprint(i)}
			many = append(many, reg.putManifest(ocispec.MediaTypeImageIndex, rawIndex(t, w)))
		}
		reg.putManifest(ocispec.MediaTypeImageIndex, rawIndex(t, many), "many")
		err := createErr(t, t.TempDir(), imagesSpec(reg.ref("app/img:many")), CreateOptions{})
		if !errors.Is(err, ErrTooManyManifests) || !strings.Contains(err.Error(), reg.ref("app/img:many")) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("too many manifests", func(t *testing.T) {
		var many []ocispec.Descriptor
		for i := range MaxManifestsPerItem + 1 {
			one := img
			one.Annotations = map[string]string{"n": fmt.Sprint(i)}
			many = append(many, reg.putManifest(ocispec.MediaTypeImageIndex, rawIndex(t, []ocispec.Descriptor{one})))
		}
		reg.putManifest(ocispec.MediaTypeImageIndex, rawIndex(t, many), "distinct")
		err := createErr(t, t.TempDir(), imagesSpec(reg.ref("app/img:distinct")), CreateOptions{})
		if !errors.Is(err, ErrTooManyManifests) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestStalledSources: a server that never answers, or trickles its body,
// fails the create (after retries) naming the source, within the stall
// timeout rather than never.
func TestStalledSources(t *testing.T) {
	data := []byte(strings.Repeat("x", 4096))
	sum := sha256.Sum256(data)
	cases := map[string]http.HandlerFunc{
		"trickle": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			for _, b := range data {
				if _, err := w.Write([]byte{b}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		},
		"no answer": func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1); h(w, r) }))
			defer srv.Close()
			u := srv.URL + "/tool"
			start := time.Now()
			err := createErr(t, t.TempDir(), fmt.Sprintf("components:\n  - name: host\n    files:\n      - source: %s\n        sha256: %s\n        target: /usr/local/bin/tool\n", u, hex.EncodeToString(sum[:])),
				CreateOptions{StallTimeout: 300 * time.Millisecond})
			var se *remote.StallError
			if !errors.As(err, &se) && !strings.Contains(fmt.Sprint(err), "timeout") {
				t.Fatalf("err = %v, want a stall", err)
			}
			if !strings.Contains(err.Error(), u) {
				t.Errorf("error %q does not name %s", err, u)
			}
			if hits.Load() < 2 {
				t.Errorf("%d requests: not retried", hits.Load())
			}
			t.Logf("failed after %s and %d requests: %v", time.Since(start), hits.Load(), err)
		})
	}
}

// TestChartIndexDigests: an index entry without a digest is used with a
// warning, or refused with RequireChartDigests; a digest mismatch says it
// was index.yaml that gave the digest.
func TestChartIndexDigests(t *testing.T) {
	web := packageDir(t, chartDir(t, filepath.Join(t.TempDir(), "web"), map[string]string{"Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n"}))
	repo := newHelmRepo(t)
	repo.charts["web-1.0.0.tgz"] = web
	entry := func(digest string) string {
		return "  web:\n  - apiVersion: v2\n    name: web\n    version: 1.0.0\n    urls: [charts/web-1.0.0.tgz]\n" + digest
	}

	repo.entries = []string{entry("")}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := createErr(t, t.TempDir(), chartSpec(repo.srv.URL, "web", "1.0.0"), CreateOptions{Logger: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "no digest") || !strings.Contains(logs.String(), repo.srv.URL+"/index.yaml") {
		t.Errorf("no warning naming the index: %s", logs.String())
	}
	err := createErr(t, t.TempDir(), chartSpec(repo.srv.URL, "web", "1.0.0"), CreateOptions{RequireChartDigests: true})
	if !errors.Is(err, bundle.ErrNoChartDigest) {
		t.Fatalf("RequireChartDigests: err = %v", err)
	}

	bad := strings.Repeat("ab", 32)
	repo.entries = []string{entry("    digest: " + bad + "\n")}
	err = createErr(t, t.TempDir(), chartSpec(repo.srv.URL, "web", "1.0.0"), CreateOptions{})
	var de *SourceDigestError
	if !errors.As(err, &de) || de.Origin != repo.srv.URL+"/index.yaml" || !strings.Contains(err.Error(), repo.srv.URL+"/index.yaml says "+bad) ||
		strings.Contains(err.Error(), "the spec") {
		t.Fatalf("err = %v", err)
	}
}

// countMap counts strings, safely for concurrent use.
type countMap struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *countMap) add(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]int{}
	}
	s.m[k]++
}

func (s *countMap) get(k string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

// TestPoisonedCacheIsRefetched: every blob of a warm cache is replaced by
// bytes of the same size (a planted cache). The next create must not sign
// them: it finds them while writing the archive (or when it reads them),
// drops them, fetches them again and writes the same archive as before.
func TestPoisonedCacheIsRefetched(t *testing.T) {
	reg := newEvilRegistry(t)
	layer := bytes.Repeat([]byte("layer bytes "), 8<<10)
	reg.putImage(t, layer, "1")
	repo := newHelmRepo(t)
	repo.add("web", "1.0.0", packageDir(t, chartDir(t, filepath.Join(t.TempDir(), "web"), map[string]string{"Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n"})))
	data := bytes.Repeat([]byte("a file from the web\n"), 4<<10)
	sum := sha256.Sum256(data)
	var fileGets atomic.Int32
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fileGets.Add(1); w.Write(data) }))
	defer files.Close()

	dir := t.TempDir()
	spec := writeSpec(t, dir, fmt.Sprintf(`components:
  - name: apps
    images:
      - %s
    charts:
      - name: web
        source: %s
        version: 1.0.0
    files:
      - source: %s/tool
        sha256: %s
        target: /usr/local/bin/tool
`, reg.ref("app/img:1"), repo.srv.URL, files.URL, hex.EncodeToString(sum[:])))
	cache := filepath.Join(dir, "cache")
	first := createIn(t, dir, "first", spec, CreateOptions{CacheDir: cache})

	for _, name := range []string{"flip one byte of every blob", "only the layers"} {
		t.Run(name, func(t *testing.T) {
			blobs := cacheBlobs(t, cache)
			for _, d := range blobs {
				p := filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if name == "only the layers" && !bytes.Equal(b, layer) && len(b) < 1000 {
					continue
				}
				b[len(b)/2] ^= 0xff
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			layerGets := reg.gets.get("/v2/app/img/blobs/" + digest.FromBytes(layer).String())
			chartGets, fGets := repo.gets.Load(), fileGets.Load()
			var signed []digest.Digest
			res := createIn(t, dir, "again", spec, CreateOptions{CacheDir: cache, ArchiveWritten: func(_ context.Context, d digest.Digest, _ int64) error {
				signed = append(signed, d)
				return nil
			}})
			if res.Digest != first.Digest {
				t.Fatalf("archive %s differs from the clean create's %s", res.Digest, first.Digest)
			}
			if len(signed) != 1 || signed[0] != first.Digest {
				t.Fatalf("signed %v, want only the clean archive %s", signed, first.Digest)
			}
			if reg.gets.get("/v2/app/img/blobs/"+digest.FromBytes(layer).String()) != layerGets+1 {
				t.Error("the poisoned layer was not fetched again")
			}
			if name == "flip one byte of every blob" && (repo.gets.Load() == chartGets || fileGets.Load() == fGets) {
				t.Errorf("chart downloads %d → %d, file downloads %d → %d: a poisoned entry was used", chartGets, repo.gets.Load(), fGets, fileGets.Load())
			}
			cacheBlobs(t, cache) // every entry matches its name again
		})
	}
}

// TestCacheSymlinkEscape: a cache whose blobs/sha256 (or blobs) is a
// symlink out of it must not receive blobs outside the cache.
func TestCacheSymlinkEscape(t *testing.T) {
	reg := newEvilRegistry(t)
	reg.putImage(t, []byte("layer"), "1")
	for _, link := range []string{"blobs/sha256", "blobs"} {
		t.Run(link, func(t *testing.T) {
			dir := t.TempDir()
			outside := filepath.Join(dir, "outside")
			cache := filepath.Join(dir, "cache")
			if err := os.MkdirAll(filepath.Join(outside, "sha256"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(cache, link)), 0o755); err != nil {
				t.Fatal(err)
			}
			target := outside
			if link == "blobs/sha256" {
				target = filepath.Join(outside, "sha256")
			}
			if err := os.Symlink(target, filepath.Join(cache, link)); err != nil {
				t.Fatal(err)
			}
			err := createErr(t, dir, imagesSpec(reg.ref("app/img:1")), CreateOptions{CacheDir: cache})
			if err == nil {
				t.Fatal("create used a cache whose blobs are outside it")
			}
			ents, _ := os.ReadDir(filepath.Join(outside, "sha256"))
			if len(ents) != 0 {
				t.Fatalf("%d files written outside the cache", len(ents))
			}
			t.Logf("err = %v", err)
		})
	}
}

// TestUntrustedSizes: a descriptor that claims 2^62 bytes, an endless
// file with a size in the spec, and an endless or oversized index.yaml
// fail at once, reading no more than the declared size + 1.
func TestUntrustedSizes(t *testing.T) {
	endless := func(served *atomic.Int64) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			buf := bytes.Repeat([]byte("z"), 32<<10)
			for r.Context().Err() == nil {
				n, err := w.Write(buf)
				served.Add(int64(n))
				if err != nil || served.Load() > 1<<30 {
					return
				}
			}
		}
	}
	t.Run("descriptor claims 2^62 bytes", func(t *testing.T) {
		reg := newEvilRegistry(t)
		var served atomic.Int64
		reg.handle = func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
				endless(&served)(w, r)
				return true
			}
			return false
		}
		cfg := reg.putBlob(ocispec.MediaTypeImageConfig, []byte("{}"))
		huge := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("huge"), Size: 1 << 62}
		raw, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{huge}})
		reg.putManifest(ocispec.MediaTypeImageManifest, raw, "huge")
		err := createErr(t, t.TempDir(), imagesSpec(reg.ref("app/img:huge")), CreateOptions{})
		if !errors.Is(err, bundle.ErrNoSpace) || !strings.Contains(err.Error(), huge.Digest.String()) {
			t.Fatalf("err = %v", err)
		}
		if served.Load() > 0 {
			t.Fatalf("%d bytes fetched of a blob that cannot fit", served.Load())
		}
	})
	t.Run("endless file with a size", func(t *testing.T) {
		var served atomic.Int64
		srv := httptest.NewServer(endless(&served))
		defer srv.Close()
		dir := t.TempDir()
		err := createErr(t, dir, fmt.Sprintf("components:\n  - name: host\n    files:\n      - source: %s/f\n        sha256: %s\n        size: 100000\n        target: /f\n", srv.URL, strings.Repeat("0", 64)),
			CreateOptions{CacheDir: filepath.Join(dir, "cache")})
		if !errors.Is(err, bundle.ErrSizeMismatch) || !strings.Contains(err.Error(), srv.URL+"/f") {
			t.Fatalf("err = %v", err)
		}
		if n := served.Load(); n > 64<<20 {
			t.Fatalf("the server got %d bytes out before the create stopped reading", n)
		}
	})
	t.Run("index.yaml over the cap", func(t *testing.T) {
		var served atomic.Int64
		srv := httptest.NewServer(endless(&served))
		defer srv.Close()
		err := createErr(t, t.TempDir(), chartSpec(srv.URL, "web", "1.0.0"), CreateOptions{MaxChartIndexSize: 1 << 20})
		if !errors.Is(err, bundle.ErrTooLarge) || !strings.Contains(err.Error(), srv.URL+"/index.yaml") {
			t.Fatalf("err = %v", err)
		}
		big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(200<<20))
			w.Write([]byte("apiVersion: v1\n"))
		}))
		defer big.Close()
		err = createErr(t, t.TempDir(), chartSpec(big.URL, "web", "1.0.0"), CreateOptions{})
		if !errors.Is(err, bundle.ErrTooLarge) {
			t.Fatalf("a 200 MB index.yaml: err = %v", err)
		}
	})
}
