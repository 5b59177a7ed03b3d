package diskimage

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
)

// Small images crafted byte by byte (no qemu-img): the fuzz seeds and the
// hostile cases start from these.

// craftQCOW2 is a v2 qcow2 of size bytes with 512-byte clusters: the L1
// table at 512, L2 tables after it, then data. data maps a guest cluster
// to its bytes; l2 (if set) rewrites each L2 entry.
func craftQCOW2(size uint64, data map[int][]byte, l2 func(i int, e uint64) uint64) []byte {
	const cs = 512
	clusters := int((size + cs - 1) / cs)
	perL2 := cs / 8
	l1n := (clusters + perL2 - 1) / perL2
	l1Clusters := (l1n*8 + cs - 1) / cs
	l2Start := 1 + l1Clusters
	dataStart := l2Start + l1n
	out := make([]byte, (dataStart+len(data))*cs)
	be := binary.BigEndian
	copy(out, "QFI\xfb")
	be.PutUint32(out[4:], 2)
	be.PutUint32(out[20:], 9)
	be.PutUint64(out[24:], size)
	be.PutUint32(out[36:], uint32(l1n))
	be.PutUint64(out[40:], cs)
	for i := 0; i < l1n; i++ {
		be.PutUint64(out[cs+8*i:], uint64(l2Start+i)*cs|1<<63)
	}
	next := dataStart
	for c := 0; c < clusters; c++ {
		var e uint64
		if b, ok := data[c]; ok {
			copy(out[next*cs:], b)
			e = uint64(next)*cs | 1<<63
			next++
		}
		if l2 != nil {
			e = l2(c, e)
		}
		be.PutUint64(out[l2Start*cs+8*c:], e)
	}
	return out
}

// vhdFooter is a footer of a disk of size bytes and type typ.
func vhdFooter(size uint64, typ uint32, dataOff uint64) []byte {
	f := make([]byte, 512)
	be := binary.BigEndian
	copy(f, "conectix")
	be.PutUint32(f[8:], 2)
	be.PutUint32(f[12:], 0x10000)
	be.PutUint64(f[16:], dataOff)
	copy(f[28:], "qem2")
	be.PutUint64(f[40:], size)
	be.PutUint64(f[48:], size)
	be.PutUint32(f[60:], typ)
	be.PutUint32(f[64:], vhdChecksum(f))
	return f
}

// craftVHD is a dynamic vhd of size bytes with 4 KiB blocks; data maps a
// block to its bytes; bat (if set) rewrites each table entry.
func craftVHD(size uint64, data map[int][]byte, bat func(i int, e uint32) uint32) []byte {
	const block = 4096
	blocks := int((size + block - 1) / block)
	var out bytes.Buffer
	out.Write(vhdFooter(size, vhdDynamic, 512))
	dyn := make([]byte, 1024)
	be := binary.BigEndian
	copy(dyn, "cxsparse")
	be.PutUint64(dyn[8:], ^uint64(0))
	be.PutUint64(dyn[16:], 1536)
	be.PutUint32(dyn[24:], 0x10000)
	be.PutUint32(dyn[28:], uint32(blocks))
	be.PutUint32(dyn[32:], block)
	be.PutUint32(dyn[36:], vhdChecksum(dyn))
	out.Write(dyn)
	batLen := (blocks*4 + 511) &^ 511
	table := make([]byte, batLen)
	sector := uint32((1536 + batLen) / 512)
	var blob bytes.Buffer
	for i := 0; i < blocks; i++ {
		e := uint32(vhdUnallocated)
		if b, ok := data[i]; ok {
			e = sector
			blob.Write(make([]byte, 512)) // the sector bitmap
			d := make([]byte, block)
			copy(d, b)
			blob.Write(d)
			sector += (512 + block) / 512
		}
		if bat != nil {
			e = bat(i, e)
		}
		be.PutUint32(table[4*i:], e)
	}
	out.Write(table)
	out.Write(blob.Bytes())
	out.Write(vhdFooter(size, vhdDynamic, 512))
	return out.Bytes()
}

// craftVMDK is a vmdk of size bytes with 4 KiB grains and 16 grain table
// entries: monolithicSparse, or streamOptimized (zlib grains with markers,
// the grain directory found through the footer). data maps a grain to its
// bytes; gte (if set) rewrites each grain table entry.
func craftVMDK(size uint64, stream bool, data map[int][]byte, gte func(i int, e uint32) uint32) []byte {
	const grain, gtes = 4096, 16
	grains := int((size + grain - 1) / grain)
	gts := (grains + gtes - 1) / gtes
	le := binary.LittleEndian
	header := func(gd uint64) []byte {
		h := make([]byte, 512)
		copy(h, "KDMV")
		le.PutUint32(h[4:], 1)
		flags := uint32(1)
		if stream {
			le.PutUint32(h[4:], 3)
			flags |= vmdkFlagCompressed | vmdkFlagMarkers
			le.PutUint16(h[77:], vmdkDeflate)
		}
		le.PutUint32(h[8:], flags)
		le.PutUint64(h[12:], size/512)
		le.PutUint64(h[20:], grain/512)
		le.PutUint32(h[44:], gtes)
		le.PutUint64(h[56:], gd)
		return h
	}
	var out bytes.Buffer
	out.Write(make([]byte, 512))
	entries := make([]uint32, gts*gtes)
	for i := 0; i < grains; i++ {
		b, ok := data[i]
		if !ok {
			continue
		}
		entries[i] = uint32(out.Len() / 512)
		d := make([]byte, grain)
		copy(d, b)
		if !stream {
			out.Write(d)
			continue
		}
		z := bytes.NewBuffer(craftGrain(d))
		m := make([]byte, 12)
		le.PutUint64(m, uint64(i*grain/512))
		le.PutUint32(m[8:], uint32(z.Len()))
		out.Write(m)
		out.Write(z.Bytes())
		out.Write(make([]byte, (512-(12+z.Len())%512)%512))
	}
	gtAt := make([]uint32, gts)
	for t := 0; t < gts; t++ {
		gtAt[t] = uint32(out.Len() / 512)
		tb := make([]byte, 512)
		for j := 0; j < gtes; j++ {
			e := entries[t*gtes+j]
			if gte != nil {
				e = gte(t*gtes+j, e)
			}
			le.PutUint32(tb[4*j:], e)
		}
		out.Write(tb)
	}
	gd := uint64(out.Len() / 512)
	gdb := make([]byte, (gts*4+511)&^511)
	for t, s := range gtAt {
		le.PutUint32(gdb[4*t:], s)
	}
	out.Write(gdb)
	b := out.Bytes()
	if !stream {
		copy(b, header(gd))
		return b
	}
	copy(b, header(vmdkGDAtEnd))
	fm := make([]byte, 512)
	le.PutUint64(fm, 1)
	le.PutUint32(fm[12:], vmdkMarkerFooter)
	out.Write(fm)
	out.Write(header(gd))
	out.Write(make([]byte, 512)) // end of stream
	return out.Bytes()
}

func zlibWriter(w *bytes.Buffer) (*zlib.Writer, error) { return zlib.NewWriterLevel(w, zlib.BestSpeed) }

// craftGrain compresses a streamOptimized grain (a test may swap it).
var craftGrain = func(d []byte) []byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(d)
	zw.Close()
	return z.Bytes()
}
