package diskimage

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"io"
)

// VMware sparse extent header flags and markers.
const (
	vmdkFlagRGD        = 1 << 1
	vmdkFlagZeroGrain  = 1 << 2
	vmdkFlagCompressed = 1 << 16
	vmdkFlagMarkers    = 1 << 17
	vmdkGDAtEnd        = 0xffffffffffffffff
	vmdkMarkerEOS      = 0
	vmdkMarkerFooter   = 3
	vmdkDeflate        = 1
	// vmdkMaxGrain is the largest grain qemu reads: 1 GiB; zdt reads
	// grains up to 2 MiB (qemu-img writes 64 KiB).
	vmdkMaxGrain = 4096
)

// vmdkHeader is the sparse extent header's fields that matter for reading.
type vmdkHeader struct {
	version, flags, gtes uint32
	capacity, grain      uint64
	descOff, gdOff       uint64
	compress             uint16
}

func parseVMDKHeader(b []byte) vmdkHeader {
	le := binary.LittleEndian
	return vmdkHeader{
		version: le.Uint32(b[4:]), flags: le.Uint32(b[8:]),
		capacity: le.Uint64(b[12:]), grain: le.Uint64(b[20:]), descOff: le.Uint64(b[28:]),
		gtes: le.Uint32(b[44:]), gdOff: le.Uint64(b[56:]), compress: le.Uint16(b[77:]),
	}
}

