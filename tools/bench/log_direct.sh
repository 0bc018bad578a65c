#!/usr/bin/env bash
# Unsynced log appends (batches of 100 x 1 KiB) buffered, O_DIRECT (each
# append written before it returns) and O_DIRECT with write-behind (1 MiB
# chunks, 4 in flight), on each backend, in turns, RUNS times, with fio's
# O_DIRECT sequential write (1 MiB, 8 in flight) as the floor after each
# round. Prints each line and the medians.
#   tools/bench/log_direct.sh RUNS DIR
set -euo pipefail
runs=${1:-3}
dir=${2:-bench-tmp/logdirect}
S=${STRATA:-target/release/strata}
mkdir -p "$dir"
declare -A got
lines=("std" "uring" "std --direct" "uring --direct" "std --direct --write-behind" "uring --direct --write-behind")
for r in $(seq 1 "$runs"); do
  for line in "${lines[@]}"; do
    set -- $line
    out=$($S logbench produce --num-records 1000000 --record-size 1024 --batch-size 100 \
      --io "$1" ${2:-} ${3:-} --dir "$dir/lb" --no-baseline $([ "$line" = "uring --direct --write-behind" ] && echo --fio-floor) 2>&1)
    rm -rf "$dir/lb"
    mbs=$(echo "$out" | sed -n 's/.*records\/sec (\([0-9.]*\) MB\/sec).*/\1/p' | head -1)
    got["$line"]+="$mbs "
    echo "run $r: $line: $mbs MB/s"
    fio=$(echo "$out" | sed -n 's/^floor: .*: \([0-9.]*\) MB\/sec;.*/\1/p')
    if [ -n "$fio" ]; then got[fio]+="$fio "; echo "run $r: fio O_DIRECT 1 MiB x 8: $fio MB/s"; fi
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for k in "${lines[@]}" fio; do
  echo "median: $k: $(echo ${got[$k]:-} | median) MB/s (${got[$k]:-})"
done
