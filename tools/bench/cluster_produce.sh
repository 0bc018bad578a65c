#!/usr/bin/env bash
# Produce on a 3-node cluster (replication factor 3, min.insync.replicas 2)
# against acks=1, against Kafka's unsynced acks (replica.ack.unsynced, to
# measure what fsync-before-ack costs) and against one node: for each, the
# closed-loop maximum, then open loop at 25/50/75% of it. 1 KiB records,
# batches of 100, 3 partitions, 3 connections (one per partition, on its
# leader). Figures go to BENCHMARKS.md.
#
# usage: tools/bench/cluster_produce.sh [SECONDS_PER_STEP]
set -euo pipefail
cd "$(dirname "$0")/../.."
STRATA=${STRATA:-target/release/strata}
SECS=${1:-10}
MAX_RECORDS=${MAX_RECORDS:-300000}
WORK=$(mktemp -d /tmp/strata-cluster-bench-XXXX)
BASE=${BASE_PORT:-19700}
trap '$STRATA cluster down --dir "$WORK/c" >/dev/null 2>&1 || true; kill $SINGLE 2>/dev/null || true; rm -rf "$WORK"' EXIT
SINGLE=""

bench() { # name bootstrap acks
    local name=$1 boot=$2 acks=$3 topic="bench-$RANDOM"
    local out max
    out=$($STRATA kbench produce --bootstrap "$boot" --topic "$topic" --acks "$acks" \
        --num-records "$MAX_RECORDS" --record-size 1024 --batch-size 100 --connections 3)
    max=$(echo "$out" | head -1 | sed -E 's/.* records sent, ([0-9.]+) records\/sec.*/\1/')
    printf '%-22s max    %9.0f rec/s  %s\n' "$name" "$max" "$(echo "$out" | head -1 | sed -E 's/.*latency, //')"
    for pct in 25 50 75; do
        local rate n
        rate=$(awk -v m="$max" -v p="$pct" 'BEGIN{printf "%d", m*p/100}')
        n=$(( rate * SECS ))
        out=$($STRATA kbench produce --bootstrap "$boot" --topic "$topic" --acks "$acks" \
            --num-records "$n" --record-size 1024 --batch-size 100 --connections 3 --throughput "$rate")
        printf '%-22s %3d%%  %9d rec/s  %s\n' "$name" "$pct" "$rate" "$(echo "$out" | head -1 | sed -E 's/.*avg latency, //')"
    done
}

$STRATA cluster up --nodes 3 --dir "$WORK/c" --base-port "$BASE" --set num.partitions=3 >/dev/null
bench "3 nodes acks=all" 127.0.0.1:$BASE all
bench "3 nodes acks=1" 127.0.0.1:$BASE 1
$STRATA cluster down --dir "$WORK/c" >/dev/null
rm -rf "$WORK/c"
$STRATA cluster up --nodes 3 --dir "$WORK/c" --base-port "$BASE" --set num.partitions=3 \
    --set replica.ack.unsynced=true >/dev/null
bench "3 nodes acks=all unsync" 127.0.0.1:$BASE all
$STRATA cluster down --dir "$WORK/c" >/dev/null
$STRATA serve --listen 127.0.0.1:$((BASE + 50)) --data "$WORK/single" --set num.partitions=3 \
    >"$WORK/single.log" 2>&1 &
SINGLE=$!
sleep 1
bench "1 node acks=all" 127.0.0.1:$((BASE + 50)) all
