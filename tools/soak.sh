#!/usr/bin/env bash
# Soak: `fathom serve` on a layered index folder under `fathom bench` at a
# fixed share of its maximum QPS, with a reload of every index (SIGHUP)
# every 30 s and deletes flowing over gRPC, for MINUTES minutes. Prints,
# per minute, the calls, errors by code, QPS and p50/p99, and the server's
# RSS over the run. Loopback only; every step is bounded in time.
#
#   tools/soak.sh                          # 10 minutes at 70 % of max QPS
#   MINUTES=1 N=20000 tools/soak.sh        # a quick check of the script
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-10}
SHARE=${SHARE:-0.7}
N=${N:-100000}
DIM=${DIM:-128}
PORT=${PORT:-50071}
METRICS=${METRICS:-50072}
RELOAD_EVERY=${RELOAD_EVERY:-30}
DELETE_EVERY=${DELETE_EVERY:-2}
DELETE_BATCH=${DELETE_BATCH:-20}
WORK=${WORK:-target/soak}

cargo build --release --bin fathom
fathom=target/release/fathom
rm -rf "$WORK"
mkdir -p "$WORK"
"$fathom" synth --out-dir "$WORK/data" --n "$N" --dim "$DIM" --queries 1000 >/dev/null
"$fathom" build --input "$WORK/data/base.fvecs" --ids "$WORK/data/ids.txt" \
    --attributes "$WORK/data/attrs.jsonl" --output "$WORK/tracks/" >/dev/null

"$fathom" serve --index "tracks=$WORK/tracks" --listen "127.0.0.1:$PORT" \
    --metrics-listen "127.0.0.1:$METRICS" 2>"$WORK/serve.log" &
server=$!
helpers=()
cleanup() {
    for p in "${helpers[@]}"; do kill "$p" 2>/dev/null || true; done
    kill -TERM "$server" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
target="http://127.0.0.1:$PORT"
bench=("$fathom" bench --target "$target" --index tracks --queries "$WORK/data/query.fvecs")

# The maximum: closed loop, 16 callers.
max=$("${bench[@]}" --concurrency 16 --duration 10s --json | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["qps"])')
rate=$(python3 -c "print(max(1, int($max * $SHARE)))")
echo "max QPS $max; soaking at $rate QPS ($SHARE) for $MINUTES min, SIGHUP every ${RELOAD_EVERY}s, $DELETE_BATCH deletes every ${DELETE_EVERY}s"

# RSS every 5 s.
(while kill -0 "$server" 2>/dev/null; do
    echo "$(date +%s) $(awk '/VmRSS/ {print $2}' "/proc/$server/status")" >>"$WORK/rss.txt"
    sleep 5
done) &
helpers+=($!)
# Reloads.
(while sleep "$RELOAD_EVERY"; do kill -HUP "$server"; echo "$(date +%s)" >>"$WORK/reloads.txt"; done) &
helpers+=($!)
# Deletes: the base's ids in order, DELETE_BATCH at a time.
(i=1; while sleep "$DELETE_EVERY"; do
    sed -n "${i},$((i + DELETE_BATCH - 1))p" "$WORK/data/ids.txt" >"$WORK/delete.txt"
    if "$fathom" query --target "$target" --timeout 5s delete --index tracks --ids "$WORK/delete.txt" >>"$WORK/deletes.log" 2>&1; then
        echo ok >>"$WORK/delete-outcomes.txt"
    else
        echo failed >>"$WORK/delete-outcomes.txt"
    fi
    i=$((i + DELETE_BATCH))
done) &
helpers+=($!)

for m in $(seq "$MINUTES"); do
    "${bench[@]}" --rate "$rate" --concurrency 64 --duration 60s --warmup 0s --json \
        >>"$WORK/minutes.jsonl"
done

python3 - "$WORK" <<'EOF'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
print("minute  calls  errors  codes  QPS  p50_us  p99_us  late_starts")
total_err = 0
for i, line in enumerate(open(work / "minutes.jsonl"), 1):
    r = json.loads(line)
    errs = {c: n for c, n in r["codes"].items() if c != "OK"}
    total_err += r["errors"]
    print(f"{i:6}  {r['sent']:5}  {r['errors']:6}  {errs or '-'}  {r['qps']:.0f}  {r['p50_us']:.0f}  {r['p99_us']:.0f}  {r['late']}")
rss = [int(l.split()[1]) for l in open(work / "rss.txt") if len(l.split()) == 2]
print(f"RSS MiB: start {rss[0]/1024:.0f}, min {min(rss)/1024:.0f}, max {max(rss)/1024:.0f}, end {rss[-1]/1024:.0f} ({len(rss)} samples)")
out = (work / "delete-outcomes.txt").read_text().split()
print(f"deletes: {out.count('ok')} calls ok, {out.count('failed')} failed; reloads: {len((work / 'reloads.txt').read_text().split())}")
print(f"search errors: {total_err}")
EOF
