package bundle

import (
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

// AMIConfig is an AMI artifact's config (manifests.MediaTypeAMIConfig).
type AMIConfig struct {
	Name           string `json:"name"`
	Description    string `json:"description,omitempty"`
	Architecture   string `json:"architecture"`
	BootMode       string `json:"bootMode"`
	Virtualization string `json:"virtualization"`
	RootDevice     string `json:"rootDevice"`
	ENA            bool   `json:"ena"`
	TPM            bool   `json:"tpm"`
	// DiskFormat is raw, qcow2, vmdk, vhd or vhdx; DiskSize and DiskDigest
	// describe the uncompressed disk image.
	DiskFormat string `json:"diskFormat"`
	DiskSize   int64  `json:"diskSize"`
	DiskDigest string `json:"diskDigest"`
}

// KindBundleConfig is the dev.zdt.kind annotation of the root's first
// manifest, which carries the bundle Config.
const KindBundleConfig = "bundle-config"

// RootRef is the reference name of a bundle's root in its layout and the
// repository:tag it is served and pushed under: zdt/NAME:VERSION.
func RootRef(name, version string) string { return "zdt/" + name + ":" + version }
