//! A Raft node's durable state on the segmented log, as KRaft keeps its
//! metadata log in a Kafka partition: entry `i` is the record at offset
//! `i - 1` of partition `__raft-0` under `<dir>/log`, in a batch of its
//! own whose partition leader epoch is the entry's term (so the log's
//! leader-epoch cache is Raft's term boundaries, and the log's own checks
//! of epochs apply). Term and vote live in `<dir>/raft-state`:
//!
//! ```text
//! 0        8           12        16
//! +--------+-----------+---------+
//! | term   | voted_for | crc32c  |   big-endian; voted_for 0 = none
//! | u64    | u32       | of 0..12|
//! +--------+-----------+---------+
//! ```
//!
//! replaced by write-temp, fsync, rename, fsync directory. A file of the
//! wrong size or checksum is refused ([`Error::BadRaftState`]), never
//! read as "no vote": a node that forgot its vote could vote twice in a
//! term. The latest snapshot is `<dir>/snapshot`, replaced the same way:
//!
//! ```text
//! 0        8        16       20          20+n
//! +--------+--------+--------+-----------+---------+
//! | index  | term   | n u32  | data (n)  | crc32c  |  of everything before
//! | u64    | u64    |        |           | u32     |
//! +--------+--------+--------+-----------+---------+
//! ```
//!
//! A snapshot is written before the log is cut under it, so a crash
//! between the two leaves a snapshot and a longer log (whose covered
//! entries are skipped), never a log that starts past its snapshot.
//!
//! [`RaftStorage::apply`] makes a [`Ready`]'s hard state and entries
//! durable (the log is fsynced) before the caller sends its messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_io::{OpenOptions, StorageRef};
use strata_log::batch::{self, ProducerInfo, Record};
use strata_log::{LogConfig, LogManager, ManagerOptions, Partition};

use super::{Entry, HardState, Index, Ready, Snapshot};
use crate::{Error, Result};

const TOPIC: &str = "__raft";

fn log_err(e: strata_log::Error) -> Error {
    Error::Log {
        partition: 0,
        source: e,
    }
}

fn io_err(e: strata_io::Error) -> Error {
    log_err(strata_log::Error::Io(e))
}

/// The durable state of one Raft node.
pub struct RaftStorage {
    storage: StorageRef,
    dir: PathBuf,
    mgr: LogManager,
    part: Arc<Partition>,
}

impl RaftStorage {
    /// Opens (creating) the state under `dir`: what was persisted, to hand
    /// to [`super::Raft::restore`].
    pub fn open(storage: StorageRef, dir: &Path) -> Result<Opened> {
        strata_io::create_dir_durable(&*storage, dir).map_err(io_err)?;
        let mgr = LogManager::open_with(
            storage.clone(),
            dir.join("log"),
            ManagerOptions {
                background_threads: false,
                ..ManagerOptions::default()
            },
        )
        .map_err(log_err)?;
        if mgr.topic_config(TOPIC).is_err() {
            mgr.create_topic(TOPIC, 1, LogConfig::default())
                .map_err(log_err)?;
        }
        let part = mgr.partition(TOPIC, 0).map_err(log_err)?;
        let hs = read_hard_state(&storage, dir)?;
        let snap = read_snapshot(&storage, dir)?;
        let base = snap.as_ref().map_or(0, |s| s.index);
        // A crash after a snapshot from the leader was written but before
        // the log under it was replaced: the log is behind the snapshot.
        if part.log_end_offset() < base {
            part.truncate_fully_and_start_at(base).map_err(log_err)?;
        }
        let mut entries = Vec::new();
        let end = part.log_end_offset();
        let mut at = part.log_start_offset();
        while at < end {
            let batches = part.read(at, 1 << 20, None).map_err(log_err)?;
            let Some(last) = batches.last() else { break };
            at = last.last_offset() + 1;
            for b in &batches {
                let term = u64::try_from(b.header.leader_epoch).map_err(|_| {
                    Error::BadRaftState(format!(
                        "entry at offset {} has a negative term",
                        b.base_offset()
                    ))
                })?;
                for r in b.try_records().map_err(log_err)? {
                    if r.offset < base {
                        continue;
                    }
                    entries.push(Entry {
                        term,
                        index: r.offset + 1,
                        data: r.value.unwrap_or_default(),
                    });
                }
            }
        }
        Ok((
            RaftStorage {
                storage,
                dir: dir.to_path_buf(),
                mgr,
                part,
            },
            hs,
            snap,
            entries,
        ))
    }

