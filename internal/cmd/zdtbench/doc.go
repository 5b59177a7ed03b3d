// Command zdtbench measures zdt against the tools people use for the same
// job (crane, regctl, skopeo, oras, distribution's registry) and against the
// floor (openssl hashing every byte once), side by side on one machine in
// one run. `make bench` runs it through scripts/bench.sh.
//
// It generates a deterministic synthetic platform release (images sharing
// base layers pushed into a local distribution registry, Helm charts, a
// binary set, a sparse disk image, one large file), caches it under
// bench/work/data-* keyed by the workload, and then runs every row: each
// command of a row (zdt, its peers, the floor) runs in turn, A B C A B C …,
// at least three times. It reports the median wall time, the ratio to the
// peers and the floor, and the peak RSS (from wait4's rusage, or VmHWM for
// servers), and writes bench/results.md and bench/results.json.
//
// A row whose zdt command does not exist yet (probed with `zdt CMD --help`)
// is reported as n/a and costs nothing; when the feature lands, the row runs.
// Rows live in rows.go: adding one is a few lines (a name, the zdt command,
// the peers, the floor, the goals).
//
// Subcommand `zdtbench pull` is the registry client the serve rows time: it
// pulls a list of images (manifests and every blob, once per client) with
// N concurrent clients and discards the bytes.
//
// Benchmarks are never part of `make test`.
package main
