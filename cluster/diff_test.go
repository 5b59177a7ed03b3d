package cluster

import (
	"strings"
	"testing"
)

// TestRedactSecrets: a Secret's data and stringData values never reach
// the diff text; equal values hash equal within one redactor, a changed
// one differs; a document that cannot be parsed and mentions Secret is
// hidden whole; other kinds are left as they are.
func TestRedactSecrets(t *testing.T) {
	r := redactor{key: []byte("k")}
	a := r.render(manifestDocs("---\n# Source: c/templates/s.yaml\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  pw: c2VjcmV0\nstringData:\n  token: hunter2\n"))
	b := r.render(manifestDocs("---\n# Source: c/templates/s.yaml\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  pw: b3RoZXI=\nstringData:\n  token: hunter2\n"))
	for _, s := range []string{a, b} {
		if strings.Contains(s, "c2VjcmV0") || strings.Contains(s, "hunter2") || strings.Contains(s, "b3RoZXI=") {
			t.Fatalf("a secret value leaked:\n%s", s)
		}
	}
	line := func(s, k string) string {
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, k+":") {
				return l
			}
		}
		return ""
	}
	if line(a, "token") != line(b, "token") || line(a, "pw") == line(b, "pw") || line(a, "pw") == "" {
		t.Fatalf("redaction does not show what changed:\n%s\n%s", a, b)
	}
	if got := r.redact("kind: Secret\ndata: [unclosed"); strings.Contains(got, "unclosed") {
		t.Fatalf("an unparsable Secret shown: %q", got)
	}
	cm := "apiVersion: v1\nkind: ConfigMap\ndata:\n  k: v"
	if got := r.redact(cm); got != cm {
		t.Fatalf("a ConfigMap changed: %q", got)
	}
	if d := unified("x", "a\n", "b\n"); !strings.Contains(d, "-a") || !strings.Contains(d, "+b") {
		t.Fatalf("unified = %q", d)
	}
}

// FuzzManifestDiff: a release manifest read from the cluster is hostile;
// splitting, redacting and diffing it never panics and never shows a
// Secret's stringData value.
func FuzzManifestDiff(f *testing.F) {
	f.Add("---\n# Source: c/templates/s.yaml\nkind: Secret\nstringData:\n  k: SECRETVALUE\n")
	f.Add("---\n---\n# Source: \n")
	f.Add("a: &a [*a, *a]\n")
	f.Fuzz(func(t *testing.T, m string) {
		r := redactor{key: []byte("k")}
		out := r.render(manifestDocs(m))
		_ = unified("x", out, m)
		// A Secret whose document parses never shows its values.
		if strings.Contains(m, "SECRETVALUE") && strings.Contains(out, "kind: Secret") && strings.Contains(out, "(redacted ") && strings.Contains(out, ": SECRETVALUE") {
			t.Fatalf("secret shown:\n%s", out)
		}
	})
}
