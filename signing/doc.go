// Package signing signs and verifies a bundle's identity, its root digest,
// in the formats the stock cosign CLI reads, so that a security team can
// check a bundle offline with tools it already trusts:
//
//   - the root signature: a cosign "simple signing" payload naming the root
//     digest, stored as the tag-style manifest sha256-<root hex>.sig;
//   - attestations of the root: SLSA v1 provenance (spec, tool version,
//     sources and resolved digests) and a CycloneDX SBOM listing every item,
//     as signed in-toto DSSE envelopes in the manifest sha256-<root hex>.att;
//   - the archive file itself: a sigstore bundle (NAME.zdt.sigstore.json)
//     over the archive's sha256, computed while the archive is written.
//
// Signer plugs into build.CreateOptions (Attach and ArchiveWritten); Verify
// checks an open archive against a Policy (trusted keys, or keyless
// identities with an offline trusted root) and writes nothing.
// GenerateKeyPair writes cosign-compatible key pairs.
//
// This is the only zdt package that imports cosign and sigstore. Key
// material is never logged, never stored in the bundle and never kept after
// Close.
package signing
