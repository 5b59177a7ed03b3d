package bundle_test

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
)

// FuzzFileContent: a file item's manifest read from a registry store
// (zdt serve's /files/) is parsed by bundle.FileContent: any bytes are
// either a content description with a sha256 digest and a size that is
// not negative, or an error matching bundle.ErrVerification. It never
// panics.
func FuzzFileContent(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":3,` +
		`"annotations":{"dev.zdt.uncompressed.digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","dev.zdt.uncompressed.size":"9"}}]}`))
	f.Add([]byte(`{"layers":[{"mediaType":"application/octet-stream","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":3}]}`))
	f.Add([]byte(`{"layers":[]}`))
	f.Add([]byte(`{"layers":[{"annotations":{"dev.zdt.uncompressed.size":"-1"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := bundle.FileContent("file x", digest.FromBytes(b), b)
		if err != nil {
			if !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("error %v does not match ErrVerification", err)
			}
			return
		}
		if c.Digest.Validate() != nil || c.Digest.Algorithm() != digest.SHA256 || c.Size < 0 {
			t.Fatalf("accepted %+v", c)
		}
	})
}
