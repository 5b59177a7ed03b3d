package build

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/remote"
)

// writeSpec writes zdt.yaml (body appended to a fixed header) and loads it.
func writeSpec(t testing.TB, dir, body string) *manifests.Spec {
	t.Helper()
	p := filepath.Join(dir, "zdt.yaml")
	writeFile(t, p, []byte("apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: fetch\n  version: 1.0.0\n"+body))
	s, err := manifests.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func imagesSpec(refs ...string) string {
	var b strings.Builder
	b.WriteString("components:\n  - name: app\n    images:\n")
	for _, r := range refs {
		fmt.Fprintf(&b, "      - %s\n", r)
	}
	return b.String()
}

// createIn runs Create into dir/out/NAME.zdt and verifies the archive.
func createIn(t testing.TB, dir, name string, spec *manifests.Spec, opts CreateOptions) CreateResult {
	t.Helper()
	opts.Output = filepath.Join(dir, "out", name+".zdt")
	if err := os.MkdirAll(filepath.Dir(opts.Output), 0o755); err != nil {
		t.Fatal(err)
	}
	if opts.ToolVersion == "" {
		opts.ToolVersion = "v0.0.0-test"
	}
	res, err := Create(context.Background(), spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	a, err := bundle.Open(context.Background(), res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Verify(context.Background(), bundle.VerifyOptions{}); err != nil {
		t.Fatalf("created archive does not verify: %v", err)
	}
	return res
}

func indexDigests(t testing.TB, idx v1.ImageIndex) (all []string, perPlatform map[string][]string) {
	t.Helper()
	perPlatform = map[string][]string{}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigName()
		ls, _ := img.Layers()
		p := m.Platform.OS + "/" + m.Platform.Architecture
		perPlatform[p] = append(perPlatform[p], cfg.String())
		for _, l := range ls {
			d, _ := l.Digest()
			perPlatform[p] = append(perPlatform[p], d.String())
		}
		all = append(all, perPlatform[p]...)
	}
	return all, perPlatform
}

func TestCreateFromRegistry(t *testing.T) {
	const user, pass = "zdt", "s3cret"
	cases := []struct {
		name     string
		opts     testregistry.Options
		auth     testregistry.Auth
		registry func(r *testregistry.Registry) remote.RegistryHost
		docker   bool // credentials from a Docker config instead
		wantErr  string
	}{
		{name: "plain http", registry: func(*testregistry.Registry) remote.RegistryHost { return remote.RegistryHost{} }},
		{name: "basic auth from registry config", opts: testregistry.Options{Username: user, Password: pass}, auth: testregistry.Auth{Username: user, Password: pass},
			registry: func(*testregistry.Registry) remote.RegistryHost {
				return remote.RegistryHost{Username: user, Password: pass}
			}},
		{name: "basic auth from docker config", opts: testregistry.Options{Username: user, Password: pass}, auth: testregistry.Auth{Username: user, Password: pass},
			registry: func(*testregistry.Registry) remote.RegistryHost { return remote.RegistryHost{} }, docker: true},
		{name: "wrong password", opts: testregistry.Options{Username: user, Password: pass}, auth: testregistry.Auth{Username: user, Password: pass},
			registry: func(*testregistry.Registry) remote.RegistryHost {
				return remote.RegistryHost{Username: user, Password: "nope"}
			}, wantErr: "401"},
		{name: "tls with ca", opts: testregistry.Options{TLS: true},
			registry: func(r *testregistry.Registry) remote.RegistryHost { return remote.RegistryHost{CA: r.CAFile} }},
		{name: "tls insecure", opts: testregistry.Options{TLS: true},
			registry: func(r *testregistry.Registry) remote.RegistryHost { return remote.RegistryHost{Insecure: true} }},
		{name: "tls unknown ca", opts: testregistry.Options{TLS: true},
			registry: func(r *testregistry.Registry) remote.RegistryHost {
				f := false
				return remote.RegistryHost{PlainHTTP: &f}
			}, wantErr: "certificate"},
		{name: "tls, auth and ca", opts: testregistry.Options{TLS: true, Username: user, Password: pass}, auth: testregistry.Auth{Username: user, Password: pass},
			registry: func(r *testregistry.Registry) remote.RegistryHost {
				return remote.RegistryHost{CA: r.CAFile, Username: user, Password: pass}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := testregistry.New(t, tc.opts)
			shared := testregistry.RandomLayers(t, 1, 8<<10)
			idx := testregistry.RandomIndex(t, []string{"linux/amd64", "linux/arm64"}, shared, 1, 4<<10)
			idxDigest := reg.PushIndex(t, tc.auth, "app/web:1.0", idx)
			img := testregistry.RandomIndex(t, []string{"linux/amd64"}, shared, 1, 4<<10)
			reg.PushIndex(t, tc.auth, "app/tools:2.0", img)

			dir := t.TempDir()
			if tc.docker {
				cfgDir := filepath.Join(dir, "docker")
				auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
				writeFile(t, filepath.Join(cfgDir, "config.json"), []byte(`{"auths":{"`+reg.Host+`":{"auth":"`+auth+`"}}}`))
				t.Setenv("DOCKER_CONFIG", cfgDir)
			} else {
				t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "no-docker-config"))
			}
			spec := writeSpec(t, dir, imagesSpec(reg.Ref("app/web:1.0"), reg.Ref("app/tools:2.0")))
			opts := CreateOptions{
				Output: filepath.Join(dir, "out.zdt"), ToolVersion: "v0.0.0-test", CacheDir: filepath.Join(dir, "cache"),
				Registries: &remote.RegistryConfig{Registries: map[string]remote.RegistryHost{reg.Host: tc.registry(reg)}},
			}
			res, err := Create(context.Background(), spec, opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				assertNothingWritten(t, dir, opts.Output)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The lock names the tag's digest and where it came from.
			l, ok := res.Lock.Find(manifests.KindImage, reg.Ref("app/web:1.0"))
			if !ok {
				t.Fatalf("lock has no web image: %+v", res.Lock.Items)
			}
			if l.Digest != idxDigest.String() || l.Source != reg.Host+"/app/web@"+idxDigest.String() || l.Component != "app" {
				t.Fatalf("lock item = %+v, want digest %s", l, idxDigest)
			}
			lockYAML, err := res.Lock.Marshal("test")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := manifests.ParseLock("lock", lockYAML); err != nil {
				t.Fatalf("lock does not parse back: %v\n%s", err, lockYAML)
			}
			a, err := bundle.Open(context.Background(), res.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			vr, err := a.Verify(context.Background(), bundle.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if vr.Graph.Items[0].Ref != reg.Ref("app/web:1.0") || vr.Graph.Items[0].Digest != idxDigest.String() {
				t.Fatalf("item 0 = %+v", vr.Graph.Items[0])
			}
			// Every blob of both platforms is in the archive.
			all, _ := indexDigests(t, idx)
			for _, d := range all {
				if _, ok := a.BlobSize(digest.Digest(d)); !ok {
					t.Errorf("archive lacks %s", d)
				}
			}
		})
	}
}

func TestRegistryPlatformFilter(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	idx := testregistry.RandomIndex(t, []string{"linux/amd64", "linux/arm64", "linux/s390x"}, nil, 2, 4<<10)
	idxDigest := reg.PushIndex(t, testregistry.Auth{}, "app/multi:1", idx)
	dir := t.TempDir()
	spec := writeSpec(t, dir, "platforms: [linux/arm64]\n"+imagesSpec(reg.Ref("app/multi:1")))
	reg.Reset()
	res := createIn(t, dir, "filtered", spec, CreateOptions{CacheDir: filepath.Join(dir, "cache")})

	ref := reg.Ref("app/multi:1")
	l, _ := res.Lock.Find(manifests.KindImage, ref)
	if l.Digest == idxDigest.String() || l.Source != reg.Host+"/app/multi@"+idxDigest.String() {
		t.Fatalf("lock item = %+v: want a new (filtered) digest, source the original %s", l, idxDigest)
	}
	a, err := bundle.Open(context.Background(), res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var entry *ocispec.Descriptor
	for i, m := range a.Index.Manifests {
		if m.Annotations[manifests.AnnotationRefName] == ref {
			entry = &a.Index.Manifests[i]
		}
	}
	if entry == nil || entry.Digest.String() != l.Digest || entry.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("index.json entry for %s = %+v", ref, entry)
	}
	raw, err := a.ReadSmall(context.Background(), *entry)
	if err != nil {
		t.Fatal(err)
	}
	var fi ocispec.Index
	if err := json.Unmarshal(raw, &fi); err != nil {
		t.Fatal(err)
	}
	if len(fi.Manifests) != 1 || fi.Manifests[0].Platform.Architecture != "arm64" || fi.MediaType != ocispec.MediaTypeImageIndex || fi.SchemaVersion != 2 {
		t.Fatalf("filtered index = %s", raw)
	}
	// Only arm64's blobs were fetched and stored.
	_, per := indexDigests(t, idx)
	gets := reg.BlobGets()
	for p, ds := range per {
		for _, d := range ds {
			_, inArchive := a.BlobSize(digest.Digest(d))
			if want := p == "linux/arm64"; inArchive != want || (gets[d] > 0) != want {
				t.Errorf("%s blob %s: in archive %v, fetched %d times", p, d, inArchive, gets[d])
			}
		}
	}
}

func TestSharedBlobsFetchedOnce(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	base := testregistry.RandomLayers(t, 2, 32<<10)
	var refs []string
	for i := range 6 {
		idx := testregistry.RandomIndex(t, []string{"linux/amd64", "linux/arm64"}, base, 1, 8<<10)
		name := fmt.Sprintf("app/svc%d:1", i)
		reg.PushIndex(t, testregistry.Auth{}, name, idx)
		refs = append(refs, reg.Ref(name))
	}
	dir := t.TempDir()
	spec := writeSpec(t, dir, imagesSpec(refs...))
	reg.Reset()
	res := createIn(t, dir, "shared", spec, CreateOptions{CacheDir: filepath.Join(dir, "cache"), Concurrency: 8})
	gets := reg.BlobGets()
	if len(gets) == 0 {
		t.Fatal("no blob was fetched")
	}
	for d, n := range gets {
		if n != 1 {
			t.Errorf("blob %s fetched %d times", d, n)
		}
	}
	// 2 shared layers + per image and platform (1 layer + 1 config).
	if want := 2 + 6*2*2; len(gets) != want || res.Fetch.FetchedBlobs != want {
		t.Errorf("fetched %d distinct blobs (create says %d), want %d", len(gets), res.Fetch.FetchedBlobs, want)
	}
}

// TestCacheFetchesOnlyNewBlobs: a second create of the same spec with one
// changed image fetches only that image's new blobs.
func TestCacheFetchesOnlyNewBlobs(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	base := testregistry.RandomLayers(t, 1, 32<<10)
	var refs []string
	for i := range 4 {
		name := fmt.Sprintf("app/svc%d:1", i)
		reg.PushIndex(t, testregistry.Auth{}, name, testregistry.RandomIndex(t, []string{"linux/amd64"}, base, 2, 8<<10))
		refs = append(refs, reg.Ref(name))
	}
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	spec := writeSpec(t, dir, imagesSpec(refs...))
	first := createIn(t, dir, "first", spec, CreateOptions{CacheDir: cache})

	// Same spec again: nothing but tag resolution.
	reg.Reset()
	again := createIn(t, dir, "again", spec, CreateOptions{CacheDir: cache})
	if n := len(reg.BlobGets()); n != 0 || again.Fetch.FetchedBlobs != 0 {
		t.Fatalf("unchanged spec fetched %d blobs (create says %d)", n, again.Fetch.FetchedBlobs)
	}
	if n := reg.Requests("GET /v2/app/"); n != 0 {
		t.Fatalf("unchanged spec made %d GET requests (manifests are cached)", n)
	}
	if again.Digest != first.Digest {
		t.Fatalf("same content, different archives: %s vs %s", again.Digest, first.Digest)
	}

	// One image changes: only its new blobs (and manifests) are fetched.
	changed := testregistry.RandomIndex(t, []string{"linux/amd64"}, base, 2, 8<<10)
	reg.PushIndex(t, testregistry.Auth{}, "app/svc2:1", changed)
	all, _ := indexDigests(t, changed)
	want := map[string]bool{}
	for _, d := range all {
		want[d] = true
	}
	for _, d := range base {
		h, _ := d.Digest()
		delete(want, h.String())
	}
	reg.Reset()
	second := createIn(t, dir, "second", spec, CreateOptions{CacheDir: cache})
	gets := reg.BlobGets()
	if len(gets) != len(want) || second.Fetch.FetchedBlobs != len(want) {
		t.Fatalf("fetched %v (create says %d), want exactly the %d new blobs %v", gets, second.Fetch.FetchedBlobs, len(want), want)
	}
	for d := range gets {
		if !want[d] {
			t.Errorf("fetched %s, which the cache has", d)
		}
	}
	if second.Digest == first.Digest {
		t.Fatal("the changed image did not change the archive")
	}
	// The same content from a cold cache gives the same archive bytes.
	cold := createIn(t, dir, "cold", spec, CreateOptions{})
	if cold.Digest != second.Digest {
		t.Fatalf("cached create %s differs from a cold one %s", second.Digest, cold.Digest)
	}
}

// TestRetriesServerErrors: 503 and 429 answers are retried.
func TestRetriesServerErrors(t *testing.T) {
	var failures atomic.Int32
	reg := testregistry.New(t, testregistry.Options{Middleware: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && failures.Add(1) <= 2 {
				code := http.StatusServiceUnavailable
				if failures.Load() == 2 {
					code = http.StatusTooManyRequests
				}
				http.Error(w, "busy", code)
				return
			}
			h.ServeHTTP(w, r)
		})
	}})
	reg.PushIndex(t, testregistry.Auth{}, "app/flaky:1", testregistry.RandomIndex(t, []string{"linux/amd64"}, nil, 1, 4<<10))
	dir := t.TempDir()
	spec := writeSpec(t, dir, imagesSpec(reg.Ref("app/flaky:1")))
	res := createIn(t, dir, "flaky", spec, CreateOptions{Concurrency: 1})
	if failures.Load() < 3 || res.Fetch.FetchedBlobs != 2 {
		t.Fatalf("failures %d, fetched %d", failures.Load(), res.Fetch.FetchedBlobs)
	}
}

