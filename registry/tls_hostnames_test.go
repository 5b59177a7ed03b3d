package registry

import (
	"slices"
	"testing"
)

// TestServerHostnames is issue 13.6: the certificate of `zdt serve --addr
// HOST:PORT` names HOST besides the --hostname names (or the defaults).
func TestServerHostnames(t *testing.T) {
	for _, c := range []struct {
		addr      string
		hostnames []string
		want      []string
		not       string
	}{
		{"127.0.0.2:5004", nil, []string{"localhost", "127.0.0.1", "127.0.0.2"}, ""},
		{"registry.site.local:5000", []string{"reg.example"}, []string{"reg.example", "registry.site.local"}, "localhost"},
		{"0.0.0.0:5000", []string{"reg.example"}, []string{"reg.example"}, "0.0.0.0"},
		{"[::]:5000", nil, []string{"localhost"}, "::"},
		{"[fd00::5]:5000", []string{"fd00::5"}, []string{"fd00::5"}, ""},
	} {
		got := ServerHostnames(c.addr, c.hostnames)
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("ServerHostnames(%q, %q) = %q, lacks %q", c.addr, c.hostnames, got, w)
			}
		}
		if c.not != "" && slices.Contains(got, c.not) {
			t.Errorf("ServerHostnames(%q, %q) = %q, has %q", c.addr, c.hostnames, got, c.not)
		}
		if c.addr == "[fd00::5]:5000" && len(got) != 1 {
			t.Errorf("duplicate names: %q", got)
		}
		ca, err := LoadOrCreateCA(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(got, ServerCertLifetime)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if err := cert.Leaf.VerifyHostname(w); err != nil {
				t.Errorf("certificate for %q: %v", got, err)
			}
		}
	}
}
