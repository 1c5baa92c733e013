#!/usr/bin/env bash
# Reproduce the server measurements of docs/server.md: release build, the
# default demo catalog, and the loadgen example against `fathom serve` with
# each way of running searches. Loopback only; every run is bounded in time.
#
#   tools/serve_bench.sh                 # all modes, default sweep
#   MODES=pool EF=96 DURATION=5 tools/serve_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MODES=${MODES:-"auto inline pool blocking"}
EF=${EF:-96}
DURATION=${DURATION:-4}
CONCURRENCY=${CONCURRENCY:-1,4,16,64}
BATCH=${BATCH:-1}
PORT=${PORT:-50061}

cargo build --release --bin fathom --example loadgen
target/release/fathom demo --build-only

for mode in $MODES; do
    echo "== search threads: $mode"
    target/release/fathom serve --catalog demo-catalog --listen "127.0.0.1:$PORT" \
        --metrics-listen off --no-watch --search-threads "$mode" 2>/dev/null &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null || true' EXIT
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    target/release/examples/loadgen --snapshot demo-catalog/tracks.fathom \
        --target "127.0.0.1:$PORT" --index tracks --ef "$EF" --server-pid "$pid" \
        --duration "$DURATION" --concurrency "$CONCURRENCY" --batch "$BATCH"
    # Mixed load: Search at concurrency 8 while two BatchSearch(256) streams
    # run back to back.
    echo "-- mixed: Search at concurrency 8 + 2 BatchSearch(256) streams"
    target/release/examples/loadgen --target "127.0.0.1:$PORT" --ef "$EF" --duration 4 \
        --concurrency 2 --batch 256 --connections 1 --skip-in-process >/dev/null &
    bg=$!
    sleep 1.2
    target/release/examples/loadgen --target "127.0.0.1:$PORT" --ef "$EF" --duration 2 \
        --concurrency 8 --batch 1 --server-pid "$pid" --skip-in-process | tail -1
    wait "$bg"
    kill -TERM "$pid"
    wait "$pid" || true
    trap - EXIT
done
