//! The engine's workload: kill cycles (with damaged files under
//! `--corrupt`) and power cuts on the fault-injecting backend.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_io::fault::{CrashKeep, Errno, FaultStorage, OpClass};
use strata_io::rng::Rng;
use strata_io::StorageRef;
use strata_lsm::{Db, Options, ReadOptions, WriteBatch, WriteOptions};

use super::harness::{child_loop, kill_cycle, report, Workload as _};
use super::Args;
use crate::common::storage_for;
use crate::corrupt;
use crate::error::Result;

/// One workload operation.
#[derive(Clone, Debug)]
enum Op {
    Put(u64, Vec<u8>, bool),
    Delete(u64, bool),
    DeleteRange(u64, u64, bool),
    Batch(Vec<(u64, Option<Vec<u8>>)>, bool),
    Flush,
    Compact,
}

fn key(k: u64) -> Vec<u8> {
    format!("key{k:08}").into_bytes()
}

/// The operations of one cycle, in order: the same for parent and child.
struct Workload {
    rng: Rng,
    cycle: u64,
    n: u64,
    keys: u64,
    sync_per_mille: u64,
}

impl super::harness::Workload for Workload {
    type Op = Op;

    fn new(a: &Args, cycle: u64) -> Workload {
        Workload {
            rng: Rng::new(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ cycle),
            cycle,
            n: 0,
            keys: a.keys.max(2),
            sync_per_mille: (a.sync_ratio.clamp(0.0, 1.0) * 1000.0) as u64,
        }
    }

    fn count(&self) -> u64 {
        self.n
    }

    fn child_flags(a: &Args) -> Vec<String> {
        vec![
            format!("--io={}", a.io),
            format!("--keys={}", a.keys),
            format!("--sync_ratio={}", a.sync_ratio),
            format!(
                "--compaction_style={}",
                super::style_name(a.compaction_style)
            ),
        ]
    }

    fn next(&mut self) -> Op {
        self.n += 1;
        let sync = self.rng.below(1000) < self.sync_per_mille;
        let k = self.rng.below(self.keys);
        match self.rng.below(1000) {
            0..=599 => {
                let v = self.value(k);
                Op::Put(k, v, sync)
            }
            600..=799 => Op::Delete(k, sync),
            800..=829 => Op::DeleteRange(k, k + 1 + self.rng.below(20), sync),
            830..=989 => {
                let n = 2 + self.rng.below(5);
                let items = (0..n)
                    .map(|_| {
                        let k = self.rng.below(self.keys);
                        let v = (self.rng.below(4) != 0).then(|| self.value(k));
                        (k, v)
                    })
                    .collect();
                Op::Batch(items, sync)
            }
            990..=996 => Op::Flush,
            _ => Op::Compact,
        }
    }
}

impl Workload {
    fn value(&mut self, k: u64) -> Vec<u8> {
        let pad = self.rng.below(120) as usize;
        format!("{k}:{}:{}:{}", self.cycle, self.n, "v".repeat(pad)).into_bytes()
    }
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn apply(m: &mut Model, op: &Op) {
    match op {
        Op::Put(k, v, _) => {
            m.insert(key(*k), v.clone());
        }
        Op::Delete(k, _) => {
            m.remove(&key(*k));
        }
        Op::DeleteRange(a, b, _) => {
            let (lo, hi) = (key(*a), key(*b));
            m.retain(|k, _| !(k >= &lo && k < &hi));
        }
        Op::Batch(items, _) => {
            for (k, v) in items {
                match v {
                    Some(v) => m.insert(key(*k), v.clone()),
                    None => m.remove(&key(*k)),
                };
            }
        }
        Op::Flush | Op::Compact => {}
    }
}

/// Longest kill time of the cycles aimed at the child's open.
const OPEN_KILL_MS: u64 = 25;

fn options(a: &Args) -> Options {
    // Small memtables and tables, so flushes and compactions (and crashes
    // inside them) happen many times per cycle.
    Options {
        write_buffer_size: 64 << 10,
        target_file_size: 128 << 10,
        max_bytes_for_level_base: 512 << 10,
        compaction_style: a.compaction_style,
        max_background_compactions: 2,
        ..Options::default()
    }
}

fn run_op(db: &Db, op: &Op) -> strata_lsm::Result<()> {
    let w = |sync: bool| WriteOptions::sync(sync);
    match op {
        Op::Put(k, v, s) => db.put(&key(*k), v, w(*s)),
        Op::Delete(k, s) => db.delete(&key(*k), w(*s)),
        Op::DeleteRange(a, b, s) => db.delete_range(&key(*a), &key(*b), w(*s)),
        Op::Batch(items, s) => {
            let mut b = WriteBatch::new();
            for (k, v) in items {
                match v {
                    Some(v) => b.put(&key(*k), v),
                    None => b.delete(&key(*k)),
                };
            }
            db.write(&b, w(*s))
        }
        Op::Flush => db.flush(),
        Op::Compact => {
            let a = key(0);
            let b = key(u64::MAX / 2);
            db.compact_range(Some(&a), Some(&b))
        }
    }
}

/// The child: run the cycle's workload until killed.
pub(super) fn child(a: &Args, dir: &Path) -> Result<i32> {
    let db = Db::open(storage_for(&a.io, dir)?, dir, options(a))?;
    child_loop::<Workload>(a, |op, _| Ok(run_op(&db, op)?))
}

/// What the parent checks after a kill; `Err` describes the failure.
fn verify(
    a: &Args,
    opts: Options,
    dir: &Path,
    before: &Model,
    acked: &Model,
    in_flight: Option<&Model>,
) -> std::result::Result<Model, String> {
    let got = recovered_state(
        a,
        opts,
        storage_for(&a.io, dir).map_err(|e| e.to_string())?,
        dir,
    )
    .map_err(|e| e.to_string())?;
    if got == *acked {
        return Ok(got);
    }
    if in_flight.is_some_and(|m| got == *m) {
        return Ok(got);
    }
    // Say what differs from the acknowledged state.
    let mut diffs = Vec::new();
    for k in acked.keys().chain(got.keys()) {
        if acked.get(k) != got.get(k) && diffs.len() < 5 {
            diffs.push(format!(
                "{}: expected {:?}, found {:?}{}",
                String::from_utf8_lossy(k),
                acked
                    .get(k)
                    .map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned()),
                got.get(k)
                    .map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned()),
                if before.get(k) == got.get(k) {
                    " (the value before this cycle: an acknowledged write was lost)"
                } else {
                    ""
                }
            ));
        }
    }
    Err(format!(
        "recovered state matches neither the acknowledged writes nor those plus the one in flight: {}",
        diffs.join("; ")
    ))
}

