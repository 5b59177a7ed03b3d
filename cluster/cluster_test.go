package cluster

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"

	"zdt.dev/zdt/internal/kubetest"
)

func chartWithCRDs(files map[string]string) *chart.Chart {
	ch := &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "c", Version: "1.0.0"}}
	for name, data := range files {
		ch.Files = append(ch.Files, &common.File{Name: name, Data: []byte(data)})
	}
	return ch
}

const crdYAML = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: things.example.com
spec: {}
`

// TestCRDDocs: crds/ is applied cluster-wide before any release, so a chart
// that hides anything but a CRD there (a ClusterRoleBinding, a Secret) is
// refused, naming the file; comment-only documents are skipped.
func TestCRDDocs(t *testing.T) {
	docs, err := crdDocs(chartWithCRDs(map[string]string{"crds/a.yaml": "# only a comment\n---\n" + crdYAML + "---\n"}))
	if err != nil || len(docs) != 1 || docs[0].name != "things.example.com" {
		t.Fatalf("crdDocs = %+v, %v", docs, err)
	}
	for name, doc := range map[string]string{
		"binding": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: own-the-cluster\n",
		"v1beta1": strings.Replace(crdYAML, "apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1", 1),
		"noname":  strings.Replace(crdYAML, "things.example.com", "", 1),
		"broken":  "apiVersion: [\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := crdDocs(chartWithCRDs(map[string]string{"crds/x.yaml": crdYAML + "---\n" + doc}))
			if err == nil || !strings.Contains(err.Error(), "crds/x.yaml") {
				t.Fatalf("crdDocs accepted %s: %v", name, err)
			}
		})
	}
}

func FuzzCRDDocs(f *testing.F) {
	f.Add([]byte(crdYAML))
	f.Add([]byte("---\n---\n# x\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := crdDocs(chartWithCRDs(map[string]string{"crds/f.yaml": string(data)}))
		if err != nil {
			return
		}
		for _, d := range docs {
			if d.name == "" || len(d.json) == 0 {
				t.Fatalf("accepted a CRD without a name: %+v", d)
			}
		}
	})
}

// TestHistoryIsBounded: a release whose history in the cluster exceeds
// twice MaxHistory (planted storage Secrets) is refused by name instead
// of being read whole; below the bound the newest revision is found.
func TestHistoryIsBounded(t *testing.T) {
	c := kubetest.Start(t)
	ctx := context.Background()
	if code, b, err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"h"}}`)); err != nil || code != http.StatusCreated {
		t.Fatalf("namespace: %d %v %s", code, err, b)
	}
	plant := func(rev int) {
		body := fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"sh.helm.release.v1.big.v%d","labels":{"owner":"helm","name":"big","version":"%d","status":"superseded"}}}`, rev, rev)
		if code, b, err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces/h/secrets", []byte(body)); err != nil || code != http.StatusCreated {
			t.Fatalf("secret: %d %v %s", code, err, b)
		}
	}
	d, err := New(Options{Kubeconfig: c.ZdtKubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	for rev := 1; rev <= 2*MaxHistory; rev++ {
		plant(rev)
	}
	got, status, err := d.latestRevision(ctx, "h", "big")
	if err != nil || got != 2*MaxHistory || status != "superseded" {
		t.Fatalf("latestRevision = %d %q %v, want %d", got, status, err, 2*MaxHistory)
	}
	plant(2*MaxHistory + 1)
	if _, _, err := d.latestRevision(ctx, "h", "big"); err == nil || !strings.Contains(err.Error(), "h/big") {
		t.Fatalf("latestRevision over the bound: %v", err)
	}
	if n, _, err := d.latestRevision(ctx, "h", "absent"); err != nil || n != 0 {
		t.Fatalf("latestRevision of no release = %d, %v", n, err)
	}
}
