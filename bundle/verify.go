package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"zdt.dev/zdt/manifests"
)

// blobRef is what the walk learnt about one blob.
type blobRef struct {
	desc   ocispec.Descriptor
	role   string // manifest, index, config, layer, subject
	item   string // first item that reaches it
	parsed bool   // read and digest-checked during the walk
}

// Graph is the content reachable from the bundle root.
type Graph struct {
	// Items are the root's items, with sizes, in spec order.
	Items []Item
	// Blobs maps every reachable blob (the root included) to its size.
	Blobs map[digest.Digest]int64
	refs  map[digest.Digest]*blobRef
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
// manifests and indexes only, and checks that the archive holds every blob
// reached and nothing else. It does not hash layers; Verify does.
func (a *Archive) Walk(ctx context.Context) (*Graph, error) {
	g := &Graph{Blobs: map[digest.Digest]int64{}, refs: map[digest.Digest]*blobRef{}}
	g.refs[a.Root.Digest] = &blobRef{desc: a.Root, role: "root index", parsed: true}
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
		if err := a.walk(ctx, g, m, "attachment", "attachment "+m.Annotations[manifests.AnnotationRefName], map[digest.Digest]bool{}, 0); err != nil {
			return nil, err
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

func (a *Archive) walk(ctx context.Context, g *Graph, d ocispec.Descriptor, role, item string, seen map[digest.Digest]bool, depth int) error {
	if depth > 16 {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("manifests nested too deeply: %w", ErrNotBundle)}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	seen[d.Digest] = true
	size, ok := a.BlobSize(d.Digest)
	if !ok {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: a.missing()}
	}
	if size != d.Size {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: fmt.Errorf("descriptor says %d bytes, archive holds %d: %w", d.Size, size, ErrDigestMismatch)}
	}
	if r, ok := g.refs[d.Digest]; ok && (r.parsed || !isManifest(d.MediaType)) {
		return nil // already walked from another item
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
	children, err := successors(b)
	if err != nil {
		return &BlobError{Digest: d.Digest, Role: role, Item: item, Err: err}
	}
	for _, c := range children {
		if err := a.walk(ctx, g, c.d, c.role, item, seen, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// successors parses a manifest or index and lists the descriptors it
// points at (config, layers, blobs, manifests, subject).
func successors(b []byte) ([]edge, error) {
	var n manifestNode
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("parsing: %v: %w", err, ErrNotBundle)
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

// VerifyOptions tune Verify. The zero value is valid.
type VerifyOptions struct {
	// Concurrency is the number of blobs hashed at once (default: GOMAXPROCS).
	Concurrency int
	// Progress, if set, is called with the bytes hashed so far and the total;
	// it may be called from several goroutines at once.
	Progress func(done, total int64)
	// SkipBase leaves out of the hashing the blobs a delta reads from its
	// attached base: for a base that was verified already (an installed
	// bundle). Manifests are read and digest-checked either way.
	SkipBase bool
	// SkipContent only hashes file and disk layers, without decoding them
	// to check their content: for a caller that reads each of them through
	// OpenContent itself (install), which checks the same.
	SkipContent bool
}

// VerifyResult says what Verify checked.
type VerifyResult struct {
	Graph *Graph
	// Blobs and Bytes are what was hashed.
	Blobs int
	Bytes int64
}

// Verify checks the whole archive: the structure Open checked, that every
// blob is reachable from the root and present, and every blob's digest,
// hashing blobs in parallel straight from their archive offsets. The first
// failure is returned as a *BlobError or *EntryError naming the blob and the
// item it belongs to; every failure matches ErrVerification.
func (a *Archive) Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	g, err := a.Walk(ctx)
	if err != nil {
		return VerifyResult{}, err
	}
	// File and disk layers are decoded too: their content digest and size
	// are checked, bounded, with nothing written.
	var contents map[digest.Digest][]Content
	if !opts.SkipContent {
		if contents, err = a.contents(ctx, g); err != nil {
			return VerifyResult{}, err
		}
	}
	var todo []*blobRef
	var total int64
	for _, r := range g.refs {
		if !r.parsed && (!opts.SkipBase || a.HasLocal(r.desc.Digest)) {
			todo = append(todo, r)
			total += r.desc.Size
		}
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].desc.Size > todo[j].desc.Size })
	limit := opts.Concurrency
	if limit <= 0 {
		limit = runtime.GOMAXPROCS(0)
	}
	var done atomic.Int64
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(limit)
	for _, r := range todo {
		eg.Go(func() error {
			progress := func(n int64) {
				d := done.Add(n)
				if opts.Progress != nil {
					opts.Progress(d, total)
				}
			}
			if cs := contents[r.desc.Digest]; len(cs) > 0 {
				return a.verifyContent(ctx, cs, progress)
			}
			sr, err := a.BlobReader(r.desc.Digest)
			if err != nil {
				return &BlobError{Digest: r.desc.Digest, Role: r.role, Item: r.item, Err: ErrMissingBlob}
			}
			got, err := hashReader(ctx, sr, progress)
			if err != nil {
				return fmt.Errorf("reading blob %s: %w", r.desc.Digest, err)
			}
			if got != r.desc.Digest {
				return &BlobError{Digest: r.desc.Digest, Role: r.role, Item: r.item, Err: fmt.Errorf("content hashes to %s: %w", got, ErrDigestMismatch)}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return VerifyResult{}, err
	}
	return VerifyResult{Graph: g, Blobs: len(g.refs), Bytes: total}, nil
}

// hashReader hashes r in 1 MiB chunks, reporting progress per chunk.
func hashReader(ctx context.Context, r io.Reader, progress func(int64)) (digest.Digest, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			h.Write(buf[:n])
			progress(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return digest.NewDigest(digest.SHA256, h), nil
		}
		if err != nil {
			return "", err
		}
	}
}
