#!/usr/bin/env bash
# Compares speedlayer's Redis-protocol front end with redis-server under redis-benchmark.
#
# Starts, on free loopback ports with data in a temporary directory:
#   redis-everysec  redis-server --appendonly yes --appendfsync everysec --save ''
#   redis-always    redis-server --appendonly yes --appendfsync always   --save ''
#   speedlayer      target/release/speedlayer serve (built first if missing); it
#                   acknowledges a write only after its journal fsync, like "always",
#                   but many writers (and a whole pipeline) share one fsync.
# then runs the same redis-benchmark workloads against the three, ROUNDS times, the
# servers interleaved within each round (their order rotates from round to round), and
# prints the medians over the rounds.
#
# Workloads (redis-benchmark 7.x, -r $KEYSPACE, -c $CLIENTS, -P 1 and -P 16):
#   incr   built-in: INCR counter:__rand_int__                (random keys)
#   set    built-in: SET key:__rand_int__ xxx                 (random keys)
#   get    built-in: GET key:__rand_int__                     (random keys)
#   sadd   built-in: SADD myset element:__rand_int__          (ONE key, random members:
#          redis-benchmark's -r randomizes SADD's member, never its key)
#   pfadd  custom:   PFADD pf:__rand_int__ el:__rand_int__    (random keys; redis-benchmark
#          7.0 has no built-in PFADD test: `-t pfadd` is silently ignored)
#
# Settings (environment):
#   ROUNDS=3  N_P1=50000  N_P16=200000  CLIENTS=50  KEYSPACE=100000
#   PIPELINES="1 16"  WORKLOADS="incr set get sadd pfadd"
#   SERVERS="speedlayer redis-everysec redis-always"
#   SPEEDLAYER_BIN=target/release/speedlayer  OUT=<file>  (raw per-run CSV copied there)
#   KEEP_TMP=1  (keep the data directories and logs)
#
# Usage: bench/redis-compare.sh            ROUNDS=1 N_P1=5000 N_P16=20000 bench/redis-compare.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
N_P1="${N_P1:-50000}"
N_P16="${N_P16:-200000}"
CLIENTS="${CLIENTS:-50}"
KEYSPACE="${KEYSPACE:-100000}"
PIPELINES="${PIPELINES:-1 16}"
WORKLOADS="${WORKLOADS:-incr set get sadd pfadd}"
SERVERS="${SERVERS:-speedlayer redis-everysec redis-always}"
SPEEDLAYER_BIN="${SPEEDLAYER_BIN:-$ROOT/target/release/speedlayer}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-900}"

die() { echo "redis-compare: $*" >&2; exit 1; }
for tool in redis-server redis-cli redis-benchmark python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y redis-server redis-tools python3 coreutils)"
done

if [[ ! -x "$SPEEDLAYER_BIN" ]]; then
    echo "building $SPEEDLAYER_BIN (cargo build --release -p speedlayer)" >&2
    (cd "$ROOT" && cargo build --release -p speedlayer) >&2
    [[ -x "$SPEEDLAYER_BIN" ]] || die "$SPEEDLAYER_BIN still missing after the build"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/redis-compare.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "${KEEP_TMP:-}" ]]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Four free ports, held together while chosen so they are distinct.
read -r P_EVERYSEC P_ALWAYS P_SL_RESP P_SL_HTTP < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')

declare -A PORT=([redis-everysec]=$P_EVERYSEC [redis-always]=$P_ALWAYS [speedlayer]=$P_SL_RESP)

start_redis() { # name port fsync
    mkdir -p "$TMP/$1"
    redis-server --port "$2" --bind 127.0.0.1 --save '' --appendonly yes \
        --appendfsync "$3" --dir "$TMP/$1" --logfile "$TMP/$1.log" --daemonize no &
    PIDS+=($!)
}

wait_ready() { # name port
    local deadline=$((SECONDS + 60))
    until [[ "$(redis-cli -h 127.0.0.1 -p "$2" PING 2>/dev/null)" == PONG ]]; do
        ((SECONDS < deadline)) || die "$1 did not answer PING on port $2 within 60 s (see $TMP/$1.log)"
        sleep 0.1
    done
}

