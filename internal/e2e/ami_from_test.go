package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/internal/mototest"
)

// TestAMIFromRegistryCLI: node 2 installs the quickstart --from node 1's
// `zdt serve` with --aws-region against moto: the AMI is registered from
// the disk read from the registry (status lists it), a re-run reuses it.
// `zdt uninstall` without --aws-region lists the image it leaves
// registered; with it (on a node that recorded the image) it deregisters
// it, so a new install plans to register it again.
func TestAMIFromRegistryCLI(t *testing.T) {
	m := mototest.Start(t)
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	root1 := filepath.Join(dir, "node1")
	addr1 := freeAddr(t, "127.0.0.1")
	zdt(t, dir, "install", "--bundle", "q.zdt", "--insecure-skip-signature", "--root", root1, "--serve-addr", addr1).must(t, "node 1 install")
	startServe(t, "--root", root1, "--addr", addr1)
	aws := []string{"--aws-region", mototest.Region, "--aws-endpoint", m.URL}
	from := func(root string, extra ...string) []string {
		return append([]string{"install", "--from", addr1 + "/zdt/quickstart:0.1.0", "--ca", filepath.Join(root1, "var/lib/zdt/tls/ca.crt"),
			"--insecure-skip-signature", "--root", root}, extra...)
	}

	root2 := filepath.Join(dir, "node2")
	out := zdt(t, dir, from(root2, aws...)...).must(t, "node 2 install --from --aws-region")
	if !strings.Contains(out.stdout, "ami: ami-") {
		t.Fatalf("install --from --aws-region said:\n%s", out.stdout)
	}
	var st struct {
		Current struct {
			AMIs []struct{ ImageID, Name string } `json:"amis"`
		} `json:"current"`
	}
	js := zdt(t, dir, "status", "--root", root2, "--output", "json").must(t, "status")
	if err := json.Unmarshal([]byte(js.stdout), &st); err != nil || len(st.Current.AMIs) != 1 {
		t.Fatalf("status: %v\n%s", err, js.stdout)
	}
	id := st.Current.AMIs[0].ImageID
	if again := zdt(t, dir, from(root2, aws...)...).must(t, "re-run"); !strings.Contains(again.stdout, "= reuse      "+id) {
		t.Fatalf("re-run:\n%s", again.stdout)
	}

	// Uninstall without --aws-region: listed, left registered.
	un := zdt(t, dir, "uninstall", "--root", root2).must(t, "uninstall node 2")
	if !strings.Contains(un.stdout, "ami: left registered "+id) {
		t.Fatalf("uninstall said:\n%s", un.stdout)
	}
	// Node 3 records the same image (reused), then deregisters it.
	root3 := filepath.Join(dir, "node3")
	if r := zdt(t, dir, from(root3, aws...)...).must(t, "node 3 install"); !strings.Contains(r.stdout, "= reuse      "+id) {
		t.Fatalf("node 3 did not reuse %s:\n%s", id, r.stdout)
	}
	un = zdt(t, dir, append([]string{"uninstall", "--root", root3}, aws...)...).must(t, "uninstall --aws-region")
	if !strings.Contains(un.stdout, "ami: deregistered "+id) {
		t.Fatalf("uninstall --aws-region said:\n%s", un.stdout)
	}
	plan := zdt(t, dir, from(filepath.Join(dir, "node4"), append(aws, "--plan")...)...).must(t, "plan after deregistering")
	if !strings.Contains(plan.stdout, "+ register   (new)") {
		t.Fatalf("after uninstall --aws-region the image is still found:\n%s", plan.stdout)
	}
	if r := zdt(t, dir, "uninstall", "--root", root3, "--aws-endpoint", m.URL); r.code != 2 {
		t.Fatalf("--aws-endpoint without --aws-region: exit %d\n%s", r.code, r.stderr)
	}
}
