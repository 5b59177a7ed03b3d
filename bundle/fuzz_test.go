package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// smallBundle is a valid one-file bundle, a compact fuzz seed.
func smallBundle(t testing.TB) []byte {
	dir := t.TempDir()
	data := []byte("#!/bin/sh\necho hi\n")
	sum := sha256.Sum256(data)
	writeFile(t, filepath.Join(dir, "f"), data)
	spec, err := manifests.Parse("zdt.yaml", []byte(`apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata: {name: s, version: "1"}
components:
  - name: c
    files:
      - {source: f, sha256: `+hex.EncodeToString(sum[:])+`, target: /f}
`))
	if err != nil {
		t.Fatal(err)
	}
	spec.Dir = dir
	out := filepath.Join(dir, "s.zdt")
	if _, err := build.Create(context.Background(), spec, build.CreateOptions{Output: out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzArchive feeds arbitrary bytes to the archive reader (Open, the walk
// and Verify, which Extract and install run first): it must never panic or
// hang, and every refusal must be a verification error (exit code 3).
func FuzzArchive(f *testing.F) {
	f.Add(smallBundle(f))
	f.Add([]byte{})
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		a, err := bundle.OpenReader(ctx, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("Open refused with a non-verification error: %v", err)
			}
			return
		}
		defer a.Close()
		if _, err := a.Verify(ctx, bundle.VerifyOptions{Concurrency: 1}); err != nil && !errors.Is(err, bundle.ErrVerification) {
			t.Fatalf("Verify refused with a non-verification error: %v", err)
		}
	})
}

// FuzzIndexJSON replaces index.json of a valid bundle with arbitrary bytes
// (issue 11.2): Open must never panic, refuse with a verification error,
// and accept only an index.json that tags what the signed root tags: the
// root's items, in order, with the root's annotations.
func FuzzIndexJSON(f *testing.F) {
	good := smallBundle(f)
	entries, err := fixtures.ReadTarFrom(bytes.NewReader(good))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if e.Hdr.Name == bundle.EntryIndex {
			f.Add(e.Data)
		}
	}
	f.Add([]byte(`{"manifests":[]}`))
	f.Fuzz(func(t *testing.T, idx []byte) {
		mod := make([]tarEntry, len(entries))
		copy(mod, entries)
		for i, e := range mod {
			if e.Hdr.Name == bundle.EntryIndex {
				h := *e.Hdr
				mod[i] = tarEntry{Hdr: &h, Data: idx}
			}
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range mod {
			h := *e.Hdr
			h.Size = int64(len(e.Data))
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			tw.Write(e.Data)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		a, err := bundle.OpenReader(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			if !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("refused with a non-verification error: %v", err)
			}
			return
		}
		defer a.Close()
		var items []ocispec.Descriptor
		for _, m := range a.Index.Manifests {
			if m.Annotations[manifests.AnnotationBundleRoot] == "" && !bundle.IsAttachment(a.Root.Digest, m) {
				items = append(items, m)
			}
		}
		if len(items) != len(a.RootIndex.Manifests)-1 {
			t.Fatalf("accepted index.json with %d items, the root has %d", len(items), len(a.RootIndex.Manifests)-1)
		}
		for i, m := range items {
			if !bundle.SameDescriptor(m, a.RootIndex.Manifests[i+1]) {
				t.Fatalf("accepted item entry %+v, the root says %+v", m, a.RootIndex.Manifests[i+1])
			}
		}
	})
}
