#!/usr/bin/env bash
# A sharded fathom cluster on loopback: N shards × R replicas of `fathom serve`
# behind one `fathom route`, built from seeded synthetic data (64-d, cosine).
#
#   tools/cluster.sh up [--shards N] [--replicas R] [--dir DIR] [--port BASE]
#   tools/cluster.sh down [--dir DIR]
#   env: FATHOM (binary), CLUSTER_ROWS (rows to synthesize), CLUSTER_THREADS (build threads)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FATHOM=${FATHOM:-$ROOT/target/release/fathom}
ROWS=${CLUSTER_ROWS:-200000}
THREADS=${CLUSTER_THREADS:-}
SHARDS=4
REPLICAS=2
DIR=cluster
BASE=50100
WAIT_SECONDS=60

usage() {
    sed -n '5,7s/^# \{0,3\}//p' "$0" >&2
    exit 2
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

# A PID counts as ours only while it runs `fathom serve` or `fathom route`:
# after a reboot the numbers in the pid file may belong to anything.
ours() {
    local pid=$1 args=()
    [[ -r /proc/$pid/cmdline ]] || return 1
    mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ ${#args[@]} -ge 2 && ( ${args[1]} == serve || ${args[1]} == route ) ]]
}

# For the processes this run started: alive and not yet reaped. (Between
# fork and exec their command line is still this script's, so `ours` would
# not know them yet.)
running() {
    local state
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

live_pids() {
    local pid
    [[ -f $DIR/pids ]] || return 0
    while read -r pid _; do
        [[ $pid =~ ^[0-9]+$ ]] && ours "$pid" && echo "$pid"
    done <"$DIR/pids"
    return 0
}

down() {
    if [[ ! -f $DIR/pids ]]; then
        echo "nothing to stop: no $DIR/pids"
        return 0
    fi
    local pids left=() pid i
    mapfile -t pids < <(live_pids)
    if [[ ${#pids[@]} -gt 0 ]]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        # Servers finish in-flight calls on TERM; idle ones exit at once.
        for ((i = 0; i < 50; i++)); do
            left=()
            for pid in "${pids[@]}"; do ours "$pid" && left+=("$pid"); done
            [[ ${#left[@]} -eq 0 ]] && break
            sleep 0.1
        done
        if [[ ${#left[@]} -gt 0 ]]; then
            echo "still running after 5 s, killing: ${left[*]}"
            kill -KILL "${left[@]}" 2>/dev/null || true
        fi
    fi
    rm -f "$DIR/pids"
    echo "stopped ${#pids[@]} process(es) of $DIR"
}

# Start one background process, log to $1, and record its PID at once so
# that `down` can stop it even if `up` fails later on.
start() {
    local log=$1
    shift
    nohup "$@" </dev/null >"$log" 2>&1 &
    STARTED=$!
    echo "$STARTED" >>"$DIR/pids"
}

answers() {
    "$FATHOM" query --target "$1" --timeout 1s list >/dev/null 2>&1
}

fail_up() {
    echo "cluster.sh: $*" >&2
    echo "the processes started so far are still running; stop them with: $0 down --dir $DIR" >&2
    exit 1
}

make_data() {
    [[ -f $DIR/data/base.fvecs ]] && return 0
    echo "synthesizing $ROWS × 64 cosine vectors into $DIR/data"
    rm -rf "$DIR/data.partial"
    "$FATHOM" synth --out-dir "$DIR/data.partial" --n "$ROWS" --dim 64 --metric cosine
    # base.fvecs goes last: its presence is what marks the data complete.
    mkdir -p "$DIR/data"
    find "$DIR/data.partial" -mindepth 1 -maxdepth 1 ! -name base.fvecs -exec mv -f {} "$DIR/data/" \;
    mv -f "$DIR/data.partial/base.fvecs" "$DIR/data/"
    rmdir "$DIR/data.partial"
}

make_index() {
    [[ -f $DIR/words/shards.json ]] && return 0
    echo "building $DIR/words: $SHARDS shards"
    local threads=()
    [[ -n $THREADS ]] && threads=(--threads "$THREADS")
    # Built beside its final name and renamed, so an interrupted build never
    # leaves a $DIR/words that a later run would take for finished.
    rm -rf "$DIR/words.partial"
    "$FATHOM" build --input "$DIR/data/base.fvecs" --ids "$DIR/data/ids.txt" \
        --attributes "$DIR/data/attrs.jsonl" --metric cosine --shards "$SHARDS" \
        "${threads[@]}" --output "$DIR/words.partial/"
    mv "$DIR/words.partial" "$DIR/words"
}

up() {
    [[ -x $FATHOM ]] || die "no fathom binary at $FATHOM: run 'cargo build --release' first (or set FATHOM)"
    local router=$((BASE - 50)) metrics=$((BASE - 49)) last=$((BASE + SHARDS * REPLICAS - 1))
    ((router >= 1024)) || die "--port $BASE puts the router below port 1024 (it listens on BASE - 50)"
    ((last <= 65535)) || die "--port $BASE with $SHARDS × $REPLICAS replicas runs past port 65535"

    mkdir -p "$DIR/logs"
    if [[ -f $DIR/pids ]]; then
        [[ -n $(live_pids) ]] && die "$DIR already runs a cluster: run '$0 down --dir $DIR' first"
        rm -f "$DIR/pids"
    fi

    # An existing index is checked before any data is made, which takes a while.
    if [[ -f $DIR/words/shards.json ]]; then
        local built
        built=$(sed -n 's/^ *"shards": *\([0-9]*\).*/\1/p' "$DIR/words/shards.json")
        [[ $built == "$SHARDS" ]] ||
            die "$DIR/words holds $built shards, not $SHARDS: pass --shards $built, or remove $DIR/words to rebuild"
    elif [[ -e $DIR/words ]]; then
        die "$DIR/words exists but has no shards.json: remove it, or choose another --dir"
    fi
    make_data
    make_index

    local s r port name shard_map=() pids=() names=() ports=()
    for ((s = 0; s < SHARDS; s++)); do
        local replicas=()
        for ((r = 0; r < REPLICAS; r++)); do
            port=$((BASE + s * REPLICAS + r))
            name=shard-$s-$r
            start "$DIR/logs/$name.log" "$FATHOM" serve --index "words=$DIR/words/" --shard "$s" \
                --listen "127.0.0.1:$port" --metrics-listen off --no-watch
            pids+=("$STARTED") names+=("$name") ports+=("$port")
            replicas+=("127.0.0.1:$port")
        done
        shard_map+=("$(IFS='|'; echo "${replicas[*]}")")
    done
    local index_map
    index_map="words=$(IFS=','; echo "${shard_map[*]}")"
    echo "started ${#pids[@]} shard servers on 127.0.0.1:$BASE-$last"

    # One deadline for the whole start: every shard server, then the router.
    local deadline=$((SECONDS + WAIT_SECONDS)) i pending
    while :; do
        pending=0
        for i in "${!pids[@]}"; do
            if ! running "${pids[$i]}"; then
                tail -n 5 "$DIR/logs/${names[$i]}.log" >&2 || true
                fail_up "${names[$i]} (port ${ports[$i]}) exited; its log is $DIR/logs/${names[$i]}.log"
            fi
            answers "127.0.0.1:${ports[$i]}" || pending=$((pending + 1))
        done
        ((pending == 0)) && break
        ((SECONDS < deadline)) || fail_up "$pending shard server(s) not answering after ${WAIT_SECONDS}s; logs in $DIR/logs"
        sleep 0.2
    done

    start "$DIR/logs/router.log" "$FATHOM" route --listen "127.0.0.1:$router" \
        --metrics-listen "127.0.0.1:$metrics" --index "$index_map"
    local router_pid=$STARTED
    until answers "127.0.0.1:$router"; do
        if ! running "$router_pid"; then
            tail -n 5 "$DIR/logs/router.log" >&2 || true
            if grep -q "unrecognized subcommand" "$DIR/logs/router.log"; then
                fail_up "the router did not start: $FATHOM has no 'route' command; rebuild it with 'cargo build --release'"
            fi
            fail_up "the router exited; its log is $DIR/logs/router.log"
        fi
        ((SECONDS < deadline)) || fail_up "the router is not answering on 127.0.0.1:$router after ${WAIT_SECONDS}s; its log is $DIR/logs/router.log"
        sleep 0.2
    done

    local id lang target="127.0.0.1:$router"
    id=$(head -n 1 "$DIR/data/ids.txt")
    # Filter on the first item's own language, so the filtered call has hits.
    lang=$(head -n 1 "$DIR/data/attrs.jsonl" | sed -n 's/.*"lang":"\([^"]*\)".*/\1/p')
    cat <<EOF

fathom cluster: $SHARDS shards × $REPLICAS replicas behind a router at $target
  router metrics: http://127.0.0.1:$metrics/metrics
  logs: $DIR/logs/   pids: $DIR/pids

Try:
  $FATHOM query --target $target list
  $FATHOM query --target $target search --index words --id $id -k 10
  $FATHOM query --target $target search --index words --id $id -k 10 --filter 'lang = "${lang:-sv}"' --with-attributes

Failover: stop ${names[0]} (shard 0, replica 0, 127.0.0.1:${ports[0]}) and search again:
  kill -9 ${pids[0]}

Stop everything:
  $0 down --dir $DIR
EOF
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
while [[ $# -gt 0 ]]; do
    case $1 in
    --shards | --replicas | --dir | --port)
        [[ $# -ge 2 ]] || die "$1 needs a value"
        case $1 in
        --shards) SHARDS=$2 ;;
        --replicas) REPLICAS=$2 ;;
        --dir) DIR=$2 ;;
        --port) BASE=$2 ;;
        esac
        shift 2
        ;;
    -h | --help) usage ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -n $DIR ]] || die "--dir needs a folder"
is_count "$SHARDS" || die "--shards needs a positive whole number"
is_count "$REPLICAS" || die "--replicas needs a positive whole number"
is_count "$BASE" || die "--port needs a port number"
is_count "$ROWS" || die "CLUSTER_ROWS needs a positive whole number"
[[ -z $THREADS ]] || is_count "$THREADS" || die "CLUSTER_THREADS needs a positive whole number"

case $cmd in
up) up ;;
down) down ;;
-h | --help) usage ;;
*) die "unknown command: $cmd (up or down)" ;;
esac
