package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/remote"
)

func TestParseBundleRef(t *testing.T) {
	for _, tc := range []struct {
		in                          string
		host, prefix, name, tag, dg string
		registry                    string
		bad                         bool
	}{
		{in: "node1.site:5000/zdt/platform:1.4.0", host: "node1.site:5000", name: "platform", tag: "1.4.0", registry: "node1.site:5000"},
		{in: "harbor.site/team/platform/zdt/kubezero@sha256:" + strings.Repeat("a", 64), host: "harbor.site", prefix: "team/platform", name: "kubezero", dg: "sha256:" + strings.Repeat("a", 64), registry: "harbor.site/team/platform"},
		{in: "127.0.0.1:5000/zdt/q", host: "127.0.0.1:5000", name: "q", tag: "latest", registry: "127.0.0.1:5000"},
		{in: "zdt/q:1", bad: true},               // no registry
		{in: "reg.example/q:1", bad: true},       // not zdt/NAME
		{in: "reg.example/zdt/a/b:1", bad: true}, // a path after zdt/
		{in: "reg.example/xzdt/q:1", bad: true},  // zdt must be a whole component
		{in: "reg.example/zdt:1", bad: true},     // no name
		{in: "reg.example/zdt/Q:1", bad: true},   // not a reference
		{in: "reg.example/zdt/q@sha512:" + strings.Repeat("a", 128), bad: true},
		{in: "reg.example/zdt/q:1\n", bad: true},
	} {
		r, err := ParseBundleRef(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: accepted as %+v", tc.in, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if r.Host != tc.host || r.Prefix != tc.prefix || r.Name != tc.name || r.Tag != tc.tag || string(r.Digest) != tc.dg || r.Registry() != tc.registry {
			t.Errorf("%q = %+v (registry %s)", tc.in, r, r.Registry())
		}
		if r.String() != strings.TrimSuffix(tc.in, ":latest") && tc.tag != "latest" {
			t.Errorf("%q prints as %q", tc.in, r.String())
		}
	}
}

