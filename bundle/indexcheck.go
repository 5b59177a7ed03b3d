package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/manifests"
)

// cosignIndexKind is the "kind" annotation create puts on the root's
// index.json entry: `cosign verify --local-image` finds the signed index of
// an extracted bundle by it.
const cosignIndexKind = "dev.cosignproject.cosign/imageIndex"

// cosign's "kind" annotations of a signature and an attestation manifest in
// a layout.
const (
	cosignSigsKind = "dev.cosignproject.cosign/sigs"
	cosignAttsKind = "dev.cosignproject.cosign/atts"
)

// checkIndexAgainstRoot checks index.json, which no signature covers,
// against the root, which the signature covers: tools that read the
// extracted layout (skopeo, cosign, oras) trust its tags. index.json must
// hold exactly
//   - the root's entry, named zdt/NAME:VERSION after the bundle config,
//   - every item of the root, byte for byte the descriptor the root lists
//     (digest, size, media type and annotations, the tag among them), in
//     the root's order,
//   - the root's attachments (signatures, attestations): manifests tagged
//     sha256-<root hex>.sig/.att/.sbom or annotated with the root as their
//     subject, each tag at most once,
//
// and nothing else. The first difference is returned as an *IndexError
// matching ErrIndexMismatch.
func (a *Archive) checkIndexAgainstRoot() error {
	items := a.RootIndex.Manifests[1:]
	next := 0 // the next item expected
	tags := map[string]int{}
	for i, m := range a.Index.Manifests {
		ref := m.Annotations[manifests.AnnotationRefName]
		fail := func(format string, args ...any) error {
			return &IndexError{Entry: i, Ref: ref, Err: fmt.Errorf(format+": %w", append(args, ErrIndexMismatch)...)}
		}
		if ref != "" {
			if j, dup := tags[ref]; dup {
				return fail("tag given twice (entries %d and %d)", j, i)
			}
			tags[ref] = i
		}
		switch {
		case m.Annotations[manifests.AnnotationBundleRoot] != "":
			if err := a.checkRootEntry(m); err != nil {
				return fail("root entry: %v", err)
			}
		case IsAttachment(a.Root.Digest, m):
			if err := checkAttachmentEntry(a.Root.Digest, m); err != nil {
				return fail("attachment %s: %v", m.Digest, err)
			}
		default:
			if next >= len(items) {
				return fail("%s is not an item of root %s", m.Digest, a.Root.Digest)
			}
			if !sameDescriptor(m, items[next]) {
				want := items[next].Annotations[manifests.AnnotationRefName]
				return fail("%s does not match the root's item %d (%s %s, tag %q)", m.Digest, next+1, items[next].Digest, items[next].Annotations[manifests.AnnotationKind], want)
			}
			next++
		}
	}
	if next < len(items) {
		it := items[next]
		return &IndexError{Entry: len(a.Index.Manifests), Ref: it.Annotations[manifests.AnnotationRefName],
			Err: fmt.Errorf("item %s of root %s has no entry: %w", it.Digest, a.Root.Digest, ErrIndexMismatch)}
	}
	return nil
}

// checkRootEntry checks the root's index.json entry: the root's digest,
// size and media type, its tag the one the bundle config gives.
func (a *Archive) checkRootEntry(m ocispec.Descriptor) error {
	want := RootRef(a.Config.Name, a.Config.Version)
	switch {
	case m.Digest != a.Root.Digest || m.Size != a.Root.Size || m.MediaType != ocispec.MediaTypeImageIndex:
		return fmt.Errorf("describes %s (%d bytes, %s)", m.Digest, m.Size, m.MediaType)
	case m.ArtifactType != "" && m.ArtifactType != a.RootIndex.ArtifactType:
		return fmt.Errorf("artifactType %q, the root's is %q", m.ArtifactType, a.RootIndex.ArtifactType)
	case len(m.URLs) > 0 || m.Platform != nil || len(m.Data) > 0:
		return fmt.Errorf("urls, platform or data on the root entry")
	}
	for k, v := range m.Annotations {
		switch k {
		case manifests.AnnotationBundleRoot:
			if v != "true" {
				return fmt.Errorf("%s=%q", k, v)
			}
		case manifests.AnnotationRefName:
			if v != want {
				return fmt.Errorf("tagged %q, the signed bundle config names it %q", v, want)
			}
		case "kind":
			if v != cosignIndexKind {
				return fmt.Errorf("annotation kind=%q", v)
			}
		default:
			return fmt.Errorf("unexpected annotation %q", k)
		}
	}
	if _, ok := m.Annotations[manifests.AnnotationRefName]; !ok {
		return fmt.Errorf("no %s (want %q)", manifests.AnnotationRefName, want)
	}
	return nil
}

// checkAttachmentEntry checks an index.json entry attached to root: a
// manifest (not an index, not a blob), tagged as cosign tags the root's
// signature, attestations or SBOM, or untagged with the root as subject.
func checkAttachmentEntry(root digest.Digest, m ocispec.Descriptor) error {
	switch m.MediaType {
	case manifests.MediaTypeOCIManifest, manifests.MediaTypeDockerManifest, mediaTypeArtifactManifest:
	default:
		return fmt.Errorf("media type %q is not a manifest", m.MediaType)
	}
	if len(m.URLs) > 0 || m.Platform != nil || len(m.Data) > 0 {
		return fmt.Errorf("urls, platform or data on an attachment")
	}
	tag := strings.ReplaceAll(root.String(), ":", "-")
	for k, v := range m.Annotations {
		switch k {
		case manifests.AnnotationRefName:
			if v != tag+".sig" && v != tag+".att" && v != tag+".sbom" {
				return fmt.Errorf("tagged %q; an attachment of the root is tagged %s.sig, .att or .sbom", v, tag)
			}
		case manifests.AnnotationSubject:
			if v != root.String() {
				return fmt.Errorf("subject %q is not the root", v)
			}
		case "kind": // cosign's layout annotation, as signing writes it
			want := map[string]string{tag + ".sig": cosignSigsKind, tag + ".att": cosignAttsKind}[m.Annotations[manifests.AnnotationRefName]]
			if v != want {
				return fmt.Errorf("annotation kind=%q on %q", v, m.Annotations[manifests.AnnotationRefName])
			}
		default:
			return fmt.Errorf("unexpected annotation %q", k)
		}
	}
	return nil
}

// sameDescriptor compares two descriptors field by field (their JSON).
func sameDescriptor(x, y ocispec.Descriptor) bool {
	bx, err1 := json.Marshal(x)
	by, err2 := json.Marshal(y)
	return err1 == nil && err2 == nil && bytes.Equal(bx, by)
}
