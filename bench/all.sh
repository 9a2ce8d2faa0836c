#!/usr/bin/env bash
# Every performance comparison of issue 16 in one run, written to BENCHMARKS.md:
#   1. the Redis protocol against redis-server (everysec and always), side by side,
#      interleaved, medians of ROUNDS rounds            (bench/redis-compare.sh)
#   2. a 3-node quorum cluster against one node          (bench/cluster-compare.sh)
#   3. event ingest, sync and async                      (speedlayer bench events)
#   4. instructions per SET, counted by callgrind         (bench/callgrind.sh; skipped
#      when valgrind is missing)
# with the machine, the peer versions and every command line, so anyone can rerun it.
# Ratios are what to compare across machines: absolute figures move with this VM's slow
# phases (fsync from ~0.15 ms to ~4 ms), which is why every comparison is interleaved.
#
# Usage: bench/all.sh                    (needs redis-tools, redis-server, python3, curl)
# Env:   ROUNDS=3  OUT=BENCHMARKS.md  SPEEDLAYER_BIN=target/release/speedlayer
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
OUT="${OUT:-$ROOT/BENCHMARKS.md}"
BIN="${SPEEDLAYER_BIN:-$ROOT/target/release/speedlayer}"
export SPEEDLAYER_BIN="$BIN" ROUNDS
[[ -x "$BIN" ]] || (cd "$ROOT" && cargo build --release -p speedlayer) >&2
TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-all.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

section() { echo "== $1" >&2; }

section "1/4 redis-compare"
"$ROOT/bench/redis-compare.sh" >"$TMP/redis.txt" 2>"$TMP/redis.err"
section "2/4 cluster-compare"
"$ROOT/bench/cluster-compare.sh" >"$TMP/cluster.txt" 2>"$TMP/cluster.err"
section "3/4 bench events"
"$BIN" bench events --rounds "$ROUNDS" >"$TMP/events.txt" 2>"$TMP/events.err"
if command -v valgrind >/dev/null; then
    section "4/4 callgrind"
    OUT="$TMP/callgrind" TOP=0 "$ROOT/bench/callgrind.sh" "$BIN" >"$TMP/callgrind.txt" 2>"$TMP/callgrind.err"
else
    echo "valgrind not installed: instruction counts skipped" >"$TMP/callgrind.txt"
fi

{
    echo "# Benchmarks"
    echo
    echo "Written by \`bench/all.sh\` (ROUNDS=$ROUNDS) on $(date -u '+%Y-%m-%d %H:%M UTC'), speedlayer"
    echo "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown) (release build). Rerun it to refresh this page."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); kernel $(uname -r)"
    echo "- peers: $(redis-server --version | cut -d' ' -f1-3), redis-benchmark $(redis-benchmark --version 2>/dev/null | awk '{print $2}')"
    echo "- the benchmark clients run on the same 2 cores as the servers"
    echo
    echo "## Redis protocol against redis-server"
    echo
    echo "\`bench/redis-compare.sh\`: redis-benchmark against speedlayer (which acknowledges a write"
    echo "after its journal fsync), redis-server with appendfsync everysec and with always;"
    echo "servers interleaved in each round, medians over rounds."
    echo
    grep -E '^(\||medians)' "$TMP/redis.txt" || cat "$TMP/redis.err"
    echo
    echo "## 3-node cluster against one node"
    echo
    echo "\`bench/cluster-compare.sh\`: three nodes, --replicas 3, quorum (W=2, R=2), all on"
    echo "this machine; node 1 coordinates every request. Replication efficiency = ratio × 3."
    echo
    grep -E '^\|' "$TMP/cluster.txt" || cat "$TMP/cluster.err"
    echo
    echo "## Event ingest"
    echo
    echo "\`speedlayer bench events --rounds $ROUNDS\`: NDJSON through \`POST /v1/events\` into 3 mapped views."
    echo
    echo '```'
    cat "$TMP/events.txt"
    echo '```'
    echo
    echo "## Instructions per SET"
    echo
    echo "\`bench/callgrind.sh\`: one node under valgrind's callgrind, 40,000 \`SET\` -P 16 at random"
    echo "keys of 100,000 (10 clients); counted instructions are repeatable, unlike ops/s here."
    echo
    echo '```'
    grep -E '^(==|total)' "$TMP/callgrind.txt" || cat "$TMP/callgrind.txt"
    echo '```'
} >"$OUT"
echo "wrote $OUT" >&2
