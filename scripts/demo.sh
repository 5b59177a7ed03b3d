#!/usr/bin/env bash
# The whole zdt story on examples/quickstart, printed step by step.
set -euo pipefail
cd "$(dirname "$0")/.."
zdt=bin/zdt
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Generating the example's inputs (a multi-arch image, a docker-save image, a disk image)"
go run ./internal/cmd/mkquickstart -dir examples/quickstart
mkdir -p build

step "zdt key generate --prefix build/demo (a cosign-compatible key pair; demo password)"
export COSIGN_PASSWORD=zdt-demo
$zdt key generate --force --prefix build/demo

step "zdt bundle create --key build/demo.key -f examples/quickstart/zdt.yaml -o build/quickstart.zdt"
$zdt bundle create --key build/demo.key -f examples/quickstart/zdt.yaml -o build/quickstart.zdt

step "zdt bundle inspect build/quickstart.zdt"
$zdt bundle inspect build/quickstart.zdt

step "zdt bundle verify --key build/demo.pub build/quickstart.zdt (signature, structure, every digest)"
$zdt bundle verify --key build/demo.pub build/quickstart.zdt
if command -v cosign >/dev/null; then
  echo "$ cosign verify-blob --key build/demo.pub --bundle build/quickstart.zdt.sigstore.json --new-bundle-format --insecure-ignore-tlog=true --trusted-root build/trusted-root.json build/quickstart.zdt"
  cosign verify-blob --key build/demo.pub --bundle build/quickstart.zdt.sigstore.json --new-bundle-format \
    --insecure-ignore-tlog=true --trusted-root build/trusted-root.json build/quickstart.zdt 2>&1 | grep -v '^WARNING'
fi

step "zdt serve --bundle build/quickstart.zdt --key build/demo.pub: a registry straight from the archive (signature checked, nothing extracted)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$zdt serve --bundle build/quickstart.zdt --key build/demo.pub --insecure-http --addr 127.0.0.1:$port >build/serve.out 2>build/serve.log &
serve_pid=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:$port/healthz >/dev/null 2>&1 && break; sleep 0.1; done
cat build/serve.out
if command -v crane >/dev/null; then
  echo "$ crane digest --insecure 127.0.0.1:$port/zdt.example/quickstart/hello:1.0"
  crane digest --insecure 127.0.0.1:$port/zdt.example/quickstart/hello:1.0
elif command -v skopeo >/dev/null; then
  echo "$ skopeo inspect --tls-verify=false docker://127.0.0.1:$port/zdt.example/quickstart/hello:1.0"
  skopeo inspect --tls-verify=false docker://127.0.0.1:$port/zdt.example/quickstart/hello:1.0 | head -n 4
fi
if command -v oras >/dev/null; then
  rm -rf build/pulled && mkdir -p build/pulled
  echo "$ oras pull --plain-http -o build/pulled 127.0.0.1:$port/files/zdt-hello:0.1.0"
  oras pull --plain-http -o build/pulled 127.0.0.1:$port/files/zdt-hello:0.1.0 >/dev/null && ls -l build/pulled
fi
kill -TERM $serve_pid && wait $serve_pid || true
echo "served $(grep -c 'msg=request' build/serve.log) requests (access log: build/serve.log); stopped with SIGTERM"

step "Reproducible: building again with the lock file gives the same bytes"
$zdt bundle create --lock -f examples/quickstart/zdt.yaml -o build/quickstart-again.zdt >/dev/null
$zdt bundle create --lock -f examples/quickstart/zdt.yaml -o build/quickstart-again2.zdt >/dev/null
sha256sum build/quickstart-again.zdt build/quickstart-again2.zdt
cmp build/quickstart-again.zdt build/quickstart-again2.zdt && echo "identical (unsigned; a signed bundle has the same root digest, ECDSA signatures differ per run)"
rm -f build/quickstart-again.zdt build/quickstart-again2.zdt

step "Tampering is caught: one flipped byte in a copy of the archive"
cp build/quickstart.zdt build/tampered.zdt
size=$(stat -c %s build/tampered.zdt)
printf '\xff' | dd of=build/tampered.zdt bs=1 seek=$((size - 4096)) conv=notrunc status=none
if $zdt bundle verify --key build/demo.pub build/tampered.zdt; then echo "tampering NOT detected"; exit 1; else echo "(exit code $?)"; fi
rm -f build/tampered.zdt

