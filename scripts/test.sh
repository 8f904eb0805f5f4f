#!/usr/bin/env bash
# Runs edgefn's whole test suite. Works on a fresh Debian machine: it installs what the tests
# need (as root, with apt-get) before running them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v python3 >/dev/null || need+=(python3)
command -v node >/dev/null || need+=(nodejs)
# tests/mqtt.rs starts its own Mosquitto processes (never the system service).
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    # Installing Mosquitto may start its service where there is an init system; the tests
    # need none (they start their own on free ports), so stop it if it runs.
    if [[ " ${need[*]} " == *" mosquitto "* ]] && command -v service >/dev/null; then
      service mosquitto stop >/dev/null 2>&1 || true
    fi
  else
    echo "the tests need: ${need[*]} (install them, or run this script as root on Debian/Ubuntu)" >&2
    exit 1
  fi
fi

# The end-to-end tests run the real binaries; `cargo test` builds only those of packages with
# integration tests, so build them all first.
cargo build --workspace --bins
cargo test --workspace
