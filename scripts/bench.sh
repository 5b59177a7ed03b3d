#!/usr/bin/env bash
# `make bench`: zdt measured side by side with its peers (crane, regctl,
# skopeo, oras, distribution's registry) and the floor (openssl hashing every
# byte once), in one run on this machine. Writes bench/results.md and
# bench/results.json and prints the summary table. Never part of `make test`.
#
#   BENCH_SIZE=small|default|512M|8G   workload (default ≈2 GiB; small: a 1-minute smoke run)
#   BENCH_RUNS=3                       runs of every command, interleaved A B C A B C …
#   BENCH_ROWS=REGEXP                  only the rows whose name matches
#   BENCH_README=1                     also rewrite README.md's Performance table
#
# The generated release is cached under bench/work/data-* (keyed by the
# workload), so only the first run at a size pays for generating it.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOBIN=${GOBIN:-$(go env GOPATH)/bin}
export PATH="$GOBIN:$PATH"

# Pinned peers, installed only when absent (see .ci/install-tools).
.ci/install-tools crane regctl oras skopeo registry openssl helm

[ -x bin/zdt ] || make build
go build -o bin/zdtbench ./internal/cmd/zdtbench
go build -o bin/kubecluster ./internal/kubetest/cmd/kubecluster   # the deploy rows' control plane

args=()
if [ -n "${BENCH_README:-}" ]; then args+=(-readme README.md); fi
exec bin/zdtbench "${args[@]}" "$@"
