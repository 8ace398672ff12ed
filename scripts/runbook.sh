#!/usr/bin/env bash
# Runs deploy/README.md's "Migrating to a new pool" runbook end to end on this machine, with the
# README's own shell definitions (install_config, wait_reloaded_local, admin, metric: sourced
# from the README, so the two cannot drift apart) and local stand-ins for the fleet:
#   pool main    (the old pool: 2 memcacheds) holds the data, written through memroute;
#   pool main-v2 (the new pool: 2 memcacheds) starts empty.
# Steps, as in the README: 0 run with tiers = ["main"] and load keys; 1 add main-v2, not yet
# routed; 2 skipped (one proxy); 3 route tiers = ["main-v2", "main"]; 4 read the keys in rounds
# and watch main-v2's hit ratio climb, from the counters the README's PromQL uses
# (memroute_tier_lookups_total{pool,tier,result}); writes and deletes reach both pools;
# 5 tiers = ["main-v2"] and pool main removed; 6 stop the old memcacheds: reads still hit.
# Finally SIGTERM memroute: it must exit 0.
#
# Free loopback ports only; everything started here is stopped on exit (trap). The whole run is
# bounded by RUNBOOK_TIME_LIMIT seconds (default 120). Exit 0 only if every step's check passed.
# Needs bash, memcached, coreutils, awk, sed; curl if present (the README's `admin`), otherwise
# HTTP goes through bash's /dev/tcp (also with RUNBOOK_HTTP=devtcp). The memroute binary is
# $MEMROUTE, else built with `cargo build`.
set -euo pipefail

if [ -z "${RUNBOOK_UNDER_TIMEOUT:-}" ]; then
  export RUNBOOK_UNDER_TIMEOUT=1
  exec timeout -k 10 "${RUNBOOK_TIME_LIMIT:-120}" bash "$0" "$@"
fi
cd "$(dirname "$0")/.."

KEYS=200               # user:0 .. user:199, loaded into the old pool
TTL=3600               # their TTL: copies into the new pool must keep what remains of it

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf 'runbook.sh: FAILED: %s\n' "$*" >&2; exit 1; }

command -v memcached >/dev/null || fail "memcached is not installed (scripts/deps.sh)"
if [ -n "${MEMROUTE:-}" ]; then
  bin=$MEMROUTE
else
  cargo build --quiet
  bin="${CARGO_TARGET_DIR:-target}/debug/memroute"
fi
[ -x "$bin" ] || fail "no memroute binary at $bin"

work=$(mktemp -d "${TMPDIR:-/tmp}/memroute-runbook.XXXXXX")
mkdir -p "$work/bin" "$work/etc"
ln -s "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" "$work/bin/memroute"
PATH="$work/bin:$PATH"           # install_config runs `memroute --check-config`

pids=()                          # everything started here, stopped on exit
cleanup() {
  local status=$? pid
  trap - EXIT TERM INT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ] && [ -f "$work/memroute.log" ]; then
    echo "--- memroute log (last 40 lines) ---" >&2
    tail -n 40 "$work/memroute.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- The README's definitions -----------------------------------------------------------------
defs=$(awk '/<!-- scripts\/runbook.sh sources/ { want = 1; next }
            want && /^```sh/ { inside = 1; next }
            inside && /^```/ { inside = 0; want = 0; next }
            inside { print }' deploy/README.md)
[ -n "$defs" ] || fail "no runbook definitions found in deploy/README.md"
eval "$defs"
for f in install_config wait_reloaded wait_reloaded_local admin metric; do
  declare -F "$f" >/dev/null || fail "deploy/README.md no longer defines $f"
done
CONFIG=$work/etc/memroute.toml  # the file memroute runs (the README: /etc/memroute/memroute.toml)

# --- Local plumbing: TCP, HTTP, memcached -----------------------------------------------------
# GET a URL over bash's /dev/tcp; the body on stdout; fails unless 200 (like curl -f).
http_get() {
  local rest=${1#http://} hostport path fd resp
  hostport=${rest%%/*}
  path=/${rest#*/}
  exec {fd}<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$hostport" >&"$fd"
  resp=$(timeout 5 cat <&"$fd") || true
  exec {fd}>&-
  case ${resp%%$'\r'*} in "HTTP/1.1 200"*) ;; *) return 22 ;; esac
  printf '%s\n' "${resp#*$'\r\n\r\n'}"
}
if [ "${RUNBOOK_HTTP:-}" = devtcp ] || ! command -v curl >/dev/null; then
  admin() { http_get "$ADMIN$1"; }
