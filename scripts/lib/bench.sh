# shellcheck shell=bash
# What the apply benchmarks share (scripts/bench-layers.sh, scripts/bench-models.sh): build the
# binaries, a work folder removed at exit with every process started, a real control plane and
# one real agent on port 0, their byte counters, and one measured `edgefn apply`.
#
# Sourced from the repository's root, after `set -euo pipefail`:
#
#   cd "$(dirname "$0")/.."
#   . scripts/lib/bench.sh
#   bench_init models              # PROFILE=release|debug; sets BIN, work; cleanup at exit
#   bench_start_cloud              # EDGEFN_CLOUD, EDGEFN_TOKEN exported; metric NAME
#   ... write the project in "$work/project", cd there, bench_git_init ...
#   bench_start_agent gw-01        # registers the device, starts its agent; local_addr
#   read -r up down secs < <(measure)

now() { date +%s.%N; }
secs() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# Builds the binaries of $PROFILE (default release), and makes the work folder
# $TMPDIR/edgefn-bench-NAME.XXXXXX, removed at exit after every process in `pids` is stopped.
# The layer cache is inside it: every run starts cold.
bench_init() {
  PROFILE=${PROFILE:-release}
  if [ "$PROFILE" = release ]; then
    cargo build --release -q -p edgefn -p edgefn-cloud -p edgefn-agent
  else
    cargo build -q -p edgefn -p edgefn-cloud -p edgefn-agent
  fi
  BIN="$PWD/target/$PROFILE"
  work="$(mktemp -d "${TMPDIR:-/tmp}/edgefn-bench-$1.XXXXXX")"
  pids=()
  trap bench_cleanup EXIT
  trap "exit 1" INT TERM
  export XDG_CACHE_HOME="$work/cache"
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}

# Starts the control plane in "$work/cloud" on a free port; exports EDGEFN_CLOUD and
# EDGEFN_TOKEN for the CLI.
bench_start_cloud() {
  mkdir -p "$work/cloud"
  "$BIN/edgefn-cloud" --data "$work/cloud" --listen 127.0.0.1:0 \
    --admin-token-file "$work/cloud/admin.token" --log-level warn >"$work/cloud.out" 2>&1 &
  pids+=($!)
  until grep -q "listening on" "$work/cloud.out"; do sleep 0.1; done
  EDGEFN_CLOUD="$(sed -n 's/^edgefn-cloud listening on //p' "$work/cloud.out")"
  EDGEFN_TOKEN="$(cat "$work/cloud/admin.token")"
  export EDGEFN_CLOUD EDGEFN_TOKEN
}

# The control plane's counter NAME, from /metrics.
metric() {
  curl -fsS -H "Authorization: Bearer $EDGEFN_TOKEN" "$EDGEFN_CLOUD/metrics" |
    sed -n "s/^$1 //p"
}

# In the project folder: a git repository with everything committed ("v1").
bench_git_init() {
  git init -q && git add -A && git -c user.name=bench -c user.email=bench@example.com commit -qm v1
}
commit() { git add -A && git -c user.name=bench -c user.email=bench@example.com commit -qm "$1"; }

# In the project folder: registers device $1 (its configuration in agent.yaml, git-ignored by
# the caller) and starts its agent (process sandbox) in "$work/agent"; sets local_addr.
bench_start_agent() {
  "$BIN/edgefn" device add "$1" --out agent.yaml >/dev/null
  printf 'healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n' >>agent.yaml
  "$BIN/edgefn-agent" --config agent.yaml --data "$work/agent" --sandbox process \
    --local-listen 127.0.0.1:0 --local-mqtt 127.0.0.1:0 --log-level warn >"$work/agent.out" 2>&1 &
  pids+=($!)
  until grep -q "listening on http://" "$work/agent.out"; do sleep 0.1; done
  local_addr="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/agent.out" | head -1)"
}

# The digest the agent runs (its /healthz), and the one the control plane wants of it.
running() { curl -fsS "http://$local_addr/healthz" | json 'd.get("running") or ""'; }
desired() {
  curl -fsS -H "Authorization: Bearer $EDGEFN_TOKEN" "$EDGEFN_CLOUD/v1/status" |
    json 'd["devices"][0]["desiredDigest"]'
}

# One apply, measured: prints "uploaded downloaded seconds" (bytes the CLI uploaded, checked
# against the cloud's counter; bytes the cloud served the device; apply until the agent runs
# the new release).
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

# Prints the table of the three measured applies (first, code-only, $1 = the third's name with
# its three figures), and fails when the code-only change moved 10 KiB or more.
bench_report() {
  printf '  %-20s %14s %16s %18s\n' "apply" "bytes uploaded" "bytes downloaded" "apply -> running"
  printf '  %-20s %14s %16s %17ss\n' "first" "$first_up" "$first_down" "$first_s"
  printf '  %-20s %14s %16s %17ss\n' "code-only change" "$code_up" "$code_down" "$code_s"
  printf '  %-20s %14s %16s %17ss\n' "$1" "$2" "$3" "$4"
  if [ "$code_up" -ge 10240 ] || [ "$code_down" -ge 10240 ]; then
    echo "a code-only change moved 10 KiB or more" >&2
    exit 1
  fi
}
