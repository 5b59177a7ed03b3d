package diskimage

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	"github.com/lima-vm/go-qcow2reader/image"
	"github.com/lima-vm/go-qcow2reader/image/qcow2"
	qlog "github.com/lima-vm/go-qcow2reader/log"
)

// zstdWindow bounds the window of a zstd-compressed cluster (a cluster is
// at most 2 MiB).
const zstdWindow = 8 << 20

func init() {
	// The library prints warnings through the standard logger by
	// default; zdt's libraries never print (what it warns of — dirty,
	// experimental features — is refused or harmless for a read).
	qlog.SetWarnFunc(nil)
	// A cluster is read whole by one Read (fullReader), so it is
	// decompressed once, not once per short read.
	qcow2.SetDecompressor(qcow2.CompressionTypeZlib, func(r io.Reader) (io.ReadCloser, error) {
		return fullReader{flate.NewReader(r)}, nil
	})
	qcow2.SetDecompressor(qcow2.CompressionTypeZstd, func(r io.Reader) (io.ReadCloser, error) {
		d, _ := zstdPool.Get().(*zstd.Decoder)
		if d == nil {
			var err error
			d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdWindow),
				zstd.WithDecoderMaxMemory(zstdWindow))
			if err != nil {
				return nil, err
			}
		}
		if err := d.Reset(r); err != nil {
			zstdPool.Put(d)
			return nil, err
		}
		return fullReader{pooledZstd{d}}, nil
	})
}

var zstdPool sync.Pool

type pooledZstd struct{ d *zstd.Decoder }

func (p pooledZstd) Read(b []byte) (int, error) { return p.d.Read(b) }
func (p pooledZstd) Close() error {
	p.d.Reset(nil)
	zstdPool.Put(p.d)
	return nil
}

// fullReader fills the whole buffer of each Read unless the stream ends or
// fails first. Bytes after the end of a cluster's stream (qemu pads to a
// sector) are never asked for.
type fullReader struct{ r io.ReadCloser }

func (f fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}
func (f fullReader) Close() error { return f.r.Close() }

// qcow2 header fields (big-endian) checked before the library reads the
// image, so that it allocates nothing a hostile header asks for.
const (
	qcowIncompatDirty      = 1 << 0
	qcowIncompatCorrupt    = 1 << 1
	qcowIncompatExtData    = 1 << 2
	qcowIncompatCompType   = 1 << 3
	qcowIncompatExtendedL2 = 1 << 4
)

func openQCOW2(src io.ReaderAt, size, max int64) (int64, string, extentReader, error) {
	h := make([]byte, 112)
	n := min(int64(len(h)), size)
	if n < 72 {
		return 0, "", nil, corrupt("a %d-byte file is too short for a qcow2 header", size)
	}
	if err := readFull(src, h[:n], 0, size, "the header"); err != nil {
		return 0, "", nil, err
	}
	be := binary.BigEndian
	version := be.Uint32(h[4:])
	backingOff, backingLen := be.Uint64(h[8:]), be.Uint32(h[16:])
	clusterBits := be.Uint32(h[20:])
	virt := be.Uint64(h[24:])
	crypt := be.Uint32(h[32:])
	l1Size, l1Off := be.Uint32(h[36:]), be.Uint64(h[40:])
	if version != 2 && version != 3 {
		return 0, "", nil, unsupported("qcow2 version %d (2 and 3 are read)", version)
	}
	variant := fmt.Sprintf("v%d", version)
	if backingOff != 0 {
		name := ""
		if backingLen > 0 && backingLen <= 1023 {
			b := make([]byte, backingLen)
			if readFull(src, b, int64(min(backingOff, uint64(size))), size, "the backing file name") == nil {
				name = fmt.Sprintf(" %q", b)
			}
		}
		return 0, "", nil, unsupported("the image has a backing file%s: give a standalone image (qemu-img convert -O qcow2 IMAGE OUT, or -O raw)", name)
	}
	if crypt != 0 {
		return 0, "", nil, unsupported("encrypted qcow2 (method %d)", crypt)
	}
	if clusterBits < 9 || clusterBits > 21 {
		return 0, "", nil, corrupt("cluster bits %d (9 to 21 are valid)", clusterBits)
	}
	if virt > uint64(max) {
		return 0, "", nil, fmt.Errorf("virtual size %d bytes is over the limit of %d: %w", virt, max, ErrTooLarge)
	}
	if version == 3 {
		if n < 104 {
			return 0, "", nil, corrupt("a %d-byte file is too short for a qcow2 v3 header", size)
		}
		incompat := be.Uint64(h[72:])
		hdrLen := be.Uint32(h[100:])
		if hdrLen < 104 || hdrLen > 1<<16 {
			return 0, "", nil, corrupt("header length %d", hdrLen)
		}
		known := uint64(qcowIncompatDirty | qcowIncompatCorrupt | qcowIncompatCompType)
		switch {
		case incompat&qcowIncompatExtData != 0:
			return 0, "", nil, unsupported("qcow2 with an external data file")
		case incompat&qcowIncompatExtendedL2 != 0:
			return 0, "", nil, unsupported("qcow2 with extended L2 entries (subclusters)")
		case incompat&^known != 0:
			return 0, "", nil, unsupported("qcow2 incompatible feature bits %#x", incompat&^known)
		}
		if hdrLen > 104 && n > 104 {
			if ct := h[104]; ct > 1 {
				return 0, "", nil, unsupported("qcow2 compression type %d (zlib and zstd are read)", ct)
			}
		}
	}
	clusterSize := int64(1) << clusterBits
	perL1 := clusterSize * (clusterSize / 8) // bytes one L2 table maps
	need := (int64(virt) + perL1 - 1) / perL1
	switch {
	case int64(l1Size) < need:
		return 0, "", nil, corrupt("the L1 table has %d entries, %d bytes need %d", l1Size, virt, need)
	case int64(l1Size)*8 > maxTable:
		return 0, "", nil, corrupt("the L1 table of %d entries is over %d bytes", l1Size, maxTable)
	case virt > 0 && (l1Off == 0 || l1Off%uint64(clusterSize) != 0 || l1Off > uint64(size) || int64(l1Size)*8 > size-int64(l1Off)):
		return 0, "", nil, corrupt("the L1 table at %d (%d entries) is not within the %d-byte file", l1Off, l1Size, size)
	}
	if virt == 0 {
		return 0, variant, nil, nil
	}
	img, err := qcow2.Open(src, nil)
	if err != nil {
		return 0, "", nil, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	if err := img.Readable(); err != nil {
		return 0, "", nil, fmt.Errorf("%v: %w", err, ErrUnsupported)
	}
	return int64(virt), variant, &qcowReader{img: img}, nil
}

type qcowReader struct{ img *qcow2.Qcow2 }

func (q *qcowReader) extent(off, max int64) (int64, extentKind, error) {
	e, err := q.img.Extent(off, min(max, 1<<30))
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	return e.Length, kindOf(e), nil
}

func kindOf(e image.Extent) extentKind {
	switch {
	case e.Zero:
		return extentZero
	case e.Compressed:
		return extentCompressed
	}
	return extentData
}

func (q *qcowReader) readAt(p []byte, off int64) error {
	n, err := q.img.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%v: %w", err, ErrCorrupt)
}
