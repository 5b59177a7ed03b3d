package signing

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/distribution/reference"
	"github.com/in-toto/in-toto-golang/in_toto"
	slsa1 "github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/v1"
	"github.com/opencontainers/go-digest"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"

	"zdt.dev/zdt/manifests"
)

// Predicate types of the attestations zdt attaches to a bundle root, as
// `cosign verify-attestation --type` names them: slsaprovenance1 and
// cyclonedx.
const (
	PredicateProvenance = slsa1.PredicateSLSAProvenance // https://slsa.dev/provenance/v1
	PredicateSBOM       = in_toto.PredicateCycloneDX    // https://cyclonedx.org/bom
	// BuildType is the SLSA buildType of `zdt bundle create`.
	BuildType = "https://zdt.dev/bundle-create/v1"
	// BuilderID is the SLSA builder id of zdt.
	BuilderID = "https://zdt.dev/zdt"
)

type statement struct {
	predicateType string
	statement     []byte // an in-toto statement (JSON)
}

// attestations builds the provenance and SBOM statements of a root, with
// cosign's own statement generator (subject = repo with the root digest).
// They hold no time stamps: the same content gives the same statements.
func attestations(info rootInfo, root digest.Digest, repo string) ([]statement, error) {
	prov, err := provenance(info)
	if err != nil {
		return nil, err
	}
	sbom, err := cycloneDX(info, root)
	if err != nil {
		return nil, err
	}
	var out []statement
	for _, p := range []struct {
		typ, uri  string
		predicate []byte
	}{{"slsaprovenance1", PredicateProvenance, prov}, {"cyclonedx", PredicateSBOM, sbom}} {
		st, err := attestation.GenerateStatement(attestation.GenerateOpts{
			Predicate: bytes.NewReader(p.predicate),
			Type:      p.typ,
			Digest:    root.Encoded(),
			Repo:      repo,
		})
		if err != nil {
			return nil, fmt.Errorf("%s statement: %w", p.typ, err)
		}
		b, err := json.Marshal(st)
		if err != nil {
			return nil, err
		}
		out = append(out, statement{predicateType: p.uri, statement: b})
	}
	return out, nil
}

// ProvenanceParameters are the externalParameters of zdt's provenance: what
// was asked for.
type ProvenanceParameters struct {
	Bundle     string   `json:"bundle"`
	Version    string   `json:"version"`
	SpecSHA256 string   `json:"specSha256"`
	Platforms  []string `json:"platforms,omitempty"`
}

func provenance(info rootInfo) ([]byte, error) {
	spec := sha256.Sum256([]byte(info.config.Spec))
	var deps []slsa1.ResourceDescriptor
	deps = append(deps, slsa1.ResourceDescriptor{
		Name:      "zdt.yaml",
		Digest:    map[string]string{"sha256": hex.EncodeToString(spec[:])},
		MediaType: "application/yaml",
	})
	if info.lock != nil {
		for _, it := range info.lock.Items {
			d, err := digest.Parse(it.Digest)
			if err != nil {
				return nil, fmt.Errorf("lock item %s: %w", it.Key(), err)
			}
			deps = append(deps, slsa1.ResourceDescriptor{
				URI:    it.Source,
				Name:   it.Kind + "/" + it.Name,
				Digest: map[string]string{string(d.Algorithm()): d.Encoded()},
				Annotations: map[string]any{
					manifests.AnnotationComponent: it.Component,
					manifests.AnnotationKind:      it.Kind,
				},
			})
		}
	}
	p := slsa1.ProvenancePredicate{
		BuildDefinition: slsa1.ProvenanceBuildDefinition{
			BuildType: BuildType,
			ExternalParameters: ProvenanceParameters{
				Bundle: info.config.Name, Version: info.config.Version,
				SpecSHA256: hex.EncodeToString(spec[:]), Platforms: info.config.Platforms,
			},
			InternalParameters:   map[string]string{"toolVersion": info.config.ToolVersion},
			ResolvedDependencies: deps,
		},
		RunDetails: slsa1.ProvenanceRunDetails{
			Builder: slsa1.Builder{ID: BuilderID, Version: map[string]string{"zdt": info.config.ToolVersion}},
		},
	}
	return json.Marshal(p)
}

