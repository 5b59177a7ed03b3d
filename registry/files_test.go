package registry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/manifests"
)

// filesBundle builds a bundle NAME VERSION with two file items: "notes",
// 1 MiB of text zdt compresses, and "pkg.tgz", gzip data it stores as is.
// It returns the archive's path and each file's bytes by name.
func filesBundle(t testing.TB, name, version, seed string) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	var notes bytes.Buffer
	for i := 0; notes.Len() < 1<<20; i++ {
		fmt.Fprintf(&notes, "%s line %d of the release notes\n", seed, i)
	}
	rng := mrand.NewChaCha8([32]byte{byte(len(seed)), 7})
	raw := make([]byte, 200<<10)
	rng.Read(raw)
	var tgz bytes.Buffer
	zw := gzip.NewWriter(&tgz)
	zw.Write(raw)
	zw.Close()
	files := map[string][]byte{"notes": notes.Bytes(), "pkg.tgz": tgz.Bytes()}
	spec := "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: " + name + ", version: " + version + "}\ncomponents:\n  - name: c\n    files:\n"
	for n, b := range files {
		writeTestFile(t, filepath.Join(dir, n), b)
		sum := sha256.Sum256(b)
		spec += "      - {name: " + n + ", source: " + n + ", sha256: " + hex.EncodeToString(sum[:]) + ", target: /opt/" + n + "}\n"
	}
	writeTestFile(t, filepath.Join(dir, "zdt.yaml"), []byte(spec))
	ms, err := manifests.Load(filepath.Join(dir, "zdt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+"-"+version+".zdt")
	if _, err := build.Create(context.Background(), ms, build.CreateOptions{Output: p, ToolVersion: "v0.0.0-test", CacheDir: filepath.Join(dir, "cache")}); err != nil {
		t.Fatal(err)
	}
	return p, files
}

func openArchive(t testing.TB, p string) *bundle.Archive {
	t.Helper()
	a, err := bundle.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// get requests url with headers (name, value pairs).
func get(t testing.TB, method, url string, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestServeFiles: GET /files/NAME answers a file item's content —
// decompressed when zdt compressed it — with its sha256 in Digest,
// Repr-Digest and X-Checksum-Sha256, HEAD, conditional requests and Range
// (read at the offset for a file stored as is, decoded up to it for a
// compressed one); /files/ lists the files as text or JSON. Over archives
// (serve --bundle), a store with copied blobs and one with kept archives.
func TestServeFiles(t *testing.T) {
	p, files := filesBundle(t, "files", "1.0.0", "v1")
	for _, mode := range []string{"archive", "copied", "kept"} {
		t.Run(mode, func(t *testing.T) {
			srv := serveFilesOf(t, mode, p)
			checkFiles(t, srv.URL, files)
		})
	}
}

// serveFilesOf serves the bundle at p over its archive or a store.
func serveFilesOf(t *testing.T, mode, p string) *httptest.Server {
	t.Helper()
	a := openArchive(t, p)
	if mode == "archive" {
		srv, _ := serveArchives(t, a)
		return srv
	}
	s, _ := testStore(t)
	ctx := context.Background()
	if _, err := s.Import(ctx, a, ImportOptions{CopyBlobs: mode == "copied"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, a.Root.Digest); err != nil {
		t.Fatal(err)
	}
	if _, kept := s.Kept(a.Root.Digest); kept != (mode == "kept") {
		t.Fatalf("store mode %s: kept = %v", mode, kept)
	}
	srv, _ := serveStore(t, s, "")
	return srv
}

func checkFiles(t *testing.T, base string, files map[string][]byte) {
	t.Helper()
	for name, want := range files {
		sum := sha256.Sum256(want)
		resp, got, err := get(t, http.MethodGet, base+"/files/"+name)
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
			t.Fatalf("GET /files/%s: %v %v, %d bytes (want %d)", name, err, resp.Status, len(got), len(want))
		}
		h := resp.Header
		if h.Get("X-Checksum-Sha256") != hex.EncodeToString(sum[:]) || h.Get("Digest") != "sha-256="+base64.StdEncoding.EncodeToString(sum[:]) ||
			h.Get("Repr-Digest") != "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":" ||
			h.Get("Content-Type") != "application/octet-stream" || h.Get("Accept-Ranges") != "bytes" {
			t.Errorf("GET /files/%s headers: %v", name, h)
		}
		resp, body, err := get(t, http.MethodHead, base+"/files/"+name)
		if err != nil || resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != int64(len(want)) {
			t.Errorf("HEAD /files/%s: %v %v, length %d, body %d", name, err, resp.Status, resp.ContentLength, len(body))
		}
		etag := h.Get("ETag")
		if resp, _, _ := get(t, http.MethodGet, base+"/files/"+name, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET /files/%s If-None-Match its ETag: %s", name, resp.Status)
		}
		n := len(want)
		for _, r := range []struct {
			header   string
			from, to int // want[from:to]
		}{
			{"bytes=1000-1999", 1000, 2000},
			{"bytes=0-99", 0, 100},
			{fmt.Sprintf("bytes=%d-", n-70000), n - 70000, n}, // a resumed download: to the end, checked
			{"bytes=-100", n - 100, n},
		} {
			resp, got, err := get(t, http.MethodGet, base+"/files/"+name, "Range", r.header)
			if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, want[r.from:r.to]) {
				t.Errorf("GET /files/%s Range %s: %v %v, %d bytes, want %d", name, r.header, err, resp.Status, len(got), r.to-r.from)
			}
		}
	}
	// Several ranges: parts for a file stored as is, the whole file for a
	// compressed one (each range would decode from the start).
	resp, got, err := get(t, http.MethodGet, base+"/files/pkg.tgz", "Range", "bytes=0-9,100-109")
	if err != nil || resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") {
		t.Errorf("two ranges of a stored file: %v %v", err, resp.Header)
	}
	resp, got, err = get(t, http.MethodGet, base+"/files/notes", "Range", "bytes=0-9,100-109")
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, files["notes"]) {
		t.Errorf("two ranges of a compressed file: %v %v, %d bytes", err, resp.Status, len(got))
	}

	// The listing, as text and JSON.
	resp, got, err = get(t, http.MethodGet, base+"/files/")
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /files/: %v %v", err, resp.Status)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "notes ") || !strings.HasPrefix(lines[1], "pkg.tgz ") {
		t.Errorf("listing:\n%s", got)
	}
	resp, got, err = get(t, http.MethodGet, base+"/files/", "Accept", "application/json")
	var l struct {
		Files []struct {
			Name, Version, URL string
			Size               int64
			Digest             digest.Digest
			Compressed         bool
		}
	}
	if err != nil || json.Unmarshal(got, &l) != nil || len(l.Files) != 2 {
		t.Fatalf("JSON listing: %v\n%s", err, got)
	}
	for _, f := range l.Files {
		if f.Size != int64(len(files[f.Name])) || f.Digest != digest.FromBytes(files[f.Name]) || f.URL != "/files/"+f.Name ||
			f.Version != "1.0.0" || f.Compressed != (f.Name == "notes") {
			t.Errorf("JSON listing entry %+v", f)
		}
	}
	if resp, _, _ := get(t, http.MethodGet, base+"/files"); resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/files/" {
		t.Errorf("GET /files: %s at %s", resp.Status, resp.Request.URL)
	}
}

