// Package bundle owns the zdt archive format: the create pipeline (resolve
// sources → stage blobs → write a deterministic tar holding an OCI image
// layout), the reader that opens an archive by indexing its tar headers
// (random access, no extraction), and the verification walk that checks
// structure, reachability from the root index and every blob digest in
// parallel.
//
// The archive layout is described in DESIGN.md: `oci-layout`, `index.json`,
// then `blobs/sha256/<hex>` in digest order, all with fixed metadata, in an
// uncompressed tar.
package bundle
