package bundle

import (
	"fmt"
	"regexp"
	"strings"

	"zdt.dev/zdt/manifests"
)

// Config is the bundle root index's config blob
// (manifests.MediaTypeBundleConfig): what the bundle is and how it was made.
type Config struct {
	Name        string   `json:"name"`
	Version     string   `json:"version"`
	Description string   `json:"description,omitempty"`
	ToolVersion string   `json:"toolVersion"`
	Platforms   []string `json:"platforms,omitempty"`
	// Spec is zdt.yaml as written; Lock is the lock file of this content.
	Spec string `json:"spec"`
	Lock string `json:"lock"`
	// Values holds each chart's values file, keyed "component/chart".
	Values map[string]string `json:"values,omitempty"`
}

// Item is one image, chart, file or AMI of a bundle, as its root index
// lists it.
type Item struct {
	Component string `json:"component"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	// Ref is the item's reference name in the layout (the image's original
	// reference, charts/NAME:VERSION, files/NAME:VERSION, amis/NAME:VERSION).
	Ref       string `json:"ref"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// Size is the bytes of every blob the item reaches (shared blobs counted
	// in each item); Blobs is their number.
	Size  int64 `json:"size"`
	Blobs int   `json:"blobs"`
	// Target and Mode are set for files. AllowSpecialBits lets Mode keep
	// setuid, setgid and sticky bits (the spec's allowSpecialBits).
	Target           string `json:"target,omitempty"`
	Mode             string `json:"mode,omitempty"`
	AllowSpecialBits bool   `json:"allowSpecialBits,omitempty"`
}

// String names the item for messages: "image docker.io/library/nginx:1.25".
func (it Item) String() string { return it.Kind + " " + it.Name }

func itemFromAnnotations(a map[string]string) Item {
	return Item{
		Component: a[manifests.AnnotationComponent],
		Kind:      a[manifests.AnnotationKind],
		Name:      a[manifests.AnnotationName],
		Ref:       a[manifests.AnnotationRefName],
		Target:    a[manifests.AnnotationTarget],
		Mode:      a[manifests.AnnotationMode],

		AllowSpecialBits: a[manifests.AnnotationAllowSpecialBits] == "true",
	}
}

// AMIConfig is an AMI artifact's config (manifests.MediaTypeAMIConfig):
// what to register the image as (EC2 RegisterImage's fields and values)
// and what its disk is. Archive.ItemContent returns it (Content.AMI) with
// DiskSize and DiskDigest checked against the layer; Archive.OpenContent
// then reads the disk, bounded and digest-checked. Since #16 the disk is
// always raw (DiskFormat "raw", converted at create from SourceFormat);
// a bundle made before may carry qcow2, vmdk or vhd bytes as they were.
type AMIConfig struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Architecture is x86_64, arm64 or i386; BootMode legacy-bios, uefi or
	// uefi-preferred; Virtualization hvm or paravirtual; RootDevice the
	// root device name (/dev/xvda).
	Architecture   string `json:"architecture"`
	BootMode       string `json:"bootMode"`
	Virtualization string `json:"virtualization"`
	RootDevice     string `json:"rootDevice"`
	// ENA is EnaSupport; TPM says TPMSupport is "v2.0".
	ENA bool `json:"ena"`
	TPM bool `json:"tpm"`
	// SriovNetSupport is "simple" or empty; TPMSupport "v2.0" (with TPM)
	// or empty; IMDSSupport "v2.0" or empty: EC2's values as they are.
	SriovNetSupport string `json:"sriovNetSupport,omitempty"`
	TPMSupport      string `json:"tpmSupport,omitempty"`
	IMDSSupport     string `json:"imdsSupport,omitempty"`
	// BlockDeviceMappings always lists the root device (its volume is
	// made from the disk's snapshot), first.
	BlockDeviceMappings []AMIBlockDevice `json:"blockDeviceMappings,omitempty"`
	// Tags go on the AMI and its snapshot.
	Tags map[string]string `json:"tags,omitempty"`
	// DiskFormat is the stored disk's format: raw (older bundles: raw,
	// qcow2, vmdk, vhd or vhdx). DiskSize and DiskDigest are the stored
	// disk's bytes (the raw image's size and sha256: what a user compares
	// after `install --ami-export`).
	DiskFormat string `json:"diskFormat"`
	DiskSize   int64  `json:"diskSize"`
	DiskDigest string `json:"diskDigest"`
	// SourceFormat and SourceVariant say what the spec's source was
	// (qcow2 v3, vmdk streamOptimized, vhd dynamic, raw); SourceSize and
	// SourceDigest are its file's bytes.
	SourceFormat  string `json:"sourceFormat,omitempty"`
	SourceVariant string `json:"sourceVariant,omitempty"`
	SourceSize    int64  `json:"sourceSize,omitempty"`
	SourceDigest  string `json:"sourceDigest,omitempty"`
}

