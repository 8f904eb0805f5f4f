#!/usr/bin/env bash
# Benchmark of the inference example (examples/vision, issue 17): on one real agent through a
# real control plane, with the embedded MQTT broker carrying the answers up,
#
#   - model load: the agent starts one instance when the release starts, and the handler logs
#     how long importing numpy and onnxruntime (from the layer) and creating the
#     InferenceSession took; then the first invocation after the start (which finds the model
#     loaded);
#   - the latency of one inference on the warm instance, p50 and p99 over N requests, as a
#     device's client sees it: HTTP POST to the agent's local endpoint
#     (`/v1/publish?topic=images/cam-1&wait=true`, one kept-alive connection), which runs the
#     handler (JSON in, onnxruntime, the answer published upstream) and returns its answer;
#
# next to a bare onnxruntime loop in python on the same machine in the same run (the same
# layer on PYTHONPATH, the same model file and session options, the same image): import +
# session creation, and session.run p50/p99. The ratios are edgefn's overhead.
#
#   scripts/bench-vision.sh                   # release binaries (built first)
#   CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
#     scripts/bench-vision.sh                 # the same, with a quicker release build
#   PROFILE=debug scripts/bench-vision.sh     # the debug binaries already built
#   N=5000 scripts/bench-vision.sh            # more warm requests (default 1000)
#
# Needs python3 with pip (the layer is installed from PyPI on the first run, then cached).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
N=${N:-1000}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p edgefn -p edgefn-cloud -p edgefn-agent
else
  cargo build -q -p edgefn -p edgefn-cloud -p edgefn-agent
fi
BIN="$PWD/target/$PROFILE"
EXAMPLE="$PWD/examples/vision"
work="$(mktemp -d "${TMPDIR:-/tmp}/edgefn-bench-vision.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 1" INT TERM
# The layer cache outlives the run (pip's download of onnxruntime is not what is measured).
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}"
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# The control plane, with its MQTT broker.
mkdir -p "$work/cloud"
"$BIN/edgefn-cloud" --data "$work/cloud" --listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 \
  --admin-token-file "$work/cloud/admin.token" --log-level warn >"$work/cloud.out" 2>&1 &
pids+=($!)
until grep -q "listening on" "$work/cloud.out"; do sleep 0.1; done
EDGEFN_CLOUD="$(sed -n 's/^edgefn-cloud listening on //p' "$work/cloud.out")"
EDGEFN_TOKEN="$(cat "$work/cloud/admin.token")"
MQTT="$(sed -n 's/^edgefn-cloud MQTT broker on //p' "$work/cloud.out")"
export EDGEFN_CLOUD EDGEFN_TOKEN

# The example project, as checked in.
p="$work/project"
cp -r "$EXAMPLE" "$p"
rm -rf "$p/.venv"
cd "$p"
git init -q && git add -A && git -c user.name=bench -c user.email=bench@example.com commit -qm vision
"$BIN/edgefn" device add gw-01 --out agent.yaml >/dev/null
sed -i '/^mqtt:/d' agent.yaml
printf 'mqtt: %s\nhealthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n' "$MQTT" >>agent.yaml
applied=$("$BIN/edgefn" apply --output json)
layer=$(echo "$applied" | json 'd["layers"]["classify"]["linux/amd64"]')
"$BIN/edgefn-agent" --config agent.yaml --data "$work/agent" --sandbox process \
  --local-listen 127.0.0.1:0 --local-mqtt 127.0.0.1:0 --log-level warn >"$work/agent.out" 2>&1 &
pids+=($!)
until grep -q "listening on http://" "$work/agent.out"; do sleep 0.1; done
local_addr="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/agent.out" | head -1)"
want=$(curl -fsS -H "Authorization: Bearer $EDGEFN_TOKEN" "$EDGEFN_CLOUD/v1/status" |
  json 'd["devices"][0]["desiredDigest"]')