// CycloneDX 1.5 JSON, the fields zdt fills.
type cdxBOM struct {
	BOMFormat    string         `json:"bomFormat"`
	SpecVersion  string         `json:"specVersion"`
	SerialNumber string         `json:"serialNumber"`
	Version      int            `json:"version"`
	Metadata     cdxMetadata    `json:"metadata"`
	Components   []cdxComponent `json:"components"`
}

type cdxMetadata struct {
	Tools     cdxTools     `json:"tools"`
	Component cdxComponent `json:"component"`
}

type cdxTools struct {
	Components []cdxComponent `json:"components"`
}

type cdxComponent struct {
	BOMRef     string        `json:"bom-ref,omitempty"`
	Type       string        `json:"type"`
	Name       string        `json:"name"`
	Version    string        `json:"version,omitempty"`
	Group      string        `json:"group,omitempty"`
	PURL       string        `json:"purl,omitempty"`
	Hashes     []cdxHash     `json:"hashes,omitempty"`
	Properties []cdxProperty `json:"properties,omitempty"`
}

type cdxHash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

type cdxProperty struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// cycloneDX lists every item of the root as a component, with its manifest
// digest, original reference and a purl for images.
func cycloneDX(info rootInfo, root digest.Digest) ([]byte, error) {
	hexRoot := root.Encoded()
	// A UUID derived from the root digest, so the SBOM is reproducible.
	serial := fmt.Sprintf("urn:uuid:%s-%s-5%s-8%s-%s", hexRoot[0:8], hexRoot[8:12], hexRoot[13:16], hexRoot[17:20], hexRoot[20:32])
	bom := cdxBOM{
		BOMFormat: "CycloneDX", SpecVersion: "1.5", SerialNumber: serial, Version: 1,
		Metadata: cdxMetadata{
			Tools: cdxTools{Components: []cdxComponent{{Type: "application", Name: "zdt", Version: info.config.ToolVersion}}},
			Component: cdxComponent{
				BOMRef: root.String(), Type: "application", Name: info.config.Name, Version: info.config.Version,
				Hashes: []cdxHash{{Alg: "SHA-256", Content: hexRoot}},
			},
		},
		Components: []cdxComponent{},
	}
	for _, d := range info.root.Manifests[1:] {
		a := d.Annotations
		c := cdxComponent{
			BOMRef: a[manifests.AnnotationKind] + "/" + a[manifests.AnnotationName],
			Name:   a[manifests.AnnotationName],
			Group:  a[manifests.AnnotationComponent],
			Hashes: []cdxHash{{Alg: "SHA-256", Content: d.Digest.Encoded()}},
			Properties: []cdxProperty{
				{Name: manifests.AnnotationKind, Value: a[manifests.AnnotationKind]},
				{Name: manifests.AnnotationRefName, Value: a[manifests.AnnotationRefName]},
				{Name: "dev.zdt.mediaType", Value: d.MediaType},
			},
		}
		switch a[manifests.AnnotationKind] {
		case manifests.KindImage:
			c.Type = "container"
			c.PURL, c.Version = ociPURL(a[manifests.AnnotationRefName], d.Digest)
		case manifests.KindChart:
			c.Type = "application"
			if _, v, ok := strings.Cut(a[manifests.AnnotationRefName], ":"); ok {
				c.Version = v
			}
		case manifests.KindFile:
			c.Type = "file"
			if t := a[manifests.AnnotationTarget]; t != "" {
				c.Properties = append(c.Properties, cdxProperty{Name: manifests.AnnotationTarget, Value: t})
			}
		default: // ami
			c.Type = "operating-system"
		}
		bom.Components = append(bom.Components, c)
	}
	return json.Marshal(bom)
}

// ociPURL is the package URL of an image: pkg:oci/NAME@DIGEST?repository_url=REPO&tag=TAG.
func ociPURL(ref string, d digest.Digest) (purl, version string) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", ""
	}
	path := reference.Path(named)
	last := path[strings.LastIndex(path, "/")+1:]
	q := url.Values{}
	q.Set("repository_url", reference.Domain(named)+"/"+path)
	if t, ok := named.(reference.Tagged); ok {
		q.Set("tag", t.Tag())
		version = t.Tag()
	}
	return "pkg:oci/" + url.PathEscape(last) + "@" + strings.ReplaceAll(d.String(), ":", "%3A") + "?" + q.Encode(), version
}
