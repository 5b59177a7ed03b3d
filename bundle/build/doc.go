// Package build creates zdt bundles: Create resolves a spec's sources →
// stages their blobs → writes the lock → lets the signer attach → writes
// the archive with bundle.WriteArchive while hashing it.
//
// Images come from OCI/Docker registries (through remote.Remotes) or local
// layouts and archives; charts from local directories, Helm HTTP
// repositories and OCI registries, with dependencies vendored and the
// images they use discovered by rendering them (package charts); files
// from paths or URLs checked against their sha256; AMIs from disk images.
// One concurrency budget covers it all; every blob is fetched once into a
// persistent, digest-checked cache (the staging store) that later and
// interrupted creates reuse, and every blob taken from it is checked
// against its digest in the pass that writes the archive.
package build
