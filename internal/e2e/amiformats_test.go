package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"zdt.dev/zdt/internal/fixtures"
)

// TestAMIFormatsExport is issue 16: every disk format and variant (qcow2
// v2/v3, zlib and zstd clusters; vmdk monolithicSparse and
// streamOptimized; vhd fixed and dynamic; raw) goes through `bundle
// create` → `install --ami-export` to a sparse raw image byte-identical to
// `qemu-img convert -O raw` of the source, beside its metadata (NAME.json:
// the raw image's size and sha256, the spec's metadata) and an
// import-image-ready NAME.import-image.json.
func TestAMIFormatsExport(t *testing.T) {
	dir := t.TempDir()
	_, imgs := fixtures.DiskImages(t, dir)
	spec := "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: disks, version: \"1\"}\ncomponents:\n  - name: nodes\n    amis:\n"
	for _, v := range fixtures.DiskVariants {
		// Item names are served as repositories: lowercase.
		spec += fmt.Sprintf("      - {name: %s, source: %s, bootMode: uefi, tpm: true, imdsSupport: v2.0, tags: {Variant: %s}}\n", strings.ToLower(v.Name), filepath.Base(imgs[v.Name]), v.Name)
	}
	if err := os.WriteFile(filepath.Join(dir, "zdt.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	zdt(t, dir, "bundle", "create", "-o", "d.zdt", "--no-cache").must(t, "create")
	export := filepath.Join(dir, "amis")
	zdt(t, dir, "install", "--bundle", "d.zdt", "--root", filepath.Join(dir, "root"), "--insecure-skip-signature", "--ami-export", export).must(t, "install --ami-export")
	for _, v := range fixtures.DiskVariants {
		want := filepath.Join(dir, v.Name+".qemu.raw")
		fixtures.QemuRaw(t, imgs[v.Name], v.Format, want)
		wb, _ := os.ReadFile(want)
		name := strings.ToLower(v.Name)
		img := filepath.Join(export, name+".img")
		got, err := os.ReadFile(img)
		if err != nil || len(wb) == 0 || !bytes.Equal(got, wb) {
			t.Errorf("%s: exported image (%d bytes, %v) is not qemu-img's raw (%d bytes)", v.Name, len(got), err, len(wb))
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil || st.Blocks*512 >= st.Size/4 {
			t.Errorf("%s: %d bytes allocated for %d: not sparse (%v)", v.Name, st.Blocks*512, st.Size, err)
		}
		sum := sha256.Sum256(wb)
		var cfg struct {
			DiskFormat, DiskDigest, SourceFormat, BootMode, TPMSupport, IMDSSupport string
			DiskSize                                                                int64
			Tags                                                                    map[string]string
		}
		b, _ := os.ReadFile(filepath.Join(export, name+".json"))
		if err := json.Unmarshal(b, &cfg); err != nil || cfg.DiskFormat != "raw" || cfg.DiskSize != int64(len(wb)) ||
			cfg.DiskDigest != "sha256:"+hex.EncodeToString(sum[:]) || cfg.BootMode != "uefi" || cfg.TPMSupport != "v2.0" ||
			cfg.IMDSSupport != "v2.0" || cfg.Tags["Variant"] != v.Name {
			t.Errorf("%s: metadata %v\n%s", v.Name, err, b)
		}
		var imp struct {
			Architecture, BootMode, Platform string
			DiskContainers                   []struct {
				Format     string
				UserBucket struct{ S3Bucket, S3Key string }
			}
			TagSpecifications []struct {
				ResourceType string
				Tags         []struct{ Key, Value string }
			}
		}
		b, _ = os.ReadFile(filepath.Join(export, name+".import-image.json"))
		if err := json.Unmarshal(b, &imp); err != nil || len(imp.DiskContainers) != 1 || imp.DiskContainers[0].Format != "raw" ||
			imp.DiskContainers[0].UserBucket.S3Key != name+".img" || imp.BootMode != "uefi" || imp.Architecture != "x86_64" ||
			len(imp.TagSpecifications) != 1 || imp.TagSpecifications[0].Tags[0] != (struct{ Key, Value string }{"Variant", v.Name}) {
			t.Errorf("%s: import-image JSON %v\n%s", v.Name, err, b)
		}
	}
	// verify decodes each raw disk and checks it against the config's sha256.
	zdt(t, dir, "bundle", "verify", "d.zdt", "--insecure-skip-signature").must(t, "verify")
}
