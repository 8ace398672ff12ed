#!/usr/bin/env bash
# Installs the test dependencies, then runs every test in release mode. The exit code is cargo's.
# Each test starts its own memcached/memroute processes on free loopback ports, so tests run in
# parallel; two threads keep the process count modest on small CI machines.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
export PATH="$PATH:/usr/sbin:/sbin"   # nutcracker
exec cargo test --release --lib --bins --tests --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
