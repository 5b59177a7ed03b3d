package bundle

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/manifests"
)

// Bounds of a bundle's manifest graph, the same for create, the reader and
// the registry.
const (
	// MaxGraphDepth bounds manifest nesting below a bundle item (an index
	// of indexes of …).
	MaxGraphDepth = 8
	// MaxDescriptors bounds the descriptors one manifest or index lists
	// (layers, blobs, manifests): about what fits in MaxManifestSize.
	// Create refuses more too (and MaxRefsPerItem per item).
	MaxDescriptors = 1 << 15
	// MaxGraphRefs bounds the descriptors the walk visits in all (a
	// release of a thousand images of thirty layers for four platforms
	// visits some 120,000).
	MaxGraphRefs = 1 << 19
)

// IsManifest reports whether a blob of media type mt is a manifest or an
// index, whose content points at other blobs: OCI image manifest, image
// index and (image-spec 1.1 rc) artifact manifest, Docker schema 2 manifest
// and manifest list, as oras-go's content.Successors reads them. Everything
// else is a leaf. It is the one classification create, the reader and the
// registry use.
func IsManifest(mt string) bool { return isManifest(mt) }

// IsIndex reports whether mt is an OCI image index or a Docker manifest
// list.
func IsIndex(mt string) bool {
	return mt == manifests.MediaTypeOCIIndex || mt == manifests.MediaTypeDockerManifestList
}

// blobRef is what the walk learnt about one blob.
type blobRef struct {
	desc   ocispec.Descriptor
	role   string // manifest, index, config, layer, subject
	item   string // first item that reaches it
	parsed bool   // read and digest-checked during the walk
}

// Edge is one descriptor a manifest points at and the role its blob plays
// for the manifest: "config", "layer", "blob", "manifest" or "subject".
type Edge struct {
	Desc ocispec.Descriptor
	Role string
}

// Graph is the content reachable from the bundle root, as Walk found it.
// The archive keeps it (Walk returns the same Graph again): read it, don't
// modify it.
type Graph struct {
	// Items are the root's items, with sizes, in spec order.
	Items []Item
	// Blobs maps every reachable blob (the root included) to its size.
	Blobs map[digest.Digest]int64
	// Children maps every reachable manifest and index (the root, its
	// items, their manifests, the attachments) to what it points at, in
	// the order it lists them (descriptors without annotations). A digest
	// is a manifest exactly when it is a key.
	Children map[digest.Digest][]Edge
	refs     map[digest.Digest]*blobRef
	visits   int
}

// UniqueSize is the bytes of all reachable blobs, each counted once.
func (g *Graph) UniqueSize() int64 {
	var n int64
	for _, s := range g.Blobs {
		n += s
	}
	return n
}

// TotalSize is the sum of the items' sizes (shared blobs counted per item).
func (g *Graph) TotalSize() int64 {
	var n int64
	for _, it := range g.Items {
		n += it.Size
	}
	return n
}

