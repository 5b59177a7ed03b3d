package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// Placement kinds beyond the item kinds of manifests (image, chart, file, ami).
const (
	// KindBundle is the placement of the bundle root at its rootRepository.
	KindBundle = "bundle"
	// KindAttachment is a signature or attestation of the bundle root.
	KindAttachment = "attachment"
)

// Placement is one manifest of a bundle as the registry serves it: which
// repository it is linked into, under which tag, and every manifest and blob
// that repository must hold for it to be pulled. An image from docker.io has
// two placements (library/nginx and docker.io/library/nginx).
type Placement struct {
	// Repository is the repository name, e.g. library/nginx,
	// quay.io/cilium/cilium, charts/demo, zdt/quickstart.
	Repository string `json:"repository"`
	// Tag is the tag, empty for an image referenced by digest.
	Tag string `json:"tag,omitempty"`
	// Digest and MediaType describe the placed manifest.
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	// Kind is image, chart, file, ami, bundle or attachment.
	Kind string `json:"kind"`
	// Ref is the reference name the bundle gives it
	// (docker.io/library/nginx:1.25, charts/demo:1.2.3, …).
	Ref string `json:"ref"`
	// Manifests are the manifests linked into Repository (the placed one and
	// everything it references); Blobs the other blobs (configs, layers).
	// Both sorted.
	Manifests []digest.Digest `json:"manifests"`
	Blobs     []digest.Digest `json:"blobs"`
}

// String is "repository:tag" or "repository@digest".
func (p Placement) String() string {
	if p.Tag != "" {
		return p.Repository + ":" + p.Tag
	}
	return p.Repository + "@" + p.Digest.String()
}

// MirrorNamespace is the repository prefix under which images of registry
// host are served: "" for docker.io (library/nginx), the host for others
// (quay.io/cilium/cilium). A port becomes "_PORT" (registry.local_5000),
// since repository names can't hold a colon and hostnames can't hold an
// underscore. Mirror configs use it: containerd
// `[host."https://ZDT:PORT/v2/<ns>"] override_path = true`, containers
// registries.conf `location = "ZDT:PORT/<ns>"`.
func MirrorNamespace(host string) string {
	host = strings.ToLower(host)
	if host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io" {
		return ""
	}
	return strings.ReplaceAll(host, ":", "_")
}

