package installer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

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
	h, err := registry.NewHandler(context.Background(), registry.HandlerOptions{Store: openStore(t, root, false)})
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
//
// With the archives kept in the store (the default) no blob is copied at
// all: each bundle's archive is hard-linked, and the previous one stays
// for rollback until the next upgrade.
func TestUpgradeWithRegistry(t *testing.T) { inBothStoreModes(t, upgradeWithRegistry) }

// inBothStoreModes runs f with the archives kept in the store (the
// default) and with their blobs copied.
func inBothStoreModes(t *testing.T, f func(t *testing.T, copyBlobs bool)) {
	for _, copyBlobs := range []bool{false, true} {
		t.Run(map[bool]string{false: "kept", true: "copied"}[copyBlobs], func(t *testing.T) { f(t, copyBlobs) })
	}
}

func upgradeWithRegistry(t *testing.T, copyBlobs bool) {
	dir := t.TempDir()
	rv1 := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1, "registry.test/app/b:1": 2, "quay.io/gone/c:1": 4}}
	rv2 := release{version: "2.0.0", images: map[string]int64{"registry.test/app/a:1": 3, "registry.test/app/b:1": 2}}
	a1 := rv1.build(t, filepath.Join(dir, "v1"))
	a2 := rv2.build(t, filepath.Join(dir, "v2"))
	root := t.TempDir()
	ctx := context.Background()
	run := func(p string) Result { return installStore(t, p, root, copyBlobs) }
	rootOf := func(p string) digest.Digest {
		a, err := bundle.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		return a.Root.Digest
	}
	r1, r2 := rootOf(a1), rootOf(a2)
	// isKept reports whether p's archive is kept: the same inode in the store.
	isKept := func(p string, r digest.Digest) bool {
		kp, ok := openStore(t, root, false).Kept(r)
		if !ok {
			return false
		}
		a, _ := os.Stat(p)
		k, _ := os.Stat(kp)
		if !os.SameFile(a, k) {
			t.Fatalf("kept archive %s is not a hard link of %s", kp, p)
		}
		return true
	}
	run(a1)
	before := blobFiles(t, root)
	d1 := archiveDigests(t, a1)
	if !copyBlobs {
		if len(before) != 0 || !isKept(a1, r1) {
			t.Fatalf("v1 not kept: %d blobs copied, kept %v", len(before), isKept(a1, r1))
		}
	}
	for d := range d1 {
		if _, ok := before[d]; !ok && copyBlobs {
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
	if copyBlobs && written != newInV2 {
		t.Errorf("upgrade wrote %d blobs, v2 has %d new ones", written, newInV2)
	}
	if !copyBlobs && (written != 0 || !isKept(a1, r1) || !isKept(a2, r2)) {
		t.Errorf("kept upgrade: %d blobs copied, v1 kept %v, v2 kept %v (both should be, for rollback)", written, isKept(a1, r1), isKept(a2, r2))
	}
	v2a, code := manifestDigest(t, srv, "registry.test/app/a", "1")
	if code != 200 || v2a == v1a {
		t.Fatalf("after the upgrade a:1 is %s (%d), v1 had %s", v2a, code, v1a)
	}
	if _, code := manifestDigest(t, srv, "quay.io/gone/c", "1"); code != 404 {
		t.Fatalf("removed image still served: %d", code)
	}

	if _, err := Rollback(ctx, Options{Root: root, Registry: openStore(t, root, false)}); err != nil {
		t.Fatal(err)
	}
	if got, code := manifestDigest(t, srv, "registry.test/app/a", "1"); got != v1a || code != 200 {
		t.Fatalf("after rollback a:1 is %s (%d), want v1's %s", got, code, v1a)
	}
	if _, code := manifestDigest(t, srv, "quay.io/gone/c", "1"); code != 200 {
		t.Fatalf("rollback did not serve the removed image again: %d", code)
	}

	// A third bundle: the current (v1) is kept as the previous, v2 goes.
	rv3 := release{version: "3.0.0", images: map[string]int64{"registry.test/app/a:1": 6}}
	a3 := rv3.build(t, filepath.Join(dir, "v3"))
	run(a3)
	if !copyBlobs && (isKept(a2, r2) || !isKept(a1, r1) || !isKept(a3, rootOf(a3))) {
		t.Errorf("after v3: v1 kept %v (want true), v2 kept %v (want false), v3 kept %v", isKept(a1, r1), isKept(a2, r2), isKept(a3, rootOf(a3)))
	}
	srv3 := serveStore(t, root)
	if _, code := manifestDigest(t, srv3, "registry.test/app/a", "1"); code != 200 {
		t.Fatalf("v3 a:1 not served: %d", code)
	}
	if _, code := manifestDigest(t, srv3, "registry.test/app/b", "1"); code != 404 {
		t.Fatalf("b:1, gone in v3, still served: %d", code)
	}
}

// TestMixedStoreModes: a bundle whose blobs were copied (say, installed
// from a DVD) followed by bundles kept by hard links. Each step serves the
// current images; once the copied bundle is neither current nor previous,
// garbage collection deletes the copied blobs only it had (one a kept
// bundle also references stays), and kept archives come and go with their
// bundles.
func TestMixedStoreModes(t *testing.T) {
	dir := t.TempDir()
	root := t.TempDir()
	ctx := context.Background()
	rv := func(v string, seed int64) string {
		return release{version: v, images: map[string]int64{"registry.test/app/a:1": seed, "quay.io/x/y:2": seed + 100}}.build(t, filepath.Join(dir, v))
	}
	a1, a2, a3 := rv("1.0.0", 1), rv("2.0.0", 2), rv("3.0.0", 3)
	run := func(p string, copyBlobs bool) { installStore(t, p, root, copyBlobs) }
	kept := func() []string {
		m, _ := filepath.Glob(filepath.Join(registry.StoreDir(root), "archives", "*.zdt"))
		return m
	}
	srv := serveStore(t, root)
	want := func(step string, p string) {
		t.Helper()
		servesAll(t, srv, step, p, "")
	}
	run(a1, true)
	want("v1 copied", a1)
	if n := len(blobFiles(t, root)); n == 0 || len(kept()) != 0 {
		t.Fatalf("v1: %d blobs copied, %d archives kept", n, len(kept()))
	}
	run(a2, false)
	want("v2 kept", a2)
	if len(blobFiles(t, root)) == 0 || len(kept()) != 1 {
		t.Fatalf("v2: v1's copied blobs must stay for rollback (%d), one archive kept (%d)", len(blobFiles(t, root)), len(kept()))
	}
	v1Only := archiveDigests(t, a1)
	for _, p := range []string{a2, a3} {
		for d := range archiveDigests(t, p) {
			delete(v1Only, d)
		}
	}
	run(a3, false)
	want("v3 kept", a3)
	left := 0
	for d := range blobFiles(t, root) {
		if v1Only[d] {
			left++
		}
	}
	if left != 0 || len(kept()) != 2 {
		t.Fatalf("v3: %d blobs only v1 had are still in the store (want 0), %d archives kept (want v2 and v3)", left, len(kept()))
	}
	if _, err := Rollback(ctx, Options{Root: root, Registry: openStore(t, root, false)}); err != nil {
		t.Fatal(err)
	}
	want("rolled back to v2", a2)

	// Status reads the registry's health: healthy, then a kept archive
	// deleted behind zdt's back is reported, naming what is not served.
	st, err := GetStatus(ctx, root)
	if err != nil || st.Registry == nil || len(st.Registry.Problems) != 0 || st.Registry.Served == 0 || len(st.Registry.KeptArchives) != 2 {
		t.Fatalf("status = %+v, %v; want a healthy registry with 2 kept archives", st.Registry, err)
	}
	a, _ := bundle.Open(ctx, a2)
	r2 := a.Root.Digest
	a.Close()
	kp, _ := openStore(t, root, false).Kept(r2)
	if err := os.Remove(kp); err != nil {
		t.Fatal(err)
	}
	st, err = GetStatus(ctx, root)
	if err != nil || st.Registry == nil || st.Registry.Served != 0 || len(st.Registry.Problems) == 0 || !strings.Contains(strings.Join(st.Registry.Problems, "\n"), "registry.test/app/a:1") {
		t.Fatalf("status with v2's archive gone = %+v, %v; want every placement reported", st.Registry, err)
	}
}

// TestDeltaUpgrade: v1 installed (kept or copied), then v2 as a delta on v1
// (one image and one file changed): the delta reads the rest from what is
// installed, serves every v2 image, places the v2 file, and rolls back to
// v1. A kept delta keeps its base while it is kept itself; once neither is
// current or previous both go.
func TestDeltaUpgrade(t *testing.T) { inBothStoreModes(t, deltaUpgrade) }

func deltaUpgrade(t *testing.T, copyBlobs bool) {
	dir := t.TempDir()
	root := t.TempDir()
	ctx := context.Background()
	images := func(seedA int64) map[string]int64 {
		return map[string]int64{"registry.test/app/a:1": seedA, "registry.test/app/b:1": 2, "quay.io/x/c:3": 3}
	}
	a1 := release{version: "1.0.0", images: images(1), files: map[string][]byte{"/opt/tool": []byte("tool v1"), "/opt/same": []byte("same")}}.build(t, filepath.Join(dir, "v1"))
	a2 := release{version: "2.0.0", images: images(11), files: map[string][]byte{"/opt/tool": []byte("tool v2"), "/opt/same": []byte("same")}, base: a1}.build(t, filepath.Join(dir, "v2"))
	install := func(p string) { installStore(t, p, root, copyBlobs) }
	srv := serveStore(t, root)
	served := func(step, p string) {
		t.Helper()
		servesAll(t, srv, step, p, a1)
	}
	// The delta alone cannot be installed where v1 is not.
	{
		a, _ := bundle.Open(ctx, a2)
		_, _, err := openStore(t, t.TempDir(), false).Base(ctx, a.Base())
		a.Close()
		if !errors.Is(err, bundle.ErrNeedsBase) {
			t.Fatalf("base of a delta on an empty root: %v, want ErrNeedsBase", err)
		}
	}
	install(a1)
	served("v1", a1)
	d1, d2 := archiveDigests(t, a1), archiveDigests(t, a2)
	for d := range d2 {
		if d1[d] {
			t.Fatalf("the delta holds blob %s, which v1 has", d)
		}
	}
	install(a2)
	served("v2 (delta)", a2)
	if n := len(blobFiles(t, root)); !copyBlobs && n != 0 {
		t.Fatalf("kept delta: %d blobs copied", n)
	}
	readIs(t, root, "opt/tool", "tool v2")
	st, err := GetStatus(ctx, root)
	if err != nil || st.Registry == nil || len(st.Registry.Problems) != 0 {
		t.Fatalf("status after the delta: %+v, %v", st.Registry, err)
	}
	if _, err := Rollback(ctx, Options{Root: root, Registry: openStore(t, root, false)}); err != nil {
		t.Fatal(err)
	}
	served("rolled back to v1", a1)
	readIs(t, root, "opt/tool", "tool v1")
	install(a2) // forward again: v2 current, v1 previous

	// v3 and v4, whole bundles: after v3 the delta v2 is the previous
	// generation and keeps its base v1; after v4 both are gone.
	a3 := release{version: "3.0.0", images: images(21)}.build(t, filepath.Join(dir, "v3"))
	a4 := release{version: "4.0.0", images: images(31)}.build(t, filepath.Join(dir, "v4"))
	rootOf := func(p string) digest.Digest {
		a, _ := bundle.Open(ctx, p)
		defer a.Close()
		return a.Root.Digest
	}
	install(a3)
	served("v3", a3)
	if !copyBlobs {
		for _, p := range []string{a1, a2, a3} {
			if _, ok := openStore(t, root, false).Kept(rootOf(p)); !ok {
				t.Fatalf("after v3: %s not kept (v2 is the previous generation, v1 its base)", filepath.Base(p))
			}
		}
	}
	install(a4)
	served("v4", a4)
	if !copyBlobs {
		for _, p := range []string{a1, a2} {
			if _, ok := openStore(t, root, false).Kept(rootOf(p)); ok {
				t.Fatalf("after v4: %s still kept", filepath.Base(p))
			}
		}
	}
}

// servesAll checks that srv serves every tagged placement of the bundle at
// p (given its base, when it is a delta) under its digest.
func servesAll(t *testing.T, srv *httptest.Server, step, p, base string) {
	t.Helper()
	ctx := context.Background()
	a, done := openDelta(t, p, func(digest.Digest) (bundle.BlobSource, io.Closer, error) {
		b, err := bundle.Open(ctx, base)
		return b, b, err
	})
	defer done()
	ps, err := registry.Placements(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, pl := range ps {
		if pl.Tag == "" {
			continue
		}
		if got, code := manifestDigest(t, srv, pl.Repository, pl.Tag); code != 200 || got != pl.Digest.String() {
			t.Fatalf("%s: %s:%s is %s (%d), want %s", step, pl.Repository, pl.Tag, got, code, pl.Digest)
		}
	}
}

// installStore installs the bundle at p under root with the store
// registry, copying blobs or keeping the archive, and giving a delta its
// base from what is installed, as zdt install does.
func installStore(t *testing.T, p, root string, copyBlobs bool) Result {
	t.Helper()
	ctx := context.Background()
	a, done := openDelta(t, p, func(base digest.Digest) (bundle.BlobSource, io.Closer, error) {
		return openStore(t, root, false).Base(ctx, base)
	})
	defer done()
	reg := openStore(t, root, copyBlobs)
	res, err := Install(ctx, a, Options{Root: root, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// openDelta opens the bundle at p; a delta gets its base from base. done
// closes both.
func openDelta(t *testing.T, p string, base func(digest.Digest) (bundle.BlobSource, io.Closer, error)) (*bundle.Archive, func()) {
	t.Helper()
	ctx := context.Background()
	a, err := bundle.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if a.Base() == "" {
		return a, func() { a.Close() }
	}
	src, c, err := base(a.Base())
	if err == nil {
		err = a.AttachBase(ctx, src)
	}
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a, func() { c.Close(); a.Close() }
}

// openStore opens the registry store under root, closed when the test ends.
func openStore(t testing.TB, root string, copyBlobs bool) *registry.Store {
	t.Helper()
	s, err := registry.OpenStore(root, registry.StoreOptions{CopyBlobs: copyBlobs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