fi

# Sends stdin (memcached requests) to 127.0.0.1:$1, then `quit`; prints the replies, \r removed.
mc() {
  local fd
  exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
  { cat; printf 'quit\r\n'; } >&"$fd"
  timeout 10 cat <&"$fd" | tr -d '\r'
  exec {fd}>&-
}
# The value of `STAT $2` from 127.0.0.1:$1.
stat_of() { printf 'stats\r\n' | mc "$1" 2>/dev/null | awk -v k="$2" '$1 == "STAT" && $2 == k { print $3 }'; }

used_ports=" "
# Sets PORT to a loopback port nothing listens on, not handed out before.
pick_port() {
  local p
  for _ in $(seq 100); do
    # Below Linux's ephemeral range (32768-60999): a port the kernel hands to an outgoing
    # connection is not seen by the connect probe below and makes memroute's bind fail.
    p=$((20000 + RANDOM % 12000))
    case $used_ports in *" $p "*) continue ;; esac
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    used_ports="$used_ports$p "
    PORT=$p
    return 0
  done
  fail "no free port found"
}

# Starts memcached on a free port: sets PORT and MC_PID. Retries if the port was taken.
start_memcached() {
  local pid
  for _ in $(seq 5); do
    pick_port
    memcached -u "$(id -un)" -U 0 -l 127.0.0.1 -p "$PORT" -m 64 -t 1 </dev/null >"$work/memcached-$PORT.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      if [ "$(stat_of "$PORT" pid)" = "$pid" ]; then MC_PID=$pid; return 0; fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
  done
  fail "memcached did not start"
}

# The config of each step (the README's TOML with local addresses).
write_config() {                 # $1 = file, $2 = step: 0, 1, 3 or 5
  {
    printf '[listen]\naddress = "127.0.0.1:%s"\n\n[admin]\naddress = "127.0.0.1:%s"\n\n' "$LISTEN" "$ADMIN_PORT"
    if [ "$2" != 5 ]; then
      printf '[pools.main]\nservers = ["127.0.0.1:%s", "127.0.0.1:%s"]\n\n' "$OLD1" "$OLD2"
    fi
    if [ "$2" != 0 ]; then
      printf '[pools.main-v2]\nservers = [\n  "127.0.0.1:%s",\n  "127.0.0.1:%s",\n]\ntimeout = "250ms"\n\n' "$NEW1" "$NEW2"
    fi
    printf '[[routes]]\nprefix = ""\n'
    case $2 in
      0 | 1) printf 'tiers = ["main"]\n' ;;
      3) printf 'tiers = ["main-v2", "main"]\nwarm = true\nlower_on_write = "delete"\n' ;;
      5) printf 'tiers = ["main-v2"]\n' ;;
    esac
  } >"$1"
}

# Writes step $1's config, checks it, installs it (as the README does) and waits until the
# local memroute runs it.
apply_step() {
  write_config "$work/step$1.toml" "$1"
  memroute --check-config "$work/step$1.toml" >/dev/null
  install_config "$work/step$1.toml" >/dev/null || fail "install_config refused step $1"
  wait_reloaded_local "$work/step$1.toml" || fail "step $1 not loaded"
}

