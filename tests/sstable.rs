//! SSTables against a model: whatever is written comes back in order, in
//! both directions, from seeks and from point lookups at any snapshot; the
//! bloom filter skips absent keys; and every damaged byte is reported as
//! corruption naming the file, never returned as data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use strata::io::fault::FaultStorage;
use strata::io::{OpenOptions, Storage};
use strata::lsm::key::{self, Kind};
use strata::lsm::table::{Lookup, Table, TableBuilder, TableOptions};
use strata::lsm::Error;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// The model: user key -> seqno -> (kind, value), seqnos unique per key.
type Model = BTreeMap<Vec<u8>, BTreeMap<u64, (Kind, Vec<u8>)>>;

fn internal_entries(m: &Model) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (uk, versions) in m {
        for (seq, (kind, val)) in versions.iter().rev() {
            v.push((key::encode(uk, *seq, *kind), val.clone()));
        }
    }
    v
}

fn write_table(storage: &FaultStorage, path: &Path, m: &Model, opts: TableOptions) -> Arc<Table> {
    let f = storage.open(path, OpenOptions::create()).expect("create");
    let mut b = TableBuilder::new(f, opts);
    for (k, v) in internal_entries(m) {
        b.add(&k, &v).expect("add");
    }
    let (size, props) = b.finish().expect("finish");
    let entries: usize = m.values().map(|v| v.len()).sum();
    assert_eq!(props.entries as usize, entries);
    let t = Table::open(storage.open(path, OpenOptions::existing()).expect("open"))
        .expect("open table");
    assert_eq!(t.size(), size);
    Arc::new(t)
}

