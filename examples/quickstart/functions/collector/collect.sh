#!/bin/sh
# collector: a continuous function (a daemon edgefn keeps running and restarts if it exits).
# It samples a (simulated) sensor every $INTERVAL seconds and logs the reading.
interval="${INTERVAL:-5}"
echo "collector started, sampling every ${interval}s"
while true; do
  reading=$(( $(date +%s) % 30 + 15 ))
  echo "temperature=${reading}"
  sleep "$interval"
done
