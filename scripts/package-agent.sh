#!/usr/bin/env bash
# Builds the agent and packs what a device needs into one archive: the binary, the systemd
# unit and the install notes. On the device: download, unpack, run.
#   bash scripts/package-agent.sh            # → dist/edgefn-agent-<version>-<arch>.tar.gz
#
# The binary is static (musl): it runs on any Linux of its architecture, whatever its C library,
# and maps no shared libraries (about 3 MiB less resident memory than a glibc build). It is built
# with the `device` profile (optimised for size, no debug info).
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(uname -m)-unknown-linux-musl"
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  # ring compiles some C and assembly for the target.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && apt-get install -y -q musl-tools
  else
    echo "package-agent: musl-gcc is missing: install musl-tools (Debian/Ubuntu) or musl-gcc" >&2
    exit 1
  fi
fi
cargo build --profile device --target "$target" -p edgefn-agent
bin="target/$target/device/edgefn-agent"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name="edgefn-agent-${version}-$(uname -m)"
stage=$(mktemp -d)
mkdir -p "$stage/$name" dist
cp "$bin" "$stage/$name/"
cp examples/systemd/edgefn-agent.service "$stage/$name/"
cat > "$stage/$name/INSTALL.md" <<'TXT'
# edgefn-agent

1. Register the device from a machine that has the admin token:
   `edgefn device add gw-01 --label site=lab --out gw-01.yaml`
2. Copy `gw-01.yaml` to the device as `/etc/edgefn/agent.yaml` (mode 0600).
3. Run it: `./edgefn-agent --config /etc/edgefn/agent.yaml --data /var/lib/edgefn-agent`,
   or install the systemd unit (see the comments at the top of edgefn-agent.service).
TXT
tar -C "$stage" -czf "dist/$name.tar.gz" "$name"
rm -rf "$stage"
echo "dist/$name.tar.gz"
