package diskimage

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/bits"
)

// VHD (Virtual PC / Hyper-V) disk types.
const (
	vhdFixed        = 2
	vhdDynamic      = 3
	vhdDifferencing = 4
	vhdUnallocated  = 0xffffffff
	// vhdMaxGeometry is the largest CHS geometry: an image whose geometry
	// is this uses the footer's current size, whoever made it.
	vhdMaxGeometry = 65535 * 16 * 255
)

// vhdChecksum is the one's complement of the sum of a footer's or dynamic
// header's bytes, its checksum field (at 64, resp. 36) counted as zero.
func vhdChecksum(b []byte) uint32 {
	at := 64
	if bytes.HasPrefix(b, []byte("cxsparse")) {
		at = 36
	}
	var sum uint32
	for i, c := range b {
		if i >= at && i < at+4 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

func openVHD(src io.ReaderAt, size, max int64) (int64, string, extentReader, error) {
	be := binary.BigEndian
	foot := make([]byte, 512)
	if err := readFull(src, foot, 0, size, "the footer copy"); err != nil {
		return 0, "", nil, err
	}
	if !bytes.HasPrefix(foot, []byte("conectix")) {
		// A fixed disk has its footer only at the end (Detect found it).
		if size < 1024 {
			return 0, "", nil, corrupt("no footer")
		}
		if err := readFull(src, foot, size-512, size, "the footer"); err != nil {
			return 0, "", nil, err
		}
		if !bytes.HasPrefix(foot, []byte("conectix")) || be.Uint32(foot[60:]) != vhdFixed {
			return 0, "", nil, corrupt("no footer")
		}
	}
	if sum := vhdChecksum(foot); sum != be.Uint32(foot[64:]) {
		return 0, "", nil, corrupt("footer checksum %#x, computed %#x", be.Uint32(foot[64:]), sum)
	}
	// The disk's size as qemu sees it: CHS geometry for Virtual PC's and
	// old qemu's images, the footer's current size for Hyper-V's, new
	// qemu's and others'.
	cur := be.Uint64(foot[48:])
	cyls, heads, secs := uint64(be.Uint16(foot[56:])), uint64(foot[58]), uint64(foot[59])
	virt := cyls * heads * secs * 512
	switch string(foot[28:32]) {
	case "win ", "qem2", "d2v ", "CTXS", "tap\x00":
		virt = cur
	}
	if cyls*heads*secs == vhdMaxGeometry {
		virt = cur
	}
	virt &^= 511
	if virt > uint64(max) {
		return 0, "", nil, fmtTooLarge(virt, max)
	}
	switch typ := be.Uint32(foot[60:]); typ {
	case vhdFixed:
		if int64(virt) > size-512 {
			return 0, "", nil, corrupt("a fixed disk of %d bytes in a %d-byte file", virt, size)
		}
		return int64(virt), "fixed", newRawReader(src, int64(virt)), nil
	case vhdDifferencing:
		return 0, "", nil, unsupported("a differencing vhd (it needs its parent): give a standalone image")
	case vhdDynamic:
	default:
		return 0, "", nil, corrupt("disk type %d", typ)
	}
	dynOff := be.Uint64(foot[16:])
	dyn := make([]byte, 1024)
	if dynOff > uint64(size) {
		return 0, "", nil, corrupt("dynamic header at %d is beyond the %d-byte file", dynOff, size)
	}
	if err := readFull(src, dyn, int64(dynOff), size, "the dynamic disk header"); err != nil {
		return 0, "", nil, err
	}
	if !bytes.HasPrefix(dyn, []byte("cxsparse")) {
		return 0, "", nil, corrupt("no dynamic disk header at %d", dynOff)
	}
	if sum := vhdChecksum(dyn); sum != be.Uint32(dyn[36:]) {
		return 0, "", nil, corrupt("dynamic header checksum %#x, computed %#x", be.Uint32(dyn[36:]), sum)
	}
	batOff := be.Uint64(dyn[16:])
	entries := uint64(be.Uint32(dyn[28:]))
	block := uint64(be.Uint32(dyn[32:]))
	if block < 512 || bits.OnesCount64(block) != 1 || block > 1<<28 {
		return 0, "", nil, corrupt("block size %d", block)
	}
	need := (virt + block - 1) / block
	if entries < need {
		return 0, "", nil, corrupt("%d table entries for %d blocks", entries, need)
	}
	if need*4 > maxTable {
		return 0, "", nil, corrupt("a block table of %d entries is over %d bytes", need, maxTable)
	}
	if batOff > uint64(size) || need*4 > uint64(size)-batOff {
		return 0, "", nil, corrupt("the block table at %d is beyond the %d-byte file", batOff, size)
	}
	raw := make([]byte, need*4)
	if err := readFull(src, raw, int64(batOff), size, "the block table"); err != nil {
		return 0, "", nil, err
	}
	r := &vhdReader{src: src, size: size, block: int64(block), bitmap: int64((block/(8*512) + 511) &^ 511), bat: make([]uint32, need)}
	for i := range r.bat {
		e := be.Uint32(raw[4*i:])
		r.bat[i] = e
		if e == vhdUnallocated {
			continue
		}
		if end := int64(e)*512 + r.bitmap + r.block; end > size {
			return 0, "", nil, corrupt("block %d at sector %d ends at %d, beyond the %d-byte file", i, e, end, size)
		}
	}
	return int64(virt), "dynamic", r, nil
}

type vhdReader struct {
	src           io.ReaderAt
	size          int64
	block, bitmap int64
	bat           []uint32
}

// extent: an unallocated block reads as zeros; an allocated one is data
// (its sector bitmap is not consulted, as qemu does not for reads).
func (r *vhdReader) extent(off, max int64) (int64, extentKind, error) {
	i := off / r.block
	kind := extentData
	if r.bat[i] == vhdUnallocated {
		kind = extentZero
	}
	n := (i+1)*r.block - off
	for j := i + 1; n < max && j < int64(len(r.bat)) && (r.bat[j] == vhdUnallocated) == (kind == extentZero); j++ {
		n += r.block
	}
	return min(n, max), kind, nil
}

func (r *vhdReader) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		i := off / r.block
		in := off % r.block
		k := min(int64(len(p)), r.block-in)
		if r.bat[i] == vhdUnallocated {
			clear(p[:k])
		} else if err := readFull(r.src, p[:k], int64(r.bat[i])*512+r.bitmap+in, r.size, "a block"); err != nil {
			return err
		}
		p, off = p[k:], off+k
	}
	return nil
}
