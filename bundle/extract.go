package bundle

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"sort"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/fsutil"
)

// ExtractOptions tune Extract. The zero value is valid.
type ExtractOptions struct {
	VerifyOptions
	// SkipVerify skips Verify; only for archives verified already.
	SkipVerify bool
}

// Extract verifies the archive, then writes its OCI layout under dir (created
// if missing) for cosign, crane, skopeo or oras to read. Every write goes
// through os.Root, so nothing can land outside dir, and every file is written
// to a temp file and renamed, so a failure leaves no partial file. Blobs are
// copied straight from their archive offsets.
func Extract(ctx context.Context, a *Archive, dir string, opts ExtractOptions) error {
	if !opts.SkipVerify {
		if _, err := a.Verify(ctx, opts.VerifyOptions); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.MkdirAll("blobs/sha256", 0o755); err != nil {
		return err
	}
	ds := a.Digests()
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	for _, d := range ds {
		name := path.Join("blobs/sha256", d.Encoded())
		size, _ := a.BlobSize(d)
		if fi, err := root.Stat(name); err == nil && fi.Size() == size {
			if ok, _ := fileHasDigest(ctx, root, name, d); ok {
				continue
			}
		}
		sr, _ := a.BlobReader(d)
		if err := writeRootFile(ctx, root, name, sr); err != nil {
			return fmt.Errorf("extracting %s: %w", d, err)
		}
	}
	// index.json and oci-layout last: a layout is complete once they exist.
	for _, name := range []string{entryLayout, entryIndex} {
		e := a.special(name)
		if err := writeRootFile(ctx, root, name, io.NewSectionReader(a.f, e.off, e.size)); err != nil {
			return fmt.Errorf("extracting %s: %w", name, err)
		}
	}
	return nil
}

func fileHasDigest(ctx context.Context, root *os.Root, name string, d digest.Digest) (bool, error) {
	f, err := root.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	got, _, err := fsutil.CopyVerified(ctx, io.Discard, f, "", -1, nil, nil)
	return got == d, err
}

// writeRootFile writes r to name under root via a temp file and rename.
func writeRootFile(ctx context.Context, root *os.Root, name string, r io.Reader) error {
	_, err := fsutil.WriteAtomic(ctx, root, name, 0o644, func(w io.Writer) error {
		_, err := fsutil.CopyCtx(ctx, w, r)
		return err
	})
	return err
}
