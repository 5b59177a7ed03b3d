package installer

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
)

// blobFiles maps every blob data file in the store to its inode.
func blobFiles(t *testing.T, root string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	dir := filepath.Join(registry.StoreDir(root), "docker/registry/v2/blobs")
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Name() == "data" {
			out[filepath.Base(filepath.Dir(p))] = fi.Sys().(*syscall.Stat_t).Ino
		}
		return nil
	})
	return out
}

func archiveDigests(t *testing.T, p string) map[string]bool {
	t.Helper()
	a, err := bundle.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	out := map[string]bool{}
	for _, d := range a.Digests() {
		out[d.Encoded()] = true
	}
	return out
}

// manifestDigest asks a registry handler for a tag's manifest digest.
func manifestDigest(t *testing.T, srv *httptest.Server, repo, tag string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Docker-Content-Digest"), resp.StatusCode
}

func serveStore(t *testing.T, root string) *httptest.Server {
	t.Helper()
	h, err := registry.NewHandler(context.Background(), registry.HandlerOptions{Store: registry.StoreDir(root)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	return srv
}

// TestUpgradeWithRegistry: an upgrade writes only the blobs the old bundle
// did not have, serves the new image under the same name, stops serving
// removed images, and rollback serves the old ones again.
func TestUpgradeWithRegistry(t *testing.T) {
	dir := t.TempDir()
	rv1 := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1, "registry.test/app/b:1": 2, "quay.io/gone/c:1": 4}}
	rv2 := release{version: "2.0.0", images: map[string]int64{"registry.test/app/a:1": 3, "registry.test/app/b:1": 2}}
	a1 := rv1.build(t, filepath.Join(dir, "v1"))
	a2 := rv2.build(t, filepath.Join(dir, "v2"))
	root := t.TempDir()
	ctx := context.Background()
	run := func(p string) Result {
		a, err := bundle.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		res, err := Install(ctx, a, Options{Root: root, Registry: NewStoreRegistry(root, nil)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	run(a1)
	before := blobFiles(t, root)
	d1 := archiveDigests(t, a1)
	for d := range d1 {
		if _, ok := before[d]; !ok {
			t.Fatalf("blob %s of v1 not in the store", d)
		}
	}
	srv := serveStore(t, root)
	v1a, code := manifestDigest(t, srv, "registry.test/app/a", "1")
	if code != 200 {
		t.Fatalf("v1 a:1 not served: %d", code)
	}

	run(a2)
	after := blobFiles(t, root)
	d2 := archiveDigests(t, a2)
	written := 0
	for d, ino := range after {
		if old, ok := before[d]; ok {
			if old != ino {
				t.Errorf("blob %s was rewritten by the upgrade", d)
			}
			continue
		}
		written++
		if !d2[d] {
			t.Errorf("upgrade wrote %s, which v2 does not have", d)
		}
	}
	newInV2 := 0
	for d := range d2 {
		if !d1[d] {
			newInV2++
		}
	}
	if written != newInV2 {
		t.Errorf("upgrade wrote %d blobs, v2 has %d new ones", written, newInV2)
	}
	v2a, code := manifestDigest(t, srv, "registry.test/app/a", "1")
	if code != 200 || v2a == v1a {
		t.Fatalf("after the upgrade a:1 is %s (%d), v1 had %s", v2a, code, v1a)
	}
	if _, code := manifestDigest(t, srv, "quay.io/gone/c", "1"); code != 404 {
		t.Fatalf("removed image still served: %d", code)
	}

	if _, err := Rollback(ctx, Options{Root: root, Registry: NewStoreRegistry(root, nil)}); err != nil {
		t.Fatal(err)
	}
	if got, code := manifestDigest(t, srv, "registry.test/app/a", "1"); got != v1a || code != 200 {
		t.Fatalf("after rollback a:1 is %s (%d), want v1's %s", got, code, v1a)
	}
	if _, code := manifestDigest(t, srv, "quay.io/gone/c", "1"); code != 200 {
		t.Fatalf("rollback did not serve the removed image again: %d", code)
	}
}
