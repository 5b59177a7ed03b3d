package diskimage

import (
	"bytes"
	"encoding/binary"
	"io"
)

// Detect names src's format (size bytes) from its magic bytes, never its
// name: qcow2 ("QFI\xfb"), vmdk ("KDMV"), vhd ("conectix" at the start, or
// a valid fixed-disk footer in the last 512 bytes); anything else unknown is
// raw. Formats known but not read are refused (ErrUnsupported): vhdx, vdi,
// parallels, a vmdk descriptor file or a VMware 3 image, and gzip, zstd, xz,
// bzip2, zip or 7z compressed files.
func Detect(src io.ReaderAt, size int64) (Format, error) {
	head := make([]byte, min(size, 512))
	if size > 0 {
		if err := readFull(src, head, 0, size, "the first sector"); err != nil {
			return "", err
		}
	}
	has := func(magic string) bool { return bytes.HasPrefix(head, []byte(magic)) }
	switch {
	case has("QFI\xfb"):
		return QCOW2, nil
	case has("KDMV"):
		return VMDK, nil
	case has("conectix"):
		return VHD, nil
	case has("# Disk DescriptorFile"):
		return "", unsupported("a vmdk descriptor file (its data is in other files): give a monolithicSparse or streamOptimized vmdk (qemu-img convert -O vmdk)")
	case has("COWD"):
		return "", unsupported("a VMware 3 (COWD) vmdk")
	case has("vhdxfile"):
		return "", unsupported("vhdx: convert it to vhd, qcow2 or raw")
	case has("WithoutFreeSpace"), has("WithouFreSpacExt"):
		return "", unsupported("a parallels image")
	case len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f:
		return "", unsupported("vdi: convert it to qcow2 or raw")
	case has("\x1f\x8b"), has("\x28\xb5\x2f\xfd"), has("\xfd7zXZ\x00"), has("BZh"), has("PK\x03\x04"), has("7z\xbc\xaf\x27\x1c"):
		return "", unsupported("a compressed file: give the disk image itself")
	}
	if size >= 1024 {
		foot := make([]byte, 512)
		if err := readFull(src, foot, size-512, size, "the last sector"); err != nil {
			return "", err
		}
		if bytes.HasPrefix(foot, []byte("conectix")) && vhdChecksum(foot) == binary.BigEndian.Uint32(foot[64:]) &&
			binary.BigEndian.Uint32(foot[60:]) == vhdFixed {
			return VHD, nil
		}
	}
	return Raw, nil
}
