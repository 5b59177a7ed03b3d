package build

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/manifests"
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

// TestSinglePlatformImage: a registry image of one platform that is not
// among the spec's platforms fails the create with StrictPlatforms (a
// *PlatformError naming it, before any layer is fetched) and is bundled
// otherwise; its config, read to learn the platform, is fetched once.
func TestSinglePlatformImage(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, nil, testregistry.RandomLayers(t, 2, 16<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	reg.PushImage(t, testregistry.Auth{}, "app/one:1", img)
	cfg, _ := img.ConfigName()
	dir := t.TempDir()
	spec, err := manifests.Parse("zdt.yaml", []byte("apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: p, version: \"1\"}\n"+
		"platforms: [linux/arm64]\ncomponents:\n  - name: c\n    images: ['"+reg.Ref("app/one:1")+"']\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Create(context.Background(), spec, CreateOptions{Output: filepath.Join(dir, "strict.zdt"), StrictPlatforms: true})
	var pe *PlatformError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPlatformMismatch) || pe.Platform != "linux/amd64" || pe.Image != reg.Ref("app/one:1") {
		t.Fatalf("strict: %v, want a PlatformError for %s linux/amd64", err, reg.Ref("app/one:1"))
	}
	if n := len(reg.BlobGets()); n > 1 {
		t.Fatalf("strict create fetched %d blobs before failing (the config only)", n)
	}
	reg.Reset()
	if _, err := Create(context.Background(), spec, CreateOptions{Output: filepath.Join(dir, "warn.zdt")}); err != nil {
		t.Fatalf("without StrictPlatforms: %v", err)
	}
	if n := reg.BlobGets()[cfg.String()]; n != 1 {
		t.Fatalf("the config was fetched %d times, want once", n)
	}
}
