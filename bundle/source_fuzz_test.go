package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
)

// mapSource is a BlobSource of blobs in memory (what a registry answers).
type mapSource map[digest.Digest][]byte

func (m mapSource) BlobSize(d digest.Digest) (int64, bool) {
	b, ok := m[d]
	return int64(len(b)), ok
}

func (m mapSource) BlobReader(d digest.Digest) (*io.SectionReader, error) {
	b, ok := m[d]
	if !ok {
		return nil, fmt.Errorf("%s: not found", d)
	}
	return io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b))), nil
}

// FuzzOpenSource feeds a registry's answers (the root, the bundle config
// manifest, the config and a signature manifest, each whatever bytes) to
// OpenSource, as install --from reads them: it must never panic, refuse
// only with verification errors, and an archive it opens has the root it
// was given and walks (or is refused by the walk) without a panic.
func FuzzOpenSource(f *testing.F) {
	a, err := bundle.OpenReader(context.Background(), bytes.NewReader(smallBundle(f)), int64(len(smallBundle(f))))
	if err != nil {
		f.Fatal(err)
	}
	read := func(d ocispec.Descriptor) []byte {
		b, err := a.ReadSmall(context.Background(), d)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(read(a.Root), read(a.RootIndex.Manifests[0]), read(a.ConfigManifest.Config), []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`))
	f.Add([]byte(`{}`), []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, root, cfgManifest, cfg, sig []byte) {
		ctx := context.Background()
		src := mapSource{}
		for _, b := range [][]byte{root, cfgManifest, cfg, sig} {
			src[digest.FromBytes(b)] = b
		}
		rd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(root), Size: int64(len(root))}
		tag := "sha256-" + rd.Digest.Encoded() + ".sig"
		att := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(sig), Size: int64(len(sig)),
			Annotations: map[string]string{ocispec.AnnotationRefName: tag}}
		a, err := bundle.OpenSource(ctx, "fuzz", src, rd, []ocispec.Descriptor{att}, bundle.OpenOptions{})
		if err != nil {
			if !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("refused with a non-verification error: %v", err)
			}
			return
		}
		if a.Root.Digest != rd.Digest {
			t.Fatalf("opened root %s, given %s", a.Root.Digest, rd.Digest)
		}
		if _, err := a.Walk(ctx); err != nil && !errors.Is(err, bundle.ErrVerification) {
			t.Fatalf("walk refused with a non-verification error: %v", err)
		}
	})
}