// ImageRepositories maps an image reference to the repositories it is
// served at, its tag ("" for a digest reference) and its digest (if the
// reference has one). docker.io/library/nginx:1.25 gives
// [library/nginx docker.io/library/nginx] and tag 1.25; quay.io/a/b:1 gives
// [quay.io/a/b]. The reference is normalized first
// (manifests.NormalizeImageRef): one without tag or digest, as bundles
// made before zdt normalized them hold, is served as "latest", where
// every client looks for it.
func ImageRepositories(ref string) (repos []string, tag string, dgst digest.Digest, err error) {
	norm, err := manifests.NormalizeImageRef(ref)
	if err != nil {
		return nil, "", "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	n, err := reference.ParseNormalizedNamed(norm)
	if err != nil {
		return nil, "", "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	domain, path := reference.Domain(n), reference.Path(n)
	if ns := MirrorNamespace(domain); ns == "" {
		repos = []string{path, "docker.io/" + path}
	} else {
		repos = []string{ns + "/" + path}
	}
	for _, r := range repos {
		if err := validRepository(r); err != nil {
			return nil, "", "", fmt.Errorf("image reference %q: %w", ref, err)
		}
	}
	if t, ok := n.(reference.Tagged); ok {
		tag = t.Tag()
	}
	if d, ok := n.(reference.Digested); ok {
		dgst = d.Digest()
	}
	return repos, tag, dgst, nil
}

var (
	tagRegexp       = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	componentRegexp = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
)

// validRepository accepts the repository names the registry serves:
// lowercase path components of the OCI distribution spec (no host, no
// port), at most 255 characters.
func validRepository(r string) error {
	if r == "" || len(r) > 255 {
		return fmt.Errorf("repository %q: empty or longer than 255 characters: %w", r, ErrBadReference)
	}
	for _, c := range strings.Split(r, "/") {
		if !componentRegexp.MatchString(c) {
			return fmt.Errorf("repository %q: invalid component %q: %w", r, c, ErrBadReference)
		}
	}
	return nil
}

// SanitizeTag makes a version usable as a tag the way helm does: "+" → "_".
func SanitizeTag(v string) string { return strings.ReplaceAll(v, "+", "_") }

// splitRepoTag splits "charts/demo:1.2.3" into a valid repository and tag.
func splitRepoTag(ref string) (string, string, error) {
	i := strings.LastIndex(ref, ":")
	if i <= 0 || strings.Contains(ref[i:], "/") {
		return "", "", fmt.Errorf("reference %q has no tag: %w", ref, ErrBadReference)
	}
	repo, tag := ref[:i], SanitizeTag(ref[i+1:])
	if err := validRepository(repo); err != nil {
		return "", "", fmt.Errorf("reference %q: %w", ref, err)
	}
	if !tagRegexp.MatchString(tag) {
		return "", "", fmt.Errorf("reference %q: invalid tag %q: %w", ref, tag, ErrBadReference)
	}
	return repo, tag, nil
}

// RootRepository is the repository a bundle's root is served at: zdt/NAME.
func RootRepository(name string) string {
	repo, _, _ := strings.Cut(bundle.RootRef(name, "v"), ":")
	return repo
}

// Limits on what a bundle may make the registry link: without them a small
// bundle (one manifest of 5,000 layers tagged under 400 repositories) costs
// millions of link files. Every (repository, blob) pair is a link.
const (
	// MaxRepositoriesPerBlob bounds the repositories one blob is linked
	// into: a base layer shared by every image of a large release is in a
	// few hundred.
	MaxRepositoriesPerBlob = 2048
	// MaxLinks bounds the (repository, blob or manifest) pairs of a
	// bundle's placements: some 200 bytes of memory and one small file
	// each in an installed store.
	MaxLinks = 1 << 19
)

// Placements lists where the registry serves every manifest of an opened
// archive: each item per the naming rules (images at their original
// repository paths, see ImageRepositories; charts/, files/, amis/ at their
// reference names), the root at zdt/NAME:VERSION with every manifest and
// blob of the bundle linked into that repository (so the whole bundle can
// be copied from it), and the root's attachments there too (cosign's
// sha256-<hex>.sig/.att tags). It takes the graph from a.Walk (so the
// archive's structure is always checked, and the manifests are parsed once
// for walk, verify and placements); call a.Verify first to trust the
// blobs. More than MaxRepositoriesPerBlob repositories for a blob or
// MaxLinks links in all is refused with an error matching
// bundle.ErrTooLarge. The order is deterministic.
func Placements(ctx context.Context, a *bundle.Archive) ([]Placement, error) {
	g, err := a.Walk(ctx)
	if err != nil {
		return nil, err
	}
	w := &walker{g: g, closures: map[digest.Digest]*closure{}, placed: map[digest.Digest]int{}}
	var out []Placement
	for _, d := range a.RootIndex.Manifests[1:] {
		kind := d.Annotations[manifests.AnnotationKind]
		ref := d.Annotations[manifests.AnnotationRefName]
		var repos []string
		var tag string
		switch kind {
		case manifests.KindImage:
			var err error
			if repos, tag, _, err = ImageRepositories(ref); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadReference, err)
			}
		default:
			repo, t, err := splitRepoTag(ref)
			if err != nil {
				return nil, fmt.Errorf("item %s: %w", kind, err)
			}
			repos, tag = []string{repo}, t
		}
		for _, r := range repos {
			c, err := w.place(ctx, r, d)
			if err != nil {
				return nil, fmt.Errorf("item %s %s: %w", kind, ref, err)
			}
			out = append(out, c.placement(r, tag, d, kind, ref))
		}
	}
	// The root repository holds everything, the root, its config manifest
	// and the attachments.
	rootRef := bundle.RootRef(a.Config.Name, a.Config.Version)
	rootRepo, rootTag, err := splitRepoTag(rootRef)
	if err != nil {
		return nil, fmt.Errorf("bundle root: %w", err)
	}
	root, err := w.place(ctx, rootRepo, a.Root)
	if err != nil {
		return nil, fmt.Errorf("bundle root: %w", err)
	}
	out = append(out, root.placement(rootRepo, rootTag, a.Root, KindBundle, rootRef))
	for _, d := range a.Attachments() {
		c, err := w.place(ctx, rootRepo, d)
		if err != nil {
			return nil, fmt.Errorf("attachment %s: %w", d.Digest, err)
		}
		tag := d.Annotations[manifests.AnnotationRefName]
		if !tagRegexp.MatchString(tag) {
			tag = "" // referrers-only (OCI 1.1 subject), served by digest
		}
		out = append(out, c.placement(rootRepo, tag, d, KindAttachment, d.Annotations[manifests.AnnotationRefName]))
	}
	return out, nil
}

