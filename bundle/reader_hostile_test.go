package bundle_test

import (
	"zdt.dev/zdt/bundle"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/manifests"
)

// rewriteIndexJSON returns entries with index.json replaced by edit's
// version of it.
func rewriteIndexJSON(t *testing.T, entries []tarEntry, edit func(*ocispec.Index)) []tarEntry {
	t.Helper()
	out := make([]tarEntry, len(entries))
	for i, e := range entries {
		h := *e.Hdr
		out[i] = tarEntry{Hdr: &h, Data: e.Data}
		if h.Name != bundle.EntryIndex {
			continue
		}
		var idx ocispec.Index
		if err := json.Unmarshal(e.Data, &idx); err != nil {
			t.Fatal(err)
		}
		edit(&idx)
		b, err := json.Marshal(idx)
		if err != nil {
			t.Fatal(err)
		}
		out[i].Data = b
	}
	return out
}

// refIndex finds the index.json entry tagged ref (or ending in suffix).
func refIndex(t *testing.T, idx *ocispec.Index, suffix string) int {
	t.Helper()
	for i, m := range idx.Manifests {
		if strings.HasSuffix(m.Annotations[manifests.AnnotationRefName], suffix) {
			return i
		}
	}
	t.Fatalf("no index.json entry tagged *%s", suffix)
	return -1
}

func setRef(m *ocispec.Descriptor, ref string) {
	a := map[string]string{}
	for k, v := range m.Annotations {
		a[k] = v
	}
	a[manifests.AnnotationRefName] = ref
	m.Annotations = a
}

// TestIndexJSONMatchesRoot (issue 11.2): index.json is not covered by the
// signature, the root is. Retagging items there (two images' tags swapped,
// a file tagged as docker.io/library/nginx:latest, the root renamed, an
// extra tag, an attachment-looking entry with an image tag) is refused at
// Open, naming the entry, before extract writes the forged tags.
func TestIndexJSONMatchesRoot(t *testing.T) {
	_, res := createBundle(t, build.CreateOptions{})
	good := readEntries(t, res.Path)
	rootTag := strings.ReplaceAll(res.Root.Digest.String(), ":", "-")
	cases := []struct {
		name string
		edit func(*ocispec.Index)
		msg  string
	}{
		{"two images' tags swapped", func(idx *ocispec.Index) {
			i, j := refIndex(t, idx, "app/web:1.0"), refIndex(t, idx, "app/tools:2.0")
			a, b := idx.Manifests[i].Annotations[manifests.AnnotationRefName], idx.Manifests[j].Annotations[manifests.AnnotationRefName]
			setRef(&idx.Manifests[i], b)
			setRef(&idx.Manifests[j], a)
		}, "registry.test/app/tools:2.0"},
		{"file tagged as nginx", func(idx *ocispec.Index) {
			for i, m := range idx.Manifests {
				if m.Annotations[manifests.AnnotationKind] == manifests.KindFile {
					setRef(&idx.Manifests[i], "docker.io/library/nginx:latest")
				}
			}
		}, "docker.io/library/nginx:latest"},
		{"root renamed", func(idx *ocispec.Index) {
			setRef(&idx.Manifests[0], "zdt/other:9.9.9")
		}, "zdt/other:9.9.9"},
		{"root entry with a foreign annotation", func(idx *ocispec.Index) {
			idx.Manifests[0].Annotations["org.opencontainers.image.base.name"] = "x"
		}, "unexpected annotation"},
		{"extra tag for an item", func(idx *ocispec.Index) {
			m := idx.Manifests[refIndex(t, idx, "app/web:1.0")]
			setRef(&m, "docker.io/library/nginx:latest")
			idx.Manifests = append(idx.Manifests, m)
		}, "docker.io/library/nginx:latest"},
		{"item dropped", func(idx *ocispec.Index) {
			i := refIndex(t, idx, "app/web:1.0")
			idx.Manifests = append(idx.Manifests[:i], idx.Manifests[i+1:]...)
		}, "registry.test/app/web:1.0"},
		{"items reordered", func(idx *ocispec.Index) {
			idx.Manifests[1], idx.Manifests[2] = idx.Manifests[2], idx.Manifests[1]
		}, "does not match"},
		{"attachment by subject tagged as an image", func(idx *ocispec.Index) {
			m := idx.Manifests[refIndex(t, idx, "app/web:1.0")]
			m.Annotations = map[string]string{manifests.AnnotationSubject: res.Root.Digest.String(), manifests.AnnotationRefName: "docker.io/library/nginx:latest"}
			idx.Manifests = append(idx.Manifests, m)
		}, "docker.io/library/nginx:latest"},
		{"signature tag on an index", func(idx *ocispec.Index) {
			m := idx.Manifests[refIndex(t, idx, "app/web:1.0")] // a two-platform index
			m.Annotations = map[string]string{manifests.AnnotationRefName: rootTag + ".sig"}
			idx.Manifests = append(idx.Manifests, m)
		}, "not a manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "retagged.zdt")
			writeEntries(t, p, rewriteIndexJSON(t, good, tc.edit))
			out := filepath.Join(t.TempDir(), "extracted")
			err := openVerifyExtract(p, out)
			var ie *bundle.IndexError
			if !errors.Is(err, bundle.ErrIndexMismatch) || !errors.Is(err, bundle.ErrVerification) || !errors.As(err, &ie) {
				t.Fatalf("err = %v, want an *IndexError matching ErrIndexMismatch and ErrVerification", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v, want it to name %q", err, tc.msg)
			}
			if _, serr := os.Stat(out); !os.IsNotExist(serr) {
				t.Fatalf("extract wrote %s despite %v", out, err)
			}
		})
	}
	// The untouched bundle, and index.json re-encoded with the same
	// content, still open.
	p := filepath.Join(t.TempDir(), "same.zdt")
	writeEntries(t, p, rewriteIndexJSON(t, good, func(*ocispec.Index) {}))
	if err := openVerifyExtract(p, filepath.Join(t.TempDir(), "x")); err != nil {
		t.Fatal(err)
	}
}

// TestBytesAfterEndOfArchive (issue 11.8): a tar entry smuggled after the
// end-of-archive marker (which GNU tar lists) is refused; zero padding
// (tar's record blocking) is not.
func TestBytesAfterEndOfArchive(t *testing.T) {
	_, res := createBundle(t, build.CreateOptions{})
	b, err := os.ReadFile(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	// A complete second archive after the first one's marker: a one-entry
	// tar named like a blob.
	var smuggled bytes.Buffer
	writeEntriesTo(t, &smuggled, []tarEntry{{Hdr: bundle.Header("blobs/sha256/"+strings.Repeat("e", 64), 5, false), Data: []byte("evil\n")}})
	for _, tc := range []struct {
		name string
		tail []byte
		want error
	}{
		{"smuggled entry", smuggled.Bytes(), bundle.ErrUnsafeEntry},
		{"one stray byte far out", append(make([]byte, 20<<10), 1), bundle.ErrUnsafeEntry},
		{"zero padding to a 10 KiB record", make([]byte, 10240-len(b)%10240), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "tail.zdt")
			writeFile(t, p, append(append([]byte(nil), b...), tc.tail...))
			a, err := bundle.Open(context.Background(), p)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				a.Close()
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "after the end-of-archive marker") {
				t.Errorf("err = %v does not say where", err)
			}
		})
	}
}

func writeEntriesTo(t *testing.T, w *bytes.Buffer, entries []tarEntry) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "t.tar")
	writeEntries(t, p, entries)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
}
