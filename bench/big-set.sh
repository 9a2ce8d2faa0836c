#!/usr/bin/env bash
# Set reads against one big set (issue 19: "membership, cardinality and add/remove on a set
# of 1 M members stay under 1 ms; a big key never stalls other keys' requests"), with the
# real redis-benchmark against a release node, per set size:
#   SISMEMBER / SMISMEMBER (3 members) / SCARD / SADD of a new member: 1 client, N_OPS each;
#   INCR on random other keys (half of them on the big set's shard) while 4 clients
#   SISMEMBER the big set: what a big key costs its neighbours.
# Prints avg / p50 / p99 / max latency (ms) per size and command.
#
# SCARD runs first (its first call walks the set once to compute the digest it keeps) and
# again after the SADDs (the digest kept up to date by them).
# Settings: SIZES="10000 100000 1000000"  N_OPS=2000  SPEEDLAYER_BIN=target/release/speedlayer
# Needs redis-tools and python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZES="${SIZES:-10000 100000 1000000}"
N_OPS="${N_OPS:-2000}"
BIN="${SPEEDLAYER_BIN:-$ROOT/target/release/speedlayer}"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p speedlayer --bin speedlayer)
TMP=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(port); RESP=$(port)
"$BIN" serve --data-dir "$TMP/data" --http "127.0.0.1:$HTTP" --resp "127.0.0.1:$RESP" >"$TMP/node.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do redis-cli -p "$RESP" PING >/dev/null 2>&1 && break; sleep 0.1; done
bench() { # clients, extra args... -> "avg p50 p99 max" over N (default N_OPS) requests
    local clients=$1; shift
    redis-benchmark -p "$RESP" -c "$clients" -n "${N:-$N_OPS}" --csv "$@" 2>/dev/null | tail -1 |
        python3 -c 'import csv,sys; r=next(csv.reader(sys.stdin)); print(r[2], r[4], r[6], r[7])'
}
printf '%-9s %-34s %8s %8s %8s %8s\n' size command avg p50 p99 max
for size in $SIZES; do
    key="big:$size"
    python3 - "$key" "$size" <<'PY' | redis-cli -p "$RESP" --pipe >/dev/null
import sys
key, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer
for start in range(0, n, 1000):
    members = [f"m{i}".encode() for i in range(start, min(n, start + 1000))]
    args = [b"SADD", key.encode()] + members
    out.write(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
PY
    row() { printf '%-9s %-34s %8s %8s %8s %8s\n' "$size" "$1" $2; }
    started=$(date +%s%N)
    [ "$(redis-cli -p "$RESP" SCARD "$key")" = "$size" ] || { echo "fill of $key failed" >&2; exit 1; }
    first=$(( ($(date +%s%N) - started) / 1000 ))
    row "first SCARD (redis-cli, one call)" "$(printf '%d.%03d - - -' $((first / 1000)) $((first % 1000)))"
    row "SISMEMBER (member)" "$(bench 1 SISMEMBER "$key" m42)"
    row "SISMEMBER (not a member)" "$(bench 1 SISMEMBER "$key" nope)"
    row "SMISMEMBER (3 members)" "$(bench 1 SMISMEMBER "$key" m1 m2 nope)"
    row "SCARD" "$(bench 1 SCARD "$key")"
    row "SADD (new members)" "$(bench 1 -r 100000000 SADD "$key" new:__rand_int__)"
    row "SCARD (after the SADDs)" "$(bench 1 SCARD "$key")"
    redis-benchmark -p "$RESP" -c 4 -n 1000000 SISMEMBER "$key" m42 >/dev/null 2>&1 &
    READERS=$!
    sleep 0.5
    row "INCR other keys, 4 readers of it" "$(bench 1 -r 1000 INCR other:__rand_int__)"
    kill $READERS 2>/dev/null; wait $READERS 2>/dev/null || true
    row "INCR other keys, idle" "$(bench 1 -r 1000 INCR other:__rand_int__)"
done
