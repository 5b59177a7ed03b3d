package build

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPlatformWanted: --platform and the spec's platforms select index
// entries the way go-containerregistry matches platforms, with variants
// and architecture aliases normalised as containerd does.
func TestPlatformWanted(t *testing.T) {
	tests := []struct {
		want []string
		have ocispec.Platform
		ok   bool
	}{
		{[]string{"linux/amd64"}, ocispec.Platform{OS: "linux", Architecture: "amd64"}, true},
		{[]string{"linux/amd64"}, ocispec.Platform{OS: "linux", Architecture: "arm64"}, false},
		{[]string{"linux/arm64"}, ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, true},
		{[]string{"linux/arm64/v8"}, ocispec.Platform{OS: "linux", Architecture: "arm64"}, true},
		{[]string{"linux/arm64/v8"}, ocispec.Platform{OS: "linux", Architecture: "aarch64"}, true},
		{[]string{"linux/arm/v7"}, ocispec.Platform{OS: "linux", Architecture: "arm"}, true},
		{[]string{"linux/arm/v7"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, false},
		{[]string{"linux/arm"}, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, false},
		{[]string{"linux/amd64"}, ocispec.Platform{OS: "linux", Architecture: "x86_64"}, true},
		{[]string{"windows/amd64:10.0.17763.1"}, ocispec.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.17763.1"}, true},
		{[]string{"windows/amd64:10.0.17763.1"}, ocispec.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}, false},
		{[]string{"linux/s390x", "linux/arm64"}, ocispec.Platform{OS: "linux", Architecture: "arm64"}, true},
		{[]string{"linux/amd64/v2/x"}, ocispec.Platform{OS: "linux", Architecture: "amd64"}, false},
	}
	for _, tt := range tests {
		if got := platformWanted(tt.want, &tt.have); got != tt.ok {
			t.Errorf("platformWanted(%v, %+v) = %v, want %v", tt.want, tt.have, got, tt.ok)
		}
	}
}
