// Package charts is zdt's Helm chart handling: the part of a Helm
// repository's index.yaml zdt reads (ParseRepoIndex, RepoIndex.Get with
// semver constraints), version checks (Check), vendoring of the
// dependencies a chart lacks (Vendor, fetching through the caller so that
// the caller decides which repositories are allowed), reproducible
// packaging (Package), and rendering as a client-only install would, under
// a byte and time budget (Render), to find the images a chart uses
// (ImagesInManifests, ImagesAnnotation).
//
// It is the only package besides zdt.dev/zdt/bundle/build that imports
// Helm: Helm's render engine is the largest part of the binary, so the
// packages that read and install bundles stay free of it.
package charts
