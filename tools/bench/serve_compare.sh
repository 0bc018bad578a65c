#!/usr/bin/env bash
# One node, two builds in turns: `strata serve` of build A against build B
# (say, the commit before a change and HEAD), the kbench lines of
# BENCHMARKS.md ("strata serve over the Kafka protocol"): produce acks=all
# closed loop with 1 and 4 connections, acks=1, open loop at a fixed rate
# (P99), and consume from the page cache. Each round starts a fresh broker
# of each build on a fresh data directory; the lines print per round and
# then the B/A ratio of the medians.
#
# usage: tools/bench/serve_compare.sh A_BIN B_BIN [ROUNDS] [EXTRA_SERVE_ARGS...]
#   e.g. tools/bench/serve_compare.sh /tmp/base/target/release/strata target/release/strata 3
set -euo pipefail
A=$1
B=$2
ROUNDS=${3:-3}
shift 3 || true
EXTRA=("$@")
KB=${KBENCH:-$B}
PORT=${PORT:-19393}
RATE=${RATE:-130000}
WORK=$(mktemp -d /tmp/strata-serve-compare-XXXX)
PID=""
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT

start() { # bin
    rm -rf "$WORK/data"
    "$1" serve --listen 127.0.0.1:$PORT --data "$WORK/data" --io std "${EXTRA[@]}" >"$WORK/serve.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "broker did not start:"; cat "$WORK/serve.log"; exit 1
}
stop() {
    kill -TERM $PID; wait $PID 2>/dev/null || true; PID=""
}
rate() { sed -nE '1s/.* records sent, ([0-9.]+) records\/sec.*/\1/p'; }
p99() { sed -nE '1s/.*, ([0-9.]+) ms 99th.*/\1/p'; }
mbs() { sed -nE '1s/.*, ([0-9.]+) MB\/sec.*/\1/p'; }

declare -A R
for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin=${!side}
        start "$bin"
        t=$RANDOM
        R[$side,all1,$round]=$("$KB" kbench produce --bootstrap 127.0.0.1:$PORT --topic a1-$t --num-records 200000 --record-size 1024 --batch-size 100 --acks all | rate)
        R[$side,all4,$round]=$("$KB" kbench produce --bootstrap 127.0.0.1:$PORT --topic a4-$t --num-records 400000 --record-size 1024 --batch-size 100 --acks all --connections 4 | rate)
        R[$side,acks1,$round]=$("$KB" kbench produce --bootstrap 127.0.0.1:$PORT --topic k1-$t --num-records 400000 --record-size 1024 --batch-size 100 --acks 1 | rate)
        R[$side,p99,$round]=$("$KB" kbench produce --bootstrap 127.0.0.1:$PORT --topic o-$t --num-records 200000 --record-size 1024 --batch-size 100 --acks all --throughput "$RATE" | p99)
        "$KB" kbench produce --bootstrap 127.0.0.1:$PORT --topic c-$t --num-records 1000000 --record-size 1024 --batch-size 100 --acks 1 --connections 2 >/dev/null
        R[$side,consume,$round]=$("$KB" kbench consume --bootstrap 127.0.0.1:$PORT --topic c-$t --num-records 1000000 | mbs)
        stop
        echo "round $round $side: acks=all 1 conn ${R[$side,all1,$round]} rec/s, 4 conns ${R[$side,all4,$round]}, acks=1 ${R[$side,acks1,$round]}, open loop $RATE/s P99 ${R[$side,p99,$round]} ms, consume ${R[$side,consume,$round]} MB/s"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
printf '%-28s %12s %12s %8s\n' line A B B/A
for k in all1 all4 acks1 p99 consume; do
    va=(); vb=()
    for round in $(seq 1 "$ROUNDS"); do va+=("${R[A,$k,$round]}"); vb+=("${R[B,$k,$round]}"); done
    ma=$(median "${va[@]}"); mb=$(median "${vb[@]}")
    printf '%-28s %12s %12s %8.2f\n' "$k" "$ma" "$mb" "$(awk -v a="$ma" -v b="$mb" 'BEGIN{print (a>0)?b/a:0}')"
done