func TestFileFromURL(t *testing.T) {
	data := []byte(strings.Repeat("a binary from the web\n", 1000))
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		w.Write(data)
	}))
	defer srv.Close()
	url := srv.URL + "/dl/tool"
	spec := func(dir, sha string) *manifests.Spec {
		return writeSpec(t, dir, fmt.Sprintf("components:\n  - name: host\n    files:\n      - source: %s\n        sha256: %s\n        target: /usr/local/bin/tool\n        mode: \"0755\"\n", url, sha))
	}
	t.Run("mismatch names url and digests", func(t *testing.T) {
		dir := t.TempDir()
		bad := strings.Repeat("0", 64)
		_, err := Create(context.Background(), spec(dir, bad), CreateOptions{Output: filepath.Join(dir, "x.zdt")})
		var de *SourceDigestError
		if !errors.As(err, &de) || de.Source != url || de.Want != bad || de.Got != good {
			t.Fatalf("err = %v", err)
		}
		for _, s := range []string{url, bad, good} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not name %s", err, s)
			}
		}
		assertNothingWritten(t, dir, filepath.Join(dir, "x.zdt"))
	})
	t.Run("cached", func(t *testing.T) {
		dir := t.TempDir()
		cache := filepath.Join(dir, "cache")
		s := spec(dir, good)
		first := createIn(t, dir, "a", s, CreateOptions{CacheDir: cache})
		n := gets.Load()
		second := createIn(t, dir, "b", s, CreateOptions{CacheDir: cache})
		if gets.Load() != n {
			t.Fatalf("second create downloaded the file again")
		}
		if first.Digest != second.Digest {
			t.Fatalf("archives differ: %s vs %s", first.Digest, second.Digest)
		}
	})
}

// cacheBlobs lists the digests in a cache and checks each file's bytes.
func cacheBlobs(t testing.TB, cache string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		f, err := os.Open(filepath.Join(cache, "blobs", "sha256", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		if got := hex.EncodeToString(h.Sum(nil)); got != e.Name() {
			t.Fatalf("corrupt cache entry %s hashes to %s", e.Name(), got)
		}
		out = append(out, "sha256:"+e.Name())
	}
	sort.Strings(out)
	return out
}
