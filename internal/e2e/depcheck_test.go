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
// it) and manifests ← bundle ← {remote, charts} ← bundle/build ← cmd/zdt
// (the create pipeline; registry uses remote for push, installer for
// install --from). installer and
// signing never import the create pipeline or charts. cluster (Helm v4
// deploys) sits above installer, which calls it through installer.Deployer
// and so stays free of Helm (it names images as registry serves them for
// --rewrite-images; registry is below installer already). Only signing imports cosign/sigstore; only
// charts, bundle/build and cluster import Helm; only cmd/zdt imports cobra
// and the progress bar.
func TestPackageDirection(t *testing.T) {
	allowed := map[string][]string{
		"manifests":    {},
		"bundle":       {"manifests"},
		"remote":       {},
		"charts":       {"bundle", "manifests"},
		"bundle/build": {"bundle", "charts", "manifests", "remote"},
		"signing":      {"bundle", "manifests"},
		"registry":     {"bundle", "manifests", "remote"},
		"installer":    {"bundle", "manifests", "registry", "remote", "signing"},
		"cluster":      {"bundle", "charts", "installer", "manifests", "registry"},
		"cloud/ec2":    {"bundle", "installer", "manifests"},
		"rollout":      {},
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
			case name != "charts" && name != "bundle/build" && name != "cluster" && isLib && strings.HasPrefix(d, "helm.sh/"):
				t.Errorf("%s imports %s: only charts, bundle/build and cluster import Helm", name, d)
			case name != "cloud/ec2" && isLib && (strings.HasPrefix(d, "github.com/aws/aws-sdk-go-v2/service/ec2") || strings.HasPrefix(d, "github.com/aws/aws-sdk-go-v2/service/ebs")):
				t.Errorf("%s imports %s: only cloud/ec2 imports the EC2 and EBS clients", name, d)
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
	// Helm's render engine is the largest part of the binary: the packages
	// that read, serve and install bundles must not pull it in, even
	// through another package.
	cmd = exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", "./bundle", "./remote", "./registry", "./installer", "./signing")
	cmd.Dir = moduleRoot
	out, err = cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 5 {
		t.Fatalf("go list: %d packages, want 5", len(lines))
	}
	for _, line := range lines {
		deps := strings.Fields(line)
		for _, d := range deps[1:] {
			if strings.HasPrefix(d, "helm.sh/") || d == "zdt.dev/zdt/charts" || d == "zdt.dev/zdt/bundle/build" ||
				strings.HasPrefix(d, "github.com/aws/aws-sdk-go-v2/service/ec2") || strings.HasPrefix(d, "github.com/aws/aws-sdk-go-v2/service/ebs") {
				t.Errorf("%s depends on %s: Helm, the create pipeline and the EC2 clients stay out of it", deps[0], d)
				break
			}
		}
	}
}
