package manifests

// Media types and artifact types of the zdt bundle format. See docs/architecture.md.
const (
	// ArtifactTypeBundle is the artifactType of a bundle's root: an OCI image
	// index whose first manifest carries the bundle config and whose other
	// manifests are the items.
	ArtifactTypeBundle = "application/vnd.zdt.bundle.v1+json"
	// MediaTypeBundleConfig is the bundle config (bundle.Config as JSON): the
	// config blob, and the artifactType, of the root's first manifest.
	MediaTypeBundleConfig = "application/vnd.zdt.bundle.config.v1+json"

	// ArtifactTypeFile is the artifactType of a file/binary artifact (ORAS style).
	ArtifactTypeFile = "application/vnd.zdt.file.v1"
	// MediaTypeFileRaw is a file layer stored as is (it was compressed already).
	MediaTypeFileRaw = "application/vnd.zdt.file.layer.v1"
	// MediaTypeFileZstd is a file layer stored zstd-compressed by zdt.
	MediaTypeFileZstd = "application/vnd.zdt.file.layer.v1+zstd"

	// ArtifactTypeAMI is the artifactType of an AMI / VM disk image artifact.
	ArtifactTypeAMI = "application/vnd.zdt.ami.v1"
	// MediaTypeAMIConfig is the config of an AMI artifact: AMIConfig as JSON.
	MediaTypeAMIConfig = "application/vnd.zdt.ami.config.v1+json"
	// MediaTypeDiskZstdPrefix prefixes a disk layer's media type; the format
	// (raw, qcow2, vmdk, vhd) follows: application/vnd.zdt.disk.v1.raw+zstd.
	MediaTypeDiskZstdPrefix = "application/vnd.zdt.disk.v1."

	// Helm's OCI media types, so `helm pull oci://…` works.
	MediaTypeHelmConfig = "application/vnd.cncf.helm.config.v1+json"
	MediaTypeHelmChart  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

	// OCI media types used by zdt.
	MediaTypeOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIEmpty    = "application/vnd.oci.empty.v1+json"
	// Docker media types zdt reads (and keeps as they are).
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// Annotation keys.
const (
	// AnnotationRefName is the OCI layout's reference name: the item's original
	// reference (docker.io/library/nginx:1.25, charts/name:version, …).
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationTitle names a file artifact's layer (ORAS style).
	AnnotationTitle = "org.opencontainers.image.title"
	// AnnotationComponent names the component an item belongs to.
	AnnotationComponent = "dev.zdt.component"
	// AnnotationKind is the item kind: image, chart, file or ami.
	AnnotationKind = "dev.zdt.kind"
	// AnnotationName is the item's name inside its component.
	AnnotationName = "dev.zdt.name"
	// AnnotationUncompressedDigest is the digest of a zstd-compressed layer's
	// original bytes (what the spec's sha256 names).
	AnnotationUncompressedDigest = "dev.zdt.uncompressed.digest"
	// AnnotationUncompressedSize is the size of those original bytes.
	AnnotationUncompressedSize = "dev.zdt.uncompressed.size"
	// AnnotationTarget is where a file is installed.
	AnnotationTarget = "dev.zdt.file.target"
	// AnnotationMode is the file mode a file is installed with (octal).
	AnnotationMode = "dev.zdt.file.mode"
	// AnnotationAllowSpecialBits ("true") lets a file's mode keep setuid,
	// setgid and sticky bits (the spec's allowSpecialBits); install refuses
	// a mode with those bits without it.
	AnnotationAllowSpecialBits = "dev.zdt.file.allow-special-bits"
	// AnnotationSubject, on an index.json entry, says the entry is attached
	// to that digest (an OCI 1.1 referrer of the bundle root).
	AnnotationSubject = "dev.zdt.subject"
	// AnnotationBundleRoot marks the root manifest's entry in index.json.
	AnnotationBundleRoot = "dev.zdt.bundle.root"
	// AnnotationBase, on a bundle root, makes the bundle a delta: the root
	// digest of the bundle whose blobs it leaves out.
	AnnotationBase = "dev.zdt.base"
)

// Item kinds.
const (
	KindImage = "image"
	KindChart = "chart"
	KindFile  = "file"
	KindAMI   = "ami"
)
