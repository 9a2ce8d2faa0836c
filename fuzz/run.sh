#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser (libFuzzer through cargo-fuzz), then the corpus
# minimised in place so `cargo nextest run -p speedlayer-fuzz` replays it in CI.
#
#   fuzz/run.sh [RUNS_PER_TARGET] [TARGET ...]     default: 10,000,000 runs, every target
#
# Stable toolchain: cargo-fuzz passes nightly flags, so RUSTC_BOOTSTRAP=1; no sanitizer
# (the project forbids unsafe code; what this hunts is panics, arithmetic overflow —
# debug assertions are on — hangs and memory blow-ups). Needs g++ (libFuzzer is C++).
# A crash leaves its input in fuzz/artifacts/<target>/ and stops the script (exit 1).
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(resp_request resp_reply http_update batch_row event_mapping wire_frame stored_state)
fi
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo fuzz build --sanitizer none
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    before=$(ls "corpus/$t" | wc -l)
    echo "=== $t: $runs runs (corpus: $before inputs)"
    log=$(mktemp)
    start=$SECONDS
    if ! cargo fuzz run --sanitizer none "$t" -- -runs="$runs" -rss_limit_mb=2048 -timeout=10 \
        -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "=== $t: CRASH, input in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    # Keep the smallest set of inputs with the same coverage.
    cargo fuzz cmin --sanitizer none "$t" >/dev/null 2>&1
    after=$(ls "corpus/$t" | wc -l)
    summary+=("$t | $done_line | $cov | $((SECONDS - start)) s | corpus $before -> $after")
    rm -f "$log"
done
echo
echo "target | executions | coverage | time | corpus"
printf '%s\n' "${summary[@]}"
