use super::*;

fn recs(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = Record::new(
                1000 + i as i64,
                Some(format!("k{i}").as_bytes()),
                (i % 3 != 0).then_some(&b"value"[..]),
            );
            r.headers.push(Header {
                key: Bytes::from_static(b"h"),
                value: None,
            });
            r
        })
        .collect()
}

#[test]
fn round_trip_and_every_damage_is_caught() {
    let p = ProducerInfo {
        id: 7,
        epoch: 2,
        base_sequence: 10,
    };
    let b = build(42, 3, p, &recs(5)).expect("build");
    assert_eq!(b.header.base_offset, 42);
    assert_eq!(b.header.last_offset(), 46);
    assert_eq!(b.header.producer, p);
    assert_eq!(b.header.last_sequence(), 14);
    let got = b.records();
    assert_eq!(got.len(), 5);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, 42 + i as u64);
        assert_eq!(r.timestamp, 1000 + i as i64);
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
    }
    // Every truncation is incomplete; every flipped bit but those of
    // base offset and leader epoch (outside the CRC, checked by the
    // segment against the batch's position) is caught here (a longer
    // length reads as a batch cut short).
    for cut in 0..b.bytes.len() {
        assert!(
            !matches!(Batch::parse(&b.bytes.slice(..cut)), Parsed::Batch(_)),
            "cut {cut}"
        );
    }
    for at in 0..b.bytes.len() {
        for bit in 0..8 {
            let mut d = BytesMut::from(&b.bytes[..]);
            d[at] ^= 1 << bit;
            let p = Batch::parse(&d.freeze());
            if (0..8).contains(&at) || (12..16).contains(&at) {
                continue;
            }
            assert!(
                matches!(p, Parsed::Invalid(_))
                    || ((8..12).contains(&at) && p == Parsed::Incomplete),
                "byte {at} bit {bit}: {p:?}"
            );
        }
    }
    // Reassigning offsets and epoch keeps the batch valid and leaves
    // every byte the CRC covers as the producer sent it.
    let moved = b.clone().with_offset_and_epoch(100, 9);
    assert_eq!(moved.bytes[16..], b.bytes[16..]);
    assert_eq!(
        Batch::from_bytes(moved.bytes.clone())
            .expect("valid")
            .header
            .base_offset,
        100
    );
    assert_eq!(moved.records()[4].offset, 104);
}

#[test]
fn filter_keeps_offsets_and_the_batch_span() {
    let b = build(10, 0, ProducerInfo::NONE, &recs(6)).expect("build");
    let f = filter(&b, |r| r.offset % 2 == 1).expect("filter");
    assert_eq!(f.header.base_offset, 10);
    assert_eq!(f.header.last_offset(), 15);
    let offs: Vec<u64> = f.records().iter().map(|r| r.offset).collect();
    assert_eq!(offs, vec![11, 13, 15]);
    let empty = filter(&b, |_| false).expect("filter");
    assert_eq!(empty.header.record_count, 0);
    assert_eq!(empty.header.next_offset(), 16);
    assert!(empty.records().is_empty());
}

#[test]
fn compressed_batches_validate_and_read_with_every_codec() {
    for c in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = build_compressed(0, -1, ProducerInfo::NONE, &recs(50), c).expect("build");
        assert_eq!(b.header.compression(), c);
        b.validate_for_append().expect("valid");
        let rs = b.records();
        assert_eq!(rs.len(), 50);
        assert_eq!(rs[49].key.as_deref(), Some(&b"k49"[..]));
        assert!(b.every_record_has_a_key());
        // A body that passes the CRC but does not decompress (a
        // producer's bug): refused on append.
        let mut d = BytesMut::from(&b.bytes[..]);
        let last = d.len() - 1;
        d[last] ^= 0xFF;
        let crc = checksum(&d);
        d[17..21].copy_from_slice(&crc.to_be_bytes());
        let bad = Batch::from_bytes(d.freeze()).expect("header and CRC fine");
        assert!(bad.validate_for_append().is_err(), "{c:?}");
        assert!(bad.try_records().is_err(), "{c:?}");
        // Compacting one keeps offsets and writes it uncompressed.
        let f = filter(&b, |r| r.offset >= 40).expect("filter");
        assert_eq!(f.header.compression(), Compression::None);
        assert_eq!(f.records().len(), 10);
        assert_eq!(f.header.next_offset(), 50);
    }
}

#[test]
fn a_produced_batch_must_be_dense() {
    let b = build(0, -1, ProducerInfo::NONE, &recs(4)).expect("build");
    b.validate_for_append().expect("dense");
    let sparse = filter(&b, |r| r.offset != 1).expect("filter");
    assert!(sparse.validate_for_append().is_err());
    let empty = filter(&b, |_| false).expect("filter");
    assert!(empty.validate_for_append().is_err());
    // The broker's one-pass path: header and CRC, then the records.
    let two_step = |bytes: Bytes| {
        Batch::from_bytes_header_and_crc(bytes).and_then(|b| b.validate_for_append())
    };
    assert!(two_step(b.bytes.clone()).is_ok());
    assert!(two_step(sparse.bytes.clone()).is_err());
    let mut d = BytesMut::from(&b.bytes[..]);
    let last = d.len() - 1;
    d[last] ^= 1;
    assert!(Batch::from_bytes_header_and_crc(d.clone().freeze()).is_err());
    assert!(two_step(d.freeze()).is_err());
    assert!(Batch::from_bytes_header_and_crc(b.bytes.slice(..b.bytes.len() - 1)).is_err());
}

#[test]
fn varints_round_trip_at_the_edges() {
    for v in [0, 1, -1, 63, -64, 64, i32::MAX, i32::MIN] {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        let mut p = 0;
        assert_eq!(get_varint(&b, &mut p), Ok(v));
        assert_eq!(p, b.len());
    }
    for v in [0i64, -1, i64::MAX, i64::MIN, 1 << 40] {
        let mut b = Vec::new();
        put_varlong(&mut b, v);
        let mut p = 0;
        assert_eq!(get_varlong(&b, &mut p), Ok(v));
    }
}
