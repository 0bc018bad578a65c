#!/usr/bin/env bash
# Open-loop synced log appends (batches of 100 x 1 KiB): the closed-loop
# maximum of std first, then 25/50/75/90% of it offered to std and
# io_uring in turns, about SECS seconds each, latency from each batch's
# intended start (`logbench produce --throughput`).
#
# usage: tools/bench/log_open_sweep.sh [SECS]
set -euo pipefail
secs=${1:-6}
bin=${STRATA:-target/release/strata}
run() { "$bin" logbench produce --record-size 1024 --batch-size 100 --sync --no-baseline "$@"; }
max=$(run --num-records 100000 --io std | sed -n 's/.* records sent, \([0-9.]*\) records\/sec.*/\1/p')
echo "closed-loop maximum, std: $max records/s"
for pct in 25 50 75 90; do
    rate=$(python3 -c "print(int($max * $pct / 100))")
    n=$(python3 -c "print(max(1000, int($rate * $secs) // 100 * 100))")
    for io in std uring; do
        line=$(run --num-records "$n" --throughput "$rate" --io "$io")
        echo "$pct% ($rate records/s) $io: $(echo "$line" | sed -n 's/.*records\/sec (\([0-9.]* MB\/sec\)), \(.*\) (offered.*/\1, \2/p')"
    done
done
