package installer

import (
	"bytes"
	"context"
	"errors"
	mrand "math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/signing"
)

// serveBundle serves the bundle file at p as `zdt serve --bundle` does,
// through tamper (which may answer instead), and returns its host.
func serveBundle(t *testing.T, p string, tamper func(w http.ResponseWriter, r *http.Request, next http.Handler) bool) string {
	t.Helper()
	a, err := bundle.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := registry.NewHandler(context.Background(), registry.HandlerOptions{Archives: []*bundle.Archive{a}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tamper == nil || !tamper(w, r, h) {
			h.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() { srv.Close(); h.Close(); a.Close() })
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestInstallFrom is the library entry point of install --from:
// InstallFrom places the files read from the registry, records the source
// in the generation, changes nothing when run again, keeps the images'
// layers out of the store (only their metadata is in it, which answers
// their tags) until Replicate copies them in (served whole), and rollback
// returns to the registry's mirror, after this node, for digests only.
func TestInstallFrom(t *testing.T) {
	dir := t.TempDir()
	content := []byte("#!/bin/sh\necho from the registry\n")
	p := release{version: "1", images: map[string]int64{"quay.io/a/b:1": 1}, files: map[string][]byte{"/usr/local/bin/t": content}}.build(t, dir)
	host := serveBundle(t, p, nil)
	ref := host + "/zdt/plat:1"
	root := filepath.Join(dir, "node2")
	ctx := context.Background()
	opts := FromOptions{Options: Options{Root: root, ToolVersion: "test"}, Policy: signing.Policy{InsecureSkipSignature: true}}

	res, err := InstallFrom(ctx, ref, opts)
	if err != nil || !res.Applied || res.Generation != 1 {
		t.Fatalf("InstallFrom: %+v %v", res, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/local/bin/t")); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("placed %q %v", b, err)
	}
	st, err := GetStatusOf(ctx, root, "")
	if err != nil || !st.Healthy() || st.Generation.Source == nil || st.Registry == nil || st.Registry.Served == 0 || st.Registry.CopiedBytes >= 64<<10 {
		t.Fatalf("status %+v %+v %v", st, st.Registry, err)
	}
	if src := st.Generation.Source; src.Registry != host || !strings.HasPrefix(src.Reference, host+"/zdt/plat@sha256:") || src.Replicated {
		t.Fatalf("recorded source %+v", src)
	}
	if res, err := InstallFrom(ctx, ref, opts); err != nil || res.Applied {
		t.Fatalf("run again: %+v %v", res, err)
	}
	if whole, err := ServesWhole(root, "plat"); err != nil || whole {
		t.Fatalf("ServesWhole after --from: %v %v, want false", whole, err)
	}

	rep := opts
	rep.Replicate = true
	if res, err := InstallFrom(ctx, ref, rep); err != nil || !res.Applied || res.Generation != 2 {
		t.Fatalf("Replicate: %+v %v", res, err)
	}
	st, err = GetStatusOf(ctx, root, "")
	if err != nil || !st.Healthy() || st.Registry == nil || st.Registry.Served == 0 || st.Registry.CopiedBytes < 64<<10 {
		t.Fatalf("status after Replicate: %+v %v", st.Registry, err)
	}
	if res, err := InstallFrom(ctx, ref, rep); err != nil || res.Applied {
		t.Fatalf("Replicate again: %+v %v", res, err)
	}
	if whole, err := ServesWhole(root, "plat"); err != nil || !whole {
		t.Fatalf("ServesWhole after --replicate: %v %v, want true", whole, err)
	}
	if whole, err := ServesWhole(root, "other"); err != nil || whole {
		t.Fatalf("ServesWhole of a bundle not installed: %v %v, want false", whole, err)
	}
	store, err := registry.OpenStore(root, registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := Rollback(ctx, Options{Root: root, ToolVersion: "test", Registry: store}); err != nil {
		t.Fatal(err)
	}
	st, err = GetStatusOf(ctx, root, "")
	if err != nil || !st.Healthy() || st.Registry == nil || st.Generation.Source == nil || st.Generation.Source.Replicated {
		t.Fatalf("status after rollback: %+v %v", st, err)
	}
	hosts, _ := os.ReadFile(filepath.Join(root, "etc/containerd/certs.d/quay.io/hosts.toml"))
	local, remote := strings.Index(string(hosts), `[host."https://`+DefaultServeAddr+`/v2/quay.io"]`), strings.Index(string(hosts), `[host."https://`+host+`/v2/quay.io"]`)
	if local < 0 || remote < local || strings.Count(string(hosts), `"resolve"`) != 1 || strings.Contains(string(hosts[remote:]), "resolve") {
		t.Fatalf("after rollback hosts.toml (this node first and alone resolving, then the registry):\n%s", hosts)
	}
}

// TestInstallFromDamagedFile: a registry that serves a file item's layer
// with one byte changed gets nothing placed and no generation recorded;
// a policy the bundle does not satisfy writes nothing at all.
func TestInstallFromDamagedFile(t *testing.T) {
	dir := t.TempDir()
	content := make([]byte, 16<<10) // random: stored as is, one layer over 1000 bytes
	mrand.New(mrand.NewSource(7)).Read(content)
	p := release{version: "1", files: map[string][]byte{"/usr/local/bin/t": content}}.build(t, dir)
	host := serveBundle(t, p, func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		if len(b) > 1000 { // the file's layer (zstd or not), not a manifest or config
			b[len(b)/2] ^= 1
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(b)
		return true
	})
	ctx := context.Background()
	root := filepath.Join(dir, "node2")
	_, err := InstallFrom(ctx, host+"/zdt/plat:1", FromOptions{Options: Options{Root: root, ToolVersion: "test"}, Policy: signing.Policy{InsecureSkipSignature: true}})
	if !errors.Is(err, bundle.ErrDigestMismatch) {
		t.Fatalf("got %v, want a digest mismatch", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/local/bin/t")); !os.IsNotExist(err) {
		t.Fatalf("the damaged file was placed (%v)", err)
	}
	if st, err := GetStatusOf(ctx, root, ""); err != nil || st.Installed {
		t.Fatalf("a generation was recorded: %+v %v", st, err)
	}
	other := filepath.Join(dir, "unsigned")
	if _, err := InstallFrom(ctx, host+"/zdt/plat:1", FromOptions{Options: Options{Root: other}}); !errors.Is(err, bundle.ErrVerification) {
		t.Fatalf("an unsigned bundle without --insecure-skip-signature: %v", err)
	}
	if _, err := os.Lstat(other); !os.IsNotExist(err) {
		t.Fatalf("a refused bundle created its root (%v)", err)
	}
}
