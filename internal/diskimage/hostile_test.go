package diskimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"
)

// expected is the raw disk of size bytes whose unit-sized pieces data names.
func expected(size uint64, unit int, data map[int][]byte) []byte {
	out := make([]byte, size)
	for i, b := range data {
		copy(out[i*unit:], b)
	}
	return out
}

func readAll(b []byte, opts Options) ([]byte, *Image, error) {
	img, err := Open(bytes.NewReader(b), int64(len(b)), opts)
	if err != nil {
		return nil, nil, err
	}
	var out bytes.Buffer
	_, err = img.WriteTo(context.Background(), &out)
	return out.Bytes(), img, err
}

// TestCraftedImagesRead: the crafted images the hostile cases and the
// fuzz seeds start from read as the disk they describe.
func TestCraftedImagesRead(t *testing.T) {
	data := map[int][]byte{0: []byte("boot sector"), 3: bytes.Repeat([]byte("x"), 512), 17: []byte("grain seventeen")}
	for name, c := range map[string]struct {
		b    []byte
		unit int
		f    Format
	}{
		"qcow2":       {craftQCOW2(64<<10, data, nil), 512, QCOW2},
		"vhd-dynamic": {craftVHD(96<<10, data, nil), 4096, VHD},
		"vhd-fixed":   {append(expected(32<<10, 512, data), vhdFooter(32<<10, vhdFixed, ^uint64(0))...), 512, VHD},
		"vmdk-sparse": {craftVMDK(128<<10, false, data, nil), 4096, VMDK},
		"vmdk-stream": {craftVMDK(128<<10, true, data, nil), 4096, VMDK},
		"raw":         {expected(16<<10, 512, data), 512, Raw},
	} {
		t.Run(name, func(t *testing.T) {
			got, img, err := readAll(c.b, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if img.Format != c.f {
				t.Errorf("format %s, want %s", img.Format, c.f)
			}
			if want := expected(uint64(img.Size), c.unit, data); !bytes.Equal(got, want) {
				t.Errorf("read %d bytes that are not the disk (%d bytes)", len(got), len(want))
			}
		})
	}
}

// TestHostileImages is issue 16: crafted qcow2, vmdk and vhd images (huge
// virtual sizes, tables and clusters beyond the file, one cluster mapped
// everywhere, zip bombs in grains, backing files) fail with a clear error
// matching ErrTooLarge, ErrCorrupt or ErrUnsupported, quickly and in
// little memory.
func TestHostileImages(t *testing.T) {
	one := map[int][]byte{0: []byte("data")}
	set := func(b []byte, at int, v uint64) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint64(b[at:], v)
		return b
	}
	set32 := func(b []byte, at int, v uint32, order binary.ByteOrder) []byte {
		b = bytes.Clone(b)
		order.PutUint32(b[at:], v)
		return b
	}
	q := craftQCOW2(64<<10, one, nil)
	vhd := craftVHD(64<<10, one, nil)
	vmdk := craftVMDK(64<<10, false, one, nil)
	stream := craftVMDK(64<<10, true, one, nil)
	bomb := func() []byte { // a streamOptimized grain inflating to 4 MiB
		var z bytes.Buffer
		zw, _ := zlibWriter(&z)
		zw.Write(make([]byte, 4<<20))
		zw.Close()
		defer func(g func([]byte) []byte) { craftGrain = g }(craftGrain)
		craftGrain = func([]byte) []byte { return z.Bytes() }
		return craftVMDK(64<<10, true, one, nil)
	}()
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"qcow2 of 1 PiB", set(q, 24, 1<<50), ErrTooLarge},
		{"qcow2 of 2 TiB + 1", set(q, 24, 2<<40+512), ErrTooLarge},
		{"qcow2 cluster bits 31", set32(q, 20, 31, binary.BigEndian), ErrCorrupt},
		{"qcow2 L1 table of 2^32-1 entries", set32(q, 36, 0xffffffff, binary.BigEndian), ErrCorrupt},
		{"qcow2 L1 table beyond the file", set(q, 40, 1<<40), ErrCorrupt},
		{"qcow2 L1 table too small", set(set32(q, 36, 1, binary.BigEndian), 24, 1<<30), ErrCorrupt},
		{"qcow2 backing file", set(q, 8, 1000), ErrUnsupported},
		{"qcow2 encrypted", set32(q, 32, 1, binary.BigEndian), ErrUnsupported},
		{"qcow2 version 4", set32(q, 4, 4, binary.BigEndian), ErrUnsupported},
		{"qcow2 cluster beyond the file", craftQCOW2(64<<10, one, func(i int, e uint64) uint64 {
			if e != 0 {
				return 1<<40 | 1<<63
			}
			return e
		}), ErrCorrupt},
		{"qcow2 L2 table beyond the file", set(q, 512, 1<<40|1<<63), ErrCorrupt},
		{"qcow2 one cluster mapped everywhere", craftQCOW2(1<<20, one, func(i int, e uint64) uint64 {
			return uint64(len(craftQCOW2(1<<20, one, nil))-512) | 1<<63
		}), ErrCorrupt},
		{"vhd of 1 PiB", vhdSized(vhd, 1<<50), ErrTooLarge},
		{"vhd block beyond the file", craftVHD(64<<10, one, func(i int, e uint32) uint32 {
			if e != vhdUnallocated {
				return 1 << 30
			}
			return e
		}), ErrCorrupt},
		{"vhd one block mapped everywhere", craftVHD(1<<20, one, func(i int, e uint32) uint32 { return 4 }), ErrCorrupt},
		{"vhd bad footer checksum", set32(vhd, 64, 1, binary.BigEndian), ErrCorrupt},
		{"vhd differencing", vhdTyped(vhd, vhdDifferencing), ErrUnsupported},
		{"vhd dynamic header beyond the file", vhdAt(vhd, 1<<40), ErrCorrupt},
		{"vmdk of 1 PiB", set32le64(vmdk, 12, 1<<50/512), ErrTooLarge},
		{"vmdk grain directory beyond the file", set32le64(vmdk, 56, 1<<40), ErrCorrupt},
		{"vmdk grain of 2^40 sectors", set32le64(vmdk, 20, 1<<40), ErrUnsupported},
		{"vmdk 2^32-1 entries per table", set32(vmdk, 44, 0xffffffff, binary.LittleEndian), ErrCorrupt},
		{"vmdk grain beyond the file", craftVMDK(64<<10, false, one, func(i int, e uint32) uint32 {
			if e != 0 {
				return 1 << 30
			}
			return e
		}), ErrCorrupt},
		{"vmdk one grain mapped everywhere", craftVMDK(1<<20, false, one, func(i int, e uint32) uint32 { return 1 }), ErrCorrupt},
		{"vmdk stream footer missing", stream[:len(stream)-512], ErrCorrupt},
		{"vmdk stream grain bomb", bomb, ErrCorrupt},
		{"vdi", vdi(), ErrUnsupported},
		{"vhdx", append([]byte("vhdxfile"), make([]byte, 1024)...), ErrUnsupported},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\nversion=1\n"), ErrUnsupported},
		{"gzip", []byte{0x1f, 0x8b, 8, 0}, ErrUnsupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, _, err := readAll(c.b, Options{})
			runtime.ReadMemStats(&after)
			if c.want == nil {
				if err != nil {
					t.Fatalf("a valid image: %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
			if a := after.TotalAlloc - before.TotalAlloc; a > 64<<20 {
				t.Errorf("allocated %d MiB", a>>20)
			}
			t.Logf("%v", err)
		})
	}
}

