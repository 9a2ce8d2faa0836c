#!/usr/bin/env bash
# Instructions per request of one node, counted by valgrind's callgrind: repeatable for
# the same binary and workload whatever else the machine is doing (unlike ops/s here,
# where fsync and CPU have slow phases), so two builds compare exactly.
#
#   bench/callgrind.sh BIN [BIN...]        # e.g. an old build and target/release/speedlayer
#
# Each BIN serves on a fresh data directory under callgrind while redis-benchmark sends
# REQS requests (default 40000) of TESTS (default "set"), -P 16, 10 clients, random keys
# of a 100,000-key space; prints the total instructions, per request, and the heaviest
# inclusive functions (the whole annotation is kept in OUT, default target/callgrind,
# as NAME.callgrind.txt). Needs valgrind and redis-benchmark (apt-get install valgrind
# redis-tools). Env: REQS, TESTS, PIPELINE, TOP (functions shown, default 12).
set -euo pipefail

REQS=${REQS:-40000}
TESTS=${TESTS:-set}
PIPELINE=${PIPELINE:-16}
TOP=${TOP:-12}
PORT=${PORT:-17791}
OUT=${OUT:-target/callgrind}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'pkill -f "valgrind.*--data-dir $work" 2>/dev/null || true; rm -rf "$work"' EXIT

for bin in "$@"; do
    name=$(basename "$bin")-$(sha1sum "$bin" | cut -c1-8)
    out="$OUT/$name.callgrind"
    rm -rf "$work/data"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve \
        --data-dir "$work/data" --http 127.0.0.1:$((PORT + 1)) --resp 127.0.0.1:$PORT \
        --cluster 127.0.0.1:$((PORT + 2)) >"$work/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        redis-cli -p $PORT PING >/dev/null 2>&1 && break
        sleep 0.2
    done
    redis-benchmark -p $PORT -c 10 -r 100000 -n "$REQS" -P "$PIPELINE" -t "$TESTS" -q >"$work/$name.bench"
    kill -TERM $pid
    wait $pid || true
    callgrind_annotate --inclusive=yes "$out" >"$out.txt" 2>/dev/null || true
    total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$out.txt")
    echo "== $bin ($TESTS -P $PIPELINE, $REQS requests)"
    echo "total instructions: $total  per request: $((total / REQS))"
    grep -E '^ *[0-9,]+ ' "$out.txt" | head -n "$TOP" || true
done
