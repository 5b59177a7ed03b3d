package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// amiSpec is a spec of the given ami entries (YAML flow mappings).
func amiSpec(t testing.TB, dir string, amis ...string) *manifests.Spec {
	t.Helper()
	y := "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: disks, version: \"1\"}\ncomponents:\n  - name: nodes\n    amis:\n"
	for _, a := range amis {
		y += "      - " + a + "\n"
	}
	spec, err := manifests.Parse(filepath.Join(dir, "zdt.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	spec.Dir = dir
	return spec
}

// amiContents opens the archive and returns each AMI's content by name.
func amiContents(t testing.TB, path string) (*bundle.Archive, map[string]bundle.Content) {
	t.Helper()
	ctx := context.Background()
	a, err := bundle.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := a.Walk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bundle.Content{}
	for _, it := range g.Items {
		if it.Kind == manifests.KindAMI {
			c, err := a.ItemContent(ctx, it)
			if err != nil {
				t.Fatal(err)
			}
			out[it.Name] = c
		}
	}
	return a, out
}

// TestAMIFormatsConverted is issue 16: every format and variant (qcow2 v2,
// v3, zlib and zstd clusters; vmdk monolithicSparse and streamOptimized;
// vhd fixed and dynamic; raw) is stored as the raw disk `qemu-img convert
// -O raw` gives, byte for byte, whatever its file is named; the config
// records the raw size and sha256 and the source's format and digest.
func TestAMIFormatsConverted(t *testing.T) {
	dir := t.TempDir()
	_, imgs := fixtures.DiskImages(t, dir)
	var entries []string
	for _, v := range fixtures.DiskVariants {
		entries = append(entries, fmt.Sprintf("{name: %s, source: %s}", strings.ToLower(v.Name), filepath.Base(imgs[v.Name])))
	}
	out := filepath.Join(dir, "d.zdt")
	if _, err := Create(context.Background(), amiSpec(t, dir, entries...), CreateOptions{Output: out}); err != nil {
		t.Fatal(err)
	}
	a, cs := amiContents(t, out)
	formats := map[string]string{"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vpc": "vhd"}
	for _, v := range fixtures.DiskVariants {
		c := cs[strings.ToLower(v.Name)]
		want := filepath.Join(dir, v.Name+".qemu.raw")
		fixtures.QemuRaw(t, imgs[v.Name], v.Format, want)
		wb, _ := os.ReadFile(want)
		rc, err := a.OpenContent(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if !bytes.Equal(got, wb) {
			t.Errorf("%s: stored disk (%d bytes) is not qemu-img's raw (%d bytes)", v.Name, len(got), len(wb))
		}
		sum := sha256.Sum256(wb)
		src, _ := os.ReadFile(imgs[v.Name])
		ssum := sha256.Sum256(src)
		cfg := c.AMI
		if cfg.DiskFormat != "raw" || cfg.DiskSize != int64(len(wb)) || cfg.DiskDigest != "sha256:"+hex.EncodeToString(sum[:]) ||
			cfg.SourceFormat != formats[v.Format] || cfg.SourceDigest != "sha256:"+hex.EncodeToString(ssum[:]) || cfg.SourceSize != int64(len(src)) {
			t.Errorf("%s: config %+v", v.Name, cfg)
		}
		if c.Layer.MediaType != mediaTypeRawDisk || c.Layer.Size > 2<<20 {
			t.Errorf("%s: layer %s of %d bytes for 2 MiB of data", v.Name, c.Layer.MediaType, c.Layer.Size)
		}
	}
}

// TestAMISparseRawCostsItsData: a 1 GiB sparse raw disk with 4 MiB of data
// takes about its data in the archive (zero regions are not read and cost
// a few bytes per 128 KiB).
func TestAMISparseRawCostsItsData(t *testing.T) {
	dir := t.TempDir()
	if err := fixtures.DataDisk(filepath.Join(dir, "big.raw"), 1<<30, 4<<20, 3); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "d.zdt")
	res, err := Create(context.Background(), amiSpec(t, dir, "{name: big, source: big.raw}"), CreateOptions{Output: out})
	if err != nil {
		t.Fatal(err)
	}
	if res.Size > 8<<20 {
		t.Fatalf("archive of a 1 GiB disk with 4 MiB of data is %d bytes", res.Size)
	}
	_, cs := amiContents(t, out)
	if c := cs["big"]; c.Size != 1<<30 || c.AMI.DiskSize != 1<<30 {
		t.Fatalf("content %d bytes, config %+v", c.Size, c.AMI)
	}
	t.Logf("1 GiB disk, 4 MiB data: archive %d bytes", res.Size)
}

// TestAMIMetadata: the spec's metadata lands in the config in EC2's
// spellings, with defaults, the root device's volume first and sized to
// the disk; a declared format is checked against the magic bytes; a root
// volume smaller than the disk and a crafted image are refused.
func TestAMIMetadata(t *testing.T) {
	dir := t.TempDir()
	if err := fixtures.DataDisk(filepath.Join(dir, "node.img"), 64<<20, 1<<20, 1); err != nil {
		t.Fatal(err)
	}
	if err := fixtures.DataDisk(filepath.Join(dir, "big.img"), 1<<30+1<<20, 1<<20, 1); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "d.zdt")
	spec := amiSpec(t, dir, `{name: node, source: node.img, format: raw, description: "a node", architecture: arm64, bootMode: uefi, tpm: true, ena: true, sriovNetSupport: simple, imdsSupport: v2.0, tags: {Team: platform}, blockDeviceMappings: [{deviceName: /dev/sdb, volumeSize: 100, volumeType: st1, deleteOnTermination: false}]}`,
		`{name: plain, source: node.img}`)
	if _, err := Create(context.Background(), spec, CreateOptions{Output: out}); err != nil {
		t.Fatal(err)
	}
	_, cs := amiContents(t, out)
	n, p := cs["node"].AMI, cs["plain"].AMI
	if n.Architecture != "arm64" || n.BootMode != "uefi" || !n.TPM || n.TPMSupport != "v2.0" || !n.ENA || n.SriovNetSupport != "simple" ||
		n.IMDSSupport != "v2.0" || n.Tags["Team"] != "platform" || n.Description != "a node" || n.RootDevice != "/dev/xvda" || n.Virtualization != "hvm" {
		t.Errorf("node: %+v", n)
	}
	if len(n.BlockDeviceMappings) != 2 || n.BlockDeviceMappings[0] != (bundle.AMIBlockDevice{DeviceName: "/dev/xvda", VolumeSize: 1, VolumeType: "gp3", DeleteOnTermination: true}) ||
		n.BlockDeviceMappings[1] != (bundle.AMIBlockDevice{DeviceName: "/dev/sdb", VolumeSize: 100, VolumeType: "st1"}) {
		t.Errorf("node mappings: %+v", n.BlockDeviceMappings)
	}
	if p.Architecture != "x86_64" || p.BootMode != "legacy-bios" || p.TPMSupport != "" || len(p.BlockDeviceMappings) != 1 {
		t.Errorf("plain: %+v", p)
	}
	for _, c := range []struct{ entry, want string }{
		{`{name: small, source: big.img, blockDeviceMappings: [{deviceName: /dev/xvda, volumeSize: 1}]}`, "smaller than the disk"},
		{`{name: declared, source: node.img, format: qcow2}`, "declared qcow2"},
	} {
		_, err := Create(context.Background(), amiSpec(t, dir, c.entry), CreateOptions{Output: filepath.Join(dir, "bad.zdt")})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.entry, err, c.want)
		}
	}
	// A qcow2 whose virtual size is over --max-disk-size.
	q := []byte("QFI\xfb\x00\x00\x00\x02")
	q = append(q, make([]byte, 4096)...)
	copy(q[20:], []byte{0, 0, 0, 16, 0, 0, 1, 0, 0, 0, 0, 0}) // 64 KiB clusters, 1 TiB
	os.WriteFile(filepath.Join(dir, "huge.qcow2"), q, 0o644)
	_, err := Create(context.Background(), amiSpec(t, dir, "{name: huge, source: huge.qcow2}"), CreateOptions{Output: filepath.Join(dir, "bad.zdt"), MaxDiskSize: 1 << 30})
	if !errors.Is(err, ErrDiskImage) || !strings.Contains(err.Error(), "ami huge") {
		t.Errorf("huge qcow2: %v", err)
	}
}
