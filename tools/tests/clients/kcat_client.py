"""kcat (librdkafka's command-line client) against a fresh `strata serve`:
-P (keyed, idempotent, compressed), -L, -C -e, and -G joining a group
that resumes where it committed.

usage: kcat_client.py STRATA_BINARY [N]"""

import subprocess
import sys

from common import Broker, check

N = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
TOPIC = "events"


def kcat(broker, *args, stdin=None, timeout=120):
    r = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=stdin, capture_output=True,
                       timeout=timeout)
    check(r.returncode == 0, f"kcat {' '.join(args)} exited {r.returncode}: {r.stderr.decode()[-2000:]}")
    return r.stdout.decode()


def main():
    broker = Broker(sys.argv[1], extra=["--set", "num.partitions=3"])
    broker.start()
    try:
        half = "".join(f"key-{i % 100}:value-{i}\n" for i in range(N // 2)).encode()
        rest = "".join(f"key-{i % 100}:value-{i}\n" for i in range(N // 2, N)).encode()
        kcat(broker, "-P", "-t", TOPIC, "-K:", "-z", "snappy", "-X", "enable.idempotence=true",
             "-X", "acks=all", stdin=half)
        kcat(broker, "-P", "-t", TOPIC, "-K:", "-z", "zstd", "-X", "enable.idempotence=true",
             "-X", "acks=all", stdin=rest)

        listing = kcat(broker, "-L", "-t", TOPIC)
        check(f'topic "{TOPIC}" with 3 partitions' in listing, f"kcat -L: {listing}")
        for p in range(3):
            check(f"partition {p}, leader 1" in listing, f"kcat -L partition {p}: {listing}")
        print("kcat -L lists the topic with 3 partitions", flush=True)

        out = kcat(broker, "-C", "-t", TOPIC, "-e", "-o", "beginning", "-f", "%p %o %k %s\n")
        got = [l.split() for l in out.splitlines() if l]
        check(len(got) == N, f"kcat -C -e read {len(got)} of {N}")
        check(sorted(int(v.split("-")[1]) for _, _, _, v in got) == list(range(N)), "values differ")
        by_part = {}
        for p, o, k, v in got:
            by_part.setdefault(p, []).append(int(o))
        for p, offs in by_part.items():
            check(offs == list(range(len(offs))), f"partition {p}: offsets {offs[:5]}...")
        print(f"kcat -C -e read all {N}, offsets contiguous per partition", flush=True)

        out = kcat(broker, "-G", "kg", "-X", "auto.offset.reset=earliest", "-e", "-f", "%p %o\n", TOPIC)
        check(len(out.splitlines()) == N, f"kcat -G read {len(out.splitlines())} of {N}")
        extra = b"".join(f"key-x:late-{i}\n".encode() for i in range(10))
        kcat(broker, "-P", "-t", TOPIC, "-K:", stdin=extra)
        out = kcat(broker, "-G", "kg", "-X", "auto.offset.reset=earliest", "-e", "-f", "%s\n", TOPIC)
        check(sorted(out.split()) == sorted(f"late-{i}" for i in range(10)),
              f"the group resumed at its commit: got {out.split()[:5]}...")
        print("kcat -G joined the group, committed, and resumed at the commit", flush=True)
        broker.stop()
    except BaseException:
        broker.dump_log()
        if broker.proc and broker.proc.poll() is None:
            broker.proc.kill()
        raise
    print("kcat: all checks passed")


if __name__ == "__main__":
    main()
