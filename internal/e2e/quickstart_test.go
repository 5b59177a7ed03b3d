package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/klauspost/compress/zstd"

	"zdt.dev/zdt/internal/fixtures"
)

// quickstart copies examples/quickstart to a temp dir and generates its
// inputs there.
func quickstart(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, filepath.Join(moduleRoot, "examples", "quickstart"), dir, "images", "disk", "zdt.lock.yaml")
	if err := fixtures.Quickstart(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

type inspectJSON struct {
	Name, Version, Root, RootRepository string
	Items                               []struct {
		Component, Kind, Name, Ref, Digest, MediaType, Target string
		Size                                                  int64
	}
	TotalSize, UniqueSize, ArchiveSize int64
	Blobs                              int
}

// TestQuickstartWithClients builds the quickstart bundle with the CLI and
// lets skopeo, oras and crane read what it produced.
func TestQuickstartWithClients(t *testing.T) {
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-f", "zdt.yaml", "-o", "a.zdt").must(t, "create")
	zdt(t, dir, "bundle", "create", "--lock", "-f", "zdt.yaml", "-o", "b.zdt").must(t, "create --lock")
	a, _ := os.ReadFile(filepath.Join(dir, "a.zdt"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.zdt"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("two creates differ (%d vs %d bytes)", len(a), len(b))
	}
	var info inspectJSON
	out := zdt(t, dir, "bundle", "inspect", "--output", "json", "a.zdt").must(t, "inspect")
	if err := json.Unmarshal([]byte(out.stdout), &info); err != nil {
		t.Fatalf("inspect --output json: %v\n%s", err, out.stdout)
	}
	if info.Name != "quickstart" || info.RootRepository != "zdt/quickstart" || len(info.Items) != 5 {
		t.Fatalf("inspect = %+v", info)
	}
	kinds := map[string]string{}
	for _, it := range info.Items {
		kinds[it.Kind] = it.Digest
	}
	for _, k := range []string{"image", "chart", "file", "ami"} {
		if kinds[k] == "" {
			t.Fatalf("no %s item in %+v", k, info.Items)
		}
	}
	zdt(t, dir, "bundle", "verify", "--insecure-skip-signature", "a.zdt").must(t, "verify")
	zdt(t, dir, "bundle", "extract", "--insecure-skip-signature", "a.zdt", "layout").must(t, "extract")
	layout := filepath.Join(dir, "layout")

	t.Run("skopeo", func(t *testing.T) {
		skopeo := client(t, "skopeo")
		for _, ref := range []string{"zdt.example/quickstart/hello:1.0", "zdt.example/quickstart/tools:1.0"} {
			r := runIn(t, dir, nil, skopeo, "inspect", "oci:"+layout+":"+ref).must(t, "skopeo inspect "+ref)
			var got struct{ Digest, Architecture, Os string }
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Os != "linux" || got.Digest == "" {
				t.Fatalf("skopeo inspect %s = %s (%v)", ref, r.stdout, err)
			}
		}
		// A whole copy out of the layout works too (every blob readable).
		runIn(t, dir, nil, skopeo, "copy", "--all",
			"oci:"+layout+":zdt.example/quickstart/hello:1.0", "oci:"+filepath.Join(dir, "copy")+":hello").must(t, "skopeo copy")
	})

	t.Run("oras", func(t *testing.T) {
		oras := client(t, "oras")
		r := runIn(t, dir, nil, oras, "manifest", "fetch", "--oci-layout", layout+"@"+info.Root).must(t, "oras manifest fetch")
		if !strings.Contains(r.stdout, "application/vnd.zdt.bundle.v1+json") {
			t.Fatalf("root manifest = %s", r.stdout)
		}
		pulled := filepath.Join(dir, "pulled")
		os.MkdirAll(pulled, 0o755)
		runIn(t, pulled, nil, oras, "pull", "--oci-layout", layout+"@"+kinds["file"]).must(t, "oras pull file")
		zst, err := os.ReadFile(filepath.Join(pulled, "zdt-hello.zst"))
		if err != nil {
			t.Fatal(err)
		}
		dec, _ := zstd.NewReader(nil)
		got, err := dec.DecodeAll(zst, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(dir, "files", "zdt-hello.sh"))
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Fatalf("oras pulled a file that decompresses to %d bytes, not the original %d", len(got), len(want))
		}
	})

	t.Run("crane", func(t *testing.T) {
		crane := client(t, "crane")
		srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		defer srv.Close()
		host := strings.TrimPrefix(srv.URL, "http://")
		runIn(t, dir, nil, crane, "push", "--index", layout, host+"/quickstart:all").must(t, "crane push --index")
		r := runIn(t, dir, nil, crane, "manifest", host+"/quickstart:all").must(t, "crane manifest")
		for _, d := range []string{info.Root, kinds["image"], kinds["chart"], kinds["file"], kinds["ami"]} {
			if !strings.Contains(r.stdout, d) {
				t.Errorf("crane's view of the layout lacks %s", d)
			}
		}
		runIn(t, dir, nil, crane, "validate", "--remote", host+"/quickstart@"+kinds["image"]).must(t, "crane validate")
	})
}
