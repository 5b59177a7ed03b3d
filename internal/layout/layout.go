// Package layout owns zdt's on-disk layout under an install root: every
// path zdt keeps its own state at (var/lib/zdt and below) and the files it
// generates outside it. Paths are slash-separated and relative to the
// install root, ready for an os.Root opened there; nothing here touches
// the disk. Like helm's helmpath, it is the one place a path is spelled.
package layout

import (
	"path"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// The state directory and what lives in it, relative to the install root.
const (
	// StateDir is zdt's data directory.
	StateDir = "var/lib/zdt"
	// Lock is the file an install, rollback or uninstall holds locked.
	Lock = StateDir + "/lock"
	// Current named the current generation's number before installations
	// were keyed by bundle name (one bundle per root). A root that still
	// has it is migrated to InstalledDir by the next install, rollback or
	// uninstall; until then it is read as the pointer of its bundle.
	Current = StateDir + "/current"
	// InstalledDir holds one file per installed bundle, named after the
	// bundle, holding the number of its current generation.
	InstalledDir = StateDir + "/installed"
	// GeneratedRecord records the files zdt generated for all installed
	// bundles together (mirror configuration, trust, the systemd unit) and
	// the serve address they name.
	GeneratedRecord = StateDir + "/generated.json"
	// GenerationsDir holds one <n>.json per recorded generation.
	GenerationsDir = StateDir + "/generations"
	// FilesDir is the content-addressed store of installed file versions
	// (sha256/<hex>), kept for rollback.
	FilesDir = StateDir + "/files/sha256"
	// BackupsDir holds, per generation, what an upgrade replaced
	// (Backup: a directory N/) and the cluster backup taken before the
	// install of generation N changed any Helm release (ClusterBackup:
	// N-etcd.db or N-objects.yaml).
	BackupsDir = StateDir + "/backups"
	// PlacementsDir holds one <hex>.json per bundle imported into the
	// registry store: what it serves under which names.
	PlacementsDir = StateDir + "/placements"
	// RegistryDir is the registry store: distribution's filesystem
	// storage plus the kept bundle archives (`zdt serve --root` serves it).
	RegistryDir = StateDir + "/registry"
	// TLSDir holds the local CA of `zdt serve` (ca.crt, ca.key).
	TLSDir = StateDir + "/tls"
	// CACert is the CA certificate clients trust.
	CACert = TLSDir + "/ca.crt"
	// BinariesDir keeps the zdt binaries install placed at Binary, by
	// digest (<hex>): the current one and those a rollback needs.
	BinariesDir = StateDir + "/bin"
	// BinaryRecord says which zdt binary install placed at Binary and
	// how it was right after (so status need not hash it).
	BinaryRecord = BinariesDir + "/placed.json"
	// AMIJournalDir holds one record per AMI snapshot an install
	// completed and is about to register as an image (AMISnapshot).
	AMIJournalDir = StateDir + "/amis"
)

// Inside the registry store (relative to RegistryDir).
const (
	// KeptDir holds the kept bundle archives (<hex>.zdt) and the name of
	// the active one.
	KeptDir = "archives"
	// ActiveKept names the kept archive whose placements are all served.
	ActiveKept = KeptDir + "/active"
	// DistributionDir is distribution's storage layout root.
	DistributionDir = "docker/registry/v2"
	// BlobsDir holds the blobs copied into the store.
	BlobsDir = DistributionDir + "/blobs"
	// ImportJournal marks an import whose blobs are not synced yet.
	ImportJournal = ".zdt-import-journal"
)

// Generated files outside the state directory.
const (
	// Binary is where install places the zdt executable the systemd unit
	// of `zdt serve` runs.
	Binary = "usr/local/bin/zdt"
	// SystemdUnitDir is where the units of `zdt serve` and `zdt agent`
	// are written.
	SystemdUnitDir = "etc/systemd/system"
	// ContainerdCertsDir holds containerd's per-registry hosts.toml.
	ContainerdCertsDir = "etc/containerd/certs.d"
	// ContainersCertsDir holds the containers (podman, cri-o, skopeo)
	// per-registry trust: certs.d/HOST:PORT/*.crt are CAs.
	ContainersCertsDir = "etc/containers/certs.d"
	// DockerCertsDir holds docker's per-registry trust, the same way.
	DockerCertsDir = "etc/docker/certs.d"
	// TrustedCA is the file name of the copy of zdt's CA certificate
	// written into each runtime's certs.d directory (not ca.crt, which
	// stays the site's own).
	TrustedCA = "zdt-ca.crt"
	// ContainersRegistriesConf is the containers (podman, cri-o) drop-in.
	ContainersRegistriesConf = "etc/containers/registries.conf.d/50-zdt.conf"
	// AgentDir holds what the unit of `zdt agent` (install --agent)
	// names besides its flags: the trust policy the agent verifies
	// bundles with, made self-contained at install (AgentPolicy, and
	// the keyless trusted root it names, AgentTrustedRoot), and the CA of
	// the registry it installs from (AgentCA).
	AgentDir         = "etc/zdt/agent"
	AgentPolicy      = AgentDir + "/policy.yaml"
	AgentTrustedRoot = AgentDir + "/trusted-root.json"
	AgentCA          = AgentDir + "/ca.crt"
)

// Generation is the record of generation n.
func Generation(n int) string { return path.Join(GenerationsDir, strconv.Itoa(n)+".json") }

// Installed is the pointer to the current generation of the bundle
// named name (a bundle name, checked by manifests.CheckBundleName).
func Installed(name string) string { return path.Join(InstalledDir, name) }

// Backup is the directory of what the upgrade to generation n replaced.
func Backup(n int) string { return path.Join(BackupsDir, strconv.Itoa(n)) }

// Cluster backup kinds: the suffix of ClusterBackup's file name.
const (
	// EtcdSnapshotSuffix names an etcd snapshot (etcdctl snapshot save's
	// format: the database and its trailing sha256).
	EtcdSnapshotSuffix = "-etcd.db"
	// ObjectsExportSuffix names an export of the objects of the releases
	// about to change, as YAML documents (taken without etcd access).
	ObjectsExportSuffix = "-objects.yaml"
)

// ClusterBackup is the cluster backup taken before generation n changed
// any release: suffix is EtcdSnapshotSuffix or ObjectsExportSuffix.
func ClusterBackup(n int, suffix string) string {
	return path.Join(BackupsDir, strconv.Itoa(n)+suffix)
}

// ParseClusterBackup reads a file name in BackupsDir as a cluster backup:
// its generation and suffix, ok false for anything else (the per-generation
// directories, temp files).
func ParseClusterBackup(name string) (n int, suffix string, ok bool) {
	for _, suf := range []string{EtcdSnapshotSuffix, ObjectsExportSuffix} {
		num, found := strings.CutSuffix(name, suf)
		if !found || num == "" || num[0] == '0' || num[0] == '+' || num[0] == '-' {
			continue
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			continue
		}
		return v, suf, true
	}
	return 0, "", false
}

// Placements is the placements record of the bundle whose root is root.
func Placements(root digest.Digest) string {
	return path.Join(PlacementsDir, root.Encoded()+".json")
}

// Kept is a bundle's kept archive, relative to RegistryDir.
func Kept(root digest.Digest) string { return path.Join(KeptDir, root.Encoded()+".zdt") }

// StoredBinary is a kept zdt binary (hex of its sha256).
func StoredBinary(hex string) string { return path.Join(BinariesDir, hex) }

// AMISnapshot is the journal record of the snapshot completed for the AMI
// item of digest d (sha256) in region (checked by the caller: it names a
// file).
func AMISnapshot(region string, d digest.Digest) string {
	return path.Join(AMIJournalDir, region+"-"+d.Encoded()+".json")
}

// StoredFile is a kept file version (digest "sha256:<hex>" or "<hex>").
func StoredFile(hex string) string { return path.Join(FilesDir, hex) }

// SystemdUnit is the path of the unit named name.
func SystemdUnit(name string) string { return path.Join(SystemdUnitDir, name) }

// HostsTOML is containerd's mirror configuration for registry host.
func HostsTOML(host string) string { return path.Join(ContainerdCertsDir, host, "hosts.toml") }

// ContainerdCA is the copy of zdt's CA that containerd's hosts.toml for
// host names (and, for the registry's own HOST:PORT, the one containerd
// finds without a hosts.toml).
func ContainerdCA(host string) string { return path.Join(ContainerdCertsDir, host, TrustedCA) }

// ContainersCA is the copy of zdt's CA podman, cri-o and skopeo trust for
// the registry at hostPort.
func ContainersCA(hostPort string) string { return path.Join(ContainersCertsDir, hostPort, TrustedCA) }

// DockerCA is the copy of zdt's CA docker trusts for the registry at
// hostPort.
func DockerCA(hostPort string) string { return path.Join(DockerCertsDir, hostPort, TrustedCA) }
