#!/usr/bin/env bash
# An elastic cluster under load: how long a join and a disk-loss rebuild take with KEYS
# keys, and what they cost foreground requests (p50/p99 while idle, while a node joins,
# while a wiped node is rebuilt by anti-entropy).
#
# Starts three founding `speedlayer serve` processes (release binary, --replicas 3, free
# loopback ports), loads KEYS distinct counter keys through node 1's Redis port
# (redis-cli --pipe), then:
#   idle     redis-benchmark INCR (random keys of the same keyspace) on node 1
#   rebuild  node 3 is SIGKILLed, its data directory wiped, restarted; reports the time
#            until its own copy (consistency=local) of 200 sampled keys is back, with
#            the benchmark running meanwhile; and anti-entropy bytes per key moved
#   join     a fourth node joins through node 1 while the same benchmark runs; reports
#            the time until every node lists it `up`
#
# Settings: KEYS=1000000 CLIENTS=20 REQS=200000 (requests per benchmark run);
# SERVE_FLAGS adds flags to every `serve` (e.g. "--anti-entropy-mib-per-sec 8")
# Usage: bench/elastic.sh      (needs redis-tools, python3, curl)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KEYS="${KEYS:-1000000}"; CLIENTS="${CLIENTS:-20}"; REQS="${REQS:-200000}"
BIN="${SPEEDLAYER_BIN:-$ROOT/target/release/speedlayer}"
die() { echo "elastic: $*" >&2; exit 1; }
for tool in redis-cli redis-benchmark python3 curl; do command -v "$tool" >/dev/null || die "$tool not found"; done
[[ -x "$BIN" ]] || (cd "$ROOT" && cargo build --release -p speedlayer) >&2
TMP="$(mktemp -d "${TMPDIR:-/tmp}/elastic.XXXXXX")"
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
read -r -a P < <(python3 -c '
import socket
s=[socket.socket() for _ in range(12)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
http() { echo "${P[$((3 * $1))]}"; }
resp() { echo "${P[$((3 * $1 + 1))]}"; }
addr() { echo "127.0.0.1:${P[$((3 * $1 + 2))]}"; }
start() { # index seeds
    local i=$1 seeds=$2
    RUST_LOG=warn,speedlayer_cluster=info NO_COLOR=1 "$BIN" serve --data-dir "$TMP/n$i" \
        --http "127.0.0.1:$(http "$i")" --resp "127.0.0.1:$(resp "$i")" --cluster "$(addr "$i")" \
        --seeds "$seeds" --replicas 3 --node-id "n$i" --anti-entropy-interval-secs 5 ${SERVE_FLAGS:-} \
        >>"$TMP/n$i.log" 2>&1 &
    PID[$i]=$!
}
state_of() { # observer target -> state
    curl -s "127.0.0.1:$(http "$1")/v1/cluster" | python3 -c "
import json,sys
info=json.load(sys.stdin)
print(next((n['state'] for n in info['nodes'] if n['addr']=='$2'),'absent'))"
}
metric() { # node name
    curl -s "127.0.0.1:$(http "$1")/metrics" | awk -v m="$2" '$1==m {print $2}'
}
bench() { # label -> prints "label rps p50 p99" (redis-benchmark 7 --csv)
    redis-benchmark -p "$(resp 0)" -c "$CLIENTS" -n "$REQS" -r "$KEYS" --csv INCR "k:__rand_int__" \
        >"$TMP/bench-$1.csv" 2>/dev/null
    python3 - "$1" "$TMP/bench-$1.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[2])) if r and r[0] != "test"]
if not rows:
    print(f"{sys.argv[1]:<8} (no result: redis-benchmark printed nothing)"); sys.exit()
r = rows[-1]
print(f"{sys.argv[1]:<8} {float(r[1]):>10.0f} ops/s  p50 {float(r[4]):.3f} ms  p99 {float(r[6]):.3f} ms  max {float(r[7]):.3f} ms")
PY
}
wait_http() { for _ in $(seq 100); do curl -sf "127.0.0.1:$(http "$1")/health" >/dev/null && return; sleep 0.1; done; die "node $1 did not start"; }

FOUNDERS="$(addr 0),$(addr 1),$(addr 2)"
for i in 0 1 2; do start "$i" "$FOUNDERS"; done
for i in 0 1 2; do wait_http "$i"; done
sleep 1
echo "loading $KEYS keys (INCR k:<n>, one each, quorum)..." >&2
python3 -c "
import sys
w=sys.stdout.write
for i in range($KEYS):
    k=b'k:%012d' % i
    sys.stdout.buffer.write(b'*2\r\n\$4\r\nINCR\r\n\$%d\r\n%s\r\n' % (len(k), k))
" | redis-cli -p "$(resp 0)" --pipe >/dev/null
echo "phase    throughput        latency (INCR, $CLIENTS clients, -P 1, $REQS requests each)"
bench idle

local_value() { # node key -> its own copy's value
    curl -s "127.0.0.1:$(http "$1")/v1/views/redis/get?key=$2&consistency=local" |
        grep -o '"value":[0-9]*}$' | tr -dc 0-9
}
# Three nodes, three replicas: node 3 owns every key. Done when its own copy
# (consistency=local) of a sample of 200 keys is back.
SAMPLE=$(python3 -c "import random; print(' '.join('k:%012d' % random.randrange($KEYS) for _ in range(200)))")
complete() {
    for k in $SAMPLE; do
        v=$(local_value 2 "$k")
        [[ "$v" =~ ^[0-9]+$ && "$v" -ge 1 ]] || return 1
    done
}
kill -9 "${PID[2]}"; wait "${PID[2]}" 2>/dev/null || true
rm -rf "$TMP/n2"
start 2 "$FOUNDERS"
wait_http 2
T0=$(date +%s.%N)
bench rebuild &
BR=$!
until complete; do sleep 0.5; done
T1=$(date +%s.%N)
wait "$BR"
wire=0; moved=0
for i in 0 1 2; do
    w=$(metric "$i" speedlayer_anti_entropy_wire_bytes_total); wire=$(python3 -c "print($wire+${w:-0})")
    m=$(metric "$i" speedlayer_anti_entropy_keys_pulled_total); p=$(metric "$i" speedlayer_anti_entropy_keys_pushed_total)
    moved=$(python3 -c "print($moved+${m:-0}+${p:-0})")
done
python3 -c "print(f'rebuild: the wiped node held its sample of $(wc -w <<<"$SAMPLE") keys again {$T1-$T0:.1f} s after its restart; anti-entropy moved {$moved:.0f} key states in all, {$wire/max($moved,1):.0f} bytes of messages per key')"

start 3 "$(addr 0)"
T0=$(date +%s.%N)
bench join &
BJ=$!
while [[ "$(state_of 0 "$(addr 3)")" != up || "$(state_of 3 "$(addr 3)")" != up ]]; do sleep 0.2; done
T1=$(date +%s.%N)
wait "$BJ"
python3 -c "print(f'join: the fourth node was up after {$T1-$T0:.1f} s ($KEYS keys in the cluster, its share ~3/4 of them)')"