// hostile wraps a registry handler with a test's tampering.
func serveHostile(t *testing.T, tb *testBundle, tamper func(w http.ResponseWriter, r *http.Request, next http.Handler) bool) string {
	t.Helper()
	h, err := NewHandler(context.Background(), HandlerOptions{Archives: []*bundle.Archive{tb.archive}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tamper == nil || !tamper(w, r, h) {
			h.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() { srv.Close(); h.Close() })
	return strings.TrimPrefix(srv.URL, "http://")
}

func openRemote(t *testing.T, ref string) (*bundle.Archive, *RemoteSource, error) {
	t.Helper()
	r, err := ParseBundleRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return OpenRemote(context.Background(), r, remote.New(nil, 4), bundle.OpenOptions{})
}

// TestOpenRemote: a bundle served by zdt serve opens from the registry
// by tag and by digest as the file opens (same root, same signature
// attachment, same index), verifies with every blob read from the
// registry, and replicates into a store that then serves it whole.
func TestOpenRemote(t *testing.T) {
	tb := buildBundle(t, bundleSpec{})
	host := serveHostile(t, tb, nil)
	root := tb.archive.Root.Digest
	for _, ref := range []string{host + "/zdt/test:1.0.0", host + "/zdt/test@" + root.String()} {
		a, src, err := openRemote(t, ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if a.Root.Digest != root || a.Config.Name != "test" || len(a.RootIndex.Manifests) != len(tb.archive.RootIndex.Manifests) {
			t.Fatalf("%s: root %s %+v", ref, a.Root.Digest, a.Config)
		}
		if atts := a.Attachments(); len(atts) != 1 || atts[0].Digest != tb.sig.Digest {
			t.Fatalf("%s: attachments %v, want the signature %s", ref, atts, tb.sig.Digest)
		}
		if _, err := a.Verify(context.Background(), bundle.VerifyOptions{}); err != nil {
			t.Fatalf("%s: verify over the registry: %v", ref, err)
		}
		if src.Err() != nil {
			t.Fatalf("%s: request error %v", ref, src.Err())
		}
	}
	a, _, err := openRemote(t, host+"/zdt/test:1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	store, _ := testStore(t)
	res, err := store.Import(context.Background(), a, ImportOptions{CopyBlobs: true})
	if err != nil {
		t.Fatalf("replicating: %v", err)
	}
	if res.ArchiveKept || res.BlobsWritten == 0 {
		t.Fatalf("replicated %+v", res)
	}
	if err := store.Activate(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	ps, err := store.Recorded(root)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := store.Health(context.Background(), ps); err != nil || len(h.Problems) > 0 {
		t.Fatalf("replicated store: %v %v", h.Problems, err)
	}
}

// TestOpenRemoteHostile: what a registry (or whoever sits in front of it)
// can do to a bundle read from it.
func TestOpenRemoteHostile(t *testing.T) {
	tb := buildBundle(t, bundleSpec{})
	root := tb.archive.Root.Digest
	var layer digest.Digest // the largest blob, a layer of the image
	var size int64
	for _, d := range tb.archive.Digests() {
		if s, _ := tb.archive.BlobSize(d); s > size {
			layer, size = d, s
		}
	}
	ctx := context.Background()

	t.Run("root by digest with other bytes", func(t *testing.T) {
		host := serveHostile(t, tb, func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
			if strings.HasSuffix(r.URL.Path, "/manifests/"+root.String()) {
				w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
				io.WriteString(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
				return true
			}
			return false
		})
		if _, _, err := openRemote(t, host+"/zdt/test@"+root.String()); !errors.Is(err, bundle.ErrDigestMismatch) {
			t.Fatalf("got %v, want a digest mismatch", err)
		}
	})

	t.Run("tag moved after it was resolved", func(t *testing.T) {
		var tagReads atomic.Int32
		host := serveHostile(t, tb, func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
			if strings.HasSuffix(r.URL.Path, "/manifests/1.0.0") && tagReads.Add(1) > 1 {
				io.WriteString(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
				return true
			}
			return false
		})
		a, _, err := openRemote(t, host+"/zdt/test:1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Verify(ctx, bundle.VerifyOptions{}); err != nil || a.Root.Digest != root {
			t.Fatalf("root %s, verify %v", a.Root.Digest, err)
		}
		if n := tagReads.Load(); n != 1 {
			t.Fatalf("the tag was read %d times: everything after the first must go by digest", n)
		}
	})

	t.Run("manifest without end", func(t *testing.T) {
		var sent atomic.Int64
		host := serveHostile(t, tb, func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
			if !strings.Contains(r.URL.Path, "/manifests/") {
				return false
			}
			buf := bytes.Repeat([]byte(" "), 64<<10)
			for i := 0; i < 1024; i++ { // 64 MiB, unless the client hangs up
				n, err := w.Write(buf)
				sent.Add(int64(n))
				if err != nil {
					break
				}
			}
			return true
		})
		if _, _, err := openRemote(t, host+"/zdt/test:1.0.0"); !errors.Is(err, bundle.ErrTooLarge) {
			t.Fatalf("got %v, want too large", err)
		}
	})

	t.Run("damaged layer", func(t *testing.T) {
		host := serveHostile(t, tb, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+layer.String()) {
				return false
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if len(b) > 0 {
				b[len(b)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(b)
			return true
		})
		a, _, err := openRemote(t, host+"/zdt/test:1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Verify(ctx, bundle.VerifyOptions{}); !errors.Is(err, bundle.ErrDigestMismatch) || !strings.Contains(err.Error(), layer.Encoded()[:12]) {
			t.Fatalf("verify: %v, want a mismatch naming %s", err, layer)
		}
		store, _ := testStore(t)
		if _, err := store.Import(ctx, a, ImportOptions{CopyBlobs: true}); !errors.Is(err, bundle.ErrDigestMismatch) {
			t.Fatalf("replicating: %v, want a digest mismatch", err)
		}
		if _, err := store.dir.Stat(strings.TrimPrefix(blobDataPath(layer), "/")); err == nil {
			t.Fatal("the damaged layer is in the store")
		}
	})

	t.Run("size lies", func(t *testing.T) {
		host := serveHostile(t, tb, func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
			if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/blobs/"+layer.String()) {
				w.Header().Set("Content-Length", strconv.FormatInt(1<<62, 10))
				w.WriteHeader(http.StatusOK)
				return true
			}
			return false
		})
		a, _, err := openRemote(t, host+"/zdt/test:1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Walk(ctx); !errors.Is(err, bundle.ErrVerification) {
			t.Fatalf("walk: %v, want a verification error", err)
		}
	})

	t.Run("another bundle under the name", func(t *testing.T) {
		host := serveHostile(t, tb, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
			if p, ok := strings.CutPrefix(r.URL.Path, "/v2/zdt/other/"); ok {
				r.URL.Path = "/v2/zdt/test/" + p
			}
			return false
		})
		if _, _, err := openRemote(t, host+"/zdt/other:1.0.0"); !errors.Is(err, bundle.ErrNotBundle) {
			t.Fatalf("got %v, want a refusal", err)
		}
	})

	t.Run("unreachable blob says why", func(t *testing.T) {
		host := serveHostile(t, tb, func(w http.ResponseWriter, r *http.Request, _ http.Handler) bool {
			if strings.HasSuffix(r.URL.Path, "/blobs/"+layer.String()) {
				w.WriteHeader(http.StatusForbidden)
				return true
			}
			return false
		})
		a, src, err := openRemote(t, host+"/zdt/test:1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Walk(ctx)
		if err = src.Explain(err); !errors.Is(err, bundle.ErrMissingBlob) || !strings.Contains(err.Error(), "403") {
			t.Fatalf("walk: %v, want a missing blob and the registry's answer", err)
		}
	})
}

// FuzzParseBundleRef: any --from string parses into a reference that
// prints back as one that parses to the same, or is refused; never a
// panic, never a name a state file could not be named after.
func FuzzParseBundleRef(f *testing.F) {
	for _, s := range []string{"node1:5000/zdt/p:1.0", "h.example/a/b/zdt/p@sha256:" + strings.Repeat("0", 64), "zdt/p", "h/zdt/../x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseBundleRef(s)
		if err != nil {
			return
		}
		if r.Name == "" || strings.ContainsAny(r.Name, "/\\\x00") || r.Name == "." || r.Name == ".." {
			t.Fatalf("%q: name %q", s, r.Name)
		}
		again, err := ParseBundleRef(r.String())
		if err != nil || again != r {
			t.Fatalf("%q prints as %q, which parses to %+v (%v)", s, r.String(), again, err)
		}
	})
}

// TestBlobRangeChecked: a registry answering a Range request with bytes
// from another offset is refused at once, not streamed until the digest
// fails at the end.
func TestBlobRangeChecked(t *testing.T) {
	data := []byte("0123456789abcdefghij")
	for _, tc := range []struct{ name, contentRange, want string }{
		{"shifted", "bytes 0-19/20", "answered range"},
		{"missing", "", "answered range"},
		{"right", "bytes 10-19/20", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") == "" {
					w.Write(data)
					return
				}
				if tc.contentRange != "" {
					w.Header().Set("Content-Range", tc.contentRange)
				}
				w.WriteHeader(http.StatusPartialContent)
				if tc.want == "" {
					w.Write(data[10:])
				} else {
					w.Write(data)
				}
			}))
			defer srv.Close()
			s := &RemoteSource{ctx: context.Background(), client: srv.Client(), base: srv.URL + "/v2/zdt/x", known: map[digest.Digest]*remoteBlob{}}
			r := &blobReaderAt{s: s, d: digest.FromBytes(data), size: int64(len(data))}
			buf := make([]byte, 10)
			n, err := r.ReadAt(buf, 10)
			if tc.want == "" {
				if err != nil && err != io.EOF || string(buf[:n]) != "abcdefghij" {
					t.Fatalf("ReadAt(10) = %q, %v; want abcdefghij", buf[:n], err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadAt(10) = %q, %v; want an error containing %q", buf[:n], err, tc.want)
			}
		})
	}
}
