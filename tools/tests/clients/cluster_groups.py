"""Consumer groups on a 3-node `strata cluster` with real clients
(confluent-kafka): two consumers
of one group that bootstrap through different nodes split the partitions
(one group, one coordinator); they commit; the coordinator (the leader of
the group's partition of __consumer_offsets) is SIGKILLed; the members
go on and read the rest from the committed offsets: nothing skipped,
nothing read twice. Then a fresh consumer of the group, bootstrapped
through another node, finds nothing left and reads the committed offsets
back from the new coordinator.

usage: cluster_groups.py STRATA_BINARY [N]"""

import os
import signal
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, check_resumed, contiguous, free_port, ports_free

N = int(sys.argv[2]) if len(sys.argv) > 2 else 6000
TOPIC = "orders"
GROUP = "billing"
OFFSETS_PARTITIONS = 50


def java_hash(s):
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


class Cluster:
    def __init__(self, strata):
        self.strata = strata
        self.dir = tempfile.mkdtemp(prefix="strata-cluster-groups-")
        while True:
            self.base = free_port()
            if self.base < 60000 and ports_free(self.base, 3):
                break

    def up(self):
        out = subprocess.run(
            [self.strata, "cluster", "up", "--nodes", "3", "--dir", self.dir,
             "--base-port", str(self.base), "--set", "num.partitions=3",
             "--set", "group.initial.rebalance.delay.ms=3000"],
            capture_output=True, text=True, timeout=120)
        check(out.returncode == 0, f"cluster up failed: {out.stdout}\n{out.stderr}")

    def addr(self, node):
        return f"127.0.0.1:{self.base + node - 1}"

    def pid(self, node):
        with open(os.path.join(self.dir, "cluster.txt")) as f:
            for line in f:
                parts = line.split()
                if parts[0] == "node" and int(parts[1]) == node:
                    return int(parts[2])
        raise AssertionError(f"no node {node}")

    def coordinator(self):
        """The leader of the group's partition of __consumer_offsets, as
        `strata cluster status` shows it."""
        want = (java_hash(GROUP) & 0x7FFFFFFF) % OFFSETS_PARTITIONS
        out = subprocess.run([self.strata, "cluster", "status", "--dir", self.dir],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            f = line.split()
            if len(f) > 2 and f[0] == "__consumer_offsets" and f[1] == str(want) and f[2] != "-":
                return int(f[2])
        return None

    def down(self):
        subprocess.run([self.strata, "cluster", "down", "--dir", self.dir],
                       capture_output=True, timeout=60)

    def dump_logs(self):
        for n in (1, 2, 3):
            try:
                with open(os.path.join(self.dir, f"node-{n}.log"), "rb") as f:
                    sys.stderr.write(f"--- node {n}\n" + f.read().decode(errors="replace")[-3000:])
            except OSError:
                pass


def consumer(bootstrap):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": GROUP,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
    })


def poll_into(c, seen, secs, limit=None):
    deadline = time.time() + secs
    got = 0
    while time.time() < deadline and (limit is None or len(seen) < limit):
        msg = c.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            # librdkafka reports retriable group errors of a failover
            # (REBALANCE_IN_PROGRESS on a superseded JoinGroup, a lost
            # coordinator) as events and goes on; only a fatal one ends
            # the consumer.
            err = msg.error()
            check(not err.fatal(), f"fatal consumer error: {err}")
            if err.code() != KafkaError._PARTITION_EOF:
                print(f"consumer event: {err}", flush=True)
            continue
        seen.append((msg.partition(), msg.offset(), msg.value()))
        got += 1
    return got


def ready(client, topic, partitions, secs=30):
    """Waits until `client`'s metadata has every partition with a leader
    (nodes learn a new topic a moment apart)."""
    deadline = time.time() + secs
    while time.time() < deadline:
        md = client.list_topics(topic, timeout=10).topics.get(topic)
        if md and md.error is None and len(md.partitions) == partitions and \
                all(pm.leader >= 0 for pm in md.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic}: {partitions} partitions with leaders not seen in {secs} s")


