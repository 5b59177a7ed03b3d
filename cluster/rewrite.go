package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"helm.sh/helm/v4/pkg/postrenderer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// Bounds of the image rewrite (--rewrite-images).
const (
	// MaxRewriteSize bounds the manifests one rewrite reads (Helm's
	// merged stream is the rendered templates plus a filename
	// annotation per document) and writes.
	MaxRewriteSize = 2 * MaxRenderSize
	// maxRefLen: longer strings are not image references (the
	// distribution spec's repository bound plus a tag and a digest).
	maxRefLen = 512
)

// ErrRewrite marks manifests the image rewrite could not read.
var ErrRewrite = errors.New("image rewrite failed")

// imageRewriter is the Helm post-renderer of --rewrite-images: in every
// document, a string value that is exactly one of the bundle's images
// (both normalized with manifests.NormalizeImageRef) becomes the name
// the serving registry gives that image: HOST/REPOSITORY[:TAG][@DIGEST],
// REPOSITORY as registry.ImageRepositories names it (library/nginx,
// quay.io/cilium/cilium). Only whole values match, never substrings or
// keys; a bare word without "/", ":" or "@" ("nginx") matches only as
// the value of a key named "image", so a label or container name equal
// to an image's short name is left alone.
type imageRewriter struct {
	host   string
	served map[string]string // normalized bundle reference → served name
}

var _ postrenderer.PostRenderer = (*imageRewriter)(nil)

// CheckRegistryHost accepts HOST or HOST:PORT as the registry name of
// --rewrite-images.
func CheckRegistryHost(host string) error {
	if host == "" || strings.ContainsAny(host, "/@ \t\r\n") || host != strings.ToLower(host) {
		return fmt.Errorf("--rewrite-images %q: want a lowercase HOST[:PORT]", host)
	}
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		return fmt.Errorf("--rewrite-images %q: %w", host, err)
	}
	if _, err := manifests.NormalizeImageRef(host + "/library/x:1"); err != nil {
		return fmt.Errorf("--rewrite-images %q: %w", host, err)
	}
	return nil
}

// newImageRewriter maps every image reference of refs to its name at
// host.
func newImageRewriter(host string, refs []string) (*imageRewriter, error) {
	if err := CheckRegistryHost(host); err != nil {
		return nil, err
	}
	r := &imageRewriter{host: host, served: map[string]string{}}
	for _, ref := range refs {
		norm, err := manifests.NormalizeImageRef(ref)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		repos, tag, dgst, err := registry.ImageRepositories(norm)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		s := host + "/" + repos[0]
		if tag != "" {
			s += ":" + tag
		}
		if dgst != "" {
			s += "@" + dgst.String()
		}
		r.served[norm] = s
	}
	return r, nil
}

// Run implements postrenderer.PostRenderer.
func (r *imageRewriter) Run(in *bytes.Buffer) (*bytes.Buffer, error) {
	out, _, err := r.rewrite(in.Bytes())
	if err != nil {
		return nil, err
	}
	return bytes.NewBuffer(out), nil
}

// rewriteRendered rewrites rendered templates by name the way Helm's
// post-render sees them (partials, NOTES.txt and empty files skipped),
// for the manifest digest.
func (r *imageRewriter) rewriteRendered(rendered map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(rendered))
	for n, s := range rendered {
		if strings.HasPrefix(path.Base(n), "_") || strings.HasSuffix(n, "NOTES.txt") || strings.TrimSpace(s) == "" {
			out[n] = s
			continue
		}
		b, _, err := r.rewrite([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out[n] = string(b)
	}
	return out, nil
}

// rewrite rewrites a stream of YAML documents. A document with nothing to
// rewrite is kept byte for byte; one with something is re-serialised
// (comments dropped, keys sorted). It returns the number of documents
// rewritten.
func (r *imageRewriter) rewrite(in []byte) ([]byte, int, error) {
	if len(in) > MaxRewriteSize {
		return nil, 0, fmt.Errorf("%w: manifests of %d bytes, more than %d", ErrRewrite, len(in), MaxRewriteSize)
	}
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in)))
	var out bytes.Buffer
	changed := 0
	for i := 0; ; i++ {
		doc, err := rd.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%w: document %d: %w", ErrRewrite, i+1, err)
		}
		if bytes.HasPrefix(doc, []byte("---")) {
			// The reader keeps a separator line that starts the
			// stream: "---" is written once per document below.
			_, doc, _ = bytes.Cut(doc, []byte("\n"))
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		doc, ch, err := r.rewriteDoc(doc)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: document %d: %w", ErrRewrite, i+1, err)
		}
		if ch {
			changed++
		}
		out.WriteString("---\n")
		out.Write(doc)
		if len(doc) > 0 && doc[len(doc)-1] != '\n' {
			out.WriteByte('\n')
		}
		if out.Len() > MaxRewriteSize {
			return nil, 0, fmt.Errorf("%w: rewritten manifests pass %d bytes", ErrRewrite, MaxRewriteSize)
		}
	}
	return out.Bytes(), changed, nil
}

func (r *imageRewriter) rewriteDoc(doc []byte) ([]byte, bool, error) {
	j, err := sigsyaml.YAMLToJSON(doc)
	if err != nil {
		return nil, false, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber() // integers stay integers
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false, err
	}
	v, changed := r.walk(v, "")
	if !changed {
		return doc, false, nil
	}
	if j, err = json.Marshal(v); err != nil {
		return nil, false, err
	}
	y, err := sigsyaml.JSONToYAML(j)
	return y, true, err
}

// walk rewrites the string values under v; key is the map key v is
// the value of (a list's items keep their list's key).
func (r *imageRewriter) walk(v any, key string) (any, bool) {
	switch x := v.(type) {
	case map[string]any:
		changed := false
		for k, e := range x {
			if n, ok := r.walk(e, k); ok {
				x[k], changed = n, true
			}
		}
		return x, changed
	case []any:
		changed := false
		for i, e := range x {
			if n, ok := r.walk(e, key); ok {
				x[i], changed = n, true
			}
		}
		return x, changed
	case string:
		if s, ok := r.match(x, key); ok {
			return s, true
		}
	}
	return v, false
}

// match returns the served name of s when s is one of the bundle's images.
func (r *imageRewriter) match(s, key string) (string, bool) {
	if s == "" || len(s) > maxRefLen || strings.TrimSpace(s) != s {
		return "", false
	}
	if !strings.ContainsAny(s, "/:@") && key != "image" {
		return "", false
	}
	norm, err := manifests.NormalizeImageRef(s)
	if err != nil {
		return "", false
	}
	served, ok := r.served[norm]
	return served, ok
}
