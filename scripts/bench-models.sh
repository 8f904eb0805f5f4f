#!/usr/bin/env bash
# Benchmark of models (issue 17): a python function with a 50 MiB model attached (random
# bytes: incompressible, like real weights), on one real agent through a real control plane.
# Measures, for the first apply, a code-only change and a model change: bytes uploaded (the
# CLI's report, checked against the cloud's counter), bytes downloaded by the device (the
# cloud's `edgefn_bundle_bytes_served_total`), and the time from `edgefn apply` to the agent
# running the new release (its /healthz). The target: a code-only change moves the code
# bundle only.
#
#   scripts/bench-models.sh                 # release binaries (built first)
#   PROFILE=debug scripts/bench-models.sh   # the debug binaries already built
#   MODEL_MB=200 scripts/bench-models.sh    # another model size
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_MB=${MODEL_MB:-50}
. scripts/lib/bench.sh
bench_init models
bench_start_cloud

# The project: one python function reading one model, on one device.
p="$work/project"
mkdir -p "$p/functions/classify" "$p/models"
head -c "$((MODEL_MB << 20))" /dev/urandom >"$p/models/weights.bin"
cat >"$p/edgefn.yaml" <<'EOF'
apiVersion: edgefn/v1
project: bench-models
models:
  - name: weights
    path: models/weights.bin
functions:
  classify:
    path: functions/classify
    runtime: python3
    handler: main.handle
    memory: 256Mi
    models: [weights]
devices:
  gw-01: { platform: linux/amd64 }
bindings:
  - { function: classify, devices: { names: [gw-01] }, triggers: [ { topic: images } ] }
EOF
cat >"$p/functions/classify/main.py" <<'EOF'
import os

SIZE = os.path.getsize(os.environ["EDGEFN_MODEL_WEIGHTS"])

def handle(event, context):
    return {"size": SIZE, "v": 1}
EOF
printf 'agent.yaml\n' >"$p/.gitignore"
cd "$p"
bench_git_init
bench_start_agent gw-01

read -r first_up first_down first_s < <(measure)
curl -fsS -X POST -H 'Content-Type: application/json' \
  "http://$local_addr/v1/publish?topic=images&wait=true" -d '{}' >"$work/answer.json"
grep -q "\"size\":$((MODEL_MB << 20))" "$work/answer.json" || { cat "$work/answer.json" >&2; exit 1; }

sed -i 's/"v": 1/"v": 2/' functions/classify/main.py
commit "code only"
read -r code_up code_down code_s < <(measure)

head -c 1024 /dev/urandom | dd of=models/weights.bin bs=1024 seek=0 conv=notrunc status=none
commit "model change"
read -r model_up model_down model_s < <(measure)

printf '\nedgefn models, python function with a %s MiB model (%s binaries)\n' "$MODEL_MB" "$PROFILE"
bench_report "model change" "$model_up" "$model_down" "$model_s"
