package charts

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
)

// FuzzRepoIndex: a Helm repository's index.yaml comes from the network;
// parsing (within the size cap) and looking a chart up must not panic, and
// an index over the cap is refused before it is parsed.
func FuzzRepoIndex(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: 1.0.0\n    urls: [web-1.0.0.tgz]\n    digest: abc\n"), "web", "^1")
	f.Add([]byte("apiVersion: v1\nentries:\n  web: [null]\n"), "web", "1.0.0")
	f.Add([]byte("{}"), "x", "")
	f.Fuzz(func(t *testing.T, raw []byte, name, version string) {
		const limit = 4 << 10
		idx, err := ParseRepoIndex(raw, limit)
		if len(raw) > limit && !errors.Is(err, bundle.ErrTooLarge) {
			t.Fatalf("a %d-byte index over the %d-byte cap: err = %v", len(raw), limit, err)
		}
		if err != nil {
			return
		}
		if e, err := idx.Get(name, version); err == nil && e == nil {
			t.Fatal("Get returned neither an entry nor an error")
		}
	})
}

// FuzzImagesInManifests: rendered templates are arbitrary text.
func FuzzImagesInManifests(f *testing.F) {
	f.Add("containers:\n  - image: nginx:1\n---\nimage: [1, 2]\n")
	f.Add("{{ broken")
	f.Fuzz(func(t *testing.T, doc string) {
		for _, ref := range ImagesInManifests(map[string]string{"templates/x.yaml": doc}) {
			if ref == "" && !strings.Contains(doc, "image") {
				t.Fatal("found an image in a document without one")
			}
		}
	})
}

func TestImagesInManifests(t *testing.T) {
	got := ImagesInManifests(map[string]string{
		"c/templates/a.yaml":      "kind: Pod\nspec:\n  containers:\n    - image: nginx:1.25\n  initContainers:\n    - image: busybox\n---\nkind: X\nimage: {repository: not-a-string}\n",
		"c/templates/NOTES.txt":   "image: notes/ignored:1\n",
		"c/templates/_x.tpl":      "image: partial/ignored:1\n",
		"c/templates/broken.yaml": "image: [\n",
	})
	want := []string{"nginx:1.25", "busybox"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
