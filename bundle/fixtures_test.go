package bundle_test

import (
	"context"
	"path/filepath"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/manifests"
)

// testInputs builds a spec directory with every kind of item (see
// testregistry.SpecInputs) and returns the spec path.
func testInputs(t testing.TB, dir string, fileData []byte) string {
	return testregistry.SpecInputs(t, dir, "testdata/charts/demo", fileData)
}

var writeFile = testregistry.WriteFile

// createBundle builds the test inputs in a temp dir and creates a bundle.
func createBundle(t testing.TB, opts build.CreateOptions) (string, build.CreateResult) {
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
	res, err := build.Create(context.Background(), spec, opts)
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

func openVerifyExtract(p, out string) error {
	ctx := context.Background()
	a, err := bundle.Open(ctx, p)
	if err != nil {
		return err
	}
	defer a.Close()
	return bundle.Extract(ctx, a, out, bundle.ExtractOptions{})
}