    /// Makes `ready`'s hard state and log changes durable.
    pub fn apply(&mut self, ready: &Ready) -> Result<()> {
        if let Some(hs) = ready.hard_state {
            write_hard_state(&self.storage, &self.dir, hs)?;
        }
        if let Some(sn) = &ready.snapshot {
            // Before the log is cut under it (see the module note).
            write_snapshot(&self.storage, &self.dir, sn)?;
        }
        if ready.reset_log {
            if let Some(sn) = &ready.snapshot {
                // The leader's snapshot replaces the whole log.
                self.part
                    .truncate_fully_and_start_at(sn.index)
                    .map_err(log_err)?;
            }
        } else if let Some(from) = ready.truncate_from {
            // One entry per batch: truncation by whole batches is exact.
            self.part.truncate_to(from - 1).map_err(log_err)?;
        }
        if let Some(sn) = &ready.snapshot {
            let upto = sn.index.min(self.part.log_end_offset());
            if upto > self.part.log_start_offset() {
                // The entries the snapshot covers are no longer needed.
                self.part
                    .set_high_watermark(self.part.log_end_offset())
                    .map_err(log_err)?;
                self.part.delete_records_before(upto).map_err(log_err)?;
            }
        }
        for e in &ready.append {
            let term = i32::try_from(e.term)
                .map_err(|_| Error::BadRaftState(format!("term {} past i32", e.term)))?;
            let rec = Record::new(0, None, Some(&e.data));
            let b = batch::build(e.index - 1, term, ProducerInfo::NONE, &[rec]).map_err(log_err)?;
            self.part.append_as_follower(&b, false).map_err(log_err)?;
        }
        if !ready.append.is_empty() {
            self.part.flush().map_err(log_err)?;
        }
        Ok(())
    }

    /// Index of the last stored entry.
    pub fn last_index(&self) -> Index {
        self.part.log_end_offset()
    }

    /// Flushes and closes.
    pub fn close(self) -> Result<()> {
        drop(self.part);
        self.mgr.close().map_err(log_err)
    }
}

/// What [`RaftStorage::open`] recovers: the storage, then what to hand to
/// [`super::Raft::restore`] (hard state, snapshot, entries after it).
pub type Opened = (RaftStorage, HardState, Option<Snapshot>, Vec<Entry>);

fn encode_snapshot(sn: &Snapshot) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + sn.data.len());
    b.extend_from_slice(&sn.index.to_be_bytes());
    b.extend_from_slice(&sn.term.to_be_bytes());
    b.extend_from_slice(&(sn.data.len() as u32).to_be_bytes());
    b.extend_from_slice(&sn.data);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// Decodes a snapshot file; `Err` names what is wrong.
pub fn decode_snapshot(b: &[u8]) -> std::result::Result<Snapshot, String> {
    if b.len() < 24 {
        return Err(format!(
            "snapshot of {} bytes is shorter than its header",
            b.len()
        ));
    }
    let n = u32::from_be_bytes([b[16], b[17], b[18], b[19]]) as usize;
    if b.len() != 24 + n {
        return Err(format!(
            "snapshot of {} bytes holds {n} bytes of data and a header",
            b.len()
        ));
    }
    let crc = u32::from_be_bytes([b[20 + n], b[21 + n], b[22 + n], b[23 + n]]);
    if crc32c::crc32c(&b[..20 + n]) != crc {
        return Err("snapshot checksum mismatch".into());
    }
    let u = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(a)
    };
    Ok(Snapshot {
        index: u(0),
        term: u(8),
        data: bytes::Bytes::copy_from_slice(&b[20..20 + n]),
    })
}

fn read_snapshot(storage: &StorageRef, dir: &Path) -> Result<Option<Snapshot>> {
    let path = dir.join("snapshot");
    if !storage.exists(&path).map_err(io_err)? {
        return Ok(None);
    }
    let f = storage
        .open(&path, OpenOptions::existing())
        .map_err(io_err)?;
    let bytes = f.read_all().map_err(io_err)?;
    decode_snapshot(&bytes)
        .map(Some)
        .map_err(|why| Error::BadRaftState(format!("{}: {why}", path.display())))
}

fn write_snapshot(storage: &StorageRef, dir: &Path, sn: &Snapshot) -> Result<()> {
    replace_file(storage, dir, "snapshot", &encode_snapshot(sn))
}

/// Write-temp, fsync, rename, fsync directory.
fn replace_file(storage: &StorageRef, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let f = storage.open(&tmp, OpenOptions::create()).map_err(io_err)?;
    f.set_len(0).map_err(io_err)?;
    f.write_at(bytes, 0).map_err(io_err)?;
    f.sync_data().map_err(io_err)?;
    drop(f);
    storage.rename(&tmp, &dir.join(name)).map_err(io_err)?;
    storage.sync_dir(dir).map_err(io_err)
}

fn encode_hard_state(hs: HardState) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hs.term.to_be_bytes());
    b[8..12].copy_from_slice(&hs.voted_for.unwrap_or(0).to_be_bytes());
    let crc = crc32c::crc32c(&b[..12]);
    b[12..].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Decodes the hard-state file; `Err` names what is wrong.
pub fn decode_hard_state(b: &[u8]) -> std::result::Result<HardState, String> {
    if b.len() != 16 {
        return Err(format!("raft-state is {} bytes, not 16", b.len()));
    }
    let crc = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
    if crc32c::crc32c(&b[..12]) != crc {
        return Err("raft-state checksum mismatch".into());
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[..8]);
    let v = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    Ok(HardState {
        term: u64::from_be_bytes(t),
        voted_for: (v != 0).then_some(v),
    })
}

