package cluster

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCleanWarning: text from the cluster's events is quoted as one
// printable line, bounded, valid UTF-8.
func TestCleanWarning(t *testing.T) {
	for in, want := range map[string]string{
		"Pod/a: FailedScheduling: 0/3 nodes": "Pod/a: FailedScheduling: 0/3 nodes",
		"x\n\x1b[31mred\x1b[0m\r\ty":         "x [31mred [0m y",
		"a\u0085b":                           "a b",
		strings.Repeat("é", 400):             strings.Repeat("é", 150) + "…",
		"  spaced    out  ":                  "spaced out",
	} {
		got := clean(in)
		if got != want || !utf8.ValidString(got) || len(got) > maxWarningLen+len("…") {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	base := errors.New("release failed")
	if err := withWarnings(base, nil); err != base {
		t.Fatalf("withWarnings without warnings = %v", err)
	}
	err := withWarnings(base, []string{"Pod/a: FailedScheduling: no", "Pod/b: FailedCreate: quota"})
	if !errors.Is(err, base) || strings.Count(err.Error(), "cluster warnings: ") != 2 {
		t.Fatalf("withWarnings = %q", err)
	}
}
