#!/usr/bin/env bash
# The cost of online recall: Search QPS and latency from one server with
# --recall-sample 0 and one with --recall-sample 0.01 (the exact re-runs at
# the default --recall-budget 0.05), over the same snapshot, at concurrency
# 1 and at 8 (saturating this machine), alternating the two servers so that
# both see the same machine. Then what the sampler reported. Needs `cargo
# build --release --example loadgen` and target/release/fathom.
# Usage: tools/recall_bench.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/recall-bench}
n=${ROWS:-100000}
secs=${SECONDS_PER_RUN:-8}
rounds=${ROUNDS:-2}
fathom=target/release/fathom
loadgen=target/release/examples/loadgen
mkdir -p "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ ! -f "$dir/data/base.fvecs" ]; then
    "$fathom" synth --out-dir "$dir/data" --n "$n" --dim 128 --clusters 64 --seed 2024 --metric cosine >/dev/null
fi
[ -f "$dir/whole.fathom" ] || "$fathom" build --input "$dir/data/base.fvecs" --ids "$dir/data/ids.txt" --metric cosine --output "$dir/whole.fathom" >/dev/null

wait_port() { for _ in $(seq 100); do "$fathom" query --target "127.0.0.1:$1" list >/dev/null 2>&1 && return; sleep 0.2; done; echo "nothing on $1" >&2; exit 1; }
"$fathom" serve --index words="$dir/whole.fathom" --listen 127.0.0.1:50500 --metrics-listen off --no-watch --recall-sample 0 2>"$dir/off.log" &
pids+=($!)
"$fathom" serve --index words="$dir/whole.fathom" --listen 127.0.0.1:50501 --metrics-listen off --no-watch --recall-sample 0.01 2>"$dir/on.log" &
pids+=($!)
wait_port 50500
wait_port 50501

probe() {  # port, label, concurrency
    echo "== $2, concurrency $3 (batch conc calls/s queries/s p50_us p99_us errors ...)"
    "$loadgen" --snapshot "$dir/whole.fathom" --target "127.0.0.1:$1" --index words --ef 64 \
        --concurrency "$3" --batch 1 --connections 4 --skip-in-process --duration "$secs" | grep -E "^ +1 +[0-9]" || true
}
for round in $(seq "$rounds"); do
    for c in 1 8; do
        probe 50500 "round $round: --recall-sample 0" "$c"
        probe 50501 "round $round: --recall-sample 0.01" "$c"
    done
done
echo "== what the sampler reported"
"$fathom" query --target 127.0.0.1:50501 recall --index words
