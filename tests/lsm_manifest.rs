//! The manifest rewrites itself (a snapshot record, then the older log
//! segments are released) and replays to the same state, also after a
//! crash at any point of that rewrite.

use std::path::Path;
use std::sync::Arc;

use strata::io::fault::{CrashKeep, Errno, FaultStorage, OpClass};
use strata::io::StorageRef;
use strata::lsm::manifest::{Edit, Manifest, ManifestState, TableMeta};

fn meta(n: u64) -> TableMeta {
    TableMeta {
        level: (n % 3) as u32,
        number: n,
        size: n * 100,
        min_seqno: n,
        max_seqno: n + 1,
        smallest: format!("a{n}").into_bytes(),
        largest: format!("z{n}").into_bytes(),
    }
}

/// Edits for step `i`: add table i, remove table i-5, advance the counters.
fn step(i: u64) -> Vec<Edit> {
    let mut e = vec![Edit::AddTable(meta(i))];
    if i >= 5 {
        e.push(Edit::RemoveTable {
            level: ((i - 5) % 3) as u32,
            number: i - 5,
        });
    }
    e.push(Edit::LogLsn(i * 10));
    e.push(Edit::NextFile(i + 1));
    e.push(Edit::LastSeq(i * 7));
    e
}

fn expected(steps: u64) -> ManifestState {
    let mut m = Manifest::open(Arc::new(FaultStorage::new(0)), Path::new("/x")).expect("scratch");
    for i in 1..=steps {
        m.apply(&step(i)).expect("apply");
    }
    m.state().clone()
}

#[test]
fn rewrites_keep_the_state_and_release_old_segments() {
    let storage: StorageRef = Arc::new(FaultStorage::new(1));
    let dir = Path::new("/db/manifest");
    let mut m = Manifest::open(storage.clone(), dir).expect("open");
    for i in 1..=2500 {
        m.apply(&step(i)).expect("apply");
    }
    let state = m.state().clone();
    assert_eq!(state.tables.len(), 5);
    m.close().expect("close");
    drop(m);
    let m = Manifest::open(storage.clone(), dir).expect("reopen");
    assert_eq!(m.state(), &state);
    assert_eq!(state, expected(2500));
    // Two snapshot records were written; the log before the latest is gone.
    let files = storage.list_dir(dir).expect("list");
    assert!(
        files.iter().filter(|f| f.ends_with(".wal")).count() <= 2,
        "{files:?}"
    );
}

#[test]
fn a_crash_anywhere_in_a_rewrite_recovers_a_prefix_of_the_edits() {
    for crash_at in (1..120).step_by(3) {
        let fault = FaultStorage::new(crash_at);
        fault.set_crash_keep(CrashKeep::Random);
        fault.set_torn_writes(true);
        let dir = Path::new("/db/manifest");
        let mut m = Manifest::open(Arc::new(fault.clone()), dir).expect("open");
        // Get near the first rewrite (after 1000 records), then crash.
        for i in 1..=990 {
            m.apply(&step(i)).expect("apply");
        }
        fault.fail(OpClass::Mutating, crash_at, Errno::Eio, true);
        let mut applied = 990;
        for i in 991..=1100 {
            if m.apply(&step(i)).is_err() {
                break;
            }
            applied = i;
        }
        drop(m);
        fault.crash();
        let m = Manifest::open(Arc::new(fault.reopen()), dir).expect("recovery");
        let got = m.state().clone();
        // Every acknowledged edit is there; nothing else is.
        let n = (applied..=1100).find(|&n| expected(n) == got);
        assert!(
            n.is_some(),
            "crash at {crash_at}: state matches no prefix of at least {applied} steps"
        );
    }
}
