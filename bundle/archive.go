package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ArchiveModTime is the fixed mtime of every entry zdt writes (archive
// entries, packaged charts): the same content always gives the same bytes.
var ArchiveModTime = time.Unix(0, 0).UTC()

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
		ModTime:  ArchiveModTime,
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

// WriteTracker follows WriteArchive: Advance is told the file's length
// after each entry, Expect where the content of a blob to check starts.
type WriteTracker interface {
	Advance(end int64)
	Expect(off int64, d ocispec.Descriptor)
}

// WriteArchive writes the layout as a deterministic tar: oci-layout,
// index.json, the blob directories, then every blob in digest order. Each
// entry is tar's header blocks, the content and zero padding to 512 bytes,
// exactly as archive/tar writes them; the content of a blob staged in a file
// is copied file to file (copy_file_range: no trip through user space).
//
// th, if set, is told the file's length after each entry (a hasher
// following the writer, and early writeback), and where the content of
// each blob for which check returns true starts: the hasher checks those
// bytes against the blob's digest in the same pass (blobs staged by an
// earlier create are not trusted to still hold what their name says).
func WriteArchive(ctx context.Context, w *os.File, src blobSource, indexJSON []byte, blobs []ocispec.Descriptor, progress func(int64), th WriteTracker, check func(ocispec.Descriptor) bool) error {
	aw := &archiveWriter{f: w}
	if th != nil {
		aw.written = th.Advance
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	for _, e := range []struct {
		name string
		data []byte
	}{{entryLayout, layout}, {entryIndex, indexJSON}} {
		if err := aw.entry(header(e.name, int64(len(e.data)), false), bytes.NewReader(e.data), nil); err != nil {
			return err
		}
	}
	for _, d := range []string{dirBlobs, dirSHA256} {
		if err := aw.entry(header(d, 0, true), nil, nil); err != nil {
			return err
		}
	}
	sorted := append([]ocispec.Descriptor(nil), blobs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Digest < sorted[j].Digest })
	for i, b := range sorted {
		if i > 0 && b.Digest == sorted[i-1].Digest {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rc, err := src.Fetch(ctx, b)
		if err != nil {
			return fmt.Errorf("reading staged blob %s: %w", b.Digest, err)
		}
		var expect func(int64)
		if th != nil && check != nil && check(b) {
			expect = func(off int64) { th.Expect(off, b) }
		}
		err = aw.entry(header(dirSHA256+b.Digest.Encoded(), b.Size, false), rc, expect)
		rc.Close()
		if err != nil {
			return fmt.Errorf("writing blob %s: %w", b.Digest, err)
		}
		if progress != nil {
			progress(b.Size)
		}
	}
	return aw.write(make([]byte, 2*blockSize)) // end-of-archive marker
}

const blockSize = 512

// archiveWriter appends tar entries to a file.
type archiveWriter struct {
	f       *os.File
	end     int64 // bytes written
	written func(end int64)
}

func (aw *archiveWriter) write(b []byte) error {
	n, err := aw.f.Write(b)
	aw.end += int64(n)
	if err == nil && aw.written != nil {
		aw.written(aw.end)
	}
	return err
}

// entry writes h's header blocks, then h.Size bytes of content, then the
// padding. expect, if set, is told the offset the content starts at.
func (aw *archiveWriter) entry(h *tar.Header, content io.Reader, expect func(off int64)) error {
	var hb bytes.Buffer
	if err := tar.NewWriter(&hb).WriteHeader(h); err != nil { // header blocks only
		return err
	}
	if h.Size == 0 {
		return aw.write(hb.Bytes())
	}
	if _, err := aw.f.Write(hb.Bytes()); err != nil {
		return err
	}
	aw.end += int64(hb.Len())
	if expect != nil {
		expect(aw.end)
	}
	n, err := io.Copy(aw.f, io.LimitReader(content, h.Size)) // copy_file_range from files
	aw.end += n
	if err != nil {
		return err
	}
	if n != h.Size {
		return fmt.Errorf("%s: got %d bytes, expected %d", h.Name, n, h.Size)
	}
	pad := (blockSize - h.Size%blockSize) % blockSize
	return aw.write(make([]byte, pad))
}
