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
PROFILE=${PROFILE:-release}
MODEL_MB=${MODEL_MB:-50}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p edgefn -p edgefn-cloud -p edgefn-agent
else
  cargo build -q -p edgefn -p edgefn-cloud -p edgefn-agent
fi
BIN="$PWD/target/$PROFILE"
work="$(mktemp -d "${TMPDIR:-/tmp}/edgefn-bench-models.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 1" INT TERM
export XDG_CACHE_HOME="$work/cache"
now() { date +%s.%N; }
secs() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# The control plane.
mkdir -p "$work/cloud"
"$BIN/edgefn-cloud" --data "$work/cloud" --listen 127.0.0.1:0 \
  --admin-token-file "$work/cloud/admin.token" --log-level warn >"$work/cloud.out" 2>&1 &
pids+=($!)
until grep -q "listening on" "$work/cloud.out"; do sleep 0.1; done
EDGEFN_CLOUD="$(sed -n 's/^edgefn-cloud listening on //p' "$work/cloud.out")"
EDGEFN_TOKEN="$(cat "$work/cloud/admin.token")"
export EDGEFN_CLOUD EDGEFN_TOKEN
metric() {
  curl -fsS -H "Authorization: Bearer $EDGEFN_TOKEN" "$EDGEFN_CLOUD/metrics" |
    sed -n "s/^$1 //p"
}

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
git init -q && git add -A && git -c user.name=bench -c user.email=bench@example.com commit -qm v1
commit() { git add -A && git -c user.name=bench -c user.email=bench@example.com commit -qm "$1"; }

"$BIN/edgefn" device add gw-01 --out agent.yaml >/dev/null
printf 'healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n' >>agent.yaml
"$BIN/edgefn-agent" --config agent.yaml --data "$work/agent" --sandbox process \
  --local-listen 127.0.0.1:0 --local-mqtt 127.0.0.1:0 --log-level warn >"$work/agent.out" 2>&1 &
pids+=($!)
until grep -q "listening on http://" "$work/agent.out"; do sleep 0.1; done
local_addr="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/agent.out" | head -1)"
running() { curl -fsS "http://$local_addr/healthz" | json 'd.get("running") or ""'; }
desired() {
  curl -fsS -H "Authorization: Bearer $EDGEFN_TOKEN" "$EDGEFN_CLOUD/v1/status" |
    json 'd["devices"][0]["desiredDigest"]'
}

# One apply, measured: prints "uploaded downloaded seconds".
measure() {
  local served_before received_before t0 out up want t1
  served_before=$(metric edgefn_bundle_bytes_served_total)
  received_before=$(metric edgefn_bundle_bytes_received_total)
  t0=$(now)
  out=$("$BIN/edgefn" apply --output json)
  up=$(echo "$out" | json 'd["uploadedBytes"]')
  want=$(desired)
  local deadline=$((SECONDS + 300))
  until [ "$(running)" = "$want" ]; do
    if ((SECONDS > deadline)); then
      echo "the agent did not run the new release in 300 s:" >&2
      curl -fsS -H "Authorization: Bearer $EDGEFN_TOKEN" "$EDGEFN_CLOUD/v1/status" >&2
      exit 1
    fi
    sleep 0.05
  done
  t1=$(now)
  [ "$((received_before + up))" = "$(metric edgefn_bundle_bytes_received_total)" ] ||
    { echo "the CLI's upload report and the cloud's counter disagree" >&2; exit 1; }
  echo "$up $(($(metric edgefn_bundle_bytes_served_total) - served_before)) $(secs "$t0" "$t1")"
}

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
printf '  %-20s %14s %16s %18s\n' "apply" "bytes uploaded" "bytes downloaded" "apply -> running"
printf '  %-20s %14s %16s %17ss\n' "first" "$first_up" "$first_down" "$first_s"
printf '  %-20s %14s %16s %17ss\n' "code-only change" "$code_up" "$code_down" "$code_s"
printf '  %-20s %14s %16s %17ss\n' "model change" "$model_up" "$model_down" "$model_s"
if [ "$code_up" -ge 10240 ] || [ "$code_down" -ge 10240 ]; then
  echo "a code-only change moved 10 KiB or more" >&2
  exit 1
fi
