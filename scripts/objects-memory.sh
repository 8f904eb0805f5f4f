#!/usr/bin/env bash
# The control plane's memory (RSS) while a 200 MB bundle goes up to and comes down from an S3
# server (s3s-fs) through it: downloads stream from the object store, uploads are held once in
# the request (and copied once more into the S3 request).
#
#   cargo build -p edgefn-cloud && scripts/objects-memory.sh           # --objects s3://…
#   cargo build -p edgefn-cloud && OBJECTS=folder scripts/objects-memory.sh   # DATA/bundles
set -euo pipefail
rc=1
cd "$(dirname "$0")/.."
bin="${EDGEFN_BIN:-target/debug}/edgefn-cloud"
s3s="$(command -v s3s-fs || echo "$HOME/.cache/edgefn-tools/bin/s3s-fs")"
t="$(mktemp -d)"
mkdir -p "$t/s3/edgefn-bundles"
"$s3s" --host 127.0.0.1 --port 28731 --access-key measure --secret-key measure-secret "$t/s3" >/dev/null 2>&1 &
s3=$!
objects=(--objects s3://edgefn-bundles/measure)
[ "${OBJECTS:-s3}" = folder ] && objects=()
sleep 1
AWS_ACCESS_KEY_ID=measure AWS_SECRET_ACCESS_KEY=measure-secret AWS_ENDPOINT_URL=http://127.0.0.1:28731 \
  AWS_ALLOW_HTTP=true "$bin" --data "$t/data" --listen 127.0.0.1:28732 --mqtt-listen none \
  --admin-token-file "$t/admin.token" "${objects[@]}" --log-level warn >"$t/out" 2>&1 &
cloud=$!
trap 'kill $cloud $s3 2>/dev/null; wait $cloud $s3 2>/dev/null || true; rm -rf "$t"; exit $rc' EXIT
for _ in $(seq 100); do [ -s "$t/admin.token" ] && break; sleep 0.1; done
token="$(cat "$t/admin.token")"
head -c 200000000 /dev/urandom >"$t/blob"
digest="$(sha256sum "$t/blob" | cut -d' ' -f1)"
rss() { awk '/VmRSS/{print $2}' "/proc/$cloud/status"; }
sample() { local p=0 r; while :; do r=$(rss); [ "$r" -gt "$p" ] && p=$r && echo "$p" >"$t/peak"; sleep 0.05; done; }
echo "idle RSS: $(rss) kB"
rss >"$t/peak"; sample & sampler=$!
curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $token" --data-binary @"$t/blob" \
  "http://127.0.0.1:28732/v1/bundles/$digest"
kill $sampler; wait $sampler 2>/dev/null || true
echo "peak RSS during the 200 MB upload: $(cat "$t/peak") kB"
rss >"$t/peak"; sample & sampler=$!
curl -sf -o "$t/got" -H "Authorization: Bearer $token" "http://127.0.0.1:28732/v1/bundles/$digest"
kill $sampler; wait $sampler 2>/dev/null || true
cmp -s "$t/got" "$t/blob"
echo "peak RSS during the 200 MB download: $(cat "$t/peak") kB"
rc=0
