package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"zdt.dev/zdt/cluster"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/rollout"
)

// TestTerminalText: an error's escape sequences (a registry's status line,
// a cluster object's name) are shown escaped, its line breaks and tabs
// kept.
func TestTerminalText(t *testing.T) {
	in := "GET https://reg/v2/: 500 \x1b]0;owned\a\x1b[31mRED\u009b2J\nnext line\tcol \u2028x"
	got := terminalText(in)
	for _, bad := range []string{"\x1b", "\a", "\u009b", "\u2028"} {
		if strings.Contains(got, bad) {
			t.Errorf("%q kept %q", got, bad)
		}
	}
	if !strings.Contains(got, `\x1b]0;owned\a\x1b[31mRED\u009b2J`+"\nnext line\tcol "+`\u2028x`) {
		t.Errorf("terminalText = %q", got)
	}
	if terminalText("plain: ok — ü") != "plain: ok — ü" {
		t.Error("printable text changed")
	}
}

// TestRolloutStatusPrintable: `rollout status` prints what the cluster
// holds; a forged ConfigMap's id, reference, phase or node error cannot
// move the cursor or fake a table row.
func TestRolloutStatusPrintable(t *testing.T) {
	st := &rollout.Status{
		State: &rollout.State{ID: "r1\x1b[2J", Reference: "reg/zdt/x@sha256:" + strings.Repeat("a", 64), Phase: "paused\nfake-node  worker  done", Since: time.Unix(0, 0).UTC(), MaxUnavailable: 1},
		Nodes: []rollout.NodeStatus{{Name: "w-1", Phase: "failed", Error: "node w-1: install: boom\r\nw-2\tworker\tsha256:x\tdone\x1b[0m"}},
	}
	var b bytes.Buffer
	if err := printRolloutStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\r") {
		t.Errorf("escapes printed:\n%q", out)
	}
	if lines := strings.Count(out, "\n"); lines != 3 {
		t.Errorf("%d lines, want 3 (header, table header, one node):\n%s", lines, out)
	}
	if !strings.Contains(out, `node w-1: install: boom\r\nw-2`) {
		t.Errorf("the error is not shown escaped:\n%s", out)
	}
}

// TestAMIAndReleaseLinesPrintable: an install plan's and status's AMI
// lines print what EC2 answered (image ids, names, tags anyone able to tag
// may have forged), `status` prints a release's not-ready reason from the
// cluster and --diff the deployed manifest: none of them can move the
// cursor or fake a line.
func TestAMIAndReleaseLinesPrintable(t *testing.T) {
	var b bytes.Buffer
	renderPlan(&b, &installer.Plan{Bundle: "plat", BundleDigest: "sha256:" + strings.Repeat("a", 64), AMIs: []installer.AMIChange{
		{Action: installer.AMIDeregister, AMI: installer.AMI{ImageID: "ami-1\x1b[2J", Name: "node\n  + fake-line", Item: "x\x1b]0;t\a", ItemDigest: "sha256:\x1b[31m", Region: "eu-west-1"}},
	}})
	renderReleaseStatuses(&b, []releaseStatus{{Namespace: "ns", Name: "app", Chart: "app", Version: "1", Revision: 1, ClusterRevision: 1, Health: "not ready",
		NotReady: "Deployment ns/app: InProgress: \x1b[2Jwaiting\nrelease    fake/line  ready"}})
	renderDiffs(&b, []cluster.ReleaseDiff{{Namespace: "ns", Name: "app", Action: installer.ReleaseUpgrade, Diff: "-  image: a\x1b[8m\n+  image: b\n"}})
	out := b.String()
	for _, bad := range []string{"\x1b", "\a", "\n  + fake-line", "\nrelease    fake/line"} {
		if strings.Contains(out, bad) {
			t.Errorf("output holds %q:\n%s", bad, out)
		}
	}
	for _, want := range []string{`ami-1\x1b[2J`, `\x1b[8m`, "\n+  image: b\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
