// Package bundle owns the zdt archive format: the deterministic writer
// (WriteArchive: `oci-layout`, `index.json`, then `blobs/sha256/<hex>` in
// digest order, all with fixed metadata, in an uncompressed tar), the
// reader that opens an archive by indexing its tar headers (random access,
// no extraction), the one walk of the manifest graph, and the verification
// that checks structure, reachability from the root index and every blob
// digest (decompressed content included) in parallel; Extract writes a
// verified archive's files under a directory.
//
// Creating a bundle is package zdt.dev/zdt/bundle/build; registry clients
// are zdt.dev/zdt/remote and Helm charts zdt.dev/zdt/charts. bundle imports
// none of them, so readers of archives (signing, registry, installer) do
// not carry the create pipeline or Helm.
//
// The archive layout is described in docs/architecture.md.
package bundle
