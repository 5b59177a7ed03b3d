package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

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