// TestServeFilesHostileNames: names are looked up among the served files,
// never used as paths: traversal, encoded slashes, unknown names and
// versions get 404 (or a redirect to a cleaned path that is no file), other
// methods 405.
func TestServeFilesHostileNames(t *testing.T) {
	p, _ := filesBundle(t, "files", "1.0.0", "v1")
	srv := serveFilesOf(t, "copied", p)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{
		"/files/nope", "/files/notes/", "/files/notes?version=9.9.9", "/files/../v2/", "/files/%2e%2e/%2e%2e/etc/passwd",
		"/files/..%2f..%2fetc%2fpasswd", "/files/notes%00", "/files/" + strings.Repeat("a", 5000), "/files//etc/passwd",
		"/files/docker/registry/v2/blobs", "/files/NOTES",
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if req == nil {
			req, _ = http.NewRequest(http.MethodGet, srv.URL+"/files/x", nil)
			req.URL.RawPath, req.URL.Path = path, path
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound:
		case resp.StatusCode/100 == 3 && !strings.HasPrefix(resp.Header.Get("Location"), "/files/notes"):
		default:
			t.Errorf("GET %s: %s %q", path, resp.Status, body)
		}
		if bytes.Contains(body, []byte("docker/registry")) || bytes.Contains(body, []byte(os.TempDir())) {
			t.Errorf("GET %s: the body names a storage path: %q", path, body)
		}
	}
	for _, m := range []string{http.MethodPut, http.MethodPost, http.MethodDelete} {
		resp, _, err := get(t, m, srv.URL+"/files/notes")
		if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /files/notes: %v %v", m, err, resp.Status)
		}
	}
}

