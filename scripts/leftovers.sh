#!/usr/bin/env bash
# Lists the processes a test run left behind, and fails if there are any.
#
# A process belongs to the run when its environment holds EDGEFN_TEST_RUN=<the run's id>
# (everything the test binaries start without clearing the environment), when its command line,
# working folder, root or program is inside the run's temporary folder (agents, clouds,
# Mosquitto, function processes and containers: the tests put all their files there), or when its
# program is one of this checkout's build outputs (target/). Processes still ending are given
# GRACE seconds (default 10) to go.
#
# Usage: EDGEFN_TEST_RUN=<id> TMPDIR=<the run's folder> scripts/leftovers.sh [GRACE]
set -uo pipefail

run="${EDGEFN_TEST_RUN:?EDGEFN_TEST_RUN names the test run}"
tmp="${TMPDIR:?TMPDIR is the temporary folder of the test run}"
tmp="${tmp%/}"
target="$(cd "$(dirname "$0")/.." && pwd)/target/"
grace="${1:-10}"

# Field N of /proc/PID/stat, counting from the state (3) after the command name, which may hold
# spaces and parentheses.
stat_field() {
  local rest
  rest=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$rest" ] || return 1
  echo "$rest" | cut -d' ' -f$(($2 - 2))
}

# This script and the shells that started it are not leftovers.
ancestors=" "
p=$$
while [ -n "$p" ] && [ "$p" != 0 ]; do
  ancestors+="$p "
  p=$(stat_field "$p" 4)
done

ours() {
  local pid=$1 state
  case "$ancestors" in *" $pid "*) return 1 ;; esac
  state=$(stat_field "$pid" 3) || return 1
  # Zombies are already dead; their parents reap them.
  [ -n "$state" ] && [ "$state" != Z ] || return 1
  # This script's own subshells (command substitutions) are not leftovers either.
  [ "$(stat_field "$pid" 4)" != "$$" ] || return 1
  if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "EDGEFN_TEST_RUN=$run"; then
    return 0
  fi
  if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$tmp/"; then
    return 0
  fi
  local link
  for link in cwd root exe; do
    case "$(readlink "/proc/$pid/$link" 2>/dev/null)/" in
      "$tmp"/*) return 0 ;;
    esac
  done
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
    "$target"*) return 0 ;;
  esac
  return 1
}

left() {
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    if ours "$pid"; then echo "$pid"; fi
  done
}

deadline=$((SECONDS + grace))
while :; do
  pids=$(left)
  [ -z "$pids" ] && exit 0
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 0.2
done
echo "the test run left these processes running:" >&2
for pid in $pids; do
  ours "$pid" || continue
  printf '  %s (parent %s, in %s): %s\n' "$pid" \
    "$(stat_field "$pid" 4)" \
    "$(readlink "/proc/$pid/cwd" 2>/dev/null)" \
    "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-200)" >&2
done
exit 1
