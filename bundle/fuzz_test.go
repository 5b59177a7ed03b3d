package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

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
	if _, err := Create(context.Background(), spec, CreateOptions{Output: out}); err != nil {
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
		a, err := OpenReader(ctx, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrVerification) {
				t.Fatalf("Open refused with a non-verification error: %v", err)
			}
			return
		}
		defer a.Close()
		if _, err := a.Verify(ctx, VerifyOptions{Concurrency: 1}); err != nil && !errors.Is(err, ErrVerification) {
			t.Fatalf("Verify refused with a non-verification error: %v", err)
		}
	})
}