for server in $SERVERS; do
    case "$server" in
        redis-everysec) start_redis redis-everysec "$P_EVERYSEC" everysec ;;
        redis-always) start_redis redis-always "$P_ALWAYS" always ;;
        speedlayer)
            RUST_LOG="${RUST_LOG:-warn}" NO_COLOR=1 "$SPEEDLAYER_BIN" serve \
                --data-dir "$TMP/speedlayer" --http "127.0.0.1:$P_SL_HTTP" \
                --resp "127.0.0.1:$P_SL_RESP" >"$TMP/speedlayer.log" 2>&1 &
            PIDS+=($!)
            ;;
        *) die "unknown server $server (speedlayer, redis-everysec, redis-always)" ;;
    esac
done
for server in $SERVERS; do
    wait_ready "$server" "${PORT[$server]}"
done

RESULTS="$TMP/results.csv"
echo "server,round,pipeline,workload,rps,avg_ms,p50_ms,p99_ms" >"$RESULTS"

# Runs redis-benchmark and appends its CSV rows (tagged) to $RESULTS.
bench() { # server round pipeline label|builtin redis-benchmark-args...
    local server=$1 round=$2 pipeline=$3 label=$4
    shift 4
    local n=$N_P1
    [[ "$pipeline" == 1 ]] || n=$N_P16
    local out="$TMP/run.$server.$round.$pipeline.$label.csv"
    if ! timeout "$BENCH_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "${PORT[$server]}" \
        -c "$CLIENTS" -n "$n" -r "$KEYSPACE" -P "$pipeline" --csv "$@" \
        >"$out" 2>"$out.err"; then
        die "redis-benchmark against $server failed: $(tail -5 "$out.err")"
    fi
    if grep -qi "error" "$out.err"; then
        echo "warning: $server reported errors during $label -P $pipeline:" >&2
        sort "$out.err" | uniq -c | sort -rn | head -5 >&2
    fi
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    python3 - "$out" "$server" "$round" "$pipeline" "$label" >>"$RESULTS" <<'PY'
import csv, sys
path, server, rnd, pipeline, label = sys.argv[1:]
rows = [r for r in csv.DictReader(open(path)) if r.get("test")]
if not rows:
    sys.exit(f"no CSV rows from redis-benchmark in {path}")
for r in rows:
    name = r["test"].split()[0].lower() if label == "builtin" else label
    print(",".join([server, rnd, pipeline, name, r["rps"], r["avg_latency_ms"],
                    r["p50_latency_ms"], r["p99_latency_ms"]]))
PY
}

builtin=()
custom=()
for w in $WORKLOADS; do
    case "$w" in
        incr | set | get | sadd) builtin+=("$w") ;;
        pfadd) custom+=("$w") ;;
        *) die "unknown workload $w" ;;
    esac
done
tests="$(IFS=,; echo "${builtin[*]:-}")"

read -r -a order <<<"$SERVERS"
for ((round = 1; round <= ROUNDS; round++)); do
    for pipeline in $PIPELINES; do
        for server in "${order[@]}"; do
            echo "round $round/$ROUNDS  -P $pipeline  $server" >&2
            if [[ -n "$tests" ]]; then
                bench "$server" "$round" "$pipeline" builtin -t "$tests"
            fi
            for w in "${custom[@]}"; do
                case "$w" in
                    pfadd) bench "$server" "$round" "$pipeline" pfadd PFADD 'pf:__rand_int__' 'el:__rand_int__' ;;
                esac
            done
        done
    done
    order=("${order[@]:1}" "${order[0]}") # rotate who goes first
done

if [[ -n "${OUT:-}" ]]; then
    cp "$RESULTS" "$OUT"
    echo "raw results: $OUT" >&2
fi

python3 "$ROOT/bench/redis-compare.py" "$RESULTS" \
    "rounds=$ROUNDS clients=$CLIENTS keyspace=$KEYSPACE n(-P 1)=$N_P1 n(-P 16)=$N_P16 cores=$(nproc) $(redis-server --version | grep -o 'v=[^ ]*')"