// closure is what a repository must hold to serve one manifest: the
// manifests and the other blobs it reaches, sorted. Placements of the
// same manifest share it (read-only).
type closure struct {
	manifests, blobs []digest.Digest
}

func (c *closure) placement(repo, tag string, d ocispec.Descriptor, kind, ref string) Placement {
	return Placement{Repository: repo, Tag: tag, Digest: d.Digest, MediaType: d.MediaType, Kind: kind, Ref: ref,
		Manifests: c.manifests, Blobs: c.blobs}
}

// walker computes closures from the archive's graph (no manifest is read
// again), each manifest's once, and counts links against the limits before
// doing the work they stand for.
type walker struct {
	g        *bundle.Graph
	closures map[digest.Digest]*closure
	placed   map[digest.Digest]int // blob → placements linking it
	links    int
}

// place counts the links of a placement of d in repo and returns d's
// closure.
func (w *walker) place(ctx context.Context, repo string, d ocispec.Descriptor) (*closure, error) {
	c, err := w.closure(ctx, d)
	if err != nil {
		return nil, err
	}
	w.links += len(c.manifests) + len(c.blobs)
	if w.links > MaxLinks {
		return nil, fmt.Errorf("repository %s: the bundle's placements would make more than %d repository links: %w", repo, MaxLinks, bundle.ErrTooLarge)
	}
	for _, l := range [][]digest.Digest{c.manifests, c.blobs} {
		for _, b := range l {
			w.placed[b]++
			if w.placed[b] > MaxRepositoriesPerBlob {
				return nil, fmt.Errorf("blob %s would be linked into more than %d repositories (%s among them): %w", b, MaxRepositoriesPerBlob, repo, bundle.ErrTooLarge)
			}
		}
	}
	return c, nil
}