func openVMDK(src io.ReaderAt, size, max int64) (int64, string, extentReader, error) {
	b := make([]byte, 512)
	if err := readFull(src, b, 0, size, "the header"); err != nil {
		return 0, "", nil, err
	}
	h := parseVMDKHeader(b)
	if h.gdOff == vmdkGDAtEnd {
		// streamOptimized: the footer, before the end-of-stream marker,
		// holds the header with the grain directory's offset.
		if size < 2048 {
			return 0, "", nil, corrupt("no footer")
		}
		f := make([]byte, 1536)
		if err := readFull(src, f, size-1536, size, "the footer"); err != nil {
			return 0, "", nil, err
		}
		le := binary.LittleEndian
		if le.Uint32(f[8:]) != 0 || le.Uint32(f[12:]) != vmdkMarkerFooter ||
			!bytes.HasPrefix(f[512:], []byte("KDMV")) ||
			le.Uint64(f[1024:]) != 0 || le.Uint32(f[1032:]) != 0 || le.Uint32(f[1036:]) != vmdkMarkerEOS {
			return 0, "", nil, corrupt("the grain directory is at the end, but no footer and end-of-stream marker are")
		}
		h = parseVMDKHeader(f[512:])
		if h.gdOff == vmdkGDAtEnd {
			return 0, "", nil, corrupt("the footer does not say where the grain directory is")
		}
	}
	variant := "monolithicSparse"
	compressed := h.compress == vmdkDeflate
	switch {
	case h.version < 1 || h.version > 3:
		return 0, "", nil, unsupported("vmdk version %d", h.version)
	case h.capacity == 0 && h.descOff != 0:
		return 0, "", nil, unsupported("a vmdk whose embedded descriptor names other extents")
	case h.compress > vmdkDeflate:
		return 0, "", nil, unsupported("vmdk compression %d", h.compress)
	case compressed && h.flags&vmdkFlagMarkers == 0:
		return 0, "", nil, unsupported("compressed grains without markers")
	case h.gtes < 1 || h.gtes > 512:
		return 0, "", nil, corrupt("%d entries per grain table (1 to 512 are valid)", h.gtes)
	case h.grain < 1 || h.grain > vmdkMaxGrain:
		return 0, "", nil, unsupported("a grain of %d sectors (1 to %d are read)", h.grain, vmdkMaxGrain)
	case h.capacity > uint64(max)/512:
		return 0, "", nil, fmtTooLarge(h.capacity*512, max)
	}
	if compressed {
		variant = "streamOptimized"
	}
	perGT := uint64(h.gtes) * h.grain // sectors a grain table maps
	gds := (h.capacity + perGT - 1) / perGT
	if gds*4 > maxTable {
		return 0, "", nil, corrupt("a grain directory of %d entries is over %d bytes", gds, maxTable)
	}
	if h.gdOff > uint64(size)/512 {
		return 0, "", nil, corrupt("the grain directory at sector %d is beyond the %d-byte file", h.gdOff, size)
	}
	raw := make([]byte, gds*4)
	if err := readFull(src, raw, int64(h.gdOff)*512, size, "the grain directory"); err != nil {
		return 0, "", nil, err
	}
	r := &vmdkReader{src: src, size: size, grain: int64(h.grain) * 512, gtes: int64(h.gtes), gd: make([]uint32, gds),
		compressed: compressed, zeroGrain: h.flags&vmdkFlagZeroGrain != 0, gtIndex: -1}
	for i := range r.gd {
		r.gd[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return int64(h.capacity) * 512, variant, r, nil
}

type vmdkReader struct {
	src         io.ReaderAt
	size        int64
	grain, gtes int64
	gd          []uint32
	compressed  bool
	zeroGrain   bool
	// The grain table last read (reads are sequential: each once).
	gt      []uint32
	gtIndex int64
	// The grain last decompressed.
	buf, zbuf []byte
	bufOff    int64
	bufLen    int
}

// gte returns the grain table entry of the grain holding off.
func (r *vmdkReader) gte(off int64) (uint32, error) {
	g := off / r.grain
	i := g / r.gtes
	if r.gd[i] == 0 {
		return 0, nil
	}
	if i != r.gtIndex {
		raw := make([]byte, r.gtes*4)
		if err := readFull(r.src, raw, int64(r.gd[i])*512, r.size, "a grain table"); err != nil {
			return 0, err
		}
		if r.gt == nil {
			r.gt = make([]uint32, r.gtes)
		}
		for j := range r.gt {
			r.gt[j] = binary.LittleEndian.Uint32(raw[4*j:])
		}
		r.gtIndex = i
	}
	return r.gt[g%r.gtes], nil
}

func (r *vmdkReader) isZero(e uint32) bool { return e == 0 || (r.zeroGrain && e == 1) }

func (r *vmdkReader) extent(off, max int64) (int64, extentKind, error) {
	data := extentData
	if r.compressed {
		data = extentCompressed
	}
	kind := extentZero
	var n int64
	for n < max {
		e, err := r.gte(off + n)
		if err != nil {
			return 0, 0, err
		}
		k := extentZero
		if !r.isZero(e) {
			k = data
		}
		if n == 0 {
			kind = k
		} else if k != kind {
			break
		}
		n += r.grain - (off+n)%r.grain
		if n >= 64<<20 {
			break
		}
	}
	return min(n, max), kind, nil
}

func (r *vmdkReader) readAt(p []byte, off int64) error {
	for len(p) > 0 {
		in := off % r.grain
		k := min(int64(len(p)), r.grain-in)
		e, err := r.gte(off)
		if err != nil {
			return err
		}
		switch {
		case r.isZero(e):
			clear(p[:k])
		case !r.compressed:
			if err := readFull(r.src, p[:k], int64(e)*512+in, r.size, "a grain"); err != nil {
				return err
			}
		default:
			g, err := r.inflate(int64(e) * 512)
			if err != nil {
				return err
			}
			if in+k > int64(len(g)) {
				return corrupt("the grain at %d holds %d bytes, %d are read", int64(e)*512, len(g), in+k)
			}
			copy(p[:k], g[in:in+k])
		}
		p, off = p[k:], off+k
	}
	return nil
}

// inflate returns the grain whose marker is at pos, decompressed (zlib, at
// most one grain; as qemu, its compressed size is at most two grains).
func (r *vmdkReader) inflate(pos int64) ([]byte, error) {
	if r.buf != nil && r.bufOff == pos {
		return r.buf[:r.bufLen], nil
	}
	if r.buf == nil {
		r.buf, r.zbuf = make([]byte, r.grain+1), make([]byte, 2*r.grain)
	}
	r.bufOff = -1
	var m [12]byte
	if err := readFull(r.src, m[:], pos, r.size, "a grain marker"); err != nil {
		return nil, err
	}
	n := int64(binary.LittleEndian.Uint32(m[8:]))
	if n == 0 || n > 2*r.grain {
		return nil, corrupt("a compressed grain of %d bytes at %d", n, pos)
	}
	z := r.zbuf[:n]
	if err := readFull(r.src, z, pos+12, r.size, "a compressed grain"); err != nil {
		return nil, err
	}
	zr, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, corrupt("the grain at %d: %v", pos, err)
	}
	got := 0
	for {
		n, err := zr.Read(r.buf[got:])
		got += n
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, corrupt("the grain at %d: %v", pos, err)
		}
		if got == len(r.buf) {
			return nil, corrupt("the grain at %d decompresses to more than %d bytes", pos, r.grain)
		}
	}
	// The stream ended, its adler32 checked.
	r.bufOff, r.bufLen = pos, got
	return r.buf[:got], nil
}
