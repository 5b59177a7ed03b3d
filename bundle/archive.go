package bundle

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Fixed tar metadata: the same content always gives the same bytes.
var archiveModTime = time.Unix(0, 0).UTC()

const (
	entryLayout = ocispec.ImageLayoutFile // "oci-layout"
	entryIndex  = ocispec.ImageIndexFile  // "index.json"
	dirBlobs    = "blobs/"
	dirSHA256   = "blobs/sha256/"
)

func header(name string, size int64, dir bool) *tar.Header {
	h := &tar.Header{
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  archiveModTime,
		Typeflag: tar.TypeReg,
	}
	if dir {
		h.Mode, h.Typeflag, h.Size = 0o755, tar.TypeDir, 0
	}
	// Format is left to tar.Writer: USTAR, and PAX only for a blob over 8 GiB.
	return h
}

// blobSource opens staged blobs for the archive writer.
type blobSource interface {
	Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// writeArchive writes the layout as a deterministic tar: oci-layout,
// index.json, the blob directories, then every blob in digest order.
func writeArchive(ctx context.Context, w io.Writer, src blobSource, indexJSON []byte, blobs []ocispec.Descriptor, progress func(int64)) error {
	tw := tar.NewWriter(w)
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	for _, e := range []struct {
		name string
		data []byte
	}{{entryLayout, layout}, {entryIndex, indexJSON}} {
		if err := tw.WriteHeader(header(e.name, int64(len(e.data)), false)); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	for _, d := range []string{dirBlobs, dirSHA256} {
		if err := tw.WriteHeader(header(d, 0, true)); err != nil {
			return err
		}
	}
	sorted := append([]ocispec.Descriptor(nil), blobs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Digest < sorted[j].Digest })
	for i, b := range sorted {
		if i > 0 && b.Digest == sorted[i-1].Digest {
			continue
		}
		if err := tw.WriteHeader(header(dirSHA256+b.Digest.Encoded(), b.Size, false)); err != nil {
			return err
		}
		rc, err := src.Fetch(ctx, b)
		if err != nil {
			return fmt.Errorf("reading staged blob %s: %w", b.Digest, err)
		}
		n, err := copyCtx(ctx, tw, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("writing blob %s: %w", b.Digest, err)
		}
		if n != b.Size {
			return fmt.Errorf("writing blob %s: staged %d bytes, expected %d", b.Digest, n, b.Size)
		}
		if progress != nil {
			progress(n)
		}
	}
	return tw.Close()
}
