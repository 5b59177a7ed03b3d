package rollout

import (
	"strings"
	"testing"
)

func TestParseState(t *testing.T) {
	dig := digestOf("v1")
	for _, tc := range []struct {
		name, in, err string
	}{
		{"ok", `{"id":"a","digest":"` + dig + `","maxUnavailable":1,"phase":"progressing"}`, ""},
		{"bad digest", `{"digest":"sha256:00","maxUnavailable":1,"phase":"progressing"}`, "digest"},
		{"zero max", `{"digest":"` + dig + `","maxUnavailable":0,"phase":"progressing"}`, "maxUnavailable"},
		{"phase", `{"digest":"` + dig + `","maxUnavailable":1,"phase":"nope"}`, "phase"},
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
	f.Add([]byte(`{"id":"a","digest":"` + digestOf("v1") + `","maxUnavailable":1,"phase":"paused","nodes":{"n":{"phase":"failed"}}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseState(b)
		if err != nil {
			return
		}
		if s.MaxUnavailable < 1 || s.MaxUnavailable > 1000 || s.Nodes == nil || !digestRE.MatchString(s.Digest) {
			t.Fatalf("accepted %+v", s)
		}
	})
}
