"""confluent-kafka (librdkafka) against a fresh `strata serve`: idempotent
acks=all produce with every codec, a consumer group that commits, a
SIGKILL of the broker, resumption at the committed offsets, and two
consumers that split the partitions and rebalance when one leaves.

usage: confluent_kafka_client.py STRATA_BINARY [N]

N messages are produced with each codec (100,000 by default)."""

import collections
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from common import Broker, check, check_resumed, contiguous

N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
CODECS = ["none", "snappy", "lz4", "zstd"]
TOPIC = "events"


def produce(bootstrap):
    delivered = collections.defaultdict(list)  # partition -> offsets
    value_at = {}  # (partition, offset) -> value
    errors = []
    per_codec = N
    i = 0
    for codec in CODECS:
        p = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": codec,
            "linger.ms": 5,
        })

        def report(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                delivered[msg.partition()].append(msg.offset())
                value_at[(msg.partition(), msg.offset())] = msg.value()

        for _ in range(per_codec):
            while True:
                try:
                    p.produce(TOPIC, key=f"key-{i % 1000}".encode(), value=f"value-{i}".encode(),
                              on_delivery=report)
                    break
                except BufferError:
                    p.poll(0.05)
            i += 1
            p.poll(0)
        left = p.flush(60)
        check(left == 0, f"{codec}: {left} messages not delivered in 60 s")
        print(f"produced {per_codec} with compression.type={codec}", flush=True)
    check(not errors, f"delivery errors: {errors[:5]}")
    check(sum(len(v) for v in delivered.values()) == per_codec * len(CODECS), "a delivery report is missing")
    contiguous(delivered, "delivered")
    return delivered, value_at


def consumer(bootstrap, group, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return Consumer(conf)


def consume(c, want, seen, timeout=90):
    """Polls until `want` more messages arrived; records (partition, offset, value)."""
    got = 0
    deadline = time.time() + timeout
    while got < want and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            check(msg.error().code() == KafkaError._PARTITION_EOF, f"consumer error: {msg.error()}")
            continue
        seen.append((msg.partition(), msg.offset(), msg.value()))
        got += 1
    check(got == want, f"consumed {got} of {want} within {timeout} s")


def main():
    strata = sys.argv[1]
    broker = Broker(strata)
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        fs = admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
        fs[TOPIC].result(30)
        md = admin.list_topics(TOPIC, timeout=10)
        check(len(md.topics[TOPIC].partitions) == 3, "three partitions")

        delivered, value_at = produce(broker.bootstrap)
        total = sum(len(v) for v in delivered.values())

        # Half with a group, commit, close.
        c = consumer(broker.bootstrap, "g1")
        c.subscribe([TOPIC])
        first = []
        consume(c, total // 2, first)
        last = {}
        for part, off, _ in first:
            last[part] = max(last.get(part, -1), off)
        c.commit(offsets=[TopicPartition(TOPIC, p, o + 1) for p, o in last.items()], asynchronous=False)
        c.close()
        print(f"consumed {len(first)} and committed {dict(sorted(last.items()))}", flush=True)

        broker.kill()
        broker.start()
        print("broker SIGKILLed and restarted", flush=True)

        # Resume: starts at the commits, reads the rest once, in order.
        c = consumer(broker.bootstrap, "g1")
        c.subscribe([TOPIC])
        rest = []
        consume(c, total - len(first), rest)
        extra = []
        try:
            consume(c, 1, extra, timeout=3)
        except AssertionError:
            pass
        check(not extra, f"read more than was produced: {extra[:3]}")
        c.close()
        check_resumed(first, rest, last, value_at)
        print(f"resumed at the committed offsets and read the other {len(rest)}", flush=True)

        # Two consumers split the partitions; when one leaves, the other
        # gets them all.
        a = consumer(broker.bootstrap, "g2")
        b = consumer(broker.bootstrap, "g2")
        a.subscribe([TOPIC])
        b.subscribe([TOPIC])
        deadline = time.time() + 60
        while time.time() < deadline:
            a.poll(0.2)
            b.poll(0.2)
            pa = {tp.partition for tp in a.assignment()}
            pb = {tp.partition for tp in b.assignment()}
            if pa and pb and not pa & pb and pa | pb == {0, 1, 2}:
                break
        check(pa and pb and not pa & pb and pa | pb == {0, 1, 2}, f"split: {pa} and {pb}")
        print(f"two consumers split the partitions: {sorted(pa)} and {sorted(pb)}", flush=True)
        # DescribeGroups: both members with their assignments (the bytes
        # the client parses are the ones the members synced).
        desc = None
        deadline = time.time() + 30
        while time.time() < deadline:
            a.poll(0.2)
            b.poll(0.2)
            desc = admin.describe_consumer_groups(["g2"])["g2"].result(30)
            if str(desc.state).endswith("STABLE") and len(desc.members) == 2:
                break
        check(desc is not None and str(desc.state).endswith("STABLE"), f"g2 state {desc and desc.state}")
        got = sorted(tp.partition for m in desc.members for tp in m.assignment.topic_partitions)
        check(got == [0, 1, 2], f"described assignments {got}")
        check(desc.partition_assignor in ("range", "roundrobin", "cooperative-sticky"),
              f"assignor {desc.partition_assignor!r}")
        print(f"DescribeGroups: {len(desc.members)} members, assignor {desc.partition_assignor}, "
              f"assignments {got}", flush=True)
        b.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            a.poll(0.2)
            if {tp.partition for tp in a.assignment()} == {0, 1, 2}:
                break
        check({tp.partition for tp in a.assignment()} == {0, 1, 2}, "rebalance after one left")
        a.close()
        print("after one left, the other holds all partitions", flush=True)

        # Admin: configs, DeleteRecords, a topic created and deleted.
        res = ConfigResource(ResourceType.TOPIC, TOPIC)
        entries = admin.describe_configs([res])[res].result(30)
        check("retention.ms" in entries and "cleanup.policy" in entries, f"configs: {sorted(entries)}")
        tp = TopicPartition(TOPIC, 0, 10)
        deleted = admin.delete_records([tp])
        low = list(deleted.values())[0].result(30).low_watermark
        check(low == 10, f"delete_records low watermark {low}")
        admin.create_topics([NewTopic("scratch", num_partitions=2, replication_factor=1)])["scratch"].result(30)
        check("scratch" in admin.list_topics(timeout=10).topics, "scratch created")
        admin.delete_topics(["scratch"])["scratch"].result(30)
        check("scratch" not in admin.list_topics(timeout=10).topics, "scratch deleted")
        bad = admin.create_topics([NewTopic("rf3", num_partitions=1, replication_factor=3)])["rf3"]
        try:
            bad.result(30)
            check(False, "replication factor 3 accepted on one node")
        except Exception as e:  # KafkaException with INVALID_REPLICATION_FACTOR
            check("REPLICATION_FACTOR" in str(e).upper(), f"rf3 refused with {e}")
        print("admin: configs described, records deleted, topics created and deleted", flush=True)
        broker.stop()
    except BaseException:
        broker.dump_log()
        if broker.proc and broker.proc.poll() is None:
            broker.proc.kill()
        raise
    print("confluent-kafka: all checks passed")


if __name__ == "__main__":
    main()
