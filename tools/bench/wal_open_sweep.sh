#!/usr/bin/env bash
# Open-loop synced WAL appends, medians of RUNS runs of `strata wal-bench
# --rate-sweep` (each run measures its own closed-loop maximum, so its
# steps are its own 25/50/75/90%). Prints every run's raw lines into
# $OUT.raw and, per line, the medians of achieved rate, P50, P99 and P99.9.
#
# usage: tools/bench/wal_open_sweep.sh RUNS OUT [wal-bench flags...]
#   e.g. tools/bench/wal_open_sweep.sh 3 /tmp/w100 --value-size 100 --threads 1,4,16
set -euo pipefail
runs=$1; out=$2; shift 2
bin=${STRATA:-target/release/strata}
: > "$out.raw"
for i in $(seq 1 "$runs"); do
    "$bin" wal-bench --rate-sweep --io std,uring "$@" | tee -a "$out.raw" >&2
done
python3 - "$out.raw" <<'PY' | tee "$out"
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) : (.*)", line.strip())
    if not m:
        continue
    name, rest = m.groups()
    if name.startswith("ratio/"):
        continue
    vals = {}
    for key, pat in [("max", r"^(\d+) appends/s"), ("achieved", r"achieved (\d+)/s"),
                     ("P50", r"P50 (\d+)"), ("P99", r"P99 (\d+)"), ("P99.9", r"P99\.9 (\d+)")]:
        mm = re.search(pat, rest)
        if mm:
            vals[key] = float(mm.group(1))
    rows.setdefault(name, []).append(vals)
print(f"{'line':<40} {'runs':>4} " + " ".join(f"{k:>9}" for k in ["max/s", "achieved", "P50 us", "P99 us", "P99.9 us"]))
for name, vs in rows.items():
    med = lambda k: statistics.median([v[k] for v in vs if k in v]) if any(k in v for v in vs) else float("nan")
    print(f"{name:<40} {len(vs):>4} " + " ".join(f"{med(k):>9.0f}" for k in ["max", "achieved", "P50", "P99", "P99.9"]))
PY