fn is_synced_write(op: &Op) -> bool {
    matches!(
        op,
        Op::Put(_, _, true)
            | Op::Delete(_, true)
            | Op::DeleteRange(_, _, true)
            | Op::Batch(_, true)
    )
}

/// Why a recovered database could not be read whole.
#[derive(Debug)]
enum Unreadable {
    /// The engine returned an error (at open, in a scan, a get, a checksum
    /// check or at close).
    Refused(String),
    /// The engine answered, inconsistently.
    Inconsistent(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Refused(m) | Unreadable::Inconsistent(m) => f.write_str(m),
        }
    }
}

/// Opens the database after a crash and reads it whole, checking the
/// iterator against point reads and every checksum.
fn recovered_state(
    a: &Args,
    opts: Options,
    storage: StorageRef,
    dir: &Path,
) -> std::result::Result<Model, Unreadable> {
    let refused = |what: &str| {
        let what = what.to_string();
        move |e: strata_lsm::Error| Unreadable::Refused(format!("{what}: {e}"))
    };
    let db = Db::open(storage, dir, opts).map_err(refused("recovery failed"))?;
    let mut got = Model::new();
    let mut it = db.iter(ReadOptions::default());
    it.seek_to_first();
    while it.valid() {
        got.insert(it.key().to_vec(), it.value().to_vec());
        it.next();
    }
    it.status().map_err(refused("scan"))?;
    drop(it);
    for k in 0..a.keys.max(2) + 64 {
        let g = db.get(&key(k), None).map_err(refused("get"))?;
        if g.as_ref() != got.get(&key(k)) {
            return Err(Unreadable::Inconsistent(format!(
                "get and scan disagree on key {k}: get {:?}, scan {:?}",
                g.map(|v| String::from_utf8_lossy(&v).into_owned()),
                got.get(&key(k))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            )));
        }
    }
    db.verify_checksums().map_err(refused("checksums"))?;
    db.close().map_err(refused("close"))?;
    Ok(got)
}

/// A cycle whose operations the WAL may still hold: the state it started
/// from and how many of its operations the verified state after it holds.
struct Past {
    start: Model,
    cycle: u64,
    applied: u64,
}

/// Where in the recent operations the database was in state `got`, if it
/// ever was.
fn earlier_state(a: &Args, history: &[Past], got: &Model) -> Option<String> {
    for p in history {
        let mut m = p.start.clone();
        let mut w = Workload::new(a, p.cycle);
        for i in 0..=p.applied {
            if i > 0 {
                apply(&mut m, &w.next());
            }
            if m == *got {
                return Some(format!("cycle {}, after operation {i}", p.cycle));
            }
        }
    }
    None
}

