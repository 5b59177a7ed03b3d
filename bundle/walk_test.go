package bundle_test

import (
	"zdt.dev/zdt/bundle"

	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/internal/fixtures"
)

// TestWalkChecksStructure (issue 11.7): Walk, the cheap check every reader
// makes (serve --bundle without --verify included), refuses unreachable
// entries, missing blobs, negative or wrong sizes and media types that lie,
// naming the blob; the digest pass is Verify's.
func TestWalkChecksStructure(t *testing.T) {
	type craft func(c *fixtures.Crafted) string // returns what the error must name
	cfg := func(c *fixtures.Crafted) ocispec.Descriptor {
		return c.Blob(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	}
	cases := []struct {
		name  string
		craft craft
		want  error
	}{
		{"unreachable entry", func(c *fixtures.Crafted) string {
			c.Item("image", "registry.test/a:1", c.Manifest(cfg(c), c.Blob(ocispec.MediaTypeImageLayer, []byte("l"))))
			c.Stray = [][]byte{[]byte("stray")}
			return "blobs/sha256/"
		}, bundle.ErrUnreachable},
		{"missing blob", func(c *fixtures.Crafted) string {
			l := c.Blob(ocispec.MediaTypeImageLayer, []byte("gone"))
			c.Item("image", "registry.test/a:1", c.Manifest(cfg(c), l))
			c.Omit[l.Digest] = true
			return l.Digest.String()
		}, bundle.ErrMissingBlob},
		{"wrong size", func(c *fixtures.Crafted) string {
			l := c.Blob(ocispec.MediaTypeImageLayer, []byte("four"))
			l.Size = 5
			c.Item("image", "registry.test/a:1", c.Manifest(cfg(c), l))
			return "descriptor says 5 bytes"
		}, bundle.ErrDigestMismatch},
		{"negative size", func(c *fixtures.Crafted) string {
			l := c.Blob(ocispec.MediaTypeImageLayer, []byte("four"))
			l.Size = -1
			c.Item("image", "registry.test/a:1", c.Manifest(cfg(c), l))
			return "negative size"
		}, bundle.ErrNotBundle},
		{"index posing as an image manifest", func(c *fixtures.Crafted) string {
			m := c.Manifest(cfg(c), c.Blob(ocispec.MediaTypeImageLayer, []byte("l")))
			idx := c.JSON(ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{m}})
			idx.MediaType = ocispec.MediaTypeImageManifest
			c.Item("image", "registry.test/a:1", idx)
			return "content says media type"
		}, bundle.ErrNotBundle},
		{"manifest without a mediaType field posing as an index", func(c *fixtures.Crafted) string {
			m := c.JSON(ocispec.MediaTypeImageIndex, map[string]any{"schemaVersion": 2, "config": cfg(c), "layers": []ocispec.Descriptor{c.Blob(ocispec.MediaTypeImageLayer, []byte("l"))}})
			c.Item("image", "registry.test/a:1", m)
			return "an index"
		}, bundle.ErrNotBundle},
		{"a manifest reached as a layer too", func(c *fixtures.Crafted) string {
			m := c.Manifest(cfg(c), c.Blob(ocispec.MediaTypeImageLayer, []byte("l")))
			asLayer := m
			asLayer.MediaType = ocispec.MediaTypeImageLayer
			c.Item("image", "registry.test/a:1", m)
			c.Item("image", "registry.test/b:1", c.Manifest(cfg(c), asLayer))
			return "also reached as"
		}, bundle.ErrNotBundle},
		{"nested too deeply", func(c *fixtures.Crafted) string {
			d := c.Manifest(cfg(c), c.Blob(ocispec.MediaTypeImageLayer, []byte("l")))
			for range bundle.MaxGraphDepth + 1 {
				d = c.JSON(ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{d}})
			}
			c.Item("image", "registry.test/a:1", d)
			return "nested deeper"
		}, bundle.ErrNotBundle},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fixtures.NewCrafted("crafted", "1")
			msg := tc.craft(c)
			p := filepath.Join(t.TempDir(), "c.zdt")
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			a, err := bundle.Open(ctx, p)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer a.Close()
			_, err = a.Walk(ctx)
			if !errors.Is(err, tc.want) || !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), msg) {
				t.Errorf("err = %v, want it to name %q", err, msg)
			}
		})
	}
	// A well-formed crafted bundle walks, and a second Walk is the same
	// graph (parsed once).
	c := fixtures.NewCrafted("crafted", "1")
	c.Item("image", "registry.test/a:1", c.Manifest(cfg(c), c.Blob(ocispec.MediaTypeImageLayer, []byte("l"))))
	p := filepath.Join(t.TempDir(), "ok.zdt")
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	a, err := bundle.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	g1, err := a.Walk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := a.Walk(context.Background())
	if g1 != g2 || len(g1.Items) != 1 || len(g1.Children) != 3 {
		t.Fatalf("graph %+v (again: same=%v)", g1, g1 == g2)
	}
	if _, err := a.Verify(context.Background(), bundle.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}