deadline=$((SECONDS + 300))
until [ "$(curl -fsS "http://$local_addr/healthz" | json 'd.get("running") or ""')" = "$want" ]; do
  ((SECONDS < deadline)) || { echo "the agent did not run the release in 300 s" >&2; exit 1; }
  sleep 0.1
done
[ -d "$work/agent/bundles/$layer" ] || { echo "layer $layer not on the device" >&2; exit 1; }

# The image: the held-out 0 of the example's first test case.
image=$(python3 - "$EXAMPLE/functions/classify/tests/digit-0.yaml" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
rows = re.findall(r"^\s+(\[[0-9, ]+\])", text, re.M)
print(json.dumps({"pixels": [json.loads(r) for r in rows]}))
EOF
)

# edgefn: the first invocation, then N warm ones, through the local endpoint.
python3 - "$local_addr" "$N" "$image" >"$work/edgefn.json" <<'EOF'
import http.client, json, sys, time
addr, n, image = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=60)
def call():
    conn.request("POST", "/v1/publish?topic=images/cam-1&wait=true", body=image,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    d = json.loads(body)["deliveries"][0]
    if r.status != 200 or d.get("result", {}).get("class") != 0:
        sys.exit(f"unexpected answer: {r.status} {body!r}")
t = time.perf_counter(); call(); first = time.perf_counter() - t
for _ in range(20):
    call()
lat = []
for _ in range(n):
    t = time.perf_counter(); call(); lat.append(time.perf_counter() - t)
lat.sort()
print(json.dumps({"first": first, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}))
EOF
loaded=$(curl -fsS "http://$local_addr/v1/logs?tail=1000" |
  grep -o 'model loaded in [0-9.]* ms (numpy and onnxruntime imported in [0-9.]* ms' | head -1)
load_ms=$(echo "$loaded" | sed 's/model loaded in \([0-9.]*\) ms.*/\1/')
import_ms=$(echo "$loaded" | sed 's/.*imported in \([0-9.]*\) ms/\1/')
# The instances started: one, for all N+21 invocations (the model stayed loaded).
loads=$(curl -fsS "http://$local_addr/v1/logs?tail=1000" | grep -o 'model loaded in' | wc -l)

# Bare onnxruntime in python: the same layer, model, options and image.
PYTHONPATH="$work/agent/bundles/$layer" python3 - "$EXAMPLE/models/digits.onnx" "$N" "$image" \
  >"$work/bare.json" <<'EOF'
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import onnxruntime
t1 = time.perf_counter()
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = onnxruntime.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
n = int(sys.argv[2])
x = np.asarray(json.loads(sys.argv[3])["pixels"], dtype=np.float32).reshape(1, 64)
name = session.get_inputs()[0].name
assert int(session.run(None, {name: x})[0][0]) == 0
for _ in range(20):
    session.run(None, {name: x})
lat = []
for _ in range(n):
    t = time.perf_counter(); session.run(None, {name: x}); lat.append(time.perf_counter() - t)
lat.sort()
print(json.dumps({"import": t1 - t0, "load": t2 - t1,
                  "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}))
EOF

python3 - "$work/edgefn.json" "$work/bare.json" "$load_ms" "$loads" "$N" "$PROFILE" "$import_ms" <<'EOF'
import json, sys
e, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
load_ms, loads, n, profile = float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
import_ms = float(sys.argv[7])
ms = lambda s: s * 1000
print(f"\nedgefn vision example: digits.onnx on one agent ({profile} binaries), {n} warm requests")
print(f"  {'':34} {'edgefn':>10} {'bare python':>12} {'ratio':>7}")
print(f"  {'import numpy + onnxruntime':34} {import_ms:>8.1f}ms {ms(b['import']):>10.1f}ms "
      f"{import_ms / ms(b['import']):>6.1f}x")
print(f"  {'model load (InferenceSession)':34} {load_ms:>8.1f}ms {ms(b['load']):>10.1f}ms "
      f"{load_ms / ms(b['load']):>6.1f}x")
print(f"  {'first invocation after start':34} {ms(e['first']):>8.1f}ms {'':>12}")
print(f"  {'inference p50':34} {ms(e['p50']):>8.3f}ms {ms(b['p50']):>10.3f}ms "
      f"{e['p50'] / b['p50']:>6.1f}x")
print(f"  {'inference p99':34} {ms(e['p99']):>8.3f}ms {ms(b['p99']):>10.3f}ms "
      f"{e['p99'] / b['p99']:>6.1f}x")
print(f"  model loads in the warm instance's log: {loads}")
if loads != 1:
    sys.exit("the warm instance loaded the model more than once")
EOF