// TestServeFilesOfServedBundlesOnly: a store serves the files of the
// bundle it serves now: after an upgrade the new content, and the old
// version's file (still in the store for rollback) is neither listed nor
// served; two bundles served side by side (a delta and its base) list
// both versions, the higher one the default.
func TestServeFilesOfServedBundlesOnly(t *testing.T) {
	ctx := context.Background()
	p1, _ := filesBundle(t, "files", "1.0.0", "v1")
	p2, files2 := filesBundle(t, "files", "1.10.0", "v2")
	a1, a2 := openArchive(t, p1), openArchive(t, p2)
	s, _ := testStore(t)
	for _, a := range []*bundle.Archive{a1, a2} {
		if _, err := s.Import(ctx, a, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Activate(ctx, a2.Root.Digest); err != nil {
		t.Fatal(err)
	}
	srv, _ := serveStore(t, s, "")
	_, got, _ := get(t, http.MethodGet, srv.URL+"/files/notes")
	if !bytes.Equal(got, files2["notes"]) {
		t.Fatalf("after the upgrade /files/notes is not v2's (%d bytes)", len(got))
	}
	if resp, _, _ := get(t, http.MethodGet, srv.URL+"/files/notes?version=1.0.0"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the previous generation's file is served: %s", resp.Status)
	}
	if _, l, _ := get(t, http.MethodGet, srv.URL+"/files/"); strings.Contains(string(l), "1.0.0") {
		t.Fatalf("listing names the previous generation:\n%s", l)
	}

	srv2, _ := serveArchives(t, a1, a2)
	_, l, _ := get(t, http.MethodGet, srv2.URL+"/files/")
	lines := strings.Split(strings.TrimSpace(string(l)), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "1.10.0") || !strings.Contains(lines[1], "/files/notes?version=1.0.0") {
		t.Fatalf("listing of two served bundles:\n%s", l)
	}
	if _, got, _ := get(t, http.MethodGet, srv2.URL+"/files/notes"); !bytes.Equal(got, files2["notes"]) {
		t.Fatal("the default version is not the highest")
	}
}

// TestServeFilesCutsDamagedContent: a file whose bytes in the archive were
// damaged (served with serve --bundle, which hashes nothing up front) is
// never delivered whole: the response to the end of the file is cut
// before its last bytes, so the client sees a truncated transfer.
func TestServeFilesCutsDamagedContent(t *testing.T) {
	p, files := filesBundle(t, "files", "1.0.0", "v1")
	a := openArchive(t, p)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	srvOK, h := serveArchives(t, a)
	_ = srvOK
	served, err := h.ServedFiles(context.Background())
	if err != nil || len(served) != 2 {
		t.Fatalf("ServedFiles: %v %v", served, err)
	}
	for _, f := range served {
		t.Run(f.Name, func(t *testing.T) {
			sr, err := a.BlobReader(f.content.Layer.Digest)
			if err != nil {
				t.Fatal(err)
			}
			layer, _ := io.ReadAll(sr)
			off := bytes.Index(data, layer)
			bad := bytes.Clone(data)
			bad[off+len(layer)/2] ^= 0x01
			ba, err := bundle.OpenReader(context.Background(), bytes.NewReader(bad), int64(len(bad)))
			if err != nil {
				t.Fatal(err)
			}
			srv, _ := serveArchives(t, ba)
			resp, got, err := get(t, http.MethodGet, srv.URL+"/files/"+f.Name)
			if err == nil || bytes.Equal(got, files[f.Name]) || len(got) >= len(files[f.Name]) {
				t.Fatalf("damaged %s: %v, %d of %d bytes delivered (status %v)", f.Name, err, len(got), len(files[f.Name]), resp)
			}
		})
	}
}

// TestCompareVersions orders versions number by number.
func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.10.0", "1.9.0", 1}, {"1.0.0", "1.0.0", 0}, {"1.0.0-rc1", "1.0.0", 1}, {"2", "10", -1},
		{"v1.2", "v1.10", -1}, {"1.02", "1.2", 0}, {"a", "b", -1}, {"", "1", -1},
	} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
