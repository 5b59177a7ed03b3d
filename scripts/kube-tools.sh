#!/usr/bin/env bash
# Builds the real Kubernetes control plane the cluster tests run against:
# kube-apiserver from k8s.io/kubernetes and a small embedded etcd, both from
# the tools module tools/kube (pinned versions, CGO_ENABLED=0). The binaries
# go to a cache outside the repository keyed by version and are built once:
# when both are present the script only prints the directory.
#
#   scripts/kube-tools.sh          build if missing, print the bin directory
#   ZDT_KUBE_TOOLS=DIR             use DIR instead of the default cache
#
# Cold build: ~10-15 min on 2 cores (kube-apiserver is most of it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '$1=="k8s.io/kubernetes" {print $2; exit}' "$here/tools/kube/go.mod")
[ -n "$version" ] || { echo "kube-tools: no k8s.io/kubernetes version in tools/kube/go.mod" >&2; exit 1; }
dir=${ZDT_KUBE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/zdt-tools/kube-$version}
stamp="kube-apiserver $version, etcd (client TLS) from tools/kube"
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "kube-tools: building kube-apiserver $version and etcd into $dir" >&2
# The version ldflags as Kubernetes' own build sets them: without them the
# server reports v0.0.0-master and Helm's kubeVersion checks see 0.0.
minor=${version#v1.}; minor=${minor%%.*}
ver="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitTreeState=clean"
(
  cd "$here/tools/kube"
  export CGO_ENABLED=0 GOFLAGS=-mod=readonly
  go build -ldflags=-s -o "$tmp/etcd" ./etcd
  go build -ldflags="-s $ver" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
)
# rename last: a half-built tool never looks present.
mv "$tmp/etcd" "$dir/etcd"
mv "$tmp/kube-apiserver" "$dir/kube-apiserver"
echo "$stamp" > "$dir/.stamp"
echo "kube-tools: built in $(( $(date +%s) - start ))s" >&2
echo "$dir"
