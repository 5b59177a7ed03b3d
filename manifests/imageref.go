package manifests

import (
	"errors"
	"fmt"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
)

// NormalizeImageRef gives an image reference in the one form zdt names,
// locks, deduplicates and serves images by: the registry, the repository
// and a tag or digest all written out, with the defaults of
// go-containerregistry's name.ParseReference (and of docker and
// containerd): no registry is docker.io, a one-part repository on
// docker.io is under library/, no tag and no digest is the tag "latest".
//
//	busybox                         → docker.io/library/busybox:latest
//	index.docker.io/library/busybox → docker.io/library/busybox:latest
//	127.0.0.1:5000/platform/app     → 127.0.0.1:5000/platform/app:latest
//	nginx:1.25@sha256:…             → docker.io/library/nginx:1.25@sha256:…
//
// A tag written next to a digest is kept (the image is served under both);
// the digest is what is fetched.
func NormalizeImageRef(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", errors.New(refProblem(ref, err))
	}
	repo := r.Context()
	host := repo.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io" // the name every client and mirror config uses
	}
	out := host + "/" + repo.RepositoryStr()
	switch v := r.(type) {
	case name.Tag:
		return out + ":" + v.TagStr(), nil
	case name.Digest:
		// go-containerregistry drops a tag given with the digest; keep it
		// when the reference spells one.
		if n, err := reference.ParseNormalizedNamed(ref); err == nil {
			if t, ok := n.(reference.Tagged); ok {
				out += ":" + t.Tag()
			}
		}
		return out + "@" + v.DigestStr(), nil
	}
	return "", fmt.Errorf("%q has neither a tag nor a digest", ref)
}

// ImageRepository is a normalized reference's repository, without tag or
// digest: docker.io/library/nginx:1.25 → docker.io/library/nginx.
func ImageRepository(normalized string) string {
	r, err := name.ParseReference(normalized)
	if err != nil {
		return normalized
	}
	host := r.Context().RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	return host + "/" + r.Context().RepositoryStr()
}

// imageTag is the tag of a normalized reference ("" when it has none).
func imageTag(normalized string) string {
	if n, err := reference.ParseNormalizedNamed(normalized); err == nil {
		if t, ok := n.(reference.Tagged); ok {
			return t.Tag()
		}
	}
	return ""
}