fn model() -> impl Strategy<Value = Model> {
    prop::collection::btree_map(
        prop::collection::vec(0u8..6, 0..8),
        prop::collection::btree_map(
            0u64..50,
            (
                prop_oneof![Just(Kind::Put), Just(Kind::Delete)],
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            1..4,
        ),
        0..120,
    )
}

fn newest_visible(m: &Model, uk: &[u8], snap: u64) -> Lookup {
    match m.get(uk).and_then(|vs| vs.range(..=snap).next_back()) {
        Some((_, (Kind::Put, v))) => Lookup::Value(v.clone()),
        Some((_, (Kind::Delete, _))) => Lookup::Deleted,
        None => Lookup::Absent,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn tables_return_what_was_written(
        m in model(),
        block_size in prop_oneof![Just(64usize), Just(256), Just(4096)],
        restart in 1usize..20,
        bloom_bits in prop_oneof![Just(0u32), Just(10)],
        probes in prop::collection::vec((prop::collection::vec(0u8..6, 0..8), 0u64..60), 0..30),
    ) {
        let storage = FaultStorage::new(1);
        storage.create_dir_all(Path::new("/t")).expect("mkdir");
        let opts = TableOptions { block_size, restart_interval: restart, bloom_bits_per_key: bloom_bits };
        let t = write_table(&storage, Path::new("/t/1.sst"), &m, opts);
        let want = internal_entries(&m);

        let mut it = t.iter();
        it.seek_to_first();
        let mut got = Vec::new();
        while it.valid() {
            got.push((it.key().to_vec(), it.value().to_vec()));
            it.next();
        }
        prop_assert!(it.error().is_none());
        prop_assert_eq!(&got, &want);

        it.seek_to_last();
        let mut back = Vec::new();
        while it.valid() {
            back.push((it.key().to_vec(), it.value().to_vec()));
            it.prev();
        }
        back.reverse();
        prop_assert_eq!(&back, &want);

        for (uk, snap) in probes {
            let found = t.get(&uk, snap).expect("get");
            let expect = newest_visible(&m, &uk, snap);
            let found = if found == Lookup::FilteredOut { Lookup::Absent } else { found };
            prop_assert_eq!(&found, &expect, "key {:?} at snapshot {}", uk, snap);
            // Seek lands on the first entry >= (key, snap).
            let target = key::encode(&uk, snap, Kind::Put);
            it.seek(&target);
            let first = want.iter().find(|(k, _)| key::compare(k, &target) != std::cmp::Ordering::Less);
            match first {
                Some((k, v)) => {
                    prop_assert!(it.valid());
                    prop_assert_eq!(it.key(), &k[..]);
                    prop_assert_eq!(it.value(), &v[..]);
                }
                None => prop_assert!(!it.valid()),
            }
        }
        for (uk, versions) in &m {
            for seq in versions.keys() {
                prop_assert_eq!(t.get(uk, *seq).expect("get"), newest_visible(&m, uk, *seq));
            }
        }
    }
}

fn sample_model(n: u32) -> Model {
    let mut m = Model::new();
    for i in 0..n {
        let mut vs = BTreeMap::new();
        vs.insert(
            u64::from(i) + 1,
            (
                if i % 7 == 3 { Kind::Delete } else { Kind::Put },
                format!("value-{i}").into_bytes(),
            ),
        );
        m.insert(format!("key-{i:05}").into_bytes(), vs);
    }
    m
}

#[test]
fn the_bloom_filter_skips_the_table_for_absent_keys() {
    let storage = FaultStorage::new(2);
    storage.create_dir_all(Path::new("/t")).expect("mkdir");
    let m = sample_model(5000);
    let t = write_table(&storage, Path::new("/t/1.sst"), &m, TableOptions::default());
    let filtered = (0..5000)
        .filter(|i| {
            t.get(format!("absent-{i}").as_bytes(), u64::MAX >> 8)
                .expect("get")
                == Lookup::FilteredOut
        })
        .count();
    assert!(
        filtered > 4800,
        "only {filtered} of 5000 absent keys were filtered out"
    );
    for i in 0..5000u32 {
        assert_ne!(
            t.get(format!("key-{i:05}").as_bytes(), 1 << 40)
                .expect("get"),
            Lookup::FilteredOut
        );
    }
}

/// Reads everything a table holds: open, full scans both ways and every
/// point lookup. Returns the first error.
fn read_everything(storage: &FaultStorage, path: &Path, m: &Model) -> Result<(), Error> {
    let t = Arc::new(Table::open(
        storage.open(path, OpenOptions::existing()).expect("open"),
    )?);
    let want = internal_entries(m);
    let mut it = t.iter();
    it.seek_to_first();
    let mut i = 0;
    while it.valid() {
        assert_eq!(
            (it.key(), it.value()),
            (&want[i].0[..], &want[i].1[..]),
            "wrong data returned"
        );
        i += 1;
        it.next();
    }
    if let Some(e) = it.error() {
        return Err(Error::Corruption {
            path: path.to_path_buf(),
            offset: 0,
            reason: e.to_string(),
        });
    }
    assert_eq!(i, want.len(), "entries silently missing");
    for (uk, versions) in m {
        for seq in versions.keys() {
            let got = t.get(uk, *seq)?;
            assert_eq!(got, newest_visible(m, uk, *seq), "wrong lookup result");
        }
    }
    Ok(())
}

#[test]
fn every_byte_of_a_table_is_protected_by_a_checksum() {
    let storage = FaultStorage::new(3);
    storage.create_dir_all(Path::new("/t")).expect("mkdir");
    let m = sample_model(60);
    let path = Path::new("/t/1.sst");
    let opts = TableOptions {
        block_size: 256,
        ..TableOptions::default()
    };
    write_table(&storage, path, &m, opts);
    read_everything(&storage, path, &m).expect("intact table reads back");
    let len = storage.contents(path).expect("contents").len() as u64;
    for off in 0..len {
        for bit in [0u8, 3, 7] {
            storage.corrupt(path, off, bit).expect("flip");
            match read_everything(&storage, path, &m) {
                Err(Error::Corruption { path: p, .. }) => assert_eq!(p, path),
                Err(e) => panic!("byte {off}: unexpected error {e}"),
                Ok(()) => panic!("flip at byte {off} bit {bit} went undetected"),
            }
            storage.corrupt(path, off, bit).expect("flip back");
        }
    }
}

#[test]
fn short_and_foreign_files_are_corruption_not_panics() {
    let storage = FaultStorage::new(4);
    storage.create_dir_all(Path::new("/t")).expect("mkdir");
    let m = sample_model(100);
    let path = Path::new("/t/1.sst");
    write_table(&storage, path, &m, TableOptions::default());
    let full = storage.contents(path).expect("contents");
    for cut in [0, 10, 63, 64, full.len() / 2, full.len() - 1] {
        storage
            .install(Path::new("/t/cut.sst"), &full[..cut])
            .expect("install");
        let f = storage
            .open(Path::new("/t/cut.sst"), OpenOptions::existing())
            .expect("open");
        match Table::open(f) {
            Err(Error::Corruption { path, reason, .. }) => {
                assert_eq!(path, Path::new("/t/cut.sst"));
                assert!(!reason.is_empty());
            }
            other => panic!("truncated to {cut}: {other:?}"),
        }
    }
    storage
        .install(Path::new("/t/text.sst"), &[b'x'; 500])
        .expect("install");
    let f = storage
        .open(Path::new("/t/text.sst"), OpenOptions::existing())
        .expect("open");
    let err = Table::open(f).expect_err("not a table");
    assert!(err.to_string().contains("not a Strata table"), "{err}");
}

#[test]
fn keys_out_of_order_are_refused() {
    let storage = FaultStorage::new(5);
    storage.create_dir_all(Path::new("/t")).expect("mkdir");
    let f = storage
        .open(Path::new("/t/x.sst"), OpenOptions::create())
        .expect("create");
    let mut b = TableBuilder::new(f, TableOptions::default());
    b.add(&key::encode(b"b", 1, Kind::Put), b"1").expect("add");
    assert!(b.add(&key::encode(b"a", 1, Kind::Put), b"2").is_err());
    assert!(
        b.add(&key::encode(b"b", 1, Kind::Put), b"2").is_err(),
        "duplicates too"
    );
    assert!(b.add(b"short", b"").is_err(), "malformed internal key");
}
