#!/usr/bin/env bash
# Release binaries users can copy to any Linux host: static (CGO_ENABLED=0,
# no libc needed, so they run on RHEL 8 and older long-term distributions),
# stripped and reproducible (-trimpath, no build id, the version from git):
# the same commit gives byte-identical files. Writes dist/zdt-linux-ARCH and
# dist/SHA256SUMS; with RELEASE_KEY=KEY (a cosign key file or KMS URI,
# password in COSIGN_PASSWORD) also dist/SHA256SUMS.sigstore.json, which
# stock `cosign verify-blob` checks offline (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
out=${DIST:-dist}
arches=${RELEASE_ARCHES:-amd64 arm64}
mkdir -p "$out"
for arch in $arches; do
  echo "release: zdt-linux-$arch ($version)" >&2
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
    -ldflags "-s -w -buildid= -X zdt.dev/zdt/internal/version.Version=$version" \
    -o "$out/zdt-linux-$arch.tmp" ./cmd/zdt
  mv "$out/zdt-linux-$arch.tmp" "$out/zdt-linux-$arch"
done
(cd "$out" && sha256sum zdt-linux-* > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS && cat SHA256SUMS)
if [ -n "${RELEASE_KEY:-}" ]; then
  host=$out/zdt-linux-$(go env GOARCH)
  [ -x "$host" ] || host=bin/zdt
  "$host" key sign-blob --key "$RELEASE_KEY" "$out/SHA256SUMS"
fi
