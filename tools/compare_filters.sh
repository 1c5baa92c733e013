#!/usr/bin/env bash
# Filtered search: fathom vs hnswlib and faiss on a dataset directory laid out
# like ../shared/data/words-dev-384 (base.fvecs, query.fvecs, gt.ivecs,
# ids.txt, attrs.jsonl).
#
#   tools/compare_filters.sh [DATADIR] [OUTDIR] [extra compare_filters.py flags]
#
# DATADIR defaults to ../shared/data/words-dev-384 (relative to the repository),
# OUTDIR to compare-filters-out. Writes OUTDIR/raw.jsonl and OUTDIR/filters.md
# and prints one table per filter; see tools/compare_filters.py for the method.
#
# Environment: FATHOM (binary; default fathom on PATH, else
# target/release/fathom), METRIC=cosine K=10
# EFS=10,16,24,32,48,64,96,128,256 REPEATS=3 PLANS=auto,graph
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${1:-$ROOT/../shared/data/words-dev-384}
OUT=${2:-compare-filters-out}
shift $(( $# < 2 ? $# : 2 ))
for f in base.fvecs query.fvecs ids.txt attrs.jsonl; do
    [ -f "$DATA/$f" ] || { echo "compare_filters.sh: missing $DATA/$f" >&2; exit 2; }
done
GT=()
[ -f "$DATA/gt.ivecs" ] && GT=(--ground-truth "$DATA/gt.ivecs")
exec python3 "$ROOT/tools/compare_filters.py" \
    --base "$DATA/base.fvecs" --queries "$DATA/query.fvecs" \
    --ids "$DATA/ids.txt" --attrs "$DATA/attrs.jsonl" "${GT[@]}" \
    --metric "${METRIC:-cosine}" -k "${K:-10}" \
    --ef "${EFS:-10,16,24,32,48,64,96,128,256}" --repeats "${REPEATS:-3}" \
    --fathom-plans "${PLANS:-auto,graph}" --out "$OUT" "$@"
