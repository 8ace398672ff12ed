#!/bin/sh
# memroute's benchmark: memroute vs nutcracker (twemproxy) vs direct memcached, on loopback.
# Builds memroute in release mode (cargo bench does), then runs everything; see bench/README.md.
# Usage: bench/run.sh [--unpinned] [--memory | --no-memory] [--rounds N] [--duration S] ...
#        bench/run.sh --help
set -eu
cd "$(dirname "$0")/.."
# 10,000 idle client connections need more than the usual 1024 open files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MEMROUTE_BENCH_COMMAND="bench/run.sh $*"
export MEMROUTE_BENCH_COMMAND
exec cargo bench --bench loadgen -- "$@"
