package bundle

import (
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/manifests"
)

// OpenSource opens a bundle held by a registry (or any store of blobs)
// rather than by an archive file: every blob, the root included, is read
// through src, which says nothing is trusted (ReadSmall and every reader
// of larger blobs check digests). root is the root's descriptor, resolved
// once (a registry tag may move: src must serve by digest), and
// attachments are the root's signature and attestation manifests as the
// registry tags them (sha256-<root hex>.sig, .att).
//
// The archive it returns behaves as one opened from a file: its index is
// made of the root's entry, the root's items exactly as the root lists
// them and the attachments, and the same checks run on it. opts.CheckIndex
// runs first, on the root's entry and the attachments, before the root is
// read (an unsigned bundle costs nothing more). name is what Path says
// (the reference it was opened from). The archive is not a file: Stat
// fails (so a registry store copies rather than keeps it) and Digests
// lists nothing.
func OpenSource(ctx context.Context, name string, src BlobSource, root ocispec.Descriptor, attachments []ocispec.Descriptor, opts OpenOptions) (*Archive, error) {
	if root.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("%s: root %s is %q, not an OCI image index: %w", name, root.Digest, root.MediaType, ErrNotBundle)
	}
	if _, ok := keyOf(root.Digest); !ok {
		return nil, fmt.Errorf("%s: root %q is not a sha256 digest: %w", name, root.Digest, ErrNotBundle)
	}
	a := &Archive{path: name, base: src, blobs: map[blobKey]entry{}, other: map[string]entry{}, close: func() error { return nil }}
	rootEntry := ocispec.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: root.Size,
		Annotations: map[string]string{manifests.AnnotationBundleRoot: "true"}}
	a.Root = rootEntry
	var atts []ocispec.Descriptor
	for _, m := range attachments {
		if !IsAttachment(root.Digest, m) {
			return nil, fmt.Errorf("%s: %s is not attached to root %s: %w", name, m.Digest, root.Digest, ErrNotBundle)
		}
		atts = append(atts, m)
	}
	a.Index = ocispec.Index{Manifests: append([]ocispec.Descriptor{rootEntry}, atts...)}
	a.Index.SchemaVersion = 2
	a.Index.MediaType = ocispec.MediaTypeImageIndex
	if opts.CheckIndex != nil {
		if err := opts.CheckIndex(a.Index, a.Root); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := a.readRoot(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// The index a file of this bundle would hold: the root tagged after
	// its config, its items as it lists them, its attachments.
	rootEntry.Annotations = map[string]string{manifests.AnnotationBundleRoot: "true", manifests.AnnotationRefName: RootRef(a.Config.Name, a.Config.Version)}
	a.Root = rootEntry
	idx := []ocispec.Descriptor{rootEntry}
	idx = append(idx, a.RootIndex.Manifests[1:]...)
	a.Index.Manifests = append(idx, atts...)
	if err := a.checkIndexAgainstRoot(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return a, nil
}
