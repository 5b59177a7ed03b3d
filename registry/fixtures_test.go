package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	mrand "math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// testBundle is a bundle built for a test and opened.
type testBundle struct {
	path     string
	archive  *bundle.Archive
	res      build.CreateResult
	fileData []byte
	// sig is the cosign-style signature (tag sha256-<root>.sig); att the
	// OCI 1.1 attestation whose subject is the root.
	sig, att ocispec.Descriptor
}

// bundleSpec describes what buildBundle puts in a bundle.
type bundleSpec struct {
	name, version string
	// layerSize is the size of each random app layer (default 32 KiB);
	// layers the number of app layers per platform (default 1).
	layerSize int64
	layers    int
	// seedFile varies the file item's bytes.
	seedFile string
	// sharedBase is a layer shared by every image (and across bundles).
	sharedBase v1.Layer
	noAMI      bool
	// static makes app layers plain random bytes (no gzip): fast to build
	// at hundreds of MiB, and registries don't look inside layers.
	static bool
}

// buildBundle creates a bundle with a two-platform image referenced as
// docker.io/library/web:1.0, an image of another registry
// (quay.io/zdt/tools:2.0), a file, a chart, a small AMI, a cosign-style
// signature of the root and an OCI 1.1 attestation of it.
func buildBundle(t testing.TB, s bundleSpec) *testBundle {
	t.Helper()
	if s.name == "" {
		s.name, s.version = "test", "1.0.0"
	}
	if s.layerSize == 0 {
		s.layerSize = 32 << 10
	}
	if s.layers == 0 {
		s.layers = 1
	}
	dir := t.TempDir()
	base := s.sharedBase
	if base == nil {
		var err error
		if base, err = random.Layer(16<<10, types.OCILayer); err != nil {
			t.Fatal(err)
		}
	}
	rng := mrand.NewChaCha8([32]byte{byte(len(s.seedFile)), 1})
	var imgs []v1.Image
	for _, arch := range []string{"amd64", "arm64"} {
		ls := []v1.Layer{base}
		for i := 0; i < s.layers; i++ {
			if s.static {
				buf := make([]byte, s.layerSize)
				rng.Read(buf)
				ls = append(ls, static.NewLayer(buf, types.OCILayer))
				continue
			}
			l, err := random.Layer(s.layerSize, types.OCILayer)
			if err != nil {
				t.Fatal(err)
			}
			ls = append(ls, l)
		}
		img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: arch}, []string{"/app"}, ls...)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := fixtures.Index(imgs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.WriteLayoutIndex(filepath.Join(dir, "images", "web"), "1.0", idx); err != nil {
		t.Fatal(err)
	}
	extra, err := random.Layer(8<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	tools, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, base, extra)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.WriteLayoutImage(filepath.Join(dir, "images", "tools"), "2.0", tools); err != nil {
		t.Fatal(err)
	}
	fileData := []byte("#!/bin/sh\necho tool " + s.seedFile + "\n")
	writeTestFile(t, filepath.Join(dir, "bin", "tool"), fileData)
	writeTestFile(t, filepath.Join(dir, "charts", "demo", "Chart.yaml"), []byte("apiVersion: v2\nname: demo\nversion: 1.2.3\ndescription: test chart\n"))
	writeTestFile(t, filepath.Join(dir, "charts", "demo", "values.yaml"), []byte("replicas: 1\n"))
	writeTestFile(t, filepath.Join(dir, "charts", "demo", "templates", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n"))
	sum := sha256.Sum256(fileData)
	spec := `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata:
  name: ` + s.name + `
  version: ` + s.version + `
components:
  - name: runtime
    images:
      - ref: docker.io/library/web:1.0
        source: oci:images/web:1.0
      - ref: quay.io/zdt/tools:2.0
        source: oci:images/tools:2.0
    files:
      - source: bin/tool
        sha256: ` + hex.EncodeToString(sum[:]) + `
        target: /usr/local/bin/tool
        mode: "0755"
  - name: apps
    charts:
      - name: demo
        source: charts/demo
        version: 1.2.3
`
	if !s.noAMI {
		if err := os.MkdirAll(filepath.Join(dir, "disk"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := fixtures.RawDisk(filepath.Join(dir, "disk", "node.raw"), 2<<20, 3); err != nil {
			t.Fatal(err)
		}
		spec += `  - name: node
    amis:
      - name: node-image
        source: disk/node.raw
        bootMode: uefi
`
	}
	writeTestFile(t, filepath.Join(dir, "zdt.yaml"), []byte(spec))
	ms, err := manifests.Load(filepath.Join(dir, "zdt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBundle{path: filepath.Join(dir, s.name+".zdt"), fileData: fileData}
	tb.res, err = build.Create(context.Background(), ms, build.CreateOptions{
		Output: tb.path, ToolVersion: "v0.0.0-test",
		Attach: func(ctx context.Context, root ocispec.Descriptor, store content.Storage) ([]ocispec.Descriptor, error) {
			var err error
			tb.sig, err = pushArtifact(ctx, store, "application/vnd.dev.cosign.artifact.sig.v1+json", nil, []byte(`{"critical":{"image":{"docker-manifest-digest":"`+root.Digest.String()+`"}}}`))
			if err != nil {
				return nil, err
			}
			tb.sig.Annotations = map[string]string{manifests.AnnotationRefName: strings.ReplaceAll(root.Digest.String(), ":", "-") + ".sig"}
			tb.att, err = pushArtifact(ctx, store, "application/vnd.zdt.test.attestation+json", &root, []byte(`{"predicate":"test"}`))
			if err != nil {
				return nil, err
			}
			tb.att.Annotations = map[string]string{manifests.AnnotationSubject: root.Digest.String()}
			return []ocispec.Descriptor{tb.sig, tb.att}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tb.archive, err = bundle.Open(context.Background(), tb.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.archive.Close() })
	if _, err := tb.archive.Verify(context.Background(), bundle.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	return tb
}

// pushArtifact stores an OCI artifact manifest with one layer.
func pushArtifact(ctx context.Context, store content.Storage, artifactType string, subject *ocispec.Descriptor, payload []byte) (ocispec.Descriptor, error) {
	layer := content.NewDescriptorFromBytes("application/vnd.zdt.test.payload", payload)
	cfg := ocispec.DescriptorEmptyJSON
	for _, b := range []struct {
		d    ocispec.Descriptor
		data []byte
	}{{layer, payload}, {cfg, cfg.Data}} {
		if ok, _ := store.Exists(ctx, b.d); !ok {
			if err := store.Push(ctx, b.d, bytes.NewReader(b.data)); err != nil {
				return ocispec.Descriptor{}, err
			}
		}
	}
	cfg.Data = nil
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType, Config: cfg, Layers: []ocispec.Descriptor{layer}, Subject: subject}
	b, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
	d.ArtifactType = artifactType
	if ok, _ := store.Exists(ctx, d); !ok {
		if err := store.Push(ctx, d, bytes.NewReader(b)); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	return d, nil
}

func writeTestFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// placement finds the placement of repository:tag.
func findPlacement(t testing.TB, ps []Placement, repo, tag string) Placement {
	t.Helper()
	for _, p := range ps {
		if p.Repository == repo && p.Tag == tag {
			return p
		}
	}
	t.Fatalf("no placement %s:%s in %v", repo, tag, ps)
	return Placement{}
}

// serveArchives starts an httptest server over archives.
func serveArchives(t testing.TB, archives ...*bundle.Archive) (*httptest.Server, *Handler) {
	t.Helper()
	h, err := NewHandler(context.Background(), HandlerOptions{Archives: archives})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	return srv, h
}

// serveStore starts an httptest server over a store.
func serveStore(t testing.TB, store *Store, htpasswd string) (*httptest.Server, *Handler) {
	t.Helper()
	h, err := NewHandler(context.Background(), HandlerOptions{Store: store, Htpasswd: htpasswd})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	return srv, h
}

// testStore opens the registry store of a new install root and returns
// it with its directory; it is closed when the test ends.
func testStore(t testing.TB) (*Store, string) {
	t.Helper()
	s, err := OpenStore(t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, s.Dir()
}

// needClient finds a client binary, skipping the test when it is missing
// unless ZDT_REQUIRE_CLIENTS=1.
func needClient(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if home, herr := os.UserHomeDir(); herr == nil {
		if _, serr := os.Stat(filepath.Join(home, "go", "bin", name)); serr == nil {
			return filepath.Join(home, "go", "bin", name)
		}
	}
	if os.Getenv("ZDT_REQUIRE_CLIENTS") == "1" {
		t.Fatalf("%s is required (ZDT_REQUIRE_CLIENTS=1) but not installed: run make tools", name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }

// flipLargestBlob returns the bytes of tb's archive with one byte flipped
// in the middle of its largest blob, and that blob's digest.
func flipLargestBlob(t testing.TB, tb *testBundle) ([]byte, digest.Digest) {
	t.Helper()
	data, err := os.ReadFile(tb.path)
	if err != nil {
		t.Fatal(err)
	}
	var big digest.Digest
	var bigSize int64
	for _, d := range tb.archive.Digests() {
		if s, _ := tb.archive.BlobSize(d); s > bigSize {
			big, bigSize = d, s
		}
	}
	sr, _ := tb.archive.BlobReader(big)
	blob := make([]byte, bigSize)
	if _, err := io.ReadFull(sr, blob); err != nil {
		t.Fatal(err)
	}
	off := bytes.Index(data, blob)
	if off < 0 {
		t.Fatal("blob not found in archive bytes")
	}
	data[off+int(bigSize/2)] ^= 0xff
	return data, big
}