step "The layout inside is standard OCI: zdt bundle extract --key build/demo.pub build/quickstart.zdt build/layout"
rm -rf build/layout
$zdt bundle extract --key build/demo.pub build/quickstart.zdt build/layout
if command -v skopeo >/dev/null; then
  echo "$ skopeo inspect oci:build/layout:zdt.example/quickstart/hello:1.0"
  skopeo inspect oci:build/layout:zdt.example/quickstart/hello:1.0 | head -n 8
fi

step "zdt install --bundle build/quickstart.zdt --key build/demo.pub --root build/root (a temp root instead of /)"
rm -rf build/root && mkdir -p build/root
$zdt install --bundle build/quickstart.zdt --key build/demo.pub --root build/root
echo "--- what landed under build/root:"
(cd build/root && find . -type f -not -path './var/lib/zdt/*' | sort)
echo "--- $(head -n 1 build/root/etc/systemd/system/zdt-serve.service)"

step "Installing again changes nothing (installation == upgrade; re-runs are no-ops)"
$zdt install --bundle build/quickstart.zdt --key build/demo.pub --root build/root | tail -n 1
$zdt status --root build/root

step "zdt serve --root build/root: what was installed, served from the archive install kept (a hard link: nothing copied)"
ls -li build/quickstart.zdt build/root/var/lib/zdt/registry/archives/*.zdt | awk '{print $1, $3, $NF}'
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$zdt serve --root build/root --insecure-http --addr 127.0.0.1:$port >build/serve-root.out 2>build/serve-root.log &
serve_pid=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:$port/healthz >/dev/null 2>&1 && break; sleep 0.1; done
if command -v crane >/dev/null; then
  rm -rf build/pulled-root
  echo "$ crane pull --insecure --format=oci 127.0.0.1:$port/zdt.example/quickstart/hello:1.0 build/pulled-root"
  crane pull --insecure --format=oci 127.0.0.1:$port/zdt.example/quickstart/hello:1.0 build/pulled-root && echo "pulled $(find build/pulled-root/blobs -type f | wc -l) blobs, digests checked by crane"
fi
kill -TERM $serve_pid && wait $serve_pid || true

step "An update as a delta bundle: v0.2.0 changes one file; zdt bundle create --base build/quickstart.zdt"
rm -rf build/quickstart-v2 && cp -r examples/quickstart build/quickstart-v2 && rm -f build/quickstart-v2/zdt.lock.yaml
printf '#!/bin/sh\necho "hello from zdt quickstart 0.2.0"\n' > build/quickstart-v2/files/zdt-hello.sh
sum=$(sha256sum build/quickstart-v2/files/zdt-hello.sh | cut -d' ' -f1)
sed -i "s/sha256: [0-9a-f]\{64\}/sha256: $sum/; s/^  version: 0.1.0/  version: 0.2.0/" build/quickstart-v2/zdt.yaml
$zdt bundle create --key build/demo.key -f build/quickstart-v2/zdt.yaml -o build/quickstart-0.2.0-delta.zdt --base build/quickstart.zdt | grep -E '^(created|delta)'
ls -l build/quickstart.zdt build/quickstart-0.2.0-delta.zdt | awk '{print $5, $NF}'
echo "$ zdt install --bundle build/quickstart-0.2.0-delta.zdt --key build/demo.pub --root build/root   # reads the rest from the installed 0.1.0"
$zdt install --bundle build/quickstart-0.2.0-delta.zdt --key build/demo.pub --root build/root | tail -n 2
build/root/usr/local/bin/zdt-hello
$zdt status --root build/root | grep -E '^(generation|registry)'

cat <<'MSG'

What next:
  bin/zdt bundle inspect --output json build/quickstart.zdt   # machine-readable
  cp build/quickstart.zdt /media/dvd/                          # carry it across the air gap
  bin/zdt bundle verify --key build/demo.pub build/quickstart.zdt   # on the other side, before anything else
  bin/zdt schema > zdt.schema.json                             # editor completion for your own zdt.yaml
MSG
