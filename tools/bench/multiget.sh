#!/usr/bin/env bash
# Batched point reads with direct I/O on a database much larger than the
# block cache: Strata's multi_get (std and io_uring) beside RocksDB's
# MultiGet (../shared/peers built with --features rocksdb) and fio's random
# 4 KiB reads at depth 1 and 32, all in one run. Prints the raw lines.
#
# usage: tools/bench/multiget.sh DIR [NUM] [READS]
#   PEERBENCH=/path/to/peerbench (default /tmp/peers-target/release/peerbench)
set -euo pipefail
dir=$1; num=${2:-2000000}; reads=${3:-200000}
bin=${STRATA:-target/release/strata}
peer=${PEERBENCH:-/tmp/peers-target/release/peerbench}
common="--num=$num --reads=$reads --batch_size=32 --use_direct_reads=true --cache_size=8388608"
mkdir -p "$dir"
if command -v fio >/dev/null; then
    for depth in 1 32; do
        fio --name=rr --filename="$dir/fio.dat" --size=1G --bs=4k --rw=randread --direct=1 \
            --ioengine=io_uring --iodepth=$depth --runtime=10 --time_based --output-format=terse \
            --terse-version=3 | awk -F';' -v d=$depth '{printf "fio randread 4k direct io_uring depth %s: %s IOPS\n", d, $8}'
    done
    rm -f "$dir/fio.dat"
else
    echo "fio not found (apt install fio): no floor"
fi
for io in std uring; do
    rm -rf "$dir/strata"
    echo "== strata --io=$io"
    "$bin" bench --benchmarks=fillrandom,multireadrandom,multireadrandom,multireadrandom,readrandom \
        $common --io=$io --db="$dir/strata" | grep -E "^(fillrandom|multireadrandom|readrandom)"
done
rm -rf "$dir/strata"
if [ -x "$peer" ]; then
    echo "== rocksdb"
    "$peer" --engine rocksdb --db "$dir/rocksdb" \
        --benchmarks fillrandom,multireadrandom,multireadrandom,multireadrandom,readrandom \
        --num "$num" --reads "$reads" --batch_size 32 --use_direct_reads=true --cache_size 8388608 \
        | grep -E "^(fillrandom|multireadrandom|readrandom)"
    rm -rf "$dir/rocksdb"
else
    echo "no peerbench at $peer: build ../shared/peers with --features rocksdb"
fi
