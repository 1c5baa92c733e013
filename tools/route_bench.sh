#!/usr/bin/env bash
# The router's costs on this machine, all processes on loopback: Search
# latency at concurrency 1 through `fathom route` over 4 shards × 2
# replicas against one `fathom serve` of the whole set, and through a
# router in front of that one server (the cost of the hop); p99 with one
# replica paused 50 ms of every 500 ms, hedged and not; and 10,000
# exclusions sent as keys against none; and the same calls against a bare
# tonic server that searches nothing (tools/echo.rs), the cost of a
# loopback gRPC hop and of the exclusions' bytes alone. Needs `cargo build
# --release --example loadgen --example echo` and target/release/fathom. Usage: tools/route_bench.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/route-bench}
n=${ROWS:-100000}
secs=${SECONDS_PER_RUN:-8}
fathom=target/release/fathom
loadgen=target/release/examples/loadgen
echo=target/release/examples/echo
mkdir -p "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ ! -f "$dir/data/base.fvecs" ]; then
    "$fathom" synth --out-dir "$dir/data" --n "$n" --dim 128 --clusters 64 --seed 2024 --metric cosine >/dev/null
fi
[ -f "$dir/whole.fathom" ] || "$fathom" build --input "$dir/data/base.fvecs" --ids "$dir/data/ids.txt" --metric cosine --output "$dir/whole.fathom" >/dev/null
[ -f "$dir/words/shards.json" ] || "$fathom" build --input "$dir/data/base.fvecs" --ids "$dir/data/ids.txt" --metric cosine --shards 4 --output "$dir/words/" >/dev/null

wait_port() { for _ in $(seq 100); do "$fathom" query --target "127.0.0.1:$1" list >/dev/null 2>&1 && return; sleep 0.2; done; echo "nothing on $1" >&2; exit 1; }

"$fathom" serve --index words="$dir/whole.fathom" --listen 127.0.0.1:50400 --metrics-listen off --no-watch 2>"$dir/whole.log" &
whole=$!; pids+=($whole)
spec=""
for s in 0 1 2 3; do
    group=""
    for r in 0 1; do
        port=$((50410 + s * 2 + r))
        "$fathom" serve --index words="$dir/words/" --shard $s --listen 127.0.0.1:$port --metrics-listen off --no-watch 2>"$dir/shard-$s-$r.log" &
        pids+=($!)
        group+="${group:+|}127.0.0.1:$port"
    done
    spec+="${spec:+,}$group"
done
slow=${pids[2]}  # shard 0, replica 0
route() {
    "$fathom" route --index "words=$spec" --listen 127.0.0.1:$1 --metrics-listen off --hedge-after "$2" 2>"$dir/router-$1.log" &
    pids+=($!)
}
route 50401 auto
route 50402 off
# One hop: a router in front of the one server of the whole set.
"$fathom" route --index "words=127.0.0.1:50400" --listen 127.0.0.1:50403 --metrics-listen off --hedge-after off 2>"$dir/router-50403.log" &
pids+=($!)
# The same with one runtime worker, as in a pod of one CPU.
TOKIO_WORKER_THREADS=1 "$fathom" route --index "words=127.0.0.1:50400" --listen 127.0.0.1:50405 --metrics-listen off --hedge-after off 2>"$dir/router-50405.log" &
pids+=($!)
# The yardstick: a bare tonic server that answers without searching.
"$echo" --snapshot "$dir/whole.fathom" --listen 127.0.0.1:50404 2>"$dir/echo.log" &
pids+=($!)
for p in 50400 50401 50402 50403 50405; do wait_port $p; done

probe() {  # target, label, extra loadgen flags...
    local target=$1 label=$2; shift 2
    echo "== $label"
    "$loadgen" --snapshot "$dir/whole.fathom" --target "127.0.0.1:$target" --index words --ef 64 \
        --concurrency 1 --batch 1 --connections 1 --skip-in-process "$@" | grep -E "Search" || true
}
probe 50400 "one server, the whole set" --duration "$secs"
probe 50404 "bare tonic echo (a loopback hop, no search)" --duration "$secs"
probe 50403 "router in front of that one server (one more hop)" --duration "$secs"
probe 50405 "the same, the router on one runtime worker" --duration "$secs"
probe 50401 "router, 4 shards x 2 replicas, hedging auto" --duration "$secs"
probe 50402 "router, 4 shards x 2 replicas, hedging off" --duration "$secs"
probe 50400 "one server, the whole set (again)" --duration "$secs"

# One replica paused 50 ms of every 500 ms.
( while true; do kill -STOP "$slow" 2>/dev/null; sleep 0.05; kill -CONT "$slow" 2>/dev/null; sleep 0.45; done ) &
pauser=$!; pids+=($pauser)
probe 50401 "router, one replica paused 50 ms of 500 ms, hedging auto" --duration "$secs"
probe 50402 "router, one replica paused 50 ms of 500 ms, hedging off" --duration "$secs"
kill "$pauser"; kill -CONT "$slow"

probe 50400 "one server: 10,000 exclusions as keys" --exclusions 10000 --exclusion-keys --duration 1
probe 50400 "one server: 10,000 exclusions as ids" --exclusions 10000 --duration 1
probe 50404 "bare tonic echo: 10,000 exclusions as keys" --exclusions 10000 --exclusion-keys --duration 1
