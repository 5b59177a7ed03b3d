package main

import (
	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/cluster"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/signing"
)

// The documents --output json prints: one JSON object on stdout per
// command (indented), JSON lines on stderr for progress, warnings and the
// error. Scripts depend on the field names: never rename one. Fields are
// listed in the order they are printed (alphabetical, as the maps they
// replace printed them).

// createOutput is what `zdt bundle create` prints.
type createOutput struct {
	// Base is the base bundle of a delta (absent otherwise).
	Base *createBase `json:"base,omitempty"`
	// Blobs counts the archive's blobs once each.
	Blobs int `json:"blobs"`
	// Discovered lists the images found in charts.
	Discovered []build.DiscoveredImage `json:"discovered"`
	// Fetch says what was fetched and what came from the cache.
	Fetch build.FetchStats `json:"fetch"`
	// Items are the bundle's items in spec order.
	Items []bundle.Item `json:"items"`
	// LockFile is the lock file written (or that would be, with --no-lock).
	LockFile string `json:"lockFile"`
	// Path is the archive written.
	Path string `json:"path"`
	// Root is the root index's descriptor: the bundle's identity.
	Root digest.Digest `json:"root"`
	// RootRepository is where registries serve the bundle root (zdt/NAME).
	RootRepository string `json:"rootRepository"`
	// SHA256 is the hex sha256 of the whole archive file.
	SHA256 string `json:"sha256"`
	// SignedBy is the signing key's fingerprint (absent when unsigned).
	SignedBy string `json:"signedBy,omitempty"`
	// SigstoreBundle is the detached signature for cosign verify-blob
	// (absent when unsigned).
	SigstoreBundle string `json:"sigstoreBundle,omitempty"`
	// Size is the archive's size in bytes.
	Size int64 `json:"size"`
	// UniqueSize is the bytes of the archive's blobs, each counted once.
	UniqueSize int64 `json:"uniqueSize"`
}

// createBase is the base of a delta bundle.
type createBase struct {
	// Blobs and Size count the blobs left to the base.
	Blobs int `json:"blobs"`
	// Path is the base archive given with --base.
	Path string `json:"path"`
	// Root is the base bundle's root digest.
	Root digest.Digest `json:"root"`
	Size int64         `json:"size"`
}

// inspectOutput is what `zdt bundle inspect` prints.
type inspectOutput struct {
	// ArchiveSize is the archive file's size in bytes.
	ArchiveSize int64 `json:"archiveSize"`
	// Base is the root digest of a delta's base ("" for a full bundle).
	Base digest.Digest `json:"base"`
	// Blobs counts the reachable blobs.
	Blobs       int    `json:"blobs"`
	Description string `json:"description"`
	// Items are the bundle's items, with sizes, in spec order.
	Items     []bundle.Item `json:"items"`
	Name      string        `json:"name"`
	Platforms []string      `json:"platforms"`
	// Root is the bundle root digest.
	Root digest.Digest `json:"root"`
	// RootRepository is where registries serve the bundle root (zdt/NAME).
	RootRepository string `json:"rootRepository"`
	// ToolVersion is the zdt version that created the bundle.
	ToolVersion string `json:"toolVersion"`
	// TotalSize counts every item's blobs; UniqueSize each blob once.
	TotalSize  int64  `json:"totalSize"`
	UniqueSize int64  `json:"uniqueSize"`
	Version    string `json:"version"`
}

// verifyOutput is what `zdt bundle verify` prints.
type verifyOutput struct {
	// Blobs and Bytes are what was hashed.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// Items counts the bundle's items.
	Items int           `json:"items"`
	Root  digest.Digest `json:"root"`
	// Signature is what the signature check found.
	Signature signing.Result `json:"signature"`
	// Verified is always true (a failed verification prints the error).
	Verified bool `json:"verified"`
}

// extractOutput is what `zdt bundle extract` prints.
type extractOutput struct {
	// Dir is the OCI layout directory written.
	Dir  string        `json:"dir"`
	Root digest.Digest `json:"root"`
}

// versionOutput is what `zdt version` prints.
type versionOutput struct {
	Version string `json:"version"`
}

// pushOutput is what `zdt push` prints.
type pushOutput struct {
	// Placements are the repositories and tags pushed.
	Placements []registry.Placement `json:"placements"`
	Root       digest.Digest        `json:"root"`
	// Target is the registry host and prefix pushed to.
	Target string `json:"target"`
}

// serveOutput is what `zdt serve` prints once it listens.
type serveOutput struct {
	// CA is the CA certificate clients must trust ("" with --insecure-http
	// or --tls-cert).
	CA string `json:"ca"`
	// ReadOnly is false when --htpasswd users may push.
	ReadOnly bool `json:"readOnly"`
	// Repositories are the repositories of --bundle archives (null for the
	// store, whose content changes with installs).
	Repositories []string `json:"repositories"`
	// Serving is the store directory or the bundle paths.
	Serving string `json:"serving"`
	// URL is where clients reach the registry.
	URL string `json:"url"`
}

// keyOutput is what `zdt key generate` prints: signing.KeyPair's files,
// the fingerprint as the text output and createOutput.SignedBy write it.
type keyOutput struct {
	// Fingerprint is "sha256:" and the hex sha256 of the public key's DER
	// encoding.
	Fingerprint string `json:"fingerprint"`
	PrivateKey  string `json:"privateKey"`
	PublicKey   string `json:"publicKey"`
	TrustedRoot string `json:"trustedRoot"`
}