/// The first few keys where `got` differs from `want`.
fn diff(want: &Model, got: &Model) -> String {
    let show = |v: Option<&Vec<u8>>| {
        v.map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned())
    };
    let mut out = Vec::new();
    for k in want.keys().chain(got.keys()) {
        if want.get(k) != got.get(k) && out.len() < 5 {
            out.push(format!(
                "{}: expected {:?}, found {:?}",
                String::from_utf8_lossy(k),
                show(want.get(k)),
                show(got.get(k))
            ));
        }
    }
    out.join("; ")
}

/// What damage did, over a run.
#[derive(Default)]
struct DamageCounts {
    damaged: u64,
    intact: u64,
    cut: u64,
    refused: u64,
}

/// Damages one file of the closed database, then checks what the engine
/// makes of it (see `--corrupt`). `Err` is a failure.
fn damage_and_check(
    a: &Args,
    dir: &Path,
    rng: &mut Rng,
    model: &mut Model,
    history: &mut Vec<Past>,
    counts: &mut DamageCounts,
) -> std::result::Result<(), String> {
    let Some(d) = corrupt::damage_one_file(dir, rng).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    counts.damaged += 1;
    let what = format!("{} {}", d.path.display(), d.what);
    let read = || {
        let storage = storage_for(&a.io, dir).map_err(|e| Unreadable::Refused(e.to_string()))?;
        // A panic on damaged bytes is a failure to report, not a crash of
        // the torture.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            recovered_state(a, options(a), storage, dir)
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Unreadable::Inconsistent(format!(
                "the engine panicked: {msg}"
            )))
        })
    };
    match read() {
        Ok(got) if got == *model => {
            counts.intact += 1;
            if a.verbose {
                println!("damage: {what}: recovered intact");
            }
            Ok(())
        }
        Ok(got) => {
            // Damage at the end of the WAL looks like a torn write, and
            // recovery cuts the log there: an earlier state, never a mix.
            if d.part == corrupt::Part::Wal {
                if let Some(at) = earlier_state(a, history, &got) {
                    if a.verbose {
                        println!("damage: {what}: WAL cut there, back to {at}");
                    }
                    counts.cut += 1;
                    *model = got;
                    history.clear();
                    return Ok(());
                }
            }
            Err(format!(
                "after damage ({what}) the database opened and served a state it never had: {}",
                diff(model, &got)
            ))
        }
        Err(Unreadable::Inconsistent(e)) => Err(format!("after damage ({what}): {e}")),
        Err(Unreadable::Refused(e)) => {
            if !e.contains(&*dir.to_string_lossy()) {
                return Err(format!(
                    "after damage ({what}) the database refused with an error naming no file of it: {e}"
                ));
            }
            counts.refused += 1;
            if a.verbose {
                println!("damage: {what}: refused: {e}");
            }
            // A refused open must have changed nothing: with the file put
            // back, the database is whole again.
            d.restore().map_err(|e| e.to_string())?;
            match read() {
                Ok(got) if got == *model => Ok(()),
                Ok(got) => Err(format!(
                    "the database refused damage ({what}) with \"{e}\", but with the file restored it serves a different state: {}",
                    diff(model, &got)
                )),
                Err(e2) => Err(format!(
                    "the database refused damage ({what}) with \"{e}\", and with the file restored it still fails: {e2}"
                )),
            }
        }
    }
}

