#!/usr/bin/env python3
"""Off-CPU time per blocking stack, from a system-wide scheduler trace.

Where a synced append waits does not show in a CPU profile (the thread is
asleep). This reads `perf script` of `sched:sched_switch` events recorded
with call graphs on every CPU, pairs each switch-out of a thread whose
name starts with "strata" with its next switch-in, and sums the time
between them under the stack it blocked in.

usage:
  perf record -a -e sched:sched_switch -g -o off.data -- strata wal-bench --only sync ...
  perf script -i off.data | tools/bench/offcpu.py [FRAMES]
FRAMES: how many innermost frames name a stack (default 6).
"""
import re, sys, collections
ev=[]; cur=None
for line in sys.stdin:
    line=line.rstrip("\n")
    if not line.strip():
        if cur: ev.append(cur); cur=None
        continue
    if not line.startswith("\t"):
        m=re.search(r"\s(\d+\.\d+):\s+sched:sched_switch:\s+prev_comm=(.*?) prev_pid=(\d+) .*?==> next_comm=(.*?) next_pid=(\d+)",line)
        cur={"ts":float(m.group(1)),"prev":(m.group(2),int(m.group(3))),"next":(m.group(4),int(m.group(5))),"stack":[]} if m else None
    elif cur is not None:
        f=line.strip().split(" ",1)
        sym=f[1] if len(f)>1 else f[0]
        sym=re.sub(r"\+0x[0-9a-f]+","",sym); sym=re.sub(r" \(.*\)$","",sym)
        cur["stack"].append(sym)
if cur: ev.append(cur)
out={}; tot=collections.Counter()
for e in ev:
    c,p=e["prev"]
    if c.startswith("strata"):
        out[p]=(e["ts"],e["stack"])
    c2,p2=e["next"]
    if p2 in out:
        t0,st=out.pop(p2)
        frames=[s for s in st if not s.startswith("[unknown]")]
        key=" <- ".join(frames[:int(sys.argv[1]) if len(sys.argv)>1 else 6])
        tot[key]+=e["ts"]-t0
all_=sum(tot.values())
print(f"off-CPU total {all_:.3f} s")
for k,v in tot.most_common(8):
    print(f"{100*v/all_:5.1f}%  {v:.3f} s  {k}")
