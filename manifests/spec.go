package manifests

// APIVersion and KindBundle are the only apiVersion/kind a spec may have.
const (
	APIVersion = "zdt.dev/v1alpha1"
	KindBundle = "Bundle"
	KindLock   = "Lock"
)

// Pos is where a value was written in its file (1-based), for error messages.
type Pos struct {
	Line   int
	Column int
}

// Spec is a parsed zdt.yaml. Load and Parse fill it and check it; the zero
// value is not a valid spec. Dir is the directory relative source paths are
// resolved against (the spec file's directory).
type Spec struct {
	APIVersion string      `yaml:"apiVersion" zdt:"required" doc:"Always zdt.dev/v1alpha1."`
	Kind       string      `yaml:"kind" zdt:"required" doc:"Always Bundle."`
	Metadata   Metadata    `yaml:"metadata" zdt:"required"`
	Platforms  []string    `yaml:"platforms" doc:"Keep only these platforms (os/arch[/variant]) of multi-arch images; empty keeps all."`
	Components []Component `yaml:"components" zdt:"required" doc:"Installed in this order."`

	// File and Dir say where the spec was read from ("" when parsed from memory).
	File string `yaml:"-"`
	Dir  string `yaml:"-"`
	// Raw is the spec file's bytes, stored in the bundle's config.
	Raw []byte `yaml:"-"`
}

// Metadata names and versions the bundle.
type Metadata struct {
	Name        string `yaml:"name" zdt:"required" doc:"Bundle name: lowercase letters, digits, '-', '.', '_'."`
	Version     string `yaml:"version" zdt:"required" doc:"Bundle version; also the tag of the bundle root in a registry."`
	Description string `yaml:"description,omitempty"`
	Pos         Pos    `yaml:"-"`
}

// Component is one installable unit; components install in spec order.
type Component struct {
	Name   string  `yaml:"name" zdt:"required" doc:"Component name, unique in the spec."`
	Images []Image `yaml:"images" doc:"Container images: a reference, or {ref, source} for local sources."`
	Charts []Chart `yaml:"charts" doc:"Helm charts, deployed in this order."`
	Files  []File  `yaml:"files" doc:"Host files and binaries."`
	AMIs   []AMI   `yaml:"amis" doc:"AMI / VM disk images."`
	// Actions are commands run on the installing host (actions.go).
	Actions Actions `yaml:"actions" doc:"Commands run on the installing host around the install: before and after lists; by default each runs only when something of the component changed."`
	Pos     Pos     `yaml:"-"`
}

// Image is a container image. Written as a plain string it is Ref alone.
type Image struct {
	Ref    string `yaml:"ref" zdt:"required,scalar" doc:"Original reference (registry/repo:tag or @digest); kept as the image's name in the bundle."`
	Source string `yaml:"source" doc:"Where to read it from instead of Ref's registry: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE (paths relative to zdt.yaml)."`
	Pos    Pos    `yaml:"-"`
}

// Chart is a Helm chart.
type Chart struct {
	Name      string `yaml:"name" zdt:"required" doc:"Chart name."`
	Source    string `yaml:"source" zdt:"required" doc:"oci://registry/repo, an https Helm repository URL, or a local chart directory or .tgz (relative to zdt.yaml)."`
	Version   string `yaml:"version" doc:"Chart version; required for oci:// and https sources."`
	Namespace string `yaml:"namespace" doc:"Namespace the release is installed into (default: the component name)."`
	Release   string `yaml:"release" doc:"Release name (default: the chart name)."`
	Values    string `yaml:"values" doc:"Values file, relative to zdt.yaml."`
	// Exclude and Images adjust the images discovered in the chart
	// (bundle create --discover-images); references match normalized
	// (NormalizeImageRef).
	Exclude []string          `yaml:"exclude" doc:"Images discovered in this chart not to bundle (busybox matches docker.io/library/busybox:latest)."`
	Images  map[string]string `yaml:"images" doc:"Images discovered in this chart to fetch from another reference: DISCOVERED: FETCH. The image keeps its discovered name in the bundle, the one the chart's pods pull."`
	Pos     Pos               `yaml:"-"`
}

