package build

import (
	"bufio"
	"bytes"
	"io"
)

// isCompressed reports whether data starts like gzip, zstd, xz, bzip2 or zip.
func isCompressed(head []byte) bool {
	for _, magic := range [][]byte{
		{0x1f, 0x8b},                       // gzip
		{0x28, 0xb5, 0x2f, 0xfd},           // zstd
		{0xfd, '7', 'z', 'X', 'Z', 0x00},   // xz
		{'B', 'Z', 'h'},                    // bzip2
		{'P', 'K', 0x03, 0x04},             // zip
		{'7', 'z', 0xbc, 0xaf, 0x27, 0x1c}, // 7z
	} {
		if bytes.HasPrefix(head, magic) {
			return true
		}
	}
	return false
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 1<<20) }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
