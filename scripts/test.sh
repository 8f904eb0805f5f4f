#!/usr/bin/env bash
# Runs edgefn's whole test suite. Works on a fresh Debian machine: it installs what the tests
# need (as root, with apt-get) before running them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v python3 >/dev/null || need+=(python3)
command -v node >/dev/null || need+=(nodejs)
# Dependency layers are installed with pip and npm (tests/layers.rs; PyPI and npm's registry).
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v npm >/dev/null || need+=(npm)
# tests/mqtt.rs starts its own Mosquitto processes (never the system service).
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# tests/console.rs drives the web console in Chromium through chromedriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# tests/postgres.rs and the cloud's store tests start their own PostgreSQL clusters.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
# tests/postgres.rs puts two control planes behind HAProxy (its own process, never the service).
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    # Installing Mosquitto may start its service where there is an init system; the tests
    # need none (they start their own on free ports), so stop it if it runs.
    if [[ " ${need[*]} " == *" mosquitto "* ]] && command -v service >/dev/null; then
      service mosquitto stop >/dev/null 2>&1 || true
    fi
    for service in postgresql haproxy; do
      if [[ " ${need[*]} " == *" $service "* ]] && command -v service >/dev/null; then
        service "$service" stop >/dev/null 2>&1 || true
      fi
    done
  else
    echo "the tests need: ${need[*]} (install them, or run this script as root on Debian/Ubuntu)" >&2
    exit 1
  fi
fi

# tests/objects.rs starts its own S3 server: s3s-fs from crates.io, built once (about 4-6 min of
# CPU) and cached outside the tree. 0.14.1 is the last release that builds with Rust 1.95.
tools="${EDGEFN_TOOLS:-$HOME/.cache/edgefn-tools}"
export PATH="$tools/bin:$PATH"
if ! command -v s3s-fs >/dev/null; then
  cargo install --locked --root "$tools" --version 0.14.1 --features binary s3s-fs
fi

# Every process of the run is marked, and the tests' files are in a folder of the run's own, so
# that the check at the end finds whatever the suite left running (scripts/leftovers.sh).
export EDGEFN_TEST_RUN="$$-$(date +%s%N)"
TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/edgefn-test.XXXXXX")"
export TMPDIR
# Like /tmp itself: functions run as another user reach their bundles in it.
chmod 0755 "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
# The check sees a process of the run that is left (one planted here).
sleep 600 &
planted=$!
if scripts/leftovers.sh 0 2>/dev/null; then
  echo "scripts/leftovers.sh missed a process of the run (pid $planted)" >&2
  exit 1
fi
kill "$planted"
wait "$planted" 2>/dev/null || true

# The end-to-end tests run the real binaries; `cargo test` builds only those of packages with
# integration tests, so build them all first.
cargo build --workspace --bins
cargo test --workspace
# No process of the run outlives it: no agent, cloud, Mosquitto, function or container.
scripts/leftovers.sh
