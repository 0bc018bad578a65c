#!/usr/bin/env bash
# A 3-node cluster (replication factor 3, min.insync.replicas 2), two
# builds in turns: for each round and build, a fresh `strata cluster up`
# and kbench produce closed loop (3 partitions, 3 connections, 1 KiB
# records in batches of 100) with acks=all and acks=1, then open loop at
# RATE with acks=all (P99). Prints each round and the B/A ratio of the
# medians.
#
# usage: tools/bench/cluster_compare.sh A_BIN B_BIN [ROUNDS]
set -euo pipefail
A=$1
B=$2
ROUNDS=${3:-3}
KB=${KBENCH:-$B}
BASE=${BASE_PORT:-19700}
RATE=${RATE:-45000}
RECORDS=${RECORDS:-300000}
WORK=$(mktemp -d /tmp/strata-cluster-compare-XXXX)
CUR=""
trap '[ -n "$CUR" ] && "$CUR" cluster down --dir "$WORK/c" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
rate() { sed -nE '1s/.* records sent, ([0-9.]+) records\/sec.*/\1/p'; }
p99() { sed -nE '1s/.*, ([0-9.]+) ms 99th.*/\1/p'; }
declare -A R
for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin=${!side}
        rm -rf "$WORK/c"
        CUR=$bin
        "$bin" cluster up --nodes 3 --dir "$WORK/c" --base-port "$BASE" --set num.partitions=3 >/dev/null
        t=$RANDOM
        R[$side,all,$round]=$("$KB" kbench produce --bootstrap 127.0.0.1:$BASE --topic a-$t --num-records "$RECORDS" --record-size 1024 --batch-size 100 --acks all --connections 3 | rate)
        R[$side,one,$round]=$("$KB" kbench produce --bootstrap 127.0.0.1:$BASE --topic o-$t --num-records "$RECORDS" --record-size 1024 --batch-size 100 --acks 1 --connections 3 | rate)
        R[$side,p99,$round]=$("$KB" kbench produce --bootstrap 127.0.0.1:$BASE --topic p-$t --num-records $((RATE * 5)) --record-size 1024 --batch-size 100 --acks all --connections 3 --throughput "$RATE" | p99)
        "$bin" cluster down --dir "$WORK/c" >/dev/null
        CUR=""
        echo "round $round $side: acks=all ${R[$side,all,$round]} rec/s, acks=1 ${R[$side,one,$round]} rec/s, open loop $RATE/s acks=all P99 ${R[$side,p99,$round]} ms"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
printf '%-12s %12s %12s %8s\n' line A B B/A
for k in all one p99; do
    va=(); vb=()
    for round in $(seq 1 "$ROUNDS"); do va+=("${R[A,$k,$round]}"); vb+=("${R[B,$k,$round]}"); done
    ma=$(median "${va[@]}"); mb=$(median "${vb[@]}")
    printf '%-12s %12s %12s %8.2f\n' "$k" "$ma" "$mb" "$(awk -v a="$ma" -v b="$mb" 'BEGIN{print (a>0)?b/a:0}')"
done