// AMIBlockDevice is one EBS volume of an AMI (RegisterImage's
// BlockDeviceMapping with its Ebs).
type AMIBlockDevice struct {
	DeviceName string `json:"deviceName"`
	// VolumeSize is in GiB; VolumeType gp3, gp2, io1, io2, st1, sc1 or
	// standard; IOPS and Throughput (MiB/s) are 0 when not given.
	VolumeSize          int64  `json:"volumeSize"`
	VolumeType          string `json:"volumeType"`
	DeleteOnTermination bool   `json:"deleteOnTermination"`
	IOPS                int64  `json:"iops,omitempty"`
	Throughput          int64  `json:"throughput,omitempty"`
}

// amiDevice is a block device name (manifests' rule).
var amiDevice = regexp.MustCompile(`^/dev/((sd|xvd|hd)[a-z]{1,2}[0-9]{0,2}|nvme[0-9]{1,2}n[0-9]{1,2}(p[0-9]{1,2})?)$`)

// Validate says what in c a create from a valid spec could not have
// written, or nil: a bundle is hostile, and these values go to EC2 (the
// spec's rules, plus bounds on what the spec leaves open). Configs of
// bundles made before #16 (no mappings, other disk formats) pass.
func (c *AMIConfig) Validate() error {
	in := func(v string, ok ...string) bool {
		for _, o := range ok {
			if v == o {
				return true
			}
		}
		return false
	}
	switch {
	case manifests.CheckAMIName(c.Name) != nil:
		return manifests.CheckAMIName(c.Name)
	case len(c.Description) > 255:
		return fmt.Errorf("description of %d characters", len(c.Description))
	case !in(c.Architecture, "x86_64", "arm64", "i386"):
		return fmt.Errorf("architecture %q", c.Architecture)
	case !in(c.BootMode, "legacy-bios", "uefi", "uefi-preferred"):
		return fmt.Errorf("bootMode %q", c.BootMode)
	case !in(c.Virtualization, "hvm", "paravirtual"):
		return fmt.Errorf("virtualization %q", c.Virtualization)
	case c.RootDevice == "" || len(c.BlockDeviceMappings) > 0 && !amiDevice.MatchString(c.RootDevice):
		return fmt.Errorf("rootDevice %q", c.RootDevice)
	case !in(c.SriovNetSupport, "", "simple"):
		return fmt.Errorf("sriovNetSupport %q", c.SriovNetSupport)
	case !in(c.TPMSupport, "", "v2.0"), !in(c.IMDSSupport, "", "v2.0"):
		return fmt.Errorf("tpmSupport %q, imdsSupport %q", c.TPMSupport, c.IMDSSupport)
	case c.DiskSize < 0 || c.SourceSize < 0:
		return fmt.Errorf("negative sizes")
	case len(c.Tags) > 50 || len(c.BlockDeviceMappings) > 64:
		return fmt.Errorf("%d tags, %d block device mappings", len(c.Tags), len(c.BlockDeviceMappings))
	}
	for k, v := range c.Tags {
		if k == "" || len(k) > 128 || len(v) > 256 || strings.HasPrefix(strings.ToLower(k), "aws:") {
			return fmt.Errorf("tag %q", k)
		}
	}
	seen := map[string]bool{}
	for i, bd := range c.BlockDeviceMappings {
		switch {
		case !amiDevice.MatchString(bd.DeviceName) || seen[bd.DeviceName]:
			return fmt.Errorf("block device %q", bd.DeviceName)
		case i == 0 && bd.DeviceName != c.RootDevice:
			return fmt.Errorf("first block device %q is not the root device %q", bd.DeviceName, c.RootDevice)
		case bd.VolumeSize < 1 || bd.VolumeSize > 65536 || bd.IOPS < 0 || bd.Throughput < 0:
			return fmt.Errorf("block device %s: volumeSize %d, iops %d, throughput %d", bd.DeviceName, bd.VolumeSize, bd.IOPS, bd.Throughput)
		case !in(bd.VolumeType, "gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"):
			return fmt.Errorf("block device %s: volumeType %q", bd.DeviceName, bd.VolumeType)
		}
		seen[bd.DeviceName] = true
	}
	return nil
}

// KindBundleConfig is the dev.zdt.kind annotation of the root's first
// manifest, which carries the bundle Config.
const KindBundleConfig = "bundle-config"

// RootRef is the reference name of a bundle's root in its layout and the
// repository:tag it is served and pushed under: zdt/NAME:VERSION.
func RootRef(name, version string) string { return "zdt/" + name + ":" + version }
