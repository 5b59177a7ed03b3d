package signing

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// testKey generates a key pair under dir and returns its prefix.
func testKey(t testing.TB, dir, prefix string, password string) KeyPair {
	t.Helper()
	kp, err := GenerateKeyPair(context.Background(), KeyPairOptions{Prefix: filepath.Join(dir, prefix), Password: []byte(password)})
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// testBundle builds a small bundle (a multi-layer image from an OCI layout
// and a file) named name, signed with key (unsigned if key is ""). The
// file's content is fileData, so two bundles can differ.
func testBundle(t testing.TB, dir, name, key, password string, fileData []byte) (string, build.CreateResult) {
	t.Helper()
	ctx := context.Background()
	in := filepath.Join(dir, "in-"+name)
	l1, err := random.Layer(8<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := random.Layer(4<<10, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, []string{"/app"}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	if err := fixtures.WriteLayoutImage(filepath.Join(in, "images", "web"), "1.0", img); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(in, "bin", "tool"), fileData)
	sum := sha256.Sum256(fileData)
	spec := `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata:
  name: ` + name + `
  version: 1.0.0
components:
  - name: runtime
    images:
      - ref: registry.test/app/web:1.0
        source: oci:images/web:1.0
    files:
      - source: bin/tool
        sha256: ` + hex.EncodeToString(sum[:]) + `
        target: /usr/local/bin/tool
        mode: "0755"
`
	writeFile(t, filepath.Join(in, "zdt.yaml"), []byte(spec))
	s, err := manifests.Load(filepath.Join(in, "zdt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".zdt")
	opts := build.CreateOptions{Output: out, ToolVersion: "v0.0.0-test"}
	if key != "" {
		signer, err := NewSigner(ctx, SignOptions{Key: key, Password: func() ([]byte, error) { return []byte(password), nil }})
		if err != nil {
			t.Fatal(err)
		}
		defer signer.Close()
		opts.Attach, opts.ArchiveWritten = signer.Attach, signer.SignArchive(out)
	}
	res, err := build.Create(ctx, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// tarEntry is one entry of an archive being rewritten by a test.
type tarEntry = fixtures.TarEntry

// readEntries and writeEntries read and rewrite an archive, failing the test on error.
var (
	readEntries  = fixtures.MustReadTar
	writeEntries = fixtures.MustWriteTar
)

func entryData(t testing.TB, entries []tarEntry, name string) []byte {
	t.Helper()
	for _, e := range entries {
		if e.Hdr.Name == name {
			return e.Data
		}
	}
	t.Fatalf("no entry %s", name)
	return nil
}

func setEntry(entries []tarEntry, name string, data []byte) []tarEntry {
	for i, e := range entries {
		if e.Hdr.Name == name {
			entries[i].Data = data
			return entries
		}
	}
	h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}
	return append(entries, tarEntry{Hdr: h, Data: data})
}