// closure collects d and everything it points at. The subject of a
// manifest is not followed: it is what the manifest is attached to, not
// part of it. Collecting stops once the links it stands for would pass
// MaxLinks.
func (w *walker) closure(ctx context.Context, d ocispec.Descriptor) (*closure, error) {
	if c, ok := w.closures[d.Digest]; ok {
		return c, nil
	}
	ms, bs := map[digest.Digest]bool{}, map[digest.Digest]bool{}
	var visit func(d digest.Digest, depth int) error
	visit = func(d digest.Digest, depth int) error {
		if depth > bundle.MaxGraphDepth+1 { // Walk bounded it; the root adds one level
			return fmt.Errorf("manifest %s: nested too deeply: %w", d, bundle.ErrNotBundle)
		}
		if w.links+len(ms)+len(bs) > MaxLinks {
			return fmt.Errorf("the bundle's placements would make more than %d repository links: %w", MaxLinks, bundle.ErrTooLarge)
		}
		kids, isManifest := w.g.Children[d]
		if !isManifest {
			bs[d] = true
			return nil
		}
		if ms[d] {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ms[d] = true
		for _, k := range kids {
			if k.Role == "subject" {
				continue
			}
			if err := visit(k.Desc.Digest, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(d.Digest, 0); err != nil {
		return nil, err
	}
	c := &closure{manifests: sortedKeys(ms), blobs: sortedKeys(bs)}
	w.closures[d.Digest] = c
	return c, nil
}

func sortedKeys(m map[digest.Digest]bool) []digest.Digest {
	out := make([]digest.Digest, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// manifestRefs is the part of any manifest or index that points at blobs
// (the handler reads subjects and referrers with it).
type manifestRefs struct {
	MediaType    string               `json:"mediaType"`
	ArtifactType string               `json:"artifactType"`
	Config       *ocispec.Descriptor  `json:"config"`
	Layers       []ocispec.Descriptor `json:"layers"`
	Blobs        []ocispec.Descriptor `json:"blobs"`
	Manifests    []ocispec.Descriptor `json:"manifests"`
	Subject      *ocispec.Descriptor  `json:"subject"`
	Annotations  map[string]string    `json:"annotations"`
}

// placementsFile is the placements record of an installed bundle: each
// manifest's closure once, and the placements pointing at it by number, so
// the record grows with the bundle, not with its repositories × layers.
type placementsFile struct {
	Version    int               `json:"version"`
	Closures   []placedClosure   `json:"closures"`
	Placements []recordPlacement `json:"placements"`
}

type placedClosure struct {
	Manifests []digest.Digest `json:"manifests"`
	Blobs     []digest.Digest `json:"blobs"`
}

type recordPlacement struct {
	Repository string        `json:"repository"`
	Tag        string        `json:"tag,omitempty"`
	Digest     digest.Digest `json:"digest"`
	MediaType  string        `json:"mediaType"`
	Kind       string        `json:"kind"`
	Ref        string        `json:"ref"`
	Closure    int           `json:"closure"`
}

// encodePlacements is the placements record of ps (see placementsFile).
func encodePlacements(ps []Placement) ([]byte, error) {
	f := placementsFile{Version: 2, Placements: make([]recordPlacement, 0, len(ps))}
	byDigest := map[digest.Digest][]int{} // placed digest → closures with it
	for _, p := range ps {
		n := -1
		for _, i := range byDigest[p.Digest] {
			if slices.Equal(f.Closures[i].Manifests, p.Manifests) && slices.Equal(f.Closures[i].Blobs, p.Blobs) {
				n = i
				break
			}
		}
		if n < 0 {
			n = len(f.Closures)
			f.Closures = append(f.Closures, placedClosure{Manifests: p.Manifests, Blobs: p.Blobs})
			byDigest[p.Digest] = append(byDigest[p.Digest], n)
		}
		f.Placements = append(f.Placements, recordPlacement{Repository: p.Repository, Tag: p.Tag, Digest: p.Digest,
			MediaType: p.MediaType, Kind: p.Kind, Ref: p.Ref, Closure: n})
	}
	return json.Marshal(f)
}

// decodePlacements reads a placements record: encodePlacements' format, or
// the JSON list of placements earlier versions wrote. Placements of one
// closure share its lists: don't modify them.
func decodePlacements(b []byte) ([]Placement, error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		var ps []Placement
		err := json.Unmarshal(b, &ps)
		return ps, err
	}
	var f placementsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Version != 2 {
		return nil, fmt.Errorf("placements record version %d, want 2", f.Version)
	}
	out := make([]Placement, 0, len(f.Placements))
	for _, r := range f.Placements {
		if r.Closure < 0 || r.Closure >= len(f.Closures) {
			return nil, fmt.Errorf("placement %s:%s names closure %d of %d", r.Repository, r.Tag, r.Closure, len(f.Closures))
		}
		c := f.Closures[r.Closure]
		out = append(out, Placement{Repository: r.Repository, Tag: r.Tag, Digest: r.Digest, MediaType: r.MediaType,
			Kind: r.Kind, Ref: r.Ref, Manifests: c.Manifests, Blobs: c.Blobs})
	}
	return out, nil
}
