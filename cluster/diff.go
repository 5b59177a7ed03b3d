package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"zdt.dev/zdt/installer"
)

// MaxDiffLines bounds the lines of one side of a release's diff: a larger
// manifest is summarized instead of diffed.
const MaxDiffLines = 50000

// ReleaseDiff is the manifest diff of one release a plan changes.
type ReleaseDiff struct {
	Namespace string           `json:"namespace"`
	Name      string           `json:"name"`
	Action    installer.Action `json:"action"`
	// Diff is a unified diff of the release's manifest in the cluster
	// (its newest revision, with its chart's CRDs) against what the
	// bundle renders, objects grouped by template in name order. The
	// values of Secrets' data and stringData are redacted: each is
	// replaced by a keyed hash that is equal on both sides when the value
	// is, and means nothing outside this diff.
	Diff string `json:"diff"`
}

// Diff returns the manifest diff of every release of changes that would
// change (install, upgrade, uninstall), in order. Call it after
// PlanReleases (it uses the renderings of that plan). It only reads.
func (d *Deployer) Diff(ctx context.Context, changes []installer.ReleaseChange) ([]ReleaseDiff, error) {
	macKey := make([]byte, 32)
	if _, err := rand.Read(macKey); err != nil {
		return nil, err
	}
	red := redactor{key: macKey}
	var out []ReleaseDiff
	for _, c := range changes {
		if c.Action == installer.ReleaseUnchanged {
			continue
		}
		var oldText, newText string
		if c.Action != installer.ReleaseInstall {
			latest, _, err := d.latestRevision(ctx, c.Namespace, c.Name)
			if err != nil {
				return nil, err
			}
			if latest > 0 {
				rel, err := d.getRelease(c.Namespace, c.Name, latest)
				if err != nil {
					return nil, fmt.Errorf("release %s/%s revision %d: %w", c.Namespace, c.Name, latest, err)
				}
				docs := manifestDocs(rel.Manifest)
				if rel.Chart != nil {
					crds, err := crdDocs(rel.Chart)
					if err != nil {
						return nil, fmt.Errorf("release %s/%s revision %d: %w", c.Namespace, c.Name, latest, err)
					}
					addCRDs(docs, rel.Chart.Name(), crds)
				}
				oldText = red.render(docs)
			}
		}
		if c.Action != installer.ReleaseUninstall {
			w, ok := d.loaded[key(c.Namespace, c.Name)]
			if !ok {
				return nil, fmt.Errorf("release %s/%s was not planned", c.Namespace, c.Name)
			}
			docs := map[string][]string{}
			for name, content := range w.rendered {
				if ds := splitDocs(content); len(ds) > 0 {
					docs[name] = ds
				}
			}
			addCRDs(docs, w.chart.Name(), w.crds)
			newText = red.render(docs)
		}
		out = append(out, ReleaseDiff{Namespace: c.Namespace, Name: c.Name, Action: c.Action,
			Diff: unified(c.Namespace+"/"+c.Name, oldText, newText)})
	}
	return out, nil
}

// unified is the unified diff of a and b (3 lines of context).
func unified(name, a, b string) string {
	al, bl := difflib.SplitLines(a), difflib.SplitLines(b)
	if a == "" {
		al = nil
	}
	if b == "" {
		bl = nil
	}
	if len(al) > MaxDiffLines || len(bl) > MaxDiffLines {
		return fmt.Sprintf("--- %s (cluster)\n+++ %s (bundle)\n@@ %d lines against %d lines: too large to diff (more than %d) @@\n", name, name, len(al), len(bl), MaxDiffLines)
	}
	s, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: al, B: bl,
		FromFile: name + " (cluster)", ToFile: name + " (bundle)", Context: 3})
	if err != nil {
		return "diff: " + err.Error() + "\n"
	}
	return s
}

// manifestDocs splits a Helm release manifest ("---\n# Source: PATH\n..."
// per object) into its documents by source path.
func manifestDocs(manifest string) map[string][]string {
	out := map[string][]string{}
	for _, doc := range splitDocs(manifest) {
		src := ""
		if rest, ok := strings.CutPrefix(doc, "# Source: "); ok {
			line, body, _ := strings.Cut(rest, "\n")
			src, doc = strings.TrimSpace(line), strings.TrimSpace(body)
		}
		if doc != "" {
			out[src] = append(out[src], doc)
		}
	}
	return out
}

// addCRDs adds a chart's crds/ documents under CHART/FILE.
func addCRDs(docs map[string][]string, chartName string, crds []crdDoc) {
	for _, c := range crds {
		y, err := yaml.JSONToYAML(c.json)
		if err != nil {
			continue
		}
		src := chartName + "/" + c.file
		docs[src] = append(docs[src], strings.TrimSpace(string(y)))
	}
}

// splitDocs splits YAML text at "---" lines, trimmed, dropping empty
// documents.
func splitDocs(s string) []string {
	var out []string
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil { // not YAML the reader can split: the rest as one
			break
		}
		d := strings.TrimSpace(string(doc))
		d = strings.TrimSpace(strings.TrimPrefix(d, "---"))
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// redactor hides Secrets' values behind a keyed hash.
type redactor struct{ key []byte }

// render writes docs by source in name order, each document headed by its
// source, Secrets redacted.
func (r redactor) render(docs map[string][]string) string {
	srcs := make([]string, 0, len(docs))
	for s := range docs {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	var b strings.Builder
	for _, s := range srcs {
		for _, d := range docs[s] {
			fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", s, r.redact(d))
		}
	}
	return b.String()
}

// redact returns doc with the values of a Secret's data and stringData
// replaced; any other document as it is.
func (r redactor) redact(doc string) string {
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		if strings.Contains(doc, "Secret") {
			return "# (a document zdt cannot parse, hidden: it may be a Secret)"
		}
		return doc
	}
	var obj map[string]any
	if err := json.Unmarshal(j, &obj); err != nil || obj == nil {
		return doc
	}
	if kind, _ := obj["kind"].(string); kind != "Secret" {
		return doc
	}
	for _, field := range []string{"data", "stringData"} {
		m, ok := obj[field].(map[string]any)
		if !ok {
			if _, present := obj[field]; present {
				obj[field] = "(redacted)"
			}
			continue
		}
		for k, v := range m {
			mac := hmac.New(sha256.New, r.key)
			fmt.Fprint(mac, field, "\x00", v)
			m[k] = "(redacted " + hex.EncodeToString(mac.Sum(nil))[:12] + ")"
		}
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return "# (a Secret, hidden)"
	}
	return strings.TrimSpace(string(bytes.TrimSpace(out)))
}
