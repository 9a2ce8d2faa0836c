#!/usr/bin/env bash
# Quorum throughput of a 3-node loopback cluster against a single node, side by side.
#
# Starts (release binary, data in a temporary directory, free loopback ports):
#   single    one `speedlayer serve` (no seeds: nothing replicated)
#   cluster3  three `speedlayer serve` processes, --replicas 3, default consistency
#             quorum (W=2, R=2), sloppy; the benchmark talks to node 1's Redis port, so
#             node 1 coordinates every request and replicates to the other two.
# then runs redis-benchmark INCR and GET (random keys) against both, ROUNDS times,
# interleaved (order rotating per round), and prints medians and the cluster/single ratio.
#
# Settings: ROUNDS=3 N=100000 CLIENTS=50 KEYSPACE=100000 PIPELINES="1 16"
# Usage: bench/cluster-compare.sh        (needs redis-tools and python3)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"; N="${N:-100000}"; CLIENTS="${CLIENTS:-50}"; KEYSPACE="${KEYSPACE:-100000}"
PIPELINES="${PIPELINES:-1 16}"
BIN="${SPEEDLAYER_BIN:-$ROOT/target/release/speedlayer}"
die() { echo "cluster-compare: $*" >&2; exit 1; }
for tool in redis-cli redis-benchmark python3 curl; do command -v "$tool" >/dev/null || die "$tool not found"; done
[[ -x "$BIN" ]] || (cd "$ROOT" && cargo build --release -p speedlayer) >&2
TMP="$(mktemp -d "${TMPDIR:-/tmp}/cluster-compare.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
read -r -a P < <(python3 -c '
import socket
s=[socket.socket() for _ in range(12)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
start() { # name http resp cluster [extra...]
    local name=$1 http=$2 resp=$3 cl=$4; shift 4
    RUST_LOG=warn NO_COLOR=1 "$BIN" serve --data-dir "$TMP/$name" --http "127.0.0.1:$http" \
        --resp "127.0.0.1:$resp" --cluster "127.0.0.1:$cl" "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
}
start single "${P[0]}" "${P[1]}" "${P[2]}"
SEEDS="127.0.0.1:${P[5]},127.0.0.1:${P[8]},127.0.0.1:${P[11]}"
for i in 0 1 2; do
    b=$((3 + 3 * i)); start "n$i" "${P[$b]}" "${P[$((b + 1))]}" "${P[$((b + 2))]}" --seeds "$SEEDS" --replicas 3 --node-id "n$i"
done
declare -A PORT=([single]=${P[1]} [cluster3]=${P[4]})
for port in "${P[1]}" "${P[4]}" "${P[7]}" "${P[10]}"; do
    for _ in $(seq 300); do [[ "$(redis-cli -p "$port" PING 2>/dev/null)" == PONG ]] && break; sleep 0.1; done
done
for _ in $(seq 100); do
    up=$(curl -s "127.0.0.1:${P[3]}/v1/cluster" | python3 -c 'import json,sys; print(sum(n["state"]=="up" for n in json.load(sys.stdin)["nodes"]))' || echo 0)
    [[ "$up" == 3 ]] && break; sleep 0.1
done
[[ "$up" == 3 ]] || die "the cluster did not come up (see $TMP/n*.log)"
RESULTS="$TMP/results.csv"; echo "server,round,pipeline,test,rps,p50,p99" >"$RESULTS"
order=(single cluster3)
for ((round = 1; round <= ROUNDS; round++)); do
    for pipeline in $PIPELINES; do
        for server in "${order[@]}"; do
            echo "round $round/$ROUNDS -P $pipeline $server" >&2
            redis-benchmark -p "${PORT[$server]}" -c "$CLIENTS" -n "$N" -r "$KEYSPACE" -P "$pipeline" -t incr,get --csv 2>/dev/null |
                python3 -c '
import csv,sys
for r in csv.DictReader(sys.stdin):
    print(",".join([sys.argv[1],sys.argv[2],sys.argv[3],r["test"].split()[0].lower(),r["rps"],r["p50_latency_ms"],r["p99_latency_ms"]]))' "$server" "$round" "$pipeline" >>"$RESULTS"
        done
    done
    order=("${order[@]:1}" "${order[0]}")
done
python3 - "$RESULTS" "$ROUNDS" <<'PY'
import csv, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for r in csv.DictReader(open(sys.argv[1])):
    runs[(r["test"], int(r["pipeline"]), r["server"])].append((float(r["rps"]), float(r["p50"]), float(r["p99"])))
med = lambda k, i: statistics.median(x[i] for x in runs[k])
print(f"| workload | -P | single ops/s | p50 | p99 | 3-node quorum ops/s | p50 | p99 | ratio |   (medians of {sys.argv[2]} rounds)")
print("|---|---|---|---|---|---|---|---|---|")
for p in sorted({k[1] for k in runs}):
    for t in ("incr", "get"):
        s, c = (t, p, "single"), (t, p, "cluster3")
        if s in runs and c in runs:
            print(f"| {t} | {p} | {med(s,0):,.0f} | {med(s,1)} | {med(s,2)} | {med(c,0):,.0f} | {med(c,1)} | {med(c,2)} | {med(c,0)/med(s,0):.2f} |")
PY
