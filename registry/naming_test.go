package registry

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"

	"zdt.dev/zdt/bundle"
)

func TestImageRepositories(t *testing.T) {
	for _, c := range []struct {
		ref   string
		repos []string
		tag   string
		dg    bool
	}{
		{"docker.io/library/nginx:1.25", []string{"library/nginx", "docker.io/library/nginx"}, "1.25", false},
		{"nginx:1.25", []string{"library/nginx", "docker.io/library/nginx"}, "1.25", false},
		{"quay.io/cilium/cilium:v1.13.1", []string{"quay.io/cilium/cilium"}, "v1.13.1", false},
		{"registry.local:5000/team/app:2", []string{"registry.local_5000/team/app"}, "2", false},
		{"ghcr.io/a/b@sha256:" + strings.Repeat("ab", 32), []string{"ghcr.io/a/b"}, "", true},
		{"docker.io/bitnami/redis:7.0@sha256:" + strings.Repeat("cd", 32), []string{"bitnami/redis", "docker.io/bitnami/redis"}, "7.0", true},
		// No tag (a bundle made before references were normalized): served
		// as latest, where clients look (#13).
		{"registry.local:5000/platform/app", []string{"registry.local_5000/platform/app"}, "latest", false},
		{"docker.io/library/busybox", []string{"library/busybox", "docker.io/library/busybox"}, "latest", false},
	} {
		t.Run(c.ref, func(t *testing.T) {
			repos, tag, dg, err := ImageRepositories(c.ref)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(repos, " ") != strings.Join(c.repos, " ") || tag != c.tag || (dg != "") != c.dg {
				t.Fatalf("got %v %q %q", repos, tag, dg)
			}
		})
	}
	if _, _, _, err := ImageRepositories("a b:1"); err == nil {
		t.Fatal("invalid reference accepted")
	}
}

