package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/internal/mototest"
)

// TestAMIRegisterCLI is issue 16 through the CLI against moto's server:
// `install --aws-region --aws-endpoint --plan` lists the AMI to register,
// install registers it (uploading the quickstart disk's non-zero blocks),
// `status` lists it (id, name, item digest; typed JSON too), a re-run
// reuses it, and the AWS flags without --aws-region are a usage error.
func TestAMIRegisterCLI(t *testing.T) {
	m := mototest.Start(t)
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	root := filepath.Join(dir, "root")
	aws := []string{"--aws-region", mototest.Region, "--aws-endpoint", m.URL}
	install := append([]string{"install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature"}, aws...)

	plan := zdt(t, dir, append(install, "--plan")...).must(t, "install --plan")
	if !strings.Contains(plan.stdout, "+ register   (new)") || !strings.Contains(plan.stdout, "quickstart-node-") {
		t.Fatalf("plan:\n%s", plan.stdout)
	}
	out := zdt(t, dir, install...).must(t, "install --aws-region")
	if !strings.Contains(out.stdout, "ami: ami-") {
		t.Fatalf("install said:\n%s", out.stdout)
	}
	var st struct {
		Current struct {
			AMIs []struct {
				ImageID, Name, ItemDigest, SnapshotID, Region string
				Blocks                                        int64
			} `json:"amis"`
		} `json:"current"`
	}
	js := zdt(t, dir, "status", "--root", root, "--output", "json").must(t, "status --output json")
	if err := json.Unmarshal([]byte(js.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Current.AMIs) != 1 {
		t.Fatalf("status json: %s", js.stdout)
	}
	a := st.Current.AMIs[0]
	if !strings.HasPrefix(a.ImageID, "ami-") || !strings.HasPrefix(a.Name, "quickstart-node-") || !strings.HasPrefix(a.ItemDigest, "sha256:") || a.Region != mototest.Region || a.Blocks == 0 {
		t.Fatalf("status json ami: %+v", a)
	}
	text := zdt(t, dir, "status", "--root", root).must(t, "status")
	if !strings.Contains(text.stdout, "ami        "+a.ImageID+"  "+a.Name) || !strings.Contains(text.stdout, a.ItemDigest) {
		t.Fatalf("status:\n%s", text.stdout)
	}
	again := zdt(t, dir, install...).must(t, "install again")
	if !strings.Contains(again.stdout, "= reuse      "+a.ImageID) || !strings.Contains(again.stdout, "already installed") {
		t.Fatalf("re-run:\n%s", again.stdout)
	}
	if r := zdt(t, dir, "install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature", "--prune-amis"); r.code != 2 {
		t.Fatalf("--prune-amis without --aws-region: exit %d\n%s", r.code, r.stderr)
	}
}
