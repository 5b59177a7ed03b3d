package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	chart "helm.sh/helm/v4/pkg/chart/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// crdDoc is one CustomResourceDefinition of a chart's crds/ directory.
type crdDoc struct {
	file string
	name string
	json []byte
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// crdDocs reads the documents of a chart's crds/ files. Anything but an
// apiextensions.k8s.io/v1 CustomResourceDefinition with a name is refused:
// crds/ is applied cluster-wide before any release, so it holds CRDs only.
func crdDocs(ch *chart.Chart) ([]crdDoc, error) {
	var out []crdDoc
	for _, c := range ch.CRDObjects() {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(c.File.Data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.Filename, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			j, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.Filename, err)
			}
			if string(j) == "null" {
				continue // a document of comments only
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(j, &head); err != nil {
				return nil, fmt.Errorf("%s: %w", c.Filename, err)
			}
			if head.APIVersion != "apiextensions.k8s.io/v1" || head.Kind != "CustomResourceDefinition" || head.Metadata.Name == "" {
				return nil, fmt.Errorf("%s: %s %s %q is not an apiextensions.k8s.io/v1 CustomResourceDefinition", c.Filename, head.APIVersion, head.Kind, head.Metadata.Name)
			}
			out = append(out, crdDoc{file: c.Filename, name: head.Metadata.Name, json: j})
		}
	}
	return out, nil
}

// applyCRDs server-side applies the CRDs of the given releases (field
// manager zdt, conflicts forced: zdt owns the CRDs it ships) and waits
// until each is Established.
func (d *Deployer) applyCRDs(ctx context.Context, ws []*desired) error {
	var names []string
	force := true
	for _, w := range ws {
		for _, c := range w.crds {
			_, err := d.dyn.Resource(crdGVR).Patch(ctx, c.name, types.ApplyPatchType, c.json,
				metav1.PatchOptions{FieldManager: "zdt", Force: &force})
			if err != nil {
				return fmt.Errorf("%w: %s/%s: applying CRD %s (%s): %w", ErrRelease, w.rel.Namespace, w.rel.Name, c.name, c.file, err)
			}
			names = append(names, c.name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	for _, n := range names {
		if err := d.waitEstablished(wctx, n); err != nil {
			return err
		}
	}
	d.opts.Logger.Info("CRDs applied", "count", len(names))
	return nil
}

func (d *Deployer) waitEstablished(ctx context.Context, name string) error {
	for {
		u, err := d.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructuredSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not Established: %w (last error: %v)", name, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func unstructuredSlice(obj map[string]any, fields ...string) ([]any, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[f]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}