fn read_hard_state(storage: &StorageRef, dir: &Path) -> Result<HardState> {
    let path = dir.join("raft-state");
    if !storage.exists(&path).map_err(io_err)? {
        return Ok(HardState::default());
    }
    let f = storage
        .open(&path, OpenOptions::existing())
        .map_err(io_err)?;
    let bytes = f.read_all().map_err(io_err)?;
    decode_hard_state(&bytes)
        .map_err(|why| Error::BadRaftState(format!("{}: {why}", path.display())))
}

fn write_hard_state(storage: &StorageRef, dir: &Path, hs: HardState) -> Result<()> {
    replace_file(storage, dir, "raft-state", &encode_hard_state(hs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use strata_io::fault::FaultStorage;

    #[test]
    fn state_survives_a_power_cut_and_truncation_is_exact() {
        let fault = FaultStorage::new(3);
        let storage: StorageRef = Arc::new(fault.clone());
        let dir = Path::new("/raft/1");
        let (mut s, hs, _, log) = RaftStorage::open(storage.clone(), dir).expect("open");
        assert_eq!((hs, log.len()), (HardState::default(), 0));
        let e = |i: u64, t: u64| Entry {
            term: t,
            index: i,
            data: Bytes::from(format!("e{i}")),
        };
        s.apply(&Ready {
            hard_state: Some(HardState {
                term: 2,
                voted_for: Some(3),
            }),
            append: vec![e(1, 1), e(2, 1), e(3, 2)],
            ..Ready::default()
        })
        .expect("apply");
        s.apply(&Ready {
            truncate_from: Some(3),
            append: vec![e(3, 3), e(4, 3)],
            hard_state: Some(HardState {
                term: 3,
                voted_for: None,
            }),
            ..Ready::default()
        })
        .expect("apply");
        fault.crash();
        drop(s);
        let storage: StorageRef = Arc::new(fault.reopen());
        let (_s, hs, _, log) = RaftStorage::open(storage, dir).expect("reopen");
        assert_eq!(
            hs,
            HardState {
                term: 3,
                voted_for: None
            }
        );
        assert_eq!(log, vec![e(1, 1), e(2, 1), e(3, 3), e(4, 3)]);
    }

    #[test]
    fn snapshots_compact_and_replace_the_log_across_power_cuts() {
        let fault = FaultStorage::new(5);
        let storage: StorageRef = Arc::new(fault.clone());
        let dir = Path::new("/raft/2");
        let (mut s, _, _, _) = RaftStorage::open(storage, dir).expect("open");
        let e = |i: u64, t: u64| Entry {
            term: t,
            index: i,
            data: Bytes::from(format!("e{i}")),
        };
        let sn = |i: u64, t: u64| Snapshot {
            index: i,
            term: t,
            data: Bytes::from(format!("state at {i}")),
        };
        s.apply(&Ready {
            append: (1..=6).map(|i| e(i, 1)).collect(),
            ..Ready::default()
        })
        .expect("append");
        // Local compaction up to 4: entries 5 and 6 stay.
        s.apply(&Ready {
            snapshot: Some(sn(4, 1)),
            ..Ready::default()
        })
        .expect("compact");
        fault.crash();
        drop(s);
        let (mut s, _, got, log) =
            RaftStorage::open(Arc::new(fault.reopen()), dir).expect("reopen");
        assert_eq!(got, Some(sn(4, 1)));
        assert_eq!(log, vec![e(5, 1), e(6, 1)]);
        // The leader's snapshot at 10 replaces everything; the log goes on
        // after it.
        s.apply(&Ready {
            snapshot: Some(sn(10, 3)),
            install: true,
            reset_log: true,
            append: vec![e(11, 3)],
            ..Ready::default()
        })
        .expect("install");
        fault.crash();
        drop(s);
        let (_s, _, got, log) = RaftStorage::open(Arc::new(fault.reopen()), dir).expect("reopen");
        assert_eq!(got, Some(sn(10, 3)));
        assert_eq!(log, vec![e(11, 3)]);
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let b = encode_snapshot(&Snapshot {
            index: 7,
            term: 2,
            data: Bytes::from_static(b"state"),
        });
        assert!(decode_snapshot(&b).is_ok());
        for at in 0..b.len() {
            let mut d = b.clone();
            d[at] ^= 0x01;
            assert!(decode_snapshot(&d).is_err(), "byte {at}");
        }
        for cut in 0..b.len() {
            assert!(decode_snapshot(&b[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn a_damaged_state_file_is_refused() {
        let b = encode_hard_state(HardState {
            term: 9,
            voted_for: Some(2),
        });
        assert!(decode_hard_state(&b).is_ok());
        for at in 0..16 {
            let mut d = b;
            d[at] ^= 0x10;
            assert!(decode_hard_state(&d).is_err(), "byte {at}");
        }
        assert!(decode_hard_state(&b[..15]).is_err());
    }
}
