"""kafka-python against a fresh `strata serve`: idempotent acks=all produce
with every codec, a consumer group that commits, a SIGKILL of the broker,
resumption at the committed offsets, and two consumers that split the
partitions and rebalance when one leaves.

usage: kafka_python_client.py STRATA_BINARY [N]

N messages are produced with each codec (100,000 by default)."""

import collections
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from common import Broker, check, check_resumed, contiguous

N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
CODECS = [None, "snappy", "lz4", "zstd"]
TOPIC = "events"


def produce(bootstrap):
    delivered = collections.defaultdict(list)
    value_at = {}
    per_codec = N
    i = 0
    for codec in CODECS:
        p = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                          compression_type=codec, linger_ms=5, max_in_flight_requests_per_connection=5)
        futures = []
        for _ in range(per_codec):
            v = f"value-{i}".encode()
            futures.append((p.send(TOPIC, key=f"key-{i % 1000}".encode(), value=v), v))
            i += 1
        p.flush(60)
        for f, v in futures:
            md = f.get(timeout=60)  # raises on a failed delivery
            delivered[md.partition].append(md.offset)
            value_at[(md.partition, md.offset)] = v
        p.close()
        print(f"produced {per_codec} with compression_type={codec}", flush=True)
    contiguous(delivered, "delivered")
    return delivered, value_at


def consumer(bootstrap, group):
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=6000,
                         heartbeat_interval_ms=500, max_poll_records=500)


def consume(c, want, seen, timeout=120):
    got = 0
    deadline = time.time() + timeout
    while got < want and time.time() < deadline:
        batch = c.poll(timeout_ms=500, max_records=min(500, want - got))
        for tp, msgs in batch.items():
            for m in msgs:
                seen.append((tp.partition, m.offset, m.value))
                got += 1
    check(got == want, f"consumed {got} of {want} within {timeout} s")


def main():
    strata = sys.argv[1]
    broker = Broker(strata)
    broker.start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
        parts = admin.describe_topics([TOPIC])[0]["partitions"]
        check(len(parts) == 3, f"three partitions: {parts}")
        admin.close()

        delivered, value_at = produce(broker.bootstrap)
        total = sum(len(v) for v in delivered.values())

        c = consumer(broker.bootstrap, "g1")
        c.subscribe([TOPIC])
        first = []
        consume(c, total // 2, first)
        last = {}
        for part, off, _ in first:
            last[part] = max(last.get(part, -1), off)
        c.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(o + 1, "", -1) for p, o in last.items()})
        c.close()
        print(f"consumed {len(first)} and committed {dict(sorted(last.items()))}", flush=True)

        broker.kill()
        broker.start()
        print("broker SIGKILLed and restarted", flush=True)

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

        a = consumer(broker.bootstrap, "g2")
        b = consumer(broker.bootstrap, "g2")
        a.subscribe([TOPIC])
        b.subscribe([TOPIC])
        deadline = time.time() + 60
        pa = pb = set()
        while time.time() < deadline:
            a.poll(timeout_ms=200)
            b.poll(timeout_ms=200)
            pa = {tp.partition for tp in a.assignment()}
            pb = {tp.partition for tp in b.assignment()}
            if pa and pb and not pa & pb and pa | pb == {0, 1, 2}:
                break
        check(pa and pb and not pa & pb and pa | pb == {0, 1, 2}, f"split: {pa} and {pb}")
        print(f"two consumers split the partitions: {sorted(pa)} and {sorted(pb)}", flush=True)
        b.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            a.poll(timeout_ms=200)
            if {tp.partition for tp in a.assignment()} == {0, 1, 2}:
                break
        check({tp.partition for tp in a.assignment()} == {0, 1, 2}, "rebalance after one left")
        a.close()
        print("after one left, the other holds all partitions", flush=True)

        # ListOffsets by timestamp answers the found record's own
        # timestamp (KafkaConsumer.offsets_for_times shows it).
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        ts_topic = "stamped"
        for ts in (1_000, 2_000, 3_000):
            p.send(ts_topic, value=b"x", partition=0, timestamp_ms=ts).get(timeout=30)
        p.close()
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        tp = TopicPartition(ts_topic, 0)
        found = c.offsets_for_times({tp: 1_500})[tp]
        check(found is not None and found.offset == 1 and found.timestamp == 2_000,
              f"offsets_for_times(1500): {found}")
        check(c.offsets_for_times({tp: 3_001})[tp] is None, "a timestamp past every record")
        c.close()
        print("offsets_for_times answers the found record's timestamp", flush=True)
        broker.stop()
    except BaseException:
        broker.dump_log()
        if broker.proc and broker.proc.poll() is None:
            broker.proc.kill()
        raise
    print("kafka-python: all checks passed")


if __name__ == "__main__":
    main()
