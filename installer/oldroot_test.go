package installer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/remote"
	"zdt.dev/zdt/signing"
)

// TestOlderFromGenerationBeside: a root as a zdt from before install
// --from imported the bundle's metadata left it: a generation installed
// from a registry without replicating, with no placements record in the
// registry storage (and no Metadata). Installing another bundle beside
// it, uninstalling that one and upgrading it all work (the registry is
// not asked to activate what it never held); a rollback to that
// generation, or to one whose record is lost, is refused before anything
// under the root is written, naming the generation and what to do.
func TestOlderFromGenerationBeside(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := testregistry.New(t, testregistry.Options{})
	remotes := remote.New(nil, 4)
	for _, v := range []string{"1", "2"} {
		p := release{version: v, images: map[string]int64{"quay.io/a/b:" + v: 1}, files: map[string][]byte{"/etc/plat": []byte("plat " + v)}}.build(t, filepath.Join(dir, v))
		a, err := bundle.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := registry.Push(ctx, a, src.Host+"/site", registry.PushOptions{Remotes: remotes}); err != nil {
			t.Fatal(err)
		}
		a.Close()
	}
	root := filepath.Join(dir, "node")
	from := FromOptions{Options: Options{Root: root, ToolVersion: "test"}, Policy: signing.Policy{InsecureSkipSignature: true}, Remotes: remotes}
	res, err := InstallFrom(ctx, src.Host+"/site/zdt/plat:1", from)
	if err != nil {
		t.Fatal(err)
	}
	old := res.Generation

	// As the older zdt left it: no record, no Metadata.
	genFile := filepath.Join(root, layout.Generation(old))
	var g map[string]any
	if err := json.Unmarshal(mustRead(t, genFile), &g); err != nil {
		t.Fatal(err)
	}
	if g["metadata"] != true {
		t.Fatalf("generation %d of an install --from does not record its metadata import: %v", old, g["metadata"])
	}
	setMetadata := func(on bool) {
		t.Helper()
		if on {
			g["metadata"] = true
		} else {
			delete(g, "metadata")
		}
		b, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(genFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setMetadata(false)
	if err := os.Remove(filepath.Join(root, layout.Placements(digest.Digest(g["bundleDigest"].(string))))); err != nil {
		t.Fatal(err)
	}

	other := release{name: "other", version: "1", images: map[string]int64{"docker.io/library/x:1": 3}, files: map[string][]byte{"/etc/other": []byte("other")}}.build(t, filepath.Join(dir, "other"))
	withStore := func(f func(s *registry.Store) error) error {
		s, err := registry.OpenStore(root, registry.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return f(s)
	}
	served := func(repo, tag string) bool {
		t.Helper()
		_, code := manifestDigest(t, serveStore(t, root), repo, tag)
		return code == http.StatusOK
	}
	for i := 0; i < 2; i++ {
		if _, err := installArchive(other, root); err != nil {
			t.Fatalf("installing another bundle beside the older generation: %v", err)
		}
		if !served("library/x", "1") {
			t.Fatal("the other bundle's image is not served")
		}
		if st, err := GetStatusOf(ctx, root, "other"); err != nil || !st.Healthy() {
			t.Fatalf("status: %+v %v", st, err)
		}
		if i == 0 {
			if err := withStore(func(s *registry.Store) error {
				_, err := Uninstall(ctx, Options{Root: root, Name: "other", Registry: s})
				return err
			}); err != nil {
				t.Fatalf("uninstalling another bundle beside the older generation: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, "etc/other")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the other bundle's file stays: %v", err)
			}
		}
	}
	if _, err := InstallFrom(ctx, src.Host+"/site/zdt/plat:2", from); err != nil {
		t.Fatalf("upgrading the older generation: %v", err)
	}
	if !served("quay.io/a/b", "2") || !served("library/x", "1") {
		t.Fatal("after the upgrade the node does not serve both bundles' tags")
	}

	rollback := func(want string) {
		t.Helper()
		before := snapshot(t, root)
		err := withStore(func(s *registry.Store) error {
			_, err := Rollback(ctx, Options{Root: root, Name: "plat", ToolVersion: "test", Registry: s})
			return err
		})
		var ne *NotServableError
		if !errors.Is(err, ErrNotServable) || !errors.As(err, &ne) || ne.Generation != old || ne.Name != "plat" || !strings.Contains(err.Error(), want) {
			t.Fatalf("rollback to generation %d: %v, want it refused naming it and %q", old, err, want)
		}
		if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
			t.Fatalf("a refused rollback wrote under the root:\nbefore %v\nafter  %v", before, after)
		}
	}
	rollback("zdt install --from " + src.Host + "/site/zdt/plat@")
	setMetadata(true) // imported, but its record is lost
	rollback("install bundle plat again")
	if got := string(mustRead(t, filepath.Join(root, "etc/plat"))); got != "plat 2" {
		t.Fatalf("/etc/plat = %q", got)
	}
}
