#!/usr/bin/env python3
"""Writes seed inputs for the WAL fuzz targets into corpus/<target>/: valid
segments (with entries of one and several records, a block trailer and a
torn tail) so mutations start from deep inside the format instead of
failing the first checksum. Format: docs/wal.md. zlib.crc32 is the same
CRC-32 (IEEE) as crc32fast."""
import os, struct, zlib

BLOCK = 32 * 1024

def header(segno, first_lsn):
    b = b"STRWAL\x00\x01" + struct.pack("<QQI", segno, first_lsn, 0)
    return b + struct.pack("<I", zlib.crc32(b))

def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)

def entry(first_lsn, records, synced):
    body = b"".join(varint(len(r)) + r for r in records)
    return varint(first_lsn) + varint(len(records)) + varint(first_lsn - synced) + body

def fragments(pos, tag, payload):
    out = bytearray()
    left, first = payload, True
    while first or left:
        room = BLOCK - pos % BLOCK
        if room < 11:
            out += b"\0" * room
            pos += room
            continue
        take = left[: room - 11]
        left = left[len(take):]
        kind = (1 if not left else 2) if first else (4 if not left else 3)
        crc = zlib.crc32(bytes([kind]) + struct.pack("<I", tag) + struct.pack("<H", len(take)) + take)
        out += struct.pack("<IHBI", crc, len(take), kind, tag) + take
        pos += 11 + len(take)
        first = False
    return bytes(out)

def segment(segno, first_lsn, batches, start_pos=32):
    data = bytearray(header(segno, first_lsn))
    lsn, synced = first_lsn, first_lsn - 1
    for recs in batches:
        data += fragments(len(data), segno & 0xFFFFFFFF, entry(lsn, recs, synced))
        synced = lsn + len(recs) - 1
        lsn += len(recs)
    return bytes(data), lsn

def reader_input(files, first_segno):
    out = bytearray([len(files), first_segno])
    for f in files:
        f = f[:65535]
        out += struct.pack("<H", len(f)) + f
    return bytes(out)

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    dec = os.path.join(here, "corpus", "wal_record_decoder")
    rdr = os.path.join(here, "corpus", "wal_reader")
    os.makedirs(dec, exist_ok=True)
    os.makedirs(rdr, exist_ok=True)
    s1, nxt = segment(1, 1, [[b"a"], [b"bb", b"ccc"], [b"x" * 300]])
    s2, nxt = segment(2, nxt, [[b"y" * 40] * 5, [b"z"]])
    s3, _ = segment(3, nxt, [[b"tail"], [b"torn record here"]])
    torn = s3[:-7]
    seeds = {
        "one": reader_input([s1], 1),
        "two": reader_input([s1, s2], 1),
        "three_torn": reader_input([s1, s2, torn], 1),
        "empty_last": reader_input([s1, header(2, nxt)], 1),
        "recycled": reader_input([s1, s2[:32] + s1[32:]], 1),
    }
    for name, data in seeds.items():
        open(os.path.join(rdr, name), "wb").write(data)
    open(os.path.join(dec, "segment1"), "wb").write(b"\x01\x01" + s1[2:])
    open(os.path.join(dec, "entry"), "wb").write(entry(5, [b"abc", b"", b"d" * 200], 4))
    open(os.path.join(dec, "fragment"), "wb").write(fragments(0, 1, entry(1, [b"q"], 0)))

def zigzag(n):
    return varint((n << 1) ^ (n >> 63))

def kbytes(b):
    return zigzag(-1) if b is None else zigzag(len(b)) + b

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t

_C = _crc32c_table()

def crc32c(data):
    """Kafka's record-batch checksum (Castagnoli)."""
    c = 0xFFFFFFFF
    for x in data:
        c = _C[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

def log_batch(base, records, producer=(-1, -1, -1), epoch=0):
    """A record batch (docs/segment.md): big-endian fixed fields, zigzag
    varints, CRC-32C from the attributes (byte 21) to the end, as Kafka's v2."""
    ts0 = records[0][0]
    body = bytearray()
    for i, (ts, key, value, headers) in enumerate(records):
        r = b"\0" + zigzag(ts - ts0) + zigzag(i) + kbytes(key) + kbytes(value) + zigzag(len(headers))
        for hk, hv in headers:
            r += kbytes(hk) + kbytes(hv)
        body += zigzag(len(r)) + r
    pid, pepoch, seq = producer
    head = struct.pack(">qiibI", base, 61 - 12 + len(body), epoch, 2, 0)
    rest = struct.pack(">hiqqqhii", 0, len(records) - 1, ts0, max(r[0] for r in records), pid, pepoch, seq, len(records))
    b = bytearray(head + rest + body)
    crc = crc32c(bytes(b[21:]))
    b[17:21] = struct.pack(">I", crc)
    return bytes(b)

def log_seeds(here):
    d = os.path.join(here, "corpus", "log_batch")
    os.makedirs(d, exist_ok=True)
    b1 = log_batch(0, [(1000, b"k", b"v", []), (1001, None, b"x" * 50, [(b"h", None)])])
    b2 = log_batch(2, [(1005, b"key", None, [])], producer=(7, 1, 0), epoch=3)
    b3 = log_batch(3, [(999, b"a" * 10, b"b" * 200, [(b"h1", b"v1"), (b"h2", b"")])] * 1)
    seeds = {"one_batch": b1, "producer": b2, "segment": b1 + b2 + b3, "torn_segment": b1 + b2 + b3[:-9]}
    for name, data in seeds.items():
        open(os.path.join(d, name), "wb").write(data)

def kafka_request_seeds(here):
    """Request frames (without the size prefix) for `kafka_request`:
    header v1 (api key, version, correlation id, client id), then a body."""
    d = os.path.join(here, "corpus", "kafka_request")
    os.makedirs(d, exist_ok=True)
    def head(key, ver, cid=1, client=b"seed"):
        return struct.pack(">hhih", key, ver, cid, len(client)) + client
    seeds = {
        "api_versions_v0": head(18, 0),
        "metadata_v1_all": head(3, 1) + struct.pack(">i", -1),
        "metadata_v1_one": head(3, 1) + struct.pack(">ih", 1, 6) + b"events",
        "list_offsets_v1": head(2, 1) + struct.pack(">ii", -1, 1) + struct.pack(">h", 6) + b"events"
            + struct.pack(">iiq", 1, 0, -1),
        "produce_v3": head(0, 3) + struct.pack(">hhi", -1, -1, 5000) + struct.pack(">ih", 1, 6) + b"events"
            + struct.pack(">ii", 1, 0) + struct.pack(">i", len(log_batch(0, [(1000, b"k", b"v", [])])))
            + log_batch(0, [(1000, b"k", b"v", [])]),
    }
    for name, data in seeds.items():
        open(os.path.join(d, name), "wb").write(data)

main()
log_seeds(os.path.dirname(os.path.abspath(__file__)))
kafka_request_seeds(os.path.dirname(os.path.abspath(__file__)))

# The controller's durable state (docs/replication.md): text lines, then a
# CRC-32 line over everything before it.
def controller_state():
    body = ("controller 3 7\n"
            "broker 1 5 18446744073709551000\nbroker 2 6 42\nbroker 3 4 7\n"
            "partition 0 1,2,3 1 4 9 1,2 3 2 .\n"
            "partition 1 2,3,1 -1 2 5  2,3 1 .\n")
    crc = zlib.crc32(body.encode())
    return (body + "crc %d\n" % crc).encode()

d = os.path.join(os.path.dirname(__file__), "corpus", "controller_state")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "valid"), "wb") as f:
    f.write(controller_state())
