#!/usr/bin/env bash
# Benchmark of dependency layers (issue 14): a python function that imports numpy, on one real
# agent through a real control plane. Measures, for a code-only change and for a dependency
# change: bytes uploaded (the CLI's report, checked against the cloud's counter), bytes
# downloaded by the device (the cloud's `edgefn_bundle_bytes_served_total`), and the time from
# `edgefn apply` to the agent running the new release (its /healthz). Also `edgefn package`
# with a cold and a warm layer cache. Needs python3 with pip, and PyPI.
#
#   scripts/bench-layers.sh                 # release binaries (built first)
#   PROFILE=debug scripts/bench-layers.sh   # the debug binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench.sh
bench_init layers
bench_start_cloud

# The project: one python function with numpy, on one device.
p="$work/project"
mkdir -p "$p/functions/stats"
cat >"$p/edgefn.yaml" <<'EOF'
apiVersion: edgefn/v1
project: bench-layers
functions:
  stats:
    path: functions/stats
    runtime: python3
    handler: main.handle
    # numpy's OpenBLAS reserves address space per thread: one thread, and room for it.
    memory: 512Mi
    env: { OPENBLAS_NUM_THREADS: "1" }
devices:
  gw-01: { platform: linux/amd64 }
bindings:
  - { function: stats, devices: { names: [gw-01] }, triggers: [ { topic: numbers } ] }
EOF
cat >"$p/functions/stats/main.py" <<'EOF'
import numpy

def handle(event, context):
    return {"mean": float(numpy.mean(event["payload"])), "numpy": numpy.__version__, "v": 1}
EOF
echo "numpy==1.26.4" >"$p/functions/stats/requirements.txt"
printf 'agent.yaml\n' >"$p/.gitignore"
cd "$p"
bench_git_init

t0=$(now); "$BIN/edgefn" package >/dev/null; t1=$(now)
cold=$(secs "$t0" "$t1")
t0=$(now); "$BIN/edgefn" package >/dev/null; t1=$(now)
warm=$(secs "$t0" "$t1")
layer_bytes=$("$BIN/edgefn" package --output json | json 'sum(e["bytes"] for e in d if "layer" in e)')

bench_start_agent gw-01

read -r first_up first_down first_s < <(measure)
curl -fsS -X POST -H 'Content-Type: application/json' \
  "http://$local_addr/v1/publish?topic=numbers&wait=true" -d '[1, 2, 3, 6]' >"$work/answer.json"
grep -q '"mean":3.0' "$work/answer.json" || { cat "$work/answer.json" >&2; exit 1; }

sed -i 's/"v": 1/"v": 2/' functions/stats/main.py
commit "code only"
read -r code_up code_down code_s < <(measure)

echo "numpy==1.26.3" >functions/stats/requirements.txt
commit "numpy 1.26.3"
read -r dep_up dep_down dep_s < <(measure)

printf '\nedgefn dependency layers, python function with numpy (%s binaries)\n' "$PROFILE"
printf '  edgefn package, cold cache (pip downloads numpy)   %6ss\n' "$cold"
printf '  edgefn package, warm cache                         %6ss\n' "$warm"
printf '  numpy layer (linux/amd64)                          %9s bytes\n' "$layer_bytes"
bench_report "dependency change" "$dep_up" "$dep_down" "$dep_s"