def admin_calls(c, alive):
    """DeleteRecords, DeleteTopics and a topic created again under the
    same name, through the surviving nodes: the new topic holds none of
    the old one's records on any replica."""
    boot = ",".join(c.addr(n) for n in alive)
    admin = AdminClient({"bootstrap.servers": boot})
    admin.create_topics([NewTopic("scratch", num_partitions=2, replication_factor=2)])["scratch"].result(30)
    p = Producer({"bootstrap.servers": boot, "acks": "all"})
    ready(p, "scratch", 2)
    for i in range(200):
        p.produce("scratch", value=f"old-{i}".encode(), partition=i % 2)
    check(p.flush(30) == 0, "scratch produce")
    low = list(admin.delete_records([TopicPartition("scratch", 0, 40)]).values())[0].result(30).low_watermark
    check(low == 40, f"delete_records low watermark {low}")
    admin.delete_topics(["scratch"])["scratch"].result(30)
    deadline = time.time() + 10
    while "scratch" in admin.list_topics(timeout=10).topics and time.time() < deadline:
        time.sleep(0.2)
    check("scratch" not in admin.list_topics(timeout=10).topics, "scratch still listed after DeleteTopics")
    try:
        admin.delete_topics(["scratch"])["scratch"].result(30)
        check(False, "deleting a deleted topic succeeded")
    except Exception as e:  # KafkaException UNKNOWN_TOPIC_OR_PART
        check("UNKNOWN_TOPIC" in str(e).upper(), f"second delete: {e}")
    admin.create_topics([NewTopic("scratch", num_partitions=2, replication_factor=2)])["scratch"].result(30)
    # The same producer: it learns of the new topic (a new topic id).
    ready(p, "scratch", 2)
    for i in range(10):
        p.produce("scratch", value=f"new-{i}".encode(), partition=i % 2)
    check(p.flush(30) == 0, "scratch produce again")
    r = Consumer({"bootstrap.servers": boot, "group.id": "scratch-reader", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    r.subscribe(["scratch"])
    got = []
    poll_into(r, got, 10, limit=10)
    extra = []
    poll_into(r, extra, 2)
    r.close()
    vals = sorted(v.decode() for _, _, v in got + extra)
    check(vals == sorted(f"new-{i}" for i in range(10)), f"the topic created again reads {vals[:5]}...")
    print("admin: DeleteRecords, DeleteTopics, and a topic created again under the same name "
          "with none of the old records", flush=True)


def main():
    strata = sys.argv[1]
    c = Cluster(strata)
    c.up()
    try:
        admin = AdminClient({"bootstrap.servers": c.addr(1)})
        admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)])[TOPIC].result(30)
        # Two members bootstrapped through different nodes: one group.
        # They split the partitions before anything is produced, so
        # nothing is read before the commits this test checks.
        assigned = {"a": 0, "b": 0}

        def counter(name):
            def on_assign(_consumer, _partitions):
                assigned[name] += 1
            return on_assign

        a, b = consumer(c.addr(1)), consumer(c.addr(3))
        a.subscribe([TOPIC], on_assign=counter("a"))
        b.subscribe([TOPIC], on_assign=counter("b"))
        first = []
        deadline = time.time() + 60
        pa = pb = set()
        while time.time() < deadline:
            poll_into(a, first, 0.2)
            poll_into(b, first, 0.2)
            pa = {tp.partition for tp in a.assignment()}
            pb = {tp.partition for tp in b.assignment()}
            if pa and pb and not pa & pb and pa | pb == {0, 1, 2}:
                break
        check(pa and pb and not pa & pb and pa | pb == {0, 1, 2},
              f"members through nodes 1 and 3 did not split the partitions: {pa} and {pb}")
        check(not first, f"read {len(first)} from an empty topic")
        print(f"members through nodes 1 and 3 split the partitions: {sorted(pa)} and {sorted(pb)}",
              flush=True)

        value_at = {}
        delivered = {}

        def report(err, msg):
            check(err is None, f"delivery failed: {err}")
            delivered.setdefault(msg.partition(), []).append(msg.offset())
            value_at[(msg.partition(), msg.offset())] = msg.value()

        p = Producer({"bootstrap.servers": ",".join(c.addr(n) for n in (1, 2, 3)),
                      "enable.idempotence": True, "acks": "all", "linger.ms": 5})
        for i in range(N):
            p.produce(TOPIC, key=f"k{i % 97}".encode(), value=f"order-{i}".encode(), on_delivery=report)
            p.poll(0)
        check(p.flush(60) == 0, "produce did not finish in 60 s")
        contiguous(delivered, "delivered")
        print(f"produced {N} with acks=all over 3 partitions", flush=True)

        # Read about half, commit what was read, then stop reading (pause):
        # every read before the kill is committed.
        deadline = time.time() + 60
        while len(first) < N // 2 and time.time() < deadline:
            poll_into(a, first, 0.1, limit=N // 4)
            poll_into(b, first, 0.1, limit=N // 2)
        for m in (a, b):
            m.pause(m.assignment())
        poll_into(a, first, 0.5)
        poll_into(b, first, 0.5)
        last = {}
        for part, off, _ in first:
            last[part] = max(last.get(part, -1), off)
        for m, mine in ((a, pa), (b, pb)):
            offs = [TopicPartition(TOPIC, q, last[q] + 1) for q in sorted(mine) if q in last]
            if offs:
                m.commit(offsets=offs, asynchronous=False)
        print(f"read {len(first)} and committed {dict(sorted(last.items()))}", flush=True)

        coord = c.coordinator()
        check(coord is not None, "no coordinator in cluster status")
        before = dict(assigned)
        os.kill(c.pid(coord), signal.SIGKILL)
        print(f"SIGKILLed the group coordinator, node {coord}", flush=True)

        # The members find the new coordinator and rejoin (it knows the
        # committed offsets, not the members); then they read on.
        rest = []
        deadline = time.time() + 60
        while time.time() < deadline and not (assigned["a"] > before["a"] and assigned["b"] > before["b"]):
            poll_into(a, rest, 0.2)
            poll_into(b, rest, 0.2)
        check(assigned["a"] > before["a"] and assigned["b"] > before["b"],
              f"the members did not rejoin within 60 s: {before} -> {assigned}")
        # A new assignment fetches from the committed offsets (the paused
        # old one read nothing); resume whatever is still paused.
        for m in (a, b):
            m.resume(m.assignment())
        deadline = time.time() + 120
        while len(first) + len(rest) < N and time.time() < deadline:
            poll_into(a, rest, 0.2)
            poll_into(b, rest, 0.2)
        check(len(first) + len(rest) >= N,
              f"after the kill the members read {len(rest)} of the other {N - len(first)} in 120 s")
        extra = []
        poll_into(a, extra, 2)
        poll_into(b, extra, 2)
        check(not extra, f"read more than was produced: {extra[:3]}")
        check_resumed(first, rest, last, value_at)
        new_coord = c.coordinator()
        check(new_coord not in (None, coord), f"the coordinator did not move: {new_coord}")
        print(f"node {new_coord} took over; the members rejoined and read the other {len(rest)} "
              f"once, from the committed offsets", flush=True)
        done = {}
        for part, off, _ in first + rest:
            done[part] = max(done.get(part, -1), off)
        for m in (a, b):
            mine = [tp.partition for tp in m.assignment()]
            offs = [TopicPartition(TOPIC, q, done[q] + 1) for q in mine if q in done]
            if offs:
                m.commit(offsets=offs, asynchronous=False)
        a.close()
        b.close()

        # A fresh member through a surviving node finds nothing left.
        alive = [n for n in (1, 2, 3) if n != coord]
        f = consumer(c.addr(alive[-1]))
        f.subscribe([TOPIC])
        left = []
        poll_into(f, left, 8)
        check(not left, f"a fresh member read {len(left)} already committed: {left[:3]}")
        got = {tp.partition: tp.offset
               for tp in f.committed([TopicPartition(TOPIC, q) for q in range(3)], timeout=10)}
        f.close()
        want = {q: done[q] + 1 for q in done}
        check(got == want, f"committed offsets read back {got}, expected {want}")
        print(f"the committed offsets read back from the new coordinator: {dict(sorted(got.items()))}",
              flush=True)
        admin_calls(c, [n for n in (1, 2, 3) if n != coord])
    except BaseException:
        c.dump_logs()
        raise
    finally:
        c.down()
    print("cluster groups: all checks passed")


if __name__ == "__main__":
    main()