// manifestNode holds the fields of any manifest or index that point at
// other blobs.
type manifestNode struct {
	MediaType string               `json:"mediaType"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Blobs     []ocispec.Descriptor `json:"blobs"`
	Subject   *ocispec.Descriptor  `json:"subject"`
}

// mediaTypeArtifactManifest is the OCI artifact manifest of image-spec
// 1.1.0-rc, which some registries and tools still produce.
const mediaTypeArtifactManifest = "application/vnd.oci.artifact.manifest.v1+json"

func isManifest(mt string) bool {
	switch mt {
	case manifests.MediaTypeOCIManifest, manifests.MediaTypeOCIIndex,
		manifests.MediaTypeDockerManifest, manifests.MediaTypeDockerManifestList,
		mediaTypeArtifactManifest:
		return true
	}
	return false
}

// Walk follows every descriptor from the root, reading (and digest-checking)
// manifests and indexes only, and checks the archive's structure: every
// blob reached is present with the size its descriptor gives, every
// manifest's content is the kind of manifest its descriptor says (no
// index posing as an image manifest, no layer posing as a manifest), no
// more than MaxDescriptors descriptors per manifest and MaxGraphDepth
// levels, and the archive holds nothing unreachable. It does not hash
// layers; Verify does. It is the one walk of a bundle's graph: Verify,
// install and the registry's placements use its Graph, which the archive
// keeps (a second call returns it again).
func (a *Archive) Walk(ctx context.Context) (*Graph, error) {
	a.walkMu.Lock()
	defer a.walkMu.Unlock()
	if a.graph != nil {
		return a.graph, nil
	}
	g, err := a.walkAll(ctx)
	if err != nil {
		return nil, err
	}
	a.graph = g
	return g, nil
}

func (a *Archive) walkAll(ctx context.Context) (*Graph, error) {
	g := &Graph{Blobs: map[digest.Digest]int64{}, Children: map[digest.Digest][]Edge{}, refs: map[digest.Digest]*blobRef{}}
	g.refs[a.Root.Digest] = &blobRef{desc: a.Root, role: "root index", parsed: true}
	rootKids := make([]Edge, 0, len(a.RootIndex.Manifests))
	for _, m := range a.RootIndex.Manifests {
		rootKids = append(rootKids, Edge{Desc: bare(m), Role: "manifest"})
	}
	g.Children[a.Root.Digest] = rootKids
	if len(a.RootIndex.Manifests) > MaxDescriptors {
		return nil, &BlobError{Digest: a.Root.Digest, Role: "root index", Err: fmt.Errorf("lists %d manifests, more than %d: %w", len(a.RootIndex.Manifests), MaxDescriptors, ErrTooLarge)}
	}
	if err := a.walk(ctx, g, a.RootIndex.Manifests[0], "manifest", "bundle config", map[digest.Digest]bool{}, 0); err != nil {
		return nil, err
	}
	for _, l := range a.RootIndex.Manifests[1:] {
		it := itemFromAnnotations(l.Annotations)
		it.Digest, it.MediaType = l.Digest.String(), l.MediaType
		if it.Kind == "" || it.Name == "" {
			return nil, &BlobError{Digest: l.Digest, Role: "root entry", Err: fmt.Errorf("no %s/%s annotations: %w", manifests.AnnotationKind, manifests.AnnotationName, ErrNotBundle)}
		}
		seen := map[digest.Digest]bool{}
		if err := a.walk(ctx, g, l, "manifest", it.String(), seen, 0); err != nil {
			return nil, err
		}
		for d := range seen {
			it.Size += g.refs[d].desc.Size
			it.Blobs++
		}
		g.Items = append(g.Items, it)
	}
	// Signatures and attestations of the root can't be reachable from it;
	// they are index.json entries attached to it (see Attachments).
	for _, m := range a.Attachments() {
		what := "attachment " + m.Annotations[manifests.AnnotationRefName]
		if err := a.walk(ctx, g, m, "attachment", what, map[digest.Digest]bool{}, 0); err != nil {
			return nil, err
		}
		for _, e := range g.Children[m.Digest] {
			if e.Role == "subject" && e.Desc.Digest != a.Root.Digest {
				return nil, &BlobError{Digest: m.Digest, Role: "attachment", Item: what, Err: fmt.Errorf("its subject is %s, not the root: %w", e.Desc.Digest, ErrIndexMismatch)}
			}
		}
	}
	for d, r := range g.refs {
		g.Blobs[d] = r.desc.Size
	}
	// Everything in the archive must be reachable from the root.
	for k := range a.blobs {
		if d := k.digest(); g.refs[d] == nil {
			return nil, &EntryError{Name: dirSHA256 + d.Encoded(), Err: ErrUnreachable}
		}
	}
	for _, m := range a.Index.Manifests {
		if _, ok := g.refs[m.Digest]; !ok {
			return nil, &BlobError{Digest: m.Digest, Role: "index.json entry " + m.Annotations[manifests.AnnotationRefName], Err: ErrUnreachable}
		}
	}
	return g, nil
}

// bare is a descriptor without its annotations (what the graph keeps).
func bare(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, ArtifactType: d.ArtifactType}
}

func (a *Archive) walk(ctx context.Context, g *Graph, d ocispec.Descriptor, role, item string, seen map[digest.Digest]bool, depth int) error {
	if depth > MaxGraphDepth {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("manifests nested deeper than %d: %w", MaxGraphDepth, ErrNotBundle)}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.Size < 0 {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("negative size %d: %w", d.Size, ErrNotBundle)}
	}
	if _, ok := keyOf(d.Digest); !ok {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("not a sha256 digest: %w", ErrNotBundle)}
	}
	if g.visits++; g.visits > MaxGraphRefs {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("the items' graphs list more than %d descriptors in all: %w", MaxGraphRefs, ErrTooLarge)}
	}
	seen[d.Digest] = true
	size, ok := a.BlobSize(d.Digest)
	if !ok {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: a.missing()}
	}
	if size != d.Size {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("descriptor says %d bytes, archive holds %d: %w", d.Size, size, ErrDigestMismatch)}
	}
	if r, ok := g.refs[d.Digest]; ok {
		if isManifest(d.MediaType) != (r.parsed || g.Children[d.Digest] != nil) || (r.parsed && d.MediaType != r.desc.MediaType) {
			return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("media type %q: also reached as %s %q: %w", d.MediaType, r.role, r.desc.MediaType, ErrNotBundle)}
		}
		if r.parsed || !isManifest(d.MediaType) {
			return nil // already walked from another item
		}
	}
	r := &blobRef{desc: d, role: role, item: item}
	g.refs[d.Digest] = r
	if !isManifest(d.MediaType) {
		return nil
	}
	b, err := a.ReadSmall(ctx, d)
	if err != nil {
		if be, ok := err.(*BlobError); ok {
			be.Role, be.Item = role, item
		}
		return err
	}
	r.parsed = true
	children, err := manifestSuccessors(d.MediaType, b)
	if err != nil {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: err}
	}
	kids := make([]Edge, 0, len(children))
	for _, c := range children {
		kids = append(kids, Edge{Desc: bare(c.d), Role: c.role})
	}
	g.Children[d.Digest] = kids
	for _, c := range children {
		if err := a.walk(ctx, g, c.d, c.role, item, seen, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// manifestSuccessors is successors for a manifest read from a bundle: the
// content must be the kind of manifest its descriptor's media type says.
func manifestSuccessors(mt string, b []byte) ([]edge, error) {
	var n manifestNode
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("parsing: %v: %w", err, ErrNotBundle)
	}
	if n.MediaType != "" && n.MediaType != mt {
		return nil, fmt.Errorf("content says media type %q, its descriptor %q: %w", n.MediaType, mt, ErrNotBundle)
	}
	switch {
	case IsIndex(mt):
		if n.Config != nil || n.Layers != nil || n.Blobs != nil {
			return nil, fmt.Errorf("an index (%s) with config, layers or blobs: %w", mt, ErrNotBundle)
		}
	case mt == mediaTypeArtifactManifest:
		if n.Config != nil || n.Layers != nil || n.Manifests != nil {
			return nil, fmt.Errorf("an artifact manifest with config, layers or manifests: %w", ErrNotBundle)
		}
	default: // image manifests
		if n.Config == nil || n.Manifests != nil || n.Blobs != nil {
			return nil, fmt.Errorf("an image manifest (%s) without a config, or with manifests or blobs: %w", mt, ErrNotBundle)
		}
	}
	return n.successors()
}

// Successors parses a manifest or index and lists what it points at with
// the role of each (see successors).
func Successors(b []byte) ([]Edge, error) {
	es, err := successors(b)
	if err != nil {
		return nil, err
	}
	out := make([]Edge, len(es))
	for i, e := range es {
		out[i] = Edge{Desc: e.d, Role: e.role}
	}
	return out, nil
}

// successors parses a manifest or index and lists the descriptors it
// points at (config, layers, blobs, manifests, subject), as oras-go's
// content.Successors does; more than MaxDescriptors is refused.
func successors(b []byte) ([]edge, error) {
	var n manifestNode
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("parsing: %v: %w", err, ErrNotBundle)
	}
	return n.successors()
}

func (n *manifestNode) successors() ([]edge, error) {
	if c := len(n.Layers) + len(n.Blobs) + len(n.Manifests); c > MaxDescriptors {
		return nil, fmt.Errorf("lists %d descriptors, more than %d: %w", c, MaxDescriptors, ErrTooLarge)
	}
	var out []edge
	if n.Config != nil {
		out = append(out, edge{*n.Config, "config"})
	}
	for _, l := range n.Layers {
		out = append(out, edge{l, "layer"})
	}
	for _, l := range n.Blobs {
		out = append(out, edge{l, "blob"})
	}
	for _, m := range n.Manifests {
		out = append(out, edge{m, "manifest"})
	}
	if n.Subject != nil {
		out = append(out, edge{*n.Subject, "subject"})
	}
	return out, nil
}

// edge is a descriptor and the role its blob plays for its parent.
type edge struct {
	d    ocispec.Descriptor
	role string
}