// File is a host file or binary.
type File struct {
	Name   string `yaml:"name" doc:"Item name (default: the target's base name)."`
	Source string `yaml:"source" zdt:"required" doc:"https:// URL or a path relative to zdt.yaml."`
	SHA256 string `yaml:"sha256" zdt:"required" doc:"Hex sha256 of the source's bytes; a mismatch fails the build."`
	Size   int64  `yaml:"size" doc:"Optional size of the source in bytes: a download stops one byte past it and a mismatch fails the build."`
	Target string `yaml:"target" zdt:"required" doc:"Absolute path the file is installed to."`
	Mode   string `yaml:"mode" doc:"Octal file mode (default 0644)."`
	// AllowSpecialBits keeps a mode's setuid, setgid and sticky bits;
	// without it such a mode is refused.
	AllowSpecialBits bool `yaml:"allowSpecialBits" doc:"Install the file with the setuid, setgid or sticky bits its mode sets; without it such a mode is refused."`
	Pos              Pos  `yaml:"-"`
}

// AMI is a VM disk image and the metadata needed to register it as an AMI.
// The field names and values are EC2 RegisterImage's.
type AMI struct {
	Name   string `yaml:"name" zdt:"required" doc:"AMI name (one path element: the exported file is NAME.img)."`
	Source string `yaml:"source" zdt:"required" doc:"Disk image: a path relative to zdt.yaml or an https:// URL; raw, qcow2 (v2/v3, zlib/zstd clusters, no backing file), vmdk (monolithicSparse, streamOptimized) or vhd (fixed, dynamic), told apart by its magic bytes. Stored converted to raw."`
	Format string `yaml:"format" doc:"Optional: the format the source must be (raw, qcow2, vmdk or vhd); its magic bytes are checked against it."`
	SHA256 string `yaml:"sha256" doc:"Optional hex sha256 of the source file (before conversion)."`
	Size   int64  `yaml:"size" doc:"Optional size of the source file in bytes: reading stops one byte past it and a mismatch fails the build."`
	// Description is the AMI's description (at most 255 characters).
	Description     string `yaml:"description,omitempty" doc:"AMI description (at most 255 characters)."`
	Architecture    string `yaml:"architecture" doc:"x86_64 (default), arm64 or i386."`
	BootMode        string `yaml:"bootMode" doc:"legacy-bios (default), uefi or uefi-preferred."`
	Virtualization  string `yaml:"virtualization" doc:"hvm (default) or paravirtual."`
	RootDevice      string `yaml:"rootDevice" doc:"Root device name (default /dev/xvda)."`
	ENA             bool   `yaml:"ena" doc:"ENA networking support."`
	SriovNetSupport string `yaml:"sriovNetSupport" doc:"simple: Intel 82599 VF (SR-IOV) networking support."`
	TPM             bool   `yaml:"tpm" doc:"NitroTPM v2.0 support (needs bootMode uefi)."`
	IMDSSupport     string `yaml:"imdsSupport" doc:"v2.0: instances launched from the AMI require IMDSv2."`
	// BlockDeviceMappings are the AMI's volumes; the root device's gets the
	// disk's snapshot (one is added when none names the root device).
	BlockDeviceMappings []BlockDevice     `yaml:"blockDeviceMappings" doc:"Volumes of instances launched from the AMI; the root device's volume is made from the disk (added, sized to the disk, when not listed)."`
	Tags                map[string]string `yaml:"tags" doc:"Tags of the AMI and its snapshot (at most 50; keys up to 128 characters, values up to 256, no aws: prefix)."`
	Pos                 Pos               `yaml:"-"`
}

// BlockDevice is one of an AMI's EBS volumes.
type BlockDevice struct {
	DeviceName string `yaml:"deviceName" zdt:"required" doc:"Device name, e.g. /dev/xvda or /dev/sdb."`
	VolumeSize int64  `yaml:"volumeSize" doc:"Size in GiB (the root device's default: the disk's size rounded up)."`
	VolumeType string `yaml:"volumeType" doc:"gp3 (default), gp2, io1, io2, st1, sc1 or standard."`
	// DeleteOnTermination defaults to true.
	DeleteOnTermination *bool `yaml:"deleteOnTermination" doc:"Delete the volume when the instance terminates (default true)."`
	IOPS                int64 `yaml:"iops" doc:"Provisioned IOPS (gp3, io1, io2)."`
	Throughput          int64 `yaml:"throughput" doc:"Throughput in MiB/s (gp3)."`
	Pos                 Pos   `yaml:"-"`
}

// ItemCount is the number of items of all kinds in the spec.
func (s *Spec) ItemCount() int {
	n := 0
	for _, c := range s.Components {
		n += len(c.Images) + len(c.Charts) + len(c.Files) + len(c.AMIs)
	}
	return n
}

// ItemName is the name a file item is known by: Name, or the target's base name.
func (f File) ItemName() string {
	if f.Name != "" {
		return f.Name
	}
	for i := len(f.Target) - 1; i >= 0; i-- {
		if f.Target[i] == '/' {
			return f.Target[i+1:]
		}
	}
	return f.Target
}
