#!/bin/bash
# memroute with an [admin] port scraped every second, for the metrics-cost A/B:
#   bench/run.sh --workloads ab --no-memory --memroute-b bench/memroute-scraped.sh
set -eu
cfg=""; args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--config" ]; then cfg=$2; shift 2; else args+=("$1"); shift; fi
done
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
new=$(mktemp /tmp/scraped.XXXX.toml)
{ printf '[admin]\naddress = "127.0.0.1:%s"\n\n' "$port"; cat "$cfg"; } > "$new"
me=$$
( while kill -0 "$me" 2>/dev/null; do sleep 1; taskset -c 1 curl -s "127.0.0.1:$port/metrics" > /dev/null || true; done ) &
exec "$(dirname "$0")/../target/release/memroute" --config "$new" "${args[@]}"
