package build

import (
	"context"
	"path/filepath"
	"testing"

	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/manifests"
)

// testInputs builds a spec directory with every kind of item (see
// testregistry.SpecInputs) and returns the spec path.
func testInputs(t testing.TB, dir string, fileData []byte) string {
	return testregistry.SpecInputs(t, dir, filepath.Join("..", "testdata", "charts", "demo"), fileData)
}

var writeFile = testregistry.WriteFile

// createBundle builds the test inputs in a temp dir and creates a bundle.
func createBundle(t testing.TB, opts CreateOptions) (string, CreateResult) {
	t.Helper()
	dir := t.TempDir()
	specPath := testInputs(t, dir, []byte("#!/bin/sh\necho tool\n"))
	spec, err := manifests.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Output == "" {
		opts.Output = filepath.Join(dir, "out.zdt")
	}
	res, err := Create(context.Background(), spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	return dir, res
}

// tarEntry is one entry of an archive being rewritten by a test.
type tarEntry = fixtures.TarEntry

// readEntries and writeEntries read and rewrite an archive, failing the test on error.
var (
	readEntries  = fixtures.MustReadTar
	writeEntries = fixtures.MustWriteTar
)

// dirSHA256 is the archive's blob directory (bundle's layout).
const dirSHA256 = "blobs/sha256/"