// uninstallOutput is what `zdt uninstall` prints.
type uninstallOutput struct {
	// Plan, Generation and Applied are as installer.Result gives them (no
	// plan, generation 0: nothing is installed any more).
	Plan       *installer.Plan `json:"plan"`
	Generation int             `json:"generation"`
	Applied    bool            `json:"applied"`
	// FilesRemoved counts the installed and generated files removed.
	FilesRemoved int `json:"filesRemoved"`
	// Releases are the Helm releases uninstalled (reverse order), each
	// with the CRDs kept in its reasons.
	Releases []installer.ReleaseChange `json:"releases,omitempty"`
	// Backup is the cluster backup taken before the releases were
	// uninstalled.
	Backup *installer.ClusterBackup `json:"backup,omitempty"`
	// AMIsDeregistered are the images deregistered (--aws-region), their
	// snapshots deleted; AMIsLeft those recorded and left registered.
	AMIsDeregistered []installer.AMI `json:"amisDeregistered,omitempty"`
	AMIsLeft         []installer.AMI `json:"amisLeft,omitempty"`
}

// cacheLsOutput is what `zdt cache ls` prints.
type cacheLsOutput struct {
	// Dir is the cache directory listed.
	Dir string `json:"dir"`
	// Entries are the cache's entries, most recently used first.
	Entries []build.CacheEntry `json:"entries"`
	// Totals count the entries by kind, and their bytes.
	Totals build.CacheTotals `json:"totals"`
}

// cachePruneOutput is what `zdt cache prune` prints.
type cachePruneOutput struct {
	// Dir is the cache directory pruned.
	Dir string `json:"dir"`
	// Kept counts what is left.
	Kept build.CacheTotals `json:"kept"`
	// Removed are the entries evicted, in the order they were.
	Removed []build.CacheEntry `json:"removed"`
	// RemovedSize is their bytes.
	RemovedSize int64 `json:"removedSize"`
}

// statusOutput is what `zdt status` prints. Its first fields are in the
// order installer.Status printed them before this type existed (scripts
// read them): with one bundle installed they are that bundle's; with
// several, current is absent and the others add up all of them. Bundles
// lists each installed bundle.
type statusOutput struct {
	Installed   bool                  `json:"installed"`
	Current     *installer.Generation `json:"current,omitempty"`
	Counts      map[string]int        `json:"counts,omitempty"`
	Drift       []string              `json:"drift,omitempty"`
	Generations []int                 `json:"generations,omitempty"`
	Registry    *registry.Health      `json:"registry,omitempty"`
	Extra       map[string]string     `json:"extra,omitempty"`
	Bundles     []statusBundle        `json:"bundles,omitempty"`
	// Releases are the Helm releases of every installed bundle's current
	// generation, with their health when a kubeconfig was given.
	Releases []releaseStatus `json:"releases,omitempty"`
	// Backups are the cluster backups (etcd snapshots, object exports)
	// under var/lib/zdt/backups, newest first.
	Backups []installer.ClusterBackup `json:"backups,omitempty"`
}

// releaseStatus is one release in statusOutput.
type releaseStatus struct {
	// Bundle is the installed bundle that deployed it.
	Bundle    string `json:"bundle"`
	Component string `json:"component"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Chart     string `json:"chart"`
	Version   string `json:"version"`
	// Revision is the Helm revision the generation recorded.
	Revision int `json:"revision"`
	// ClusterRevision and HelmStatus are the newest revision in the
	// cluster and its Helm status (absent without a kubeconfig).
	ClusterRevision int    `json:"clusterRevision,omitempty"`
	HelmStatus      string `json:"helmStatus,omitempty"`
	// Health is "ready", "not ready" or "unknown" (no kubeconfig).
	Health string `json:"health"`
	// NotReady names the first object that is not ready, or why.
	NotReady string `json:"notReady,omitempty"`
}

// statusBundle is one installed bundle in statusOutput.
type statusBundle struct {
	Counts      map[string]int        `json:"counts"`
	Current     *installer.Generation `json:"current"`
	Drift       []string              `json:"drift,omitempty"`
	Generations []int                 `json:"generations"`
	Name        string                `json:"name"`
	Registry    *registry.Health      `json:"registry,omitempty"`
}

func newStatusOutput(s installer.Status) statusOutput {
	out := statusOutput{Counts: s.Counts, Current: s.Generation, Drift: s.Drift, Extra: s.Extra,
		Generations: s.History, Installed: s.Installed, Registry: s.Registry, Backups: s.Backups}
	for _, b := range s.Bundles {
		out.Bundles = append(out.Bundles, statusBundle{Counts: b.Counts, Current: b.Generation, Drift: b.Drift,
			Generations: b.History, Name: b.Name, Registry: b.Registry})
	}
	return out
}

// installDiffOutput is what `zdt install --plan --diff` prints: the
// install result's fields, then the release diffs.
type installDiffOutput struct {
	installer.Result
	// Diffs are the manifest diffs of the releases the plan changes.
	Diffs []cluster.ReleaseDiff `json:"diffs"`
}

// progressLine is a JSON line on stderr while a long phase runs.
type progressLine struct {
	Done  int64  `json:"done"`
	Phase string `json:"phase"`
	Total int64  `json:"total"`
}

// warningLine is a JSON line on stderr for a signature warning.
type warningLine struct {
	// Bundle is the archive's path.
	Bundle string        `json:"bundle"`
	Root   digest.Digest `json:"root"`
	// Warning says what was accepted and why it is worth a look.
	Warning string `json:"warning"`
}

// errorLine is the JSON line on stderr for the error a command fails with.
type errorLine struct {
	Error string `json:"error"`
	// ExitCode is the process's exit code (see `zdt --help`).
	ExitCode int `json:"exitCode"`
}
