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
	Pos    Pos     `yaml:"-"`
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
type AMI struct {
	Name           string `yaml:"name" zdt:"required" doc:"AMI name."`
	Source         string `yaml:"source" zdt:"required" doc:"Disk image path (raw, qcow2, vmdk or vhd), relative to zdt.yaml."`
	SHA256         string `yaml:"sha256" doc:"Optional hex sha256 of the disk image."`
	Size           int64  `yaml:"size" doc:"Optional size of the disk image in bytes: reading stops one byte past it and a mismatch fails the build."`
	Description    string `yaml:"description,omitempty"`
	Architecture   string `yaml:"architecture" doc:"x86_64 (default), arm64 or i386."`
	BootMode       string `yaml:"bootMode" doc:"uefi, legacy-bios or uefi-preferred (default legacy-bios)."`
	Virtualization string `yaml:"virtualization" doc:"hvm (default) or paravirtual."`
	RootDevice     string `yaml:"rootDevice" doc:"Root device name (default /dev/xvda)."`
	ENA            bool   `yaml:"ena" doc:"ENA networking support."`
	TPM            bool   `yaml:"tpm" doc:"NitroTPM v2.0 support (needs uefi)."`
	Pos            Pos    `yaml:"-"`
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