/// Power-loss cycles on the fault backend, in this process.
pub(super) fn power_loss(a: &Args) -> Result<i32> {
    let fault = FaultStorage::new(a.seed);
    fault.set_torn_writes(true);
    fault.set_crash_keep(CrashKeep::Random);
    let mut storage: StorageRef = Arc::new(fault.clone());
    let mut rng = Rng::new(a.seed ^ 0xC0FFEE);
    let started = Instant::now();
    let mut model = Model::new();
    let (mut cycles, mut issued, mut synced_checked) = (0u64, 0u64, 0u64);
    let mut failure = None;
    for cycle in 0..a.cycles {
        if a.duration > 0 && started.elapsed() >= Duration::from_secs(a.duration) {
            break;
        }
        let db = match Db::open(storage.clone(), "/db", options(a)) {
            Ok(db) => db,
            Err(e) => {
                failure = Some(format!("cycle {cycle}: open failed: {e}"));
                break;
            }
        };
        // Power fails at the n-th storage write, sync or rename from here.
        fault.fail(OpClass::Mutating, 1 + rng.below(4000), Errno::Eio, true);
        let mut w = Workload::new(a, cycle);
        // The states from the last synced write on: recovery must land on
        // one of them (a prefix of the operations, each batch whole).
        let mut states = vec![model.clone()];
        let mut synced_ops = 0u64;
        loop {
            let op = w.next();
            let res = run_op(&db, &op);
            let mut next = states.last().cloned().unwrap_or_default();
            apply(&mut next, &op);
            states.push(next);
            if res.is_err() || w.n >= 20_000 {
                break;
            }
            if is_synced_write(&op) {
                // Everything before this write is durable with it.
                let keep = states.len() - 1;
                states.drain(..keep);
                synced_ops += 1;
            }
        }
        drop(db);
        fault.crash();
        fault.clear_failures();
        storage = Arc::new(fault.reopen());
        match recovered_state(a, options(a), storage.clone(), Path::new("/db")) {
            Ok(got) => match states.iter().position(|s| *s == got) {
                Some(_) => model = got,
                None => {
                    failure = Some(format!(
                        "cycle {cycle}: the recovered state is no prefix of the operations that contains every synced write ({} operations, the last {} unsynced); against the state after the last synced write: {}",
                        w.n,
                        states.len() - 1,
                        diff(&states[0], &got)
                    ));
                    break;
                }
            },
            Err(e) => {
                failure = Some(format!("cycle {cycle}: {e}"));
                break;
            }
        }
        cycles += 1;
        issued += w.n;
        synced_checked += synced_ops;
    }
    let summary = format!(
        "strata torture --power_loss: {cycles} power cuts, {issued} operations issued, {synced_checked} synced writes checked, {} keys live, {:.1} s",
        model.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(report(a, summary, failure))
}

/// Kill cycles of the engine; the exit code.
pub(super) fn run(a: &Args, dir: &Path, exe: &Path) -> Result<i32> {
    let started = Instant::now();
    let mut rng = Rng::new(a.seed ^ 0x5EED);
    let mut damage_rng = Rng::new(a.seed ^ 0xDA3A6E);
    let mut counts = DamageCounts::default();
    let mut history: Vec<Past> = Vec::new();
    let mut model = Model::new();
    let (mut cycles, mut ops_verified, mut acked_total) = (0u64, 0u64, 0u64);
    let mut killed_in_open = 0u64;
    let mut failure: Option<String> = None;
    for cycle in 0..a.cycles {
        if a.duration > 0 && started.elapsed() >= Duration::from_secs(a.duration) {
            break;
        }
        let mut kill_after = Duration::from_millis(1 + rng.below(a.max_kill_ms.max(1)));
        // Every fourth cycle the child's open has the last cycle's WAL to
        // replay and flush (the check before it left the WAL alone), and
        // the kill comes early, often inside that open: its flush, the
        // release of WAL segments, the manifest's snapshot.
        let open_cycle = cycle % 4 == 0 && cycle > 0;
        if open_cycle {
            kill_after = Duration::from_millis(1 + rng.below(OPEN_KILL_MS));
        }
        let (intent, acked) = match kill_cycle::<Workload>(a, exe, dir, cycle, kill_after)? {
            Ok(k) => {
                killed_in_open += u64::from(!k.opened);
                (k.intent, k.acked)
            }
            Err(f) => {
                failure = Some(f);
                break;
            }
        };
        let before = model.clone();
        let mut w = Workload::new(a, cycle);
        let mut acked_model = model.clone();
        for _ in 0..acked {
            let op = w.next();
            apply(&mut acked_model, &op);
        }
        let in_flight = (intent > acked).then(|| {
            let mut m = acked_model.clone();
            apply(&mut m, &w.next());
            m
        });
        let leave_wal = (cycle + 1) % 4 == 0;
        let check_opts = Options {
            avoid_flush_during_recovery: leave_wal,
            avoid_flush_during_shutdown: leave_wal,
            ..options(a)
        };
        match verify(
            a,
            check_opts,
            dir,
            &before,
            &acked_model,
            in_flight.as_ref(),
        ) {
            Ok(state) => {
                let applied = if state == acked_model {
                    acked
                } else {
                    acked + 1
                };
                model = state;
                history.push(Past {
                    start: before,
                    cycle,
                    applied,
                });
                if history.len() > 64 {
                    history.remove(0);
                }
            }
            Err(e) => {
                failure = Some(format!(
                    "cycle {cycle} (killed after {acked} acknowledged operations): {e}"
                ));
                break;
            }
        }
        cycles += 1;
        ops_verified += intent;
        acked_total += acked;
        if a.corrupt {
            if let Err(e) = damage_and_check(
                a,
                dir,
                &mut damage_rng,
                &mut model,
                &mut history,
                &mut counts,
            ) {
                failure = Some(format!("cycle {cycle}: {e}"));
                break;
            }
        }
    }
    let mut summary = format!(
        "strata torture: {cycles} kill cycles ({killed_in_open} inside the open), {ops_verified} operations issued, {acked_total} acknowledged and checked, {} keys live, {:.1} s",
        model.len(),
        started.elapsed().as_secs_f64()
    );
    if a.corrupt {
        summary += &format!(
            "; {} files damaged: {} recovered intact, {} WAL cuts to an earlier state, {} refused with an error",
            counts.damaged, counts.intact, counts.cut, counts.refused
        );
    }
    Ok(report(a, summary, failure))
}
