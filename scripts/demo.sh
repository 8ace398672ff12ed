#!/usr/bin/env bash
# Runs memroute in the foreground in front of local memcacheds, as in deploy/demo/demo.toml:
#   pool "new": 127.0.0.1:21211-21213, pool "old": 127.0.0.1:21221-21222,
#   clients on 127.0.0.1:11311, metrics on http://127.0.0.1:9100/metrics.
# Ctrl-C stops memroute; the memcacheds started here are stopped on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in 21211 21212 21213 21221 21222; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo.sh: port $port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
  memcached -u "$(id -un)" -U 0 -l 127.0.0.1 -p "$port" -m 64 &
  pids+=("$!")
done

# Wait (bounded) until every memcached accepts.
for port in 21211 21212 21213 21221 21222; do
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

cat <<'HINT'
memroute is starting on 127.0.0.1:11311 (metrics: http://127.0.0.1:9100/metrics). Try:
  printf 'set a 0 0 1\r\nx\r\nget a\r\n' | nc 127.0.0.1 11311
HINT

target/release/memroute --config deploy/demo/demo.toml
