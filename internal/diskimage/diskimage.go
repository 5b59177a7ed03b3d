// Package diskimage reads VM disk images as the raw disk they describe:
// raw, qcow2 (v2 and v3, zlib- or zstd-compressed clusters, no backing
// file; through github.com/lima-vm/go-qcow2reader), vmdk (monolithicSparse
// and streamOptimized) and vhd (fixed and dynamic). Other formats whose
// magic bytes it knows (vhdx, vdi, a vmdk descriptor that names extent
// files, compressed files) are refused with ErrUnsupported rather than read
// as raw.
//
// Every input is hostile: the virtual size is bounded (Options.MaxSize),
// metadata tables are bounded (32 MiB each) and checked against the file
// before they are read, and uncompressed data may not be read more than
// once in all (a crafted table pointing every cluster at the same bytes
// is refused), so memory stays bounded and time is linear in the virtual
// size. Every refusal matches ErrUnsupported, ErrCorrupt or ErrTooLarge.
package diskimage

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Format names a disk image format.
type Format string

// The formats Open reads.
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VMDK  Format = "vmdk"
	VHD   Format = "vhd"
)

// Formats lists the formats Open reads.
var Formats = []Format{Raw, QCOW2, VMDK, VHD}

// DefaultMaxSize is the largest virtual size Open accepts by default: 2 TiB.
const DefaultMaxSize int64 = 2 << 40

// maxTable bounds every metadata table read into memory (an L1 table, a
// grain directory, a block allocation table): 32 MiB, as qemu's L1 limit.
const maxTable = 32 << 20

var (
	// ErrUnsupported is a format or a feature of one that is not read.
	ErrUnsupported = errors.New("unsupported disk image")
	// ErrCorrupt is an image whose structures are inconsistent.
	ErrCorrupt = errors.New("corrupt disk image")
	// ErrTooLarge is an image whose virtual size is over the limit.
	ErrTooLarge = errors.New("disk image too large")
)

// Options bound what Open accepts.
type Options struct {
	// MaxSize is the largest virtual size in bytes (0: DefaultMaxSize).
	MaxSize int64
	// Format, when set, is the format the image is declared to be: Open
	// fails unless the magic bytes say the same.
	Format Format
}

// Image is an opened disk image. It is not safe for concurrent use.
type Image struct {
	// Format is the format read; Size the raw disk's size in bytes.
	Format Format
	Size   int64
	// Variant says more about the format: "fixed"/"dynamic" (vhd),
	// "monolithicSparse"/"streamOptimized" (vmdk), "v2"/"v3" (qcow2).
	Variant string

	r       extentReader
	srcSize int64
}

// extentReader is one format's reader.
type extentReader interface {
	// extent describes the bytes from off (< size) on: a run of at most max
	// bytes (at least one) that reads as zeros, or holds data; compressed
	// says the data is decompressed from the file.
	extent(off, max int64) (n int64, kind extentKind, err error)
	// readAt fills p from off, which extent reported as data of this kind.
	readAt(p []byte, off int64) error
}

type extentKind int

const (
	extentZero extentKind = iota
	extentData
	extentCompressed
)

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrUnsupported)
}

// Open detects src's format (size bytes) from its magic bytes and opens
// it. src stays the caller's to close.
func Open(src io.ReaderAt, size int64, opts Options) (*Image, error) {
	max := opts.MaxSize
	if max <= 0 {
		max = DefaultMaxSize
	}
	f, err := Detect(src, size)
	if err != nil {
		return nil, err
	}
	if opts.Format != "" && opts.Format != f {
		return nil, fmt.Errorf("declared %s, but its magic bytes say %s: %w", opts.Format, f, ErrUnsupported)
	}
	img := &Image{Format: f, srcSize: size}
	switch f {
	case Raw:
		img.Size, img.r = size, newRawReader(src, size)
	case QCOW2:
		img.Size, img.Variant, img.r, err = openQCOW2(src, size, max)
	case VMDK:
		img.Size, img.Variant, img.r, err = openVMDK(src, size, max)
	case VHD:
		img.Size, img.Variant, img.r, err = openVHD(src, size, max)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	if img.Size > max {
		return nil, fmt.Errorf("%s: virtual size %d bytes is over the limit of %d: %w", f, img.Size, max, ErrTooLarge)
	}
	return img, nil
}

// Stats counts what WriteTo wrote.
type Stats struct {
	// Data is the bytes read from data extents; Zero the bytes written as
	// zeros without reading anything.
	Data, Zero int64
}

// chunk is the most WriteTo reads or writes at once.
const chunk = 1 << 20

var zeros = make([]byte, chunk)

// WriteTo writes the raw disk to w in order, Size bytes: data extents as
// read, zero extents from a zero buffer. Uncompressed data over the
// source's size (clusters read twice) is refused as ErrCorrupt.
func (img *Image) WriteTo(ctx context.Context, w io.Writer) (Stats, error) {
	var st Stats
	var plain int64
	buf := make([]byte, chunk)
	for off := int64(0); off < img.Size; {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		n, kind, err := img.r.extent(off, img.Size-off)
		if err != nil {
			return st, fmt.Errorf("%s at offset %d: %w", img.Format, off, err)
		}
		if n <= 0 || n > img.Size-off {
			return st, fmt.Errorf("%s at offset %d: extent of %d bytes: %w", img.Format, off, n, ErrCorrupt)
		}
		if kind == extentZero {
			st.Zero += n
			for n > 0 {
				k := min(n, chunk)
				if _, err := w.Write(zeros[:k]); err != nil {
					return st, err
				}
				n -= k
				off += k
			}
			continue
		}
		if kind == extentData {
			if plain += n; plain > img.srcSize {
				return st, fmt.Errorf("%s: %d bytes of data read from a %d-byte file: a table points twice at the same bytes: %w", img.Format, plain, img.srcSize, ErrCorrupt)
			}
		}
		for n > 0 {
			k := min(n, chunk)
			if err := img.r.readAt(buf[:k], off); err != nil {
				return st, fmt.Errorf("%s at offset %d: %w", img.Format, off, err)
			}
			if _, err := w.Write(buf[:k]); err != nil {
				return st, err
			}
			st.Data += k
			n -= k
			off += k
		}
	}
	return st, nil
}

// readFull reads exactly len(p) bytes at off, naming a read past the end
// of the file as corruption.
func readFull(r io.ReaderAt, p []byte, off, size int64, what string) error {
	if off < 0 || off > size || int64(len(p)) > size-off {
		return corrupt("%s at %d (%d bytes) is beyond the end of the %d-byte file", what, off, len(p), size)
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %s at %d: %w", what, off, err)
}

func fmtTooLarge(virt uint64, max int64) error {
	return fmt.Errorf("virtual size %d bytes is over the limit of %d: %w", virt, max, ErrTooLarge)
}
