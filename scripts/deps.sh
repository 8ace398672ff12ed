#!/usr/bin/env bash
# Installs what the tests and the demo run against, if missing (idempotent; root on Debian):
#   memcached    the backends (Debian 12: 1.6.18)
#   nutcracker   twemproxy 0.5, the reference for ketama placement
#   memccapable  libmemcached's protocol conformance tool (libmemcached-tools)
#   promtool     validates the /metrics output (prometheus)
#   nc, curl     the README's demo session (netcat-openbsd, curl)
#   pymemcache   a real Python TLS client for tests/tls.rs (pip, else python3-pymemcache)
#   pytest + pymemcache's own integration tests (its sdist from PyPI, tests included), run
#                through memroute by tests/pymemcache_integration.rs
#   meta-memcache  a meta-protocol client (PyPI) for tests/meta_client.rs
set -euo pipefail

declare -A package_of=(
  [memcached]=memcached
  [nutcracker]=nutcracker
  [memccapable]=libmemcached-tools
  [promtool]=prometheus
  [nc]=netcat-openbsd
  [curl]=curl
)

# tests/meta_client.rs drives memroute with RevenueCat's meta-protocol client from PyPI.
if ! python3 -c 'import meta_memcache' >/dev/null 2>&1; then
  echo "deps.sh: installing meta-memcache" >&2
  python3 -m pip install -q 'meta-memcache==4.3.0' 2>/dev/null ||
    python3 -m pip install -q --break-system-packages 'meta-memcache==4.3.0'
fi

# nutcracker lives in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done

# pymemcache: a real TLS client for tests/tls.rs (its `tls_context`). pip first; a Debian
# python3 refuses pip installs into the system (PEP 668) unless told, and has the apt package.
if ! python3 -c 'import pymemcache' >/dev/null 2>&1; then
  echo "deps.sh: installing pymemcache" >&2
  python3 -m pip install -q pymemcache 2>/dev/null ||
    python3 -m pip install -q --break-system-packages pymemcache 2>/dev/null ||
    missing+=(python3-pymemcache)
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi

if ((${#missing[@]} > 0)); then
  echo "deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

  # The memcached and prometheus packages start system services; the tests start their own.
  for service in memcached prometheus nutcracker; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
      "${sudo[@]}" systemctl stop "$service" || true
    fi
  done
fi

# pymemcache's integration tests, from its source distribution (the wheel has no tests), in
# the directory tests/pymemcache_integration.rs looks in. Pinned: the test expects its 100.
PYMEMCACHE_VERSION=4.0.0
pymemcache_dir="${MEMROUTE_DEPS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memroute}/pymemcache-$PYMEMCACHE_VERSION"
python=${PYTHON:-python3}
if ! "$python" -c 'import pytest' >/dev/null 2>&1; then
  echo "deps.sh: installing pytest" >&2
  "$python" -m pip install -q pytest 2>/dev/null ||
    "$python" -m pip install -q --break-system-packages pytest
fi
if [[ ! -f "$pymemcache_dir/pymemcache/test/test_integration.py" ]]; then
  echo "deps.sh: fetching pymemcache $PYMEMCACHE_VERSION's sdist into $pymemcache_dir" >&2
  download=$(mktemp -d)
  "$python" -m pip download -q --no-deps --no-binary :all: -d "$download" "pymemcache==$PYMEMCACHE_VERSION"
  mkdir -p "$(dirname "$pymemcache_dir")"
  tar -xzf "$download/pymemcache-$PYMEMCACHE_VERSION.tar.gz" -C "$(dirname "$pymemcache_dir")"
  rm -rf "$download"
fi
