#!/usr/bin/env bash
# Builds the real Kubernetes control plane the cluster tests run against:
# kube-apiserver, kube-controller-manager and kube-scheduler from
# k8s.io/kubernetes, kwok (sigs.k8s.io/kwok, fake nodes standing in for
# kubelets) and a small embedded etcd, all from the tools module tools/kube
# (pinned versions, CGO_ENABLED=0). The binaries go to a cache outside the
# repository keyed by version and are built once: when all are present (and
# the stamp matches) the script only prints the directory.
#
#   scripts/kube-tools.sh          build if missing, print the bin directory
#   ZDT_KUBE_TOOLS=DIR             use DIR instead of the default cache
#
# Cold build: ~10-15 min on 2 cores for kube-apiserver and etcd. The
# controller manager, scheduler and kwok came to 25 + 3 min and 5.5 min
# (in parallel) of wall time on a GOCACHE warm from kube-apiserver, on 2
# cores shared with 7 other builds (load ~20): much less on a quiet machine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '$1=="k8s.io/kubernetes" {print $2; exit}' "$here/tools/kube/go.mod")
[ -n "$version" ] || { echo "kube-tools: no k8s.io/kubernetes version in tools/kube/go.mod" >&2; exit 1; }
dir=${ZDT_KUBE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/zdt-tools/kube-$version}
kwok=$(awk '$1=="sigs.k8s.io/kwok" {print $2; exit}' "$here/tools/kube/go.mod")
[ -n "$kwok" ] || { echo "kube-tools: no sigs.k8s.io/kwok version in tools/kube/go.mod" >&2; exit 1; }
bins="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"
stamp="kube-apiserver kube-controller-manager kube-scheduler $version, kwok $kwok, etcd (client TLS) from tools/kube"
have_all() {
  for b in $bins; do [ -x "$dir/$b" ] || return 1; done
  [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]
}
if have_all; then
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "kube-tools: building kube-apiserver, kube-controller-manager, kube-scheduler $version, kwok $kwok and etcd into $dir" >&2
# The version ldflags as Kubernetes' own build sets them: without them the
# server reports v0.0.0-master and Helm's kubeVersion checks see 0.0.
minor=${version#v1.}; minor=${minor%%.*}
ver="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitTreeState=clean"
(
  cd "$here/tools/kube"
  export CGO_ENABLED=0 GOFLAGS=-mod=readonly
  go build -ldflags=-s -o "$tmp/etcd" ./etcd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    go build -ldflags="-s $ver" -o "$tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
  go build -ldflags=-s -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
)
# rename last: a half-built tool never looks present.
for b in $bins; do mv "$tmp/$b" "$dir/$b"; done
echo "$stamp" > "$dir/.stamp"
echo "kube-tools: built in $(( $(date +%s) - start ))s" >&2
echo "$dir"
