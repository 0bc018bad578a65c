#!/usr/bin/env bash
# Synced log appends (each batch of 100 x 1 KiB durable before append
# returns; closed loop, max throughput): std buffered (write + fdatasync),
# std and io_uring O_DIRECT (io_uring: RWF_DSYNC write from a registered
# buffer), in turns, RUNS times, each round followed by fio at the same
# size and depth 1: psync buffered + fdatasync, and io_uring O_DIRECT
# O_DSYNC. Prints each line, the medians and the median ratios.
#   tools/bench/log_sync.sh RUNS DIR
set -euo pipefail
runs=${1:-3}
dir=${2:-bench-tmp/logsync}
S=${STRATA:-target/release/strata}
mkdir -p "$dir"
declare -A got
lines=("std" "uring" "std --direct" "uring --direct" "uring --direct --preallocate")
for r in $(seq 1 "$runs"); do
  for line in "${lines[@]}"; do
    set -- $line
    out=$($S logbench produce --num-records 200000 --record-size 1024 --batch-size 100 --sync \
      --io "$1" ${2:-} ${3:-} --dir "$dir/lb" --no-baseline 2>&1)
    rm -rf "$dir/lb"
    rps=$(echo "$out" | sed -n 's/.* records sent, \([0-9.]*\) records\/sec.*/\1/p' | head -1)
    got["$line"]+="$rps "
    echo "run $r: $line: $rps records/s"
  done
  if command -v fio >/dev/null; then
    for f in "psync 0 --fdatasync=1 0" "io_uring 1 --sync=dsync 0" "io_uring 1 --sync=dsync 1"; do
      set -- $f
      iops=$(fio --name=w --filename="$dir/fio.tmp" --rw=write --bs=102400 --iodepth=1 --ioengine=$1 \
        --direct=$2 $3 --overwrite=$4 --size=512M --runtime=8 --output-format=terse 2>/dev/null | awk -F';' '{print $49}')
      rm -f "$dir/fio.tmp"
      got["fio $1 overwrite=$4"]+="$((iops * 100)) "
      echo "run $r: fio $1 direct=$2 $3 overwrite=$4, 100 KiB writes: $((iops * 100)) records/s equivalent"
    done
  fi
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for k in "${lines[@]}" "fio psync overwrite=0" "fio io_uring overwrite=0" "fio io_uring overwrite=1"; do
  echo "median: $k: $(echo ${got[$k]:-} | median) (${got[$k]:-})"
done
