package rollout

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseState(t *testing.T) {
	dig := digestOf("v1")
	for _, tc := range []struct {
		name, in, err string
	}{
		{"ok", `{"id":"a","reference":"r:5000/zdt/q@` + dig + `","digest":"` + dig + `","maxUnavailable":1,"phase":"progressing"}`, ""},
		{"reference not pinned to the digest", `{"reference":"r:5000/zdt/q@` + digestOf("v2") + `","digest":"` + dig + `","maxUnavailable":1,"phase":"progressing"}`, "not pinned"},
		{"bad digest", `{"digest":"sha256:00","maxUnavailable":1,"phase":"progressing"}`, "digest"},
		{"zero max", `{"reference":"r/zdt/q@` + dig + `","digest":"` + dig + `","maxUnavailable":0,"phase":"progressing"}`, "maxUnavailable"},
		{"phase", `{"reference":"r/zdt/q@` + dig + `","digest":"` + dig + `","maxUnavailable":1,"phase":"nope"}`, "phase"},
		{"not json", `{`, "rollout state"},
		{"too big", `"` + strings.Repeat("x", MaxStateSize) + `"`, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseState([]byte(tc.in))
			if tc.err == "" {
				if err != nil || s.Nodes == nil {
					t.Fatalf("ParseState: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseState = %v, want an error with %q", err, tc.err)
			}
		})
	}
}

// FuzzParseState: the ConfigMap's state is cluster data any writer of
// the namespace controls; parsing never panics and what it accepts is
// within bounds.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"id":"a","reference":"r/zdt/q@` + digestOf("v1") + `","digest":"` + digestOf("v1") + `","maxUnavailable":1,"phase":"paused","nodes":{"n":{"phase":"failed"}}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseState(b)
		if err != nil {
			return
		}
		if s.MaxUnavailable < 1 || s.MaxUnavailable > 1000 || s.Nodes == nil || !digestRE.MatchString(s.Digest) || !strings.HasSuffix(s.Reference, s.Digest) {
			t.Fatalf("accepted %+v", s)
		}
	})
}

// TestRecordedError: an error carrying an action's output is kept short,
// valid UTF-8 and free of terminal escapes in the shared ConfigMap.
func TestRecordedError(t *testing.T) {
	long := "install: \x1b[31mred\x1b[0m " + strings.Repeat("é", 40_000) + "\xff the cause"
	got := recordedError(long)
	if len(got) > maxRecordedError+8 {
		t.Fatalf("recorded %d bytes, want at most ~%d", len(got), maxRecordedError)
	}
	if !utf8.ValidString(got) || strings.ContainsRune(got, 0x1b) {
		t.Fatalf("recorded %q: invalid UTF-8 or an escape", got[:60])
	}
	if !strings.HasSuffix(got, "the cause") || !strings.HasPrefix(got, "install: ") {
		t.Fatalf("recorded error lost its start or end: %q…%q", got[:20], got[len(got)-20:])
	}
	if short := "node w-1: drain: timeout\nsecond line"; recordedError(short) != short {
		t.Fatalf("a short error was changed: %q", recordedError(short))
	}
}
