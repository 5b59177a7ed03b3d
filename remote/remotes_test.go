package remote

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRegistryConfig(t *testing.T) {
	cases := []struct {
		name, yaml, wantErr string
		check               func(t *testing.T, c *RegistryConfig)
	}{
		{name: "empty", yaml: "", check: func(t *testing.T, c *RegistryConfig) {
			if len(c.Registries) != 0 {
				t.Fatal(c)
			}
		}},
		{name: "full", yaml: "registries:\n  reg.example:5000:\n    ca: ca.pem\n  127.0.0.1:5000:\n    plainHTTP: false\n    username: u\n    password: p\n",
			check: func(t *testing.T, c *RegistryConfig) {
				r := New(c, 4)
				if c.Registries["reg.example:5000"].CA != "ca.pem" || r.PlainHTTP("reg.example:5000") || r.PlainHTTP("127.0.0.1:5000") || !r.PlainHTTP("localhost:1") || r.PlainHTTP("other.example") {
					t.Fatalf("%+v", c)
				}
				if got := c.Hosts(); !slices.Equal(got, []string{"127.0.0.1:5000", "reg.example:5000"}) {
					t.Fatal(got)
				}
			}},
		{name: "unknown field", yaml: "registries:\n  a:\n    cert: x\n", wantErr: "cert"},
		{name: "scheme in key", yaml: "registries:\n  https://a: {}\n", wantErr: "without scheme"},
		{name: "insecure and ca", yaml: "registries:\n  a: {insecure: true, ca: x}\n", wantErr: "exclude"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseRegistryConfig("r.yaml", []byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
