#!/usr/bin/env bash
# Signaling load bench: builds release, then runs the idle-connection and relay benches
# and prints their results (the figures in BENCHMARKS.md). sotto-bench starts the server
# itself under `taskset -c 0`; this script runs sotto-bench under `taskset -c 1`.
#
#   bash benches/signaling.sh          # everything (about 3 minutes after the build)
#   bash benches/signaling.sh idle     # only the idle-connection runs
#   bash benches/signaling.sh relay    # only the relay runs
#
# Environment: CONNECTIONS (10000), KNEE (as many as the open-files limit allows; 0
# skips), RATE (5000), DURATION (10s), SERVER_BIN (target/release/sotto-signaling),
# JSON=1 to print each report as a JSON line too.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case "$what" in all | idle | relay) ;; *)
  echo "usage: $0 [all|idle|relay]" >&2
  exit 2
  ;;
esac

# Each loopback connection costs a descriptor in the server and one in the bench; the
# server inherits this limit from the bench.
hard=$(ulimit -Hn)
if [ "$hard" = "unlimited" ] || [ "$hard" -gt 1048576 ]; then hard=1048576; fi
ulimit -n "$hard"

connections=${CONNECTIONS:-10000}
knee=${KNEE:-$((hard - 100))}
rate=${RATE:-5000}
duration=${DURATION:-10s}
server_bin=${SERVER_BIN:-target/release/sotto-signaling}
json=()
if [ "${JSON:-0}" = "1" ]; then json=(--json); fi

if [ "$((connections + 100))" -gt "$hard" ]; then
  echo "warning: ulimit -Hn is $hard; $connections connections need more descriptors" >&2
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: fewer than 2 CPUs; the server and the bench will share one" >&2
fi

cargo build --release -p sotto-signaling -p sotto-bench

echo "== machine"
echo "cpu:    $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), $(nproc) CPUs"
echo "kernel: $(uname -r)"
echo "date:   $(date -u +%Y-%m-%dT%H:%MZ)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (uncommitted changes)')"
echo "nofile: $(ulimit -n)"

run() {
  echo
  echo "== sotto-bench $*"
  taskset -c 1 target/release/sotto-bench "$@" \
    --server-bin "$server_bin" --server-cpu 0 "${json[@]}"
}

if [ "$what" != relay ]; then
  # The product's client, then bare sockets (lighter on the bench's core, so opening is
  # bound by the server), then as many as the descriptor limit allows.
  run signaling-idle --connections "$connections" --client engine
  run signaling-idle --connections "$connections" --client raw
  if [ "$knee" -gt "$connections" ]; then
    run signaling-idle --connections "$knee" --client raw \
      --checkpoints "$((knee / 4)),$((knee / 2)),$((3 * knee / 4))"
  fi
fi
if [ "$what" != idle ]; then
  run signaling-relay --rate "$rate" --duration "$duration"
  run signaling-relay --rate "$rate" --duration "$duration" \
    --idle-connections "$connections" --client raw
fi
