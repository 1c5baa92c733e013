#!/usr/bin/env bash
# Hash against kmeans placement over 8 shards, searched in process: recall,
# QPS and distances per query at each ef, for every shard (hash) and for
# the P nearest (kmeans, P = 1..4). Usage:
#   [THREADS=1] [CLOSURE=0] [EFS=8,12,…] tools/partition_bench.sh BASE.fvecs IDS.txt QUERY.fvecs [DIR]
# THREADS query threads (QPS is their total; each query's shard searches
# share the machine's cores either way); CLOSURE places kmeans items near
# a second centroid there too (build --closure). Needs target/release/fathom.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1 ids=$2 queries=$3 dir=${4:-target/partition-bench}
fathom=target/release/fathom
efs=${EFS:-8,12,16,24,32,48,64,96,128}
threads=${THREADS:-1}
closure=${CLOSURE:-0}
mkdir -p "$dir"
for p in hash kmeans; do
    [ -f "$dir/$p/shards.json" ] || /usr/bin/time -f "$p build: %e s" \
        "$fathom" build --input "$base" --ids "$ids" --shards 8 --partition "$p" \
        $([ "$p" = kmeans ] && echo --closure "$closure") --output "$dir/$p/" >/dev/null
done
echo "== hash, every shard"
"$fathom" eval "$dir/hash/" --queries "$queries" --ef "$efs" --threads "$threads" 2>/dev/null
for probe in 1 2 3 4; do
    echo "== kmeans, probe $probe"
    "$fathom" eval "$dir/kmeans/" --queries "$queries" --ef "$efs" --probe "$probe" --threads "$threads" 2>/dev/null
done
