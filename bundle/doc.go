// Package bundle owns the zdt archive format: the create pipeline (resolve
// sources → stage blobs → write a deterministic tar holding an OCI image
// layout), the reader that opens an archive by indexing its tar headers
// (random access, no extraction), and the verification walk that checks
// structure, reachability from the root index and every blob digest in
// parallel.
//
// Fetching (fetch.go, remotes.go, charts.go, cache.go): images come from
// OCI/Docker registries (oras-go remote, credentials from the Docker config
// or a RegistryConfig, per-host CA / insecure / plain HTTP, retries on 429
// and 5xx) or local layouts and archives; charts from local directories,
// Helm HTTP repositories and OCI registries, with dependencies vendored and
// the images they use discovered by rendering them; files from paths or
// URLs checked against their sha256. One concurrency budget covers it all;
// every blob is fetched once into a persistent, digest-checked cache that
// later and interrupted creates reuse.
//
// The archive layout is described in docs/architecture.md: `oci-layout`, `index.json`,
// then `blobs/sha256/<hex>` in digest order, all with fixed metadata, in an
// uncompressed tar.
package bundle