# Reads user:$1 .. user:$(($2 - 1)) through memroute, one `get` each, pipelined. Sets HITS and
# fails if a value is not the one loaded.
read_keys() {
  local out bad
  out=$(for ((i = $1; i < $2; i++)); do printf 'get user:%d\r\n' "$i"; done | mc "$LISTEN")
  HITS=$(grep -c '^VALUE ' <<<"$out" || true)
  bad=$(awk '/^VALUE / { k = $2; getline v; if (v != "value-of-" k) n++ } END { print n + 0 }' <<<"$out")
  [ "$bad" = 0 ] || fail "$bad keys came back with a wrong value"
}

# `mg KEY t v` on each of the given servers: HOLDERS = how many hold the key, TTLS = their
# remaining TTLs (memcached's `t` flag).
holders() {                      # $1 = key, then ports
  local key=$1 line
  shift
  HOLDERS=0
  TTLS=""
  for port in "$@"; do
    line=$(printf 'mg %s t v\r\n' "$key" | mc "$port" | awk 'NR == 1')
    case $line in
      VA*) HOLDERS=$((HOLDERS + 1)); TTLS="$TTLS ${line##* t}" ;;
    esac
  done
}
# Polls (at most 5 s) until `holders KEY PORTS…` finds exactly $1 copies.
wait_holders() {                 # $1 = count, $2 = key, then ports
  local want=$1
  shift
  for _ in $(seq 50); do
    holders "$@"
    [ "$HOLDERS" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "none"; else printf "%.3f\n", a / b }'; }
n() { local v; v=$(metric "$@"); [ "$v" = none ] && v=0; echo "$v"; }

# --- The fleet --------------------------------------------------------------------------------
step "setup: two memcached pools and memroute on free loopback ports"
start_memcached; OLD1=$PORT; OLD1_PID=$MC_PID
start_memcached; OLD2=$PORT; OLD2_PID=$MC_PID
start_memcached; NEW1=$PORT
start_memcached; NEW2=$PORT
base1=$(stat_of "$OLD1" curr_connections)
base2=$(stat_of "$OLD2" curr_connections)
ok "pool main (old): 127.0.0.1:$OLD1, 127.0.0.1:$OLD2; pool main-v2 (new, empty): 127.0.0.1:$NEW1, 127.0.0.1:$NEW2"

for attempt in 1 2 3; do
  pick_port; LISTEN=$PORT
  pick_port; ADMIN_PORT=$PORT
  ADMIN=http://127.0.0.1:$ADMIN_PORT
  write_config "$CONFIG" 0
  memroute --config "$CONFIG" --drain-timeout 5s </dev/null >"$work/memroute.log" 2>&1 &
  MR_PID=$!
  pids+=("$MR_PID")
  for _ in $(seq 100); do
    kill -0 "$MR_PID" 2>/dev/null || break
    [ "$(stat_of "$LISTEN" pid)" = "$MR_PID" ] && admin /healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
  [ "$(stat_of "$LISTEN" pid)" = "$MR_PID" ] && break
  kill "$MR_PID" 2>/dev/null || true
  [ "$attempt" = 3 ] && fail "memroute did not start"
done
ok "memroute (pid $MR_PID) on 127.0.0.1:$LISTEN, admin $ADMIN"

step "0. before you start: tiers = [\"main\"], load $KEYS keys (TTL ${TTL}s) and note the baseline"
stored=$( {
  for ((i = 0; i < KEYS; i++)); do
    v="value-of-user:$i"
    printf 'set user:%d 0 %d %d\r\n%s\r\n' "$i" "$TTL" "${#v}" "$v"
  done
  for k in extra:write extra:delete; do printf 'set %s 0 %d 3\r\nold\r\n' "$k" "$TTL"; done
} | mc "$LISTEN" | grep -c '^STORED$' || true)
[ "$stored" = $((KEYS + 2)) ] || fail "only $stored of $((KEYS + 2)) sets stored"
holders user:7 "$OLD1" "$OLD2"
[ "$HOLDERS" = 1 ] || fail "user:7 is not in the old pool"
hits0=$(n memroute_get_keys_total 'result="hit"'); all0=$(n memroute_get_keys_total)
read_keys 0 "$KEYS"
[ "$HITS" = "$KEYS" ] || fail "baseline: $HITS of $KEYS keys hit"
baseline=$(ratio $(($(n memroute_get_keys_total 'result="hit"') - hits0)) $(($(n memroute_get_keys_total) - all0)))
ok "$stored keys stored in pool main; baseline hit ratio $baseline"

step "1. add the new pool, not yet routed"
apply_step 1
for port in "$NEW1" "$NEW2"; do
  up=none
  for _ in $(seq 50); do
    up=$(metric memroute_server_up "server=\"127.0.0.1:$port\"")
    [ "$up" = 1 ] && break
    sleep 0.1
  done
  [ "$up" = 1 ] || fail "memroute_server_up for 127.0.0.1:$port is $up"
done
[ "$(admin '/route?key=user:1' | sed -n 's/.*"pool": "\(.*\)".*/\1/p' | paste -sd, -)" = main ] ||
  fail "user:1 should still route to main only"
ok "config reloaded; both main-v2 servers up; keys still go to main only"

step "2. skipped: one proxy (the README's pre-step is for fleets)"

step "3. route to the new pool, falling back to the old one"
apply_step 3
tiers=$(admin '/route?key=user:1' | sed -n 's/.*"pool": "\(.*\)".*/\1/p' | paste -sd, -)
[ "$tiers" = main-v2,main ] || fail "/route?key=user:1 shows tiers $tiers"
ok "config reloaded; /route?key=user:1: tiers main-v2, then main"

step "4. watch the new pool take over (per round, from /metrics)"
printf '   %-7s %-13s %-15s %-16s %-13s %s\n' round keys "main-v2 hits" "main-v2 ratio" "main share" "client ratio"
prev=-1
copied=0
rounds=5
for round in $(seq $rounds); do
  upto=$((round < rounds ? round * KEYS / (rounds - 1) : KEYS))
  nh0=$(n memroute_tier_lookups_total 'pool="main-v2"' 'tier="0"' 'result="hit"')
  na0=$(n memroute_tier_lookups_total 'pool="main-v2"' 'tier="0"')
  oh0=$(n memroute_tier_lookups_total 'pool="main"' 'tier="1"' 'result="hit"')
  ch0=$(n memroute_get_keys_total 'result="hit"'); ca0=$(n memroute_get_keys_total)
  read_keys 0 "$upto"
  [ "$HITS" = "$upto" ] || fail "round $round: only $HITS of $upto keys hit"
  nh=$(($(n memroute_tier_lookups_total 'pool="main-v2"' 'tier="0"' 'result="hit"') - nh0))
  na=$(($(n memroute_tier_lookups_total 'pool="main-v2"' 'tier="0"') - na0))
  oh=$(($(n memroute_tier_lookups_total 'pool="main"' 'tier="1"' 'result="hit"') - oh0))
  new_ratio=$(ratio "$nh" "$na")
  old_share=$(ratio "$oh" $((nh + oh)))
  client=$(ratio $(($(n memroute_get_keys_total 'result="hit"') - ch0)) $(($(n memroute_get_keys_total) - ca0)))
  printf '   %-7s %-13s %-15s %-16s %-13s %s\n' "$round" "0..$((upto - 1))" "$nh/$na" "$new_ratio" "$old_share" "$client"
  [ "$client" = 1.000 ] || fail "round $round: clients saw misses (hit ratio $client)"
  awk -v a="$new_ratio" -v b="$prev" 'BEGIN { exit !(a > b) }' || fail "round $round: main-v2's hit ratio did not climb"
  prev=$new_ratio
  # Hits from main are copied into main-v2 in the background: wait for them.
  copied=$((copied + oh))
  for _ in $(seq 100); do
    [ "$(n memroute_fallback_copies_total 'result="ok"')" -ge "$copied" ] && break
    sleep 0.1
  done
  [ "$(n memroute_fallback_copies_total 'result="ok"')" -ge "$copied" ] || fail "copies into main-v2 did not complete"
done
[ "$prev" = 1.000 ] && [ "$old_share" = 0.000 ] || fail "main-v2 did not take over (ratio $prev, main's share $old_share)"
failed=$(n memroute_fallback_copies_total 'result="failed"')
[ "$failed" = 0 ] || fail "$failed copies into main-v2 failed"
ok "main-v2's hit ratio climbed to 1.000, main's share fell to 0.000; $copied copies, none failed"

holders user:3 "$NEW1" "$NEW2"
[ "$HOLDERS" = 1 ] || fail "user:3 was not copied into main-v2"
ttl=${TTLS# }
[ "$ttl" -gt 0 ] && [ "$ttl" -le "$TTL" ] || fail "the copy of user:3 has TTL $ttl, not what remained of ${TTL}s"
ok "user:3 copied into main-v2 with its remaining TTL (${ttl}s)"

replies=$(printf 'set extra:write 0 0 5\r\nfresh\r\ndelete extra:delete\r\nget extra:write extra:delete\r\n' | mc "$LISTEN" | paste -sd' ' -)
[ "$replies" = "STORED DELETED VALUE extra:write 0 5 fresh END" ] || fail "write/delete during the migration: $replies"
wait_holders 0 extra:write "$OLD1" "$OLD2" || fail "extra:write still in the old pool after a write"
wait_holders 0 extra:delete "$OLD1" "$OLD2" "$NEW1" "$NEW2" || fail "extra:delete survived its delete"
ok "a write removes the key from main (lower_on_write = \"delete\"), a delete reaches both pools"

step "5. remove the old tier and the old pool"
apply_step 5
for port in "$OLD1" "$OLD2"; do
  up=$(metric memroute_server_up "server=\"127.0.0.1:$port\"")
  [ "$up" = none ] || fail "memroute_server_up still has 127.0.0.1:$port ($up)"
done
for _ in $(seq 100); do
  [ "$(stat_of "$OLD1" curr_connections)" = "$base1" ] && [ "$(stat_of "$OLD2" curr_connections)" = "$base2" ] && break
  sleep 0.1
done
[ "$(stat_of "$OLD1" curr_connections)" = "$base1" ] && [ "$(stat_of "$OLD2" curr_connections)" = "$base2" ] ||
  fail "memroute still holds connections to the old pool"
nh0=$(n memroute_tier_lookups_total 'pool="main-v2"' 'tier="0"' 'result="hit"')
read_keys 0 "$KEYS"
nh=$(($(n memroute_tier_lookups_total 'pool="main-v2"' 'tier="0"' 'result="hit"') - nh0))
[ "$HITS" = "$KEYS" ] && [ "$nh" = "$KEYS" ] || fail "after the switch: $HITS of $KEYS keys hit ($nh in main-v2)"
ok "no series for the old servers, no connections to them; $HITS of $KEYS keys hit in main-v2"

step "6. decommission: stop the old pool"
kill "$OLD1_PID" "$OLD2_PID"
wait "$OLD1_PID" "$OLD2_PID" 2>/dev/null || true
read_keys 0 "$KEYS"
[ "$HITS" = "$KEYS" ] || fail "with the old pool gone: $HITS of $KEYS keys hit"
replies=$(printf 'get extra:write extra:delete\r\n' | mc "$LISTEN" | paste -sd' ' -)
[ "$replies" = "VALUE extra:write 0 5 fresh END" ] || fail "after the migration: $replies"
ok "old pool stopped; every key still hits, the written value is the new one, the deleted key stays deleted"

step "stop memroute (SIGTERM): drains and exits 0"
kill -TERM "$MR_PID"
for _ in $(seq 150); do kill -0 "$MR_PID" 2>/dev/null || break; sleep 0.1; done
status=0
wait "$MR_PID" || status=$?
[ "$status" = 0 ] || fail "memroute exited with status $status"
ok "memroute exited 0"

printf '\nrunbook.sh: every step passed\n'
