#!/usr/bin/env bash
# Resident memory against the number of live keys (issue 19: "resident memory stays within the
# memory limit at any number of keys; measure RSS at 10 M keys"). One release node; KEYS distinct
# counter keys are written with INCR through redis-cli --pipe in steps of STEP, and after each
# step the node's RSS (VmRSS) is printed, then again after a checkpoint interval (12 s idle) and
# after a restart; `peak_mb` is the highest RSS sampled every 100 ms while writing. A sample of
# keys is read back at the end to check nothing was lost to eviction.
#
# Settings: KEYS=10000000 STEP=1000000 MEMORY_LIMIT= (passed as --memory-limit when set)
# SPEEDLAYER_BIN=target/release/speedlayer. Needs redis-tools and python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KEYS="${KEYS:-10000000}"
STEP="${STEP:-1000000}"
BIN="${SPEEDLAYER_BIN:-$ROOT/target/release/speedlayer}"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p speedlayer --bin speedlayer)
TMP=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(port); RESP=$(port)
LIMIT_ARGS=()
[ -n "${MEMORY_LIMIT:-}" ] && LIMIT_ARGS=(--memory-limit "$MEMORY_LIMIT")
start() {
    "$BIN" serve --data-dir "$TMP/data" --http "127.0.0.1:$HTTP" --resp "127.0.0.1:$RESP" "${LIMIT_ARGS[@]}" >>"$TMP/node.log" 2>&1 &
    PID=$!
    for _ in $(seq 300); do redis-cli -p "$RESP" PING >/dev/null 2>&1 && return; sleep 0.1; done
    echo "node did not start:" >&2; tail -5 "$TMP/node.log" >&2; exit 1
}
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$TMP"' EXIT
rss() { awk '/VmRSS/ {printf "%d", $2/1024}' /proc/$PID/status; }
start
echo 0 >"$TMP/peak"
( peak=0; while kill -0 "$PID" 2>/dev/null; do
    r=$(awk '/VmRSS/ {printf "%d", $2/1024}' /proc/"$PID"/status 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$TMP/peak"
    sleep 0.1
  done ) &
printf '%-12s %-22s %10s %12s %8s\n' keys when rss_mb seconds peak_mb
printf '%-12s %-22s %10s %12s\n' 0 started "$(rss)" 0
done_keys=0
while [ "$done_keys" -lt "$KEYS" ]; do
    next=$(( done_keys + STEP < KEYS ? done_keys + STEP : KEYS ))
    t0=$(date +%s%N)
    python3 - "$done_keys" "$next" <<'PY' | redis-cli -p "$RESP" --pipe >/dev/null
import sys
a, b = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
buf = []
for i in range(a, b):
    k = b"key:%d" % i
    buf.append(b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(k), k))
    if len(buf) == 10000:
        out.write(b"".join(buf)); buf = []
out.write(b"".join(buf))
PY
    t1=$(date +%s%N)
    done_keys=$next
    printf '%-12s %-22s %10s %12s %8s\n' "$done_keys" written "$(rss)" "$(( (t1 - t0) / 1000000000 ))" "$(cat "$TMP/peak")"
done
sleep 12
printf '%-12s %-22s %10s\n' "$done_keys" "after 12 s idle" "$(rss)"
kill $PID; wait $PID 2>/dev/null || true
start
printf '%-12s %-22s %10s\n' "$done_keys" "after restart" "$(rss)"
python3 - "$KEYS" <<'PY' | redis-cli -p "$RESP" --pipe >/dev/null
import sys, random
n = int(sys.argv[1])
out = sys.stdout.buffer
for i in random.Random(7).sample(range(n), min(n, 200000)):
    k = b"key:%d" % i
    out.write(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
PY
printf '%-12s %-22s %10s\n' "$done_keys" "after 200k random GETs" "$(rss)"
bad=0
for i in 0 $((KEYS / 3)) $((KEYS / 2)) $((KEYS - 1)); do
    [ "$(redis-cli -p "$RESP" GET "key:$i")" = 1 ] || { echo "key:$i lost" >&2; bad=1; }
done
[ "$(redis-cli -p "$RESP" DBSIZE)" -ge "$KEYS" ] || { echo "DBSIZE $(redis-cli -p "$RESP" DBSIZE) < $KEYS" >&2; bad=1; }
exit $bad
