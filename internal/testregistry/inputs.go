package testregistry

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"zdt.dev/zdt/internal/fixtures"
)

// SpecInputs builds a spec directory with every kind of item: a two-platform
// image in an OCI layout and a docker-save image sharing its base layer, a
// copy of chartDir, a file holding fileData and a raw disk image. It
// returns the spec path.
func SpecInputs(t testing.TB, dir, chartDir string, fileData []byte) string {
	t.Helper()
	base, err := random.Layer(64<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	idx := RandomIndex(t, []string{"linux/amd64", "linux/arm64"}, []v1.Layer{base}, 1, 32<<10)
	if err := fixtures.WriteLayoutIndex(filepath.Join(dir, "images", "web"), "1.0", idx); err != nil {
		t.Fatal(err)
	}
	extra, err := random.Layer(16<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	tools, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, base, extra)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.WriteDockerArchive(filepath.Join(dir, "images", "tools.tar"), "registry.test/app/tools:2.0", tools); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "disk"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fixtures.RawDisk(filepath.Join(dir, "disk", "node.raw"), 8<<20, 7); err != nil {
		t.Fatal(err)
	}
	CopyDir(t, chartDir, filepath.Join(dir, "charts", "demo"))
	WriteFile(t, filepath.Join(dir, "values.yaml"), []byte("replicas: 3\n"))
	WriteFile(t, filepath.Join(dir, "bin", "tool"), fileData)
	sum := sha256.Sum256(fileData)
	spec := `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata:
  name: test
  version: 1.0.0
components:
  - name: runtime
    images:
      - ref: registry.test/app/web:1.0
        source: oci:images/web:1.0
      - ref: registry.test/app/tools:2.0
        source: docker-archive:images/tools.tar
    files:
      - source: bin/tool
        sha256: ` + hex.EncodeToString(sum[:]) + `
        target: /usr/local/bin/tool
        mode: "0755"
  - name: apps
    charts:
      - name: demo
        source: charts/demo
        version: 1.2.3
        values: values.yaml
  - name: node
    amis:
      - name: node-image
        source: disk/node.raw
        bootMode: uefi
`
	p := filepath.Join(dir, "zdt.yaml")
	WriteFile(t, p, []byte(spec))
	return p
}

// WriteFile writes data at p, making its directory.
func WriteFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// CopyDir copies the files under src to dst.
func CopyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		WriteFile(t, filepath.Join(dst, rel), data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ChartDir writes a chart's files (path → content) under dir and returns
// dir.
func ChartDir(t testing.TB, dir string, files map[string]string) string {
	t.Helper()
	for p, c := range files {
		WriteFile(t, filepath.Join(dir, p), []byte(c))
	}
	return dir
}

// BombChart writes a local chart named bomb under dir whose template
// bomb.yaml is tpl, next to templates that recurse or loop without end
// (NOTES.txt, an include of itself) and files Helm skips, for the render
// bounds tests.
func BombChart(t testing.TB, dir, tpl, values string) string {
	return ChartDir(t, filepath.Join(dir, "bomb"), map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: bomb\nversion: 1.0.0\n",
		"values.yaml":           values,
		"templates/bomb.yaml":   tpl,
		"templates/_x.tpl":      `{{- define "self" -}}{{ include "self" . }}{{ include "self" . }}{{- end -}}`,
		"templates/plain.yaml":  "image: nginx:1\n",
		"templates/NOTES.txt":   "{{ range until 100000 }}{{ range until 100000 }}x{{ end }}{{ end }}",
		"templates/other.json":  "{}",
		"templates/_helpers.tt": "",
	})
}
