package e2e

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPackageDirection keeps the dependency direction of docs/architecture.md:
// manifests ← bundle ← {signing, registry} ← installer ← cmd/zdt (signing
// and registry both read archives, which is bundle's job, so they sit above
// it). Only signing imports cosign/sigstore; only cmd/zdt imports cobra and the progress bar.
func TestPackageDirection(t *testing.T) {
	allowed := map[string][]string{
		"manifests": {},
		"bundle":    {"manifests"},
		"signing":   {"bundle", "manifests"},
		"registry":  {"bundle", "manifests"},
		"installer": {"bundle", "manifests", "registry", "signing"},
	}
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = moduleRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, "zdt.dev/zdt/")
		ok, isLib := allowed[name]
		for _, d := range p.Imports {
			switch {
			case isLib && strings.HasPrefix(d, "zdt.dev/zdt/") && !strings.HasPrefix(d, "zdt.dev/zdt/internal/"):
				dep := strings.TrimPrefix(d, "zdt.dev/zdt/")
				if !slices.Contains(ok, dep) {
					t.Errorf("%s imports %s: against the package direction", name, dep)
				}
			case isLib && strings.HasPrefix(d, "zdt.dev/zdt/internal/") && name == "manifests":
				t.Errorf("manifests imports %s: it imports no zdt package", d)
			case name != "signing" && isLib && (strings.HasPrefix(d, "github.com/sigstore/cosign") || strings.HasPrefix(d, "github.com/sigstore/sigstore")):
				t.Errorf("%s imports %s: only signing imports cosign", name, d)
			case isLib && (strings.HasPrefix(d, "github.com/spf13/cobra") || strings.HasPrefix(d, "github.com/schollz/progressbar")):
				t.Errorf("%s imports %s: libraries never print; only cmd/zdt renders", name, d)
			}
		}
		if isLib {
			checked++
		}
	}
	if checked != len(allowed) {
		t.Fatalf("checked %d library packages, want %d", checked, len(allowed))
	}
}
