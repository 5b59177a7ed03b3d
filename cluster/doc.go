// Package cluster deploys a bundle's Helm charts into a Kubernetes cluster
// with the Helm v4 SDK: one release per chart, in the bundle's component
// and chart order, install when the release does not exist and upgrade
// otherwise, namespaces created. CRDs shipped in a chart's crds/ directory
// are applied by server-side apply (field manager "zdt") before any release
// changes and waited Established; Helm itself never upgrades them.
//
// A release whose chart digest, merged values and rendered manifests equal
// what the installed generation recorded, and whose latest Helm revision is
// still that deployed revision, is left alone: re-running the same bundle
// creates no Helm revision and sends no write request.
//
// The Deployer implements installer.Deployer; installer calls it after the
// registry and the files are in place and records the releases in the
// generation. Everything read from the cluster is bounded: release history
// is listed as metadata only with a limit, and a bundle's charts, values
// and renderings are bounded as at create time.
//
// Before an install changes any release, installer asks the Deployer (an
// installer.Backuper) for a backup: with EtcdOptions.Endpoints an etcd
// snapshot (Snapshot: the v3 client's snapshot stream, bounded by the
// database size etcd reports, its trailing sha256 checked), otherwise the
// objects of the releases about to change, read from the cluster (their
// manifests from the Helm storage Secrets, decoded under a bound).
package cluster
