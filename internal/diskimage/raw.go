package diskimage

import (
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

// rawReader reads a raw image; a file's holes (SEEK_HOLE) are zero extents.
type rawReader struct {
	src  io.ReaderAt
	size int64
	fd   int // -1 when src is not a file
}

func newRawReader(src io.ReaderAt, size int64) *rawReader {
	r := &rawReader{src: src, size: size, fd: -1}
	if f, ok := src.(interface{ Fd() uintptr }); ok {
		r.fd = int(f.Fd())
	}
	return r
}

func (r *rawReader) extent(off, max int64) (int64, extentKind, error) {
	if r.fd >= 0 {
		data, err := unix.Seek(r.fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO): // no data from off on
			return max, extentZero, nil
		case err == nil && data > off:
			return min(data-off, max), extentZero, nil
		case err == nil:
			hole, err := unix.Seek(r.fd, off, unix.SEEK_HOLE)
			if err == nil && hole > off {
				return min(hole-off, max), extentData, nil
			}
		}
	}
	return max, extentData, nil // no hole information: all data
}

func (r *rawReader) readAt(p []byte, off int64) error {
	return readFull(r.src, p, off, r.size, "data")
}
