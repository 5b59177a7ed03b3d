package diskimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"zdt.dev/zdt/internal/fixtures"
)

// convert opens path and writes its raw disk to a sha256 and a byte count.
func convert(t testing.TB, path string, opts Options) (*Image, []byte, Stats, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	img, err := Open(f, fi.Size(), opts)
	if err != nil {
		return nil, nil, Stats{}, err
	}
	var buf bytes.Buffer
	st, err := img.WriteTo(context.Background(), &buf)
	return img, buf.Bytes(), st, err
}

// TestFormatsMatchQemuImg is issue 16: each format and variant qemu-img
// makes reads as the raw disk `qemu-img convert -O raw` gives, byte for
// byte, detected from its magic bytes (the files are all named .img).
func TestFormatsMatchQemuImg(t *testing.T) {
	dir := t.TempDir()
	_, imgs := fixtures.DiskImages(t, dir)
	formats := map[string]string{"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vpc": "vhd"}
	for _, v := range fixtures.DiskVariants {
		t.Run(v.Name, func(t *testing.T) {
			want := filepath.Join(dir, v.Name+".qemu.raw")
			fixtures.QemuRaw(t, imgs[v.Name], v.Format, want)
			wb, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			img, got, st, err := convert(t, imgs[v.Name], Options{})
			if err != nil {
				t.Fatal(err)
			}
			if string(img.Format) != formats[v.Format] {
				t.Errorf("detected %s, want %s", img.Format, formats[v.Format])
			}
			if !bytes.Equal(got, wb) {
				t.Fatalf("%s (%s %s): %d bytes, sha256 %x; qemu-img gives %d bytes, sha256 %x",
					v.Name, img.Format, img.Variant, len(got), sha256.Sum256(got), len(wb), sha256.Sum256(wb))
			}
			if st.Data+st.Zero != img.Size || st.Zero < 24<<20 && v.Format != "raw" && v.Name != "vhd-fixed" {
				t.Errorf("stats %+v for %d bytes: zero regions were read", st, img.Size)
			}
			t.Logf("%s: %s %s, %d bytes, %d data, %d zero", v.Name, img.Format, img.Variant, img.Size, st.Data, st.Zero)
			// Declared right: accepted; declared wrong: refused.
			if _, _, _, err := convert(t, imgs[v.Name], Options{Format: img.Format}); err != nil {
				t.Errorf("declared %s: %v", img.Format, err)
			}
			other := QCOW2
			if img.Format == QCOW2 {
				other = Raw
			}
			if _, _, _, err := convert(t, imgs[v.Name], Options{Format: other}); !errors.Is(err, ErrUnsupported) {
				t.Errorf("declared %s: %v, want ErrUnsupported", other, err)
			}
		})
	}
}