func TestMirrorNamespace(t *testing.T) {
	for host, want := range map[string]string{"docker.io": "", "index.docker.io": "", "quay.io": "quay.io", "Registry.Local:5000": "registry.local_5000"} {
		if got := MirrorNamespace(host); got != want {
			t.Errorf("MirrorNamespace(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestPlacements(t *testing.T) {
	tb := buildBundle(t, bundleSpec{})
	ps, err := Placements(context.Background(), tb.archive)
	if err != nil {
		t.Fatal(err)
	}
	sigTag := strings.ReplaceAll(tb.res.Root.Digest.String(), ":", "-") + ".sig"
	want := []struct{ repo, tag, kind string }{
		{"library/web", "1.0", "image"},
		{"docker.io/library/web", "1.0", "image"},
		{"quay.io/zdt/tools", "2.0", "image"},
		{"files/tool", "1.0.0", "file"},
		{"charts/demo", "1.2.3", "chart"},
		{"amis/node-image", "1.0.0", "ami"},
		{"zdt/test", "1.0.0", KindBundle},
		{"zdt/test", sigTag, KindAttachment},
		{"zdt/test", "", KindAttachment},
	}
	if len(ps) != len(want) {
		t.Fatalf("%d placements, want %d: %v", len(ps), len(want), ps)
	}
	for i, w := range want {
		if p := ps[i]; p.Repository != w.repo || p.Tag != w.tag || p.Kind != w.kind {
			t.Errorf("placement %d = %s (%s), want %s:%s (%s)", i, p, p.Kind, w.repo, w.tag, w.kind)
		}
	}
	// The web index and both platform manifests are linked; the root
	// repository holds every blob of the bundle.
	if web := ps[0]; len(web.Manifests) != 3 || len(web.Blobs) != 5 {
		t.Errorf("library/web links %d manifests and %d blobs, want 3 and 5 (2 configs, shared base, 2 app layers)", len(web.Manifests), len(web.Blobs))
	}
	root := ps[6]
	union := map[string]bool{}
	for _, p := range ps {
		if p.Repository == "zdt/test" {
			for _, d := range append(p.Manifests, p.Blobs...) {
				union[d.String()] = true
			}
		}
	}
	if len(union) != len(tb.archive.Digests()) || root.Digest != tb.res.Root.Digest {
		t.Errorf("root repository links %d of the archive's %d blobs", len(union), len(tb.archive.Digests()))
	}
}

func TestSplitRepoTag(t *testing.T) {
	for _, c := range []struct{ in, repo, tag string }{
		{"charts/demo:1.2.3", "charts/demo", "1.2.3"},
		{"charts/demo:1.2.3+build.1", "charts/demo", "1.2.3_build.1"},
		{"files/tool:v2", "files/tool", "v2"},
	} {
		repo, tag, err := splitRepoTag(c.in)
		if err != nil || repo != c.repo || tag != c.tag {
			t.Errorf("splitRepoTag(%q) = %q %q %v", c.in, repo, tag, err)
		}
	}
	for _, bad := range []string{"charts/demo", ":1", "Charts/x:1", "a/b:-x", "a:b/c", "a/b:" + strings.Repeat("x", 200)} {
		if _, _, err := splitRepoTag(bad); !errors.Is(err, ErrBadReference) {
			t.Errorf("splitRepoTag(%q) accepted: %v", bad, err)
		}
	}
}

func TestArchiveDriver(t *testing.T) {
	ctx := context.Background()
	tb := buildBundle(t, bundleSpec{noAMI: true})
	ps, _ := Placements(ctx, tb.archive)
	d, err := newArchiveDriver([]*bundle.Archive{tb.archive}, [][]Placement{ps}, nil)
	if err != nil {
		t.Fatal(err)
	}
	root := tb.res.Root.Digest
	// Reads.
	b, err := d.GetContent(ctx, tagCurrentPath("zdt/test", "1.0.0"))
	if err != nil || string(b) != root.String() {
		t.Fatalf("tag link = %q %v", b, err)
	}
	data, err := d.GetContent(ctx, blobDataPath(root))
	if err != nil || digestOf(data) != root {
		t.Fatalf("root blob: %v", err)
	}
	rc, err := d.Reader(ctx, blobDataPath(root), 10)
	if err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, len(data))
	n, _ := rc.Read(rest)
	if string(rest[:n]) != string(data[10:10+n]) {
		t.Fatal("reader at offset returns other bytes")
	}
	if _, err := d.Reader(ctx, blobDataPath(root), int64(len(data))+1); !errors.As(err, new(storagedriver.InvalidOffsetError)) {
		t.Fatalf("offset past the end: %v", err)
	}
	fi, err := d.Stat(ctx, "/docker/registry/v2/repositories/quay.io")
	if err != nil || !fi.IsDir() {
		t.Fatalf("stat dir: %v %v", fi, err)
	}
	kids, err := d.List(ctx, "/docker/registry/v2/repositories/zdt/test/_manifests/tags")
	if err != nil || len(kids) != 2 {
		t.Fatalf("tags dir: %v %v", kids, err)
	}
	for _, p := range []string{"/nope", "/docker/registry/v2/repositories/zdt/test/_uploads", "relative", "/a/../b", "/docker//registry"} {
		if _, err := d.Stat(ctx, p); err == nil {
			t.Errorf("Stat(%q) found something", p)
		}
	}
	// Writes are refused.
	for name, err := range map[string]error{
		"PutContent": d.PutContent(ctx, "/x", []byte("x")),
		"Move":       d.Move(ctx, blobDataPath(root), "/y"),
		"Delete":     d.Delete(ctx, blobDataPath(root)),
		"Writer":     func() error { _, err := d.Writer(ctx, "/x", false); return err }(),
	} {
		if !errors.Is(errors.Unwrap(err), nil) && !strings.Contains(err.Error(), ErrReadOnly.Error()) {
			t.Errorf("%s: %v", name, err)
		}
		var de storagedriver.Error
		if !errors.As(err, &de) || !errors.Is(de.Detail, ErrReadOnly) {
			t.Errorf("%s not refused as read-only: %v", name, err)
		}
	}
	if _, err := d.GetContent(ctx, blobDataPath(root)); err != nil {
		t.Fatal("content changed after refused writes")
	}
}

// FuzzArchiveDriverPath feeds request-derived paths (repository names, tags,
// digests end up in driver paths) to the archive driver: it must never
// panic, and only valid paths may find anything.
func FuzzArchiveDriverPath(f *testing.F) {
	tb := buildBundle(f, bundleSpec{noAMI: true})
	ps, _ := Placements(context.Background(), tb.archive)
	d, err := newArchiveDriver([]*bundle.Archive{tb.archive}, [][]Placement{ps}, nil)
	if err != nil {
		f.Fatal(err)
	}
	for p := range d.nodes {
		f.Add(p, int64(0))
	}
	f.Add("/docker/registry/v2/repositories/../../etc/passwd", int64(3))
	f.Add("", int64(-1))
	f.Fuzz(func(t *testing.T, p string, off int64) {
		ctx := context.Background()
		_, serr := d.Stat(ctx, p)
		_, gerr := d.GetContent(ctx, p)
		_, _ = d.List(ctx, p)
		rc, rerr := d.Reader(ctx, p, off)
		if rerr == nil {
			rc.Close()
		}
		valid := p == "/" || storagedriver.PathRegexp.MatchString(p)
		if !valid && (serr == nil || gerr == nil || rerr == nil) {
			t.Fatalf("invalid path %q found", p)
		}
		if serr == nil && p != "/" && !strings.HasPrefix(p, layoutRoot) && p != "/docker" && p != "/docker/registry" {
			t.Fatalf("path %q outside the layout exists", p)
		}
	})
}

// FuzzPlacementRefs: reference names come from the archive's index.json
// (untrusted). Whatever they are, the mapping errors or gives names
// distribution accepts.
func FuzzPlacementRefs(f *testing.F) {
	for _, s := range []string{"docker.io/library/nginx:1.25", "charts/demo:1.2.3", "quay.io/a/b@sha256:" + strings.Repeat("a", 64), "a:b:c", "localhost:5000/x:y", "files/x:1+2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		if repos, tag, _, err := ImageRepositories(ref); err == nil {
			for _, r := range repos {
				if _, err := reference.WithName(r); err != nil || validRepository(r) != nil {
					t.Fatalf("ImageRepositories(%q) gave invalid repository %q", ref, r)
				}
			}
			if tag != "" && !tagRegexp.MatchString(tag) {
				t.Fatalf("invalid tag %q", tag)
			}
		}
		if repo, tag, err := splitRepoTag(ref); err == nil {
			if _, err := reference.WithName(repo); err != nil || !tagRegexp.MatchString(tag) {
				t.Fatalf("splitRepoTag(%q) = %q %q", ref, repo, tag)
			}
			for _, l := range layoutLinks([]Placement{{Repository: repo, Tag: tag, Digest: digestOf([]byte(ref))}}) {
				if !storagedriver.PathRegexp.MatchString(l.path) || slices.Contains(strings.Split(l.path, "/"), "..") || slices.Contains(strings.Split(l.path, "/"), ".") {
					t.Fatalf("link path %q", l.path)
				}
			}
		}
	})
}
