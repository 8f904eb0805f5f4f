#!/usr/bin/env bash
# Builds the agent and packs what a device needs into one archive: the binary, the systemd
# unit and the install notes. On the device: download, unpack, run.
#   bash scripts/package-agent.sh            # → dist/edgefn-agent-<version>-<arch>.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p edgefn-agent
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name="edgefn-agent-${version}-$(uname -m)"
stage=$(mktemp -d)
mkdir -p "$stage/$name" dist
cp target/release/edgefn-agent "$stage/$name/"
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
