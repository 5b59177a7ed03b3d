#!/usr/bin/env bash
# The whole zdt story on examples/quickstart, printed step by step.
set -euo pipefail
cd "$(dirname "$0")/.."
zdt=bin/zdt
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Generating the example's inputs (a multi-arch image, a docker-save image, a disk image)"
go run ./internal/cmd/mkquickstart -dir examples/quickstart
mkdir -p build

step "zdt bundle create -f examples/quickstart/zdt.yaml -o build/quickstart.zdt"
$zdt bundle create -f examples/quickstart/zdt.yaml -o build/quickstart.zdt

step "zdt bundle inspect build/quickstart.zdt"
$zdt bundle inspect build/quickstart.zdt

step "zdt bundle verify build/quickstart.zdt (structure + every digest)"
$zdt bundle verify build/quickstart.zdt

step "Reproducible: building again with the lock file gives the same bytes"
$zdt bundle create --lock -f examples/quickstart/zdt.yaml -o build/quickstart-again.zdt >/dev/null
sha256sum build/quickstart.zdt build/quickstart-again.zdt
cmp build/quickstart.zdt build/quickstart-again.zdt && echo "identical"
rm -f build/quickstart-again.zdt

step "Tampering is caught: one flipped byte in a copy of the archive"
cp build/quickstart.zdt build/tampered.zdt
size=$(stat -c %s build/tampered.zdt)
printf '\xff' | dd of=build/tampered.zdt bs=1 seek=$((size - 4096)) conv=notrunc status=none
if $zdt bundle verify build/tampered.zdt; then echo "tampering NOT detected"; exit 1; else echo "(exit code $?)"; fi
rm -f build/tampered.zdt

step "The layout inside is standard OCI: zdt bundle extract build/quickstart.zdt build/layout"
rm -rf build/layout
$zdt bundle extract build/quickstart.zdt build/layout
if command -v skopeo >/dev/null; then
  echo "$ skopeo inspect oci:build/layout:zdt.example/quickstart/hello:1.0"
  skopeo inspect oci:build/layout:zdt.example/quickstart/hello:1.0 | head -n 8
fi

step "zdt install --bundle build/quickstart.zdt --root build/root (a temp root instead of /)"
rm -rf build/root && mkdir -p build/root
$zdt install --bundle build/quickstart.zdt --root build/root
echo "--- what landed under build/root:"
(cd build/root && find . -type f -not -path './var/lib/zdt/*' | sort)
echo "--- $(head -n 1 build/root/etc/systemd/system/zdt-serve.service)"

step "Installing again changes nothing (installation == upgrade; re-runs are no-ops)"
$zdt install --bundle build/quickstart.zdt --root build/root | tail -n 1
$zdt status --root build/root

cat <<'MSG'

What next:
  bin/zdt bundle inspect --output json build/quickstart.zdt   # machine-readable
  cp build/quickstart.zdt /media/dvd/                          # carry it across the air gap
  bin/zdt bundle verify build/quickstart.zdt                   # on the other side, before anything else
  bin/zdt schema > zdt.schema.json                             # editor completion for your own zdt.yaml
MSG
