package signing

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// TestSignatureLayerSizeBounded: a signature or attestation manifest
// claiming layers larger than a signature can be is refused from the
// descriptors alone, before a byte of those layers is read (the layers do
// not even exist in the archive: reading one would fail differently).
// Everything read before verification is held in memory, so an unsigned
// manifest must not be able to make Verify read 64 layers of 4 MiB.
func TestSignatureLayerSizeBounded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "cosign", "")
	signed, _ := testBundle(t, dir, "a", kp.PrivateKey, "", []byte("tool a\n"))
	policy, err := LoadPolicy(ctx, PolicyOptions{Keys: []string{kp.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	huge := func(suffix string, layers []ocispec.Descriptor) string {
		entries := readEntries(t, signed)
		var idx ocispec.Index
		if err := json.Unmarshal(entryData(t, entries, "index.json"), &idx); err != nil {
			t.Fatal(err)
		}
		for i, m := range idx.Manifests {
			if !strings.HasSuffix(m.Annotations[manifests.AnnotationRefName], suffix) {
				continue
			}
			var sm ocispec.Manifest
			if err := json.Unmarshal(entryData(t, entries, "blobs/sha256/"+m.Digest.Encoded()), &sm); err != nil {
				t.Fatal(err)
			}
			for _, l := range layers {
				l.MediaType = sm.Layers[0].MediaType
				l.Annotations = sm.Layers[0].Annotations
				sm.Layers = append(sm.Layers, l)
			}
			b, err := json.Marshal(sm)
			if err != nil {
				t.Fatal(err)
			}
			d := digest.FromBytes(b)
			entries = setEntry(entries, "blobs/sha256/"+d.Encoded(), b)
			idx.Manifests[i].Digest, idx.Manifests[i].Size = d, int64(len(b))
		}
		ib, err := json.Marshal(idx)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, strings.TrimPrefix(suffix, ".")+".zdt")
		writeEntries(t, p, setEntry(entries, "index.json", ib))
		return p
	}
	missing := func(n int, size int64) []ocispec.Descriptor {
		var ls []ocispec.Descriptor
		for i := range n {
			ls = append(ls, ocispec.Descriptor{Digest: digest.FromString(strings.Repeat("x", i+1)), Size: size})
		}
		return ls
	}
	for _, tc := range []struct {
		name, suffix string
		layers       []ocispec.Descriptor
		msg          string
	}{
		{"one 4 MiB signature layer", ".sig", missing(1, 4<<20), "more than 65536"},
		{"attestations over 16 MiB together", ".att", missing(5, 4<<20), "bytes, more than 16777216"},
		{"negative size", ".sig", missing(1, -1), "has size -1"},
		{"one attestation layer of 8 EiB", ".att", missing(2, 1<<62), "more than 16777216"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := bundle.Open(ctx, huge(tc.suffix, tc.layers))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			_, err = Verify(ctx, a, policy)
			if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: %v, want ErrBadSignature naming %q", err, tc.msg)
			}
		})
	}
}
