#!/usr/bin/env bash
# Compare fathom with peer ANN libraries on one dataset.
#
#   tools/compare.sh BASE.fvecs QUERIES.fvecs GT.ivecs [METRIC] [OUTDIR]
#
# METRIC is cosine (default), l2 or dot; OUTDIR defaults to compare-out.
# GT rows are 0-based row numbers of BASE (at least K columns).
#
# Steps:
#   1. builds fathom's snapshot once per storage (f32, i8, bf16) with
#      M / ef_construction below, timing each build (wall clock);
#   2. runs `fathom eval ... --threads 1 --json` on each snapshot, once per
#      load in LOADS (mmap, then memory), and tags every line with engine
#      fathom-<storage> (fathom-<storage>-memory), build_s and threads;
#   3. runs tools/compare_peers.py (hnswlib, voyager, usearch, faiss, annoy)
#      with the same M, ef_construction, ef list, k and build threads;
#   4. writes everything to OUTDIR/results.jsonl, prints a markdown table
#      (QPS at recall 0.90/0.95/0.99, build time; also saved as
#      OUTDIR/summary.md) and plots OUTDIR/recall_qps.png.
#
# Environment overrides:
#   M=16 EFC=200 EFS=10,16,24,32,48,64,96,128,192,256 K=10
#   THREADS=<all cores>      build threads, the same for every engine
#                            (search always runs on 1 thread)
#   STORAGES="f32 f32-full i8 bf16"   fathom variants; f32-full searches
#                            the f32 snapshot with --no-early-reject
#   LOADS="mmap memory"      how fathom's eval holds each snapshot (--load):
#                            mmap runs are tagged fathom-<variant>, the
#                            others fathom-<variant>-<load> (docs/format.md)
#   PEERS=hnswlib,voyager,usearch,faiss,annoy
#   REPEATS=1                time each ef this many times, keep the
#                            fastest (helps on small query sets / busy machines)
#   FATHOM_BIN=path          use this fathom binary instead of building one
#   SKIP_FATHOM=1 / SKIP_PEERS=1   run only one side (results of the
#                            skipped side already in OUTDIR are kept)
#
# fathom is compiled once with `cargo build --release` before any timing, and
# the binary is then run directly: the same as `cargo run --release -- ...`
# without counting cargo's own start-up in the build time.
set -euo pipefail

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[[ $# -ge 3 && $# -le 5 ]] || usage

BASE=$1 QUERIES=$2 GT=$3
METRIC=${4:-cosine}
OUTDIR=${5:-compare-out}
M=${M:-16}
EFC=${EFC:-200}
EFS=${EFS:-10,16,24,32,48,64,96,128,192,256}
K=${K:-10}
THREADS=${THREADS:-$(nproc)}
STORAGES=${STORAGES:-"f32 f32-full i8 bf16"}
LOADS=${LOADS:-"mmap memory"}
PEERS=${PEERS:-hnswlib,voyager,usearch,faiss,annoy}
REPEATS=${REPEATS:-1}

case $METRIC in cosine|l2|dot) ;; *) echo "compare.sh: unknown metric '$METRIC'" >&2; exit 2 ;; esac
for f in "$BASE" "$QUERIES" "$GT"; do
    [[ -r $f ]] || { echo "compare.sh: cannot read $f" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=$ROOT/tools
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
log() { echo "[compare.sh] $*" >&2; }

# The venv (numpy, matplotlib, peers) is needed by both the tagging step and the plot.
python3 "$TOOLS/compare_peers.py" --setup
PY=$TOOLS/.venv/bin/python

now() { echo "$EPOCHREALTIME"; }
elapsed() { "$PY" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"; }

# Adds engine / build_s / threads to each JSON line of fathom's eval output.
tag_lines() {  # ENGINE BUILD_S < eval output > tagged lines
    "$PY" -c '
import json, sys
engine, build_s, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    rec = json.loads(line)
    rec.pop("engine", None)
    rec = {"engine": engine, **rec, "build_s": build_s, "threads": threads, "search_threads": 1}
    print(json.dumps(rec))
' "$1" "$2" "$THREADS"
}

# ---------------------------------------------------------------- fathom
if [[ -z ${SKIP_FATHOM:-} ]]; then
    if [[ -n ${FATHOM_BIN:-} ]]; then
        FATHOM=$FATHOM_BIN
    else
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release)
        FATHOM=${CARGO_TARGET_DIR:-$ROOT/target}/release/fathom
    fi
    [[ -x $FATHOM ]] || { echo "compare.sh: no fathom binary at $FATHOM" >&2; exit 1; }

    build_thread_args=()
    if "$FATHOM" build --help 2>/dev/null | grep -q -- '--threads'; then
        build_thread_args=(--threads "$THREADS")
    else
        log "fathom build has no --threads option; it uses its own default"
    fi

    # Evaluates one snapshot under each of LOADS and tags the lines.
    eval_variant() {  # VARIANT SNAP BUILD_S [EXTRA EVAL ARGS...]
        local variant=$1 snap=$2 build_s=$3 load engine load_args
        shift 3
        for load in $LOADS; do
            # mmap is eval's default: left unsaid, so a FATHOM_BIN from
            # before --load existed still runs the mmap variants.
            engine=fathom-$variant load_args=()
            [[ $load == mmap ]] || { engine=$engine-$load; load_args=(--load "$load"); }
            log "$engine: eval ef=$EFS"
            if ! "$FATHOM" eval "$snap" --queries "$QUERIES" --ground-truth "$GT" -k "$K" \
                    --ef "$EFS" --threads 1 --repeats "$REPEATS" "${load_args[@]}" --json "$@" \
                    > "$OUTDIR/$engine.eval.jsonl"; then
                log "$engine: eval FAILED, skipping this variant"
                continue
            fi
            tag_lines "$engine" "$build_s" < "$OUTDIR/$engine.eval.jsonl" >> "$OUTDIR/fathom.jsonl"
        done
    }

    : > "$OUTDIR/fathom.jsonl"
    f32_build_s=
    for storage in $STORAGES; do
        engine=fathom-$storage
        if [[ $storage == f32-full ]]; then
            # The f32 snapshot again, every candidate scored in full.
            [[ -n $f32_build_s ]] || { log "$engine: needs the f32 variant first, skipping"; continue; }
            eval_variant "$storage" "$OUTDIR/fathom.fathom" "$f32_build_s" --no-early-reject
            continue
        fi
        if [[ $storage == f32 ]]; then
            snap=$OUTDIR/fathom.fathom
            storage_args=()
        else
            snap=$OUTDIR/fathom-$storage.fathom
            storage_args=(--storage "$storage")
        fi
        log "$engine: building $snap (M=$M, efc=$EFC, threads=$THREADS)"
        t0=$(now)
        if ! "$FATHOM" build --input "$BASE" --metric "$METRIC" --m "$M" \
                --ef-construction "$EFC" "${storage_args[@]}" "${build_thread_args[@]}" \
                --output "$snap" >&2; then
            log "$engine: build FAILED, skipping this variant"
            continue
        fi
        build_s=$(elapsed "$t0" "$(now)")
        log "$engine: built in ${build_s}s"
        [[ $storage == f32 ]] && f32_build_s=$build_s
        eval_variant "$storage" "$snap" "$build_s"
    done
fi

# ---------------------------------------------------------------- peers
if [[ -z ${SKIP_PEERS:-} ]]; then
    log "peers: $PEERS"
    "$PY" "$TOOLS/compare_peers.py" --base "$BASE" --queries "$QUERIES" --ground-truth "$GT" \
        --metric "$METRIC" -k "$K" --ef "$EFS" --m "$M" --ef-construction "$EFC" \
        --build-threads "$THREADS" --peers "$PEERS" --repeats "$REPEATS" --json > "$OUTDIR/peers.jsonl" ||
        log "compare_peers.py exited with an error; using whatever it produced"
fi

# ---------------------------------------------------------------- summary
parts=()
for f in "$OUTDIR/fathom.jsonl" "$OUTDIR/peers.jsonl"; do
    [[ -s $f ]] && parts+=("$f")
done
[[ ${#parts[@]} -gt 0 ]] || { echo "compare.sh: no results to summarise" >&2; exit 1; }
cat "${parts[@]}" > "$OUTDIR/results.jsonl"

title="$(basename "$(dirname "$(realpath "$BASE")")") ($METRIC, k=$K, M=$M, efc=$EFC, build threads=$THREADS)"
"$PY" "$TOOLS/plot_compare.py" "$OUTDIR/results.jsonl" --png "$OUTDIR/recall_qps.png" \
    --title "$title" | tee "$OUTDIR/summary.md"
log "results: $OUTDIR/results.jsonl, table: $OUTDIR/summary.md, plot: $OUTDIR/recall_qps.png"