// TestMaxSize: the limit is the caller's; an image over it is refused
// before anything is read.
func TestMaxSize(t *testing.T) {
	b := craftQCOW2(1<<20, map[int][]byte{0: []byte("x")}, nil)
	if _, _, err := readAll(b, Options{MaxSize: 1 << 20}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, _, err := readAll(b, Options{MaxSize: 1<<20 - 1}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	raw := make([]byte, 4096)
	if _, _, err := readAll(raw, Options{MaxSize: 4095}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("raw over the limit: %v", err)
	}
}

// FuzzOpen feeds arbitrary bytes to detection and conversion: no panic,
// memory and time bounded (a 64 MiB virtual-size limit), and a success
// writes exactly the size Open reported.
func FuzzOpen(f *testing.F) {
	one := map[int][]byte{0: []byte("boot"), 5: []byte("five")}
	f.Add(craftQCOW2(8<<10, one, nil))
	f.Add(craftVHD(16<<10, one, nil))
	f.Add(append(expected(4<<10, 512, one), vhdFooter(4<<10, vhdFixed, ^uint64(0))...))
	f.Add(craftVMDK(32<<10, false, one, nil))
	f.Add(craftVMDK(32<<10, true, one, nil))
	f.Add([]byte("raw bytes"))
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Open(bytes.NewReader(b), int64(len(b)), Options{MaxSize: 64 << 20})
		if err != nil {
			return
		}
		var n countWriter
		if _, err := img.WriteTo(context.Background(), &n); err == nil && int64(n) != img.Size {
			t.Fatalf("wrote %d bytes of a %d-byte disk", n, img.Size)
		}
	})
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)

func vhdSized(b []byte, size uint64) []byte {
	b = bytes.Clone(b)
	f := vhdFooter(size, vhdDynamic, 512)
	copy(b, f)
	copy(b[len(b)-512:], f)
	return b
}

func vhdTyped(b []byte, typ uint32) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint32(b[60:], typ)
	binary.BigEndian.PutUint32(b[64:], vhdChecksum(b[:512]))
	return b
}

func vhdAt(b []byte, dataOff uint64) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint64(b[16:], dataOff)
	binary.BigEndian.PutUint32(b[64:], vhdChecksum(b[:512]))
	return b
}

func set32le64(b []byte, at int, v uint64) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint64(b[at:], v)
	return b
}

func vdi() []byte {
	b := make([]byte, 1024)
	copy(b, "<<< Oracle VM VirtualBox Disk Image >>>\n")
	binary.LittleEndian.PutUint32(b[0x40:], 0xbeda107f)
	return b
}
