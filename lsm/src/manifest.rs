//! The manifest: a log of version edits saying which tables make up the
//! database, written with the WAL (its own directory `manifest/`, every
//! edit fsynced before it counts). Format: docs/manifest.md.
//!
//! ```text
//! record = edit*; edit = tag u8, fields:
//!   1 snapshot         (no fields: forget everything before; a full state follows)
//!   2 add table        level varint | number varint | size varint | min seqno varint | max seqno varint
//!                      | smallest key (varint len, bytes) | largest key (varint len, bytes)
//!   3 remove table     level varint | number varint
//!   4 log LSN          varint: WAL records up to this LSN are in tables
//!   5 next file number varint
//!   6 last seqno       varint
//! ```
//!
//! When the log holds many edits since its last snapshot, the manifest
//! appends a snapshot record (the whole state) and releases the WAL
//! segments before it, so replay stays short.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_io::{Storage, StorageRef};
use strata_wal::format::{get_varint, put_varint};
use strata_wal::{Lsn, Preallocate, Recovery, SyncPolicy, Wal, WalOptions};

use crate::{Error, Result};

/// Records between snapshots before the manifest rewrites itself.
const SNAPSHOT_EVERY: u64 = 1000;

/// A table as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    /// Level (0 = flushed from memtables).
    pub level: u32,
    /// File number: the table is `<number:06>.sst`.
    pub number: u64,
    /// File size.
    pub size: u64,
    /// Smallest sequence number in it.
    pub min_seqno: u64,
    /// Largest sequence number in it.
    pub max_seqno: u64,
    /// Smallest internal key.
    pub smallest: Vec<u8>,
    /// Largest internal key.
    pub largest: Vec<u8>,
}

/// One change to the database's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Forget all state; a full description follows in the same record.
    Snapshot,
    /// A table joins a level.
    AddTable(TableMeta),
    /// A table leaves a level.
    RemoveTable {
        /// Its level.
        level: u32,
        /// Its file number.
        number: u64,
    },
    /// WAL records up to this LSN are in tables.
    LogLsn(Lsn),
    /// The next file number to use.
    NextFile(u64),
    /// The highest sequence number in tables.
    LastSeq(u64),
}

/// The state the edits describe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Live tables by (level, number).
    pub tables: BTreeMap<(u32, u64), TableMeta>,
    /// WAL LSN covered by tables.
    pub log_lsn: Lsn,
    /// Next file number.
    pub next_file: u64,
    /// Highest sequence number in tables.
    pub last_seq: u64,
}

impl ManifestState {
    /// Applies one edit (as replay does).
    pub fn apply_edit(&mut self, e: &Edit) {
        self.apply(e);
    }

    fn apply(&mut self, e: &Edit) {
        match e {
            Edit::Snapshot => *self = ManifestState::default(),
            Edit::AddTable(t) => {
                self.tables.insert((t.level, t.number), t.clone());
            }
            Edit::RemoveTable { level, number } => {
                self.tables.remove(&(*level, *number));
            }
            Edit::LogLsn(l) => self.log_lsn = self.log_lsn.max(*l),
            Edit::NextFile(n) => self.next_file = self.next_file.max(*n),
            Edit::LastSeq(s) => self.last_seq = self.last_seq.max(*s),
        }
    }

    fn snapshot_edits(&self) -> Vec<Edit> {
        let mut v = vec![Edit::Snapshot];
        v.extend(self.tables.values().cloned().map(Edit::AddTable));
        v.push(Edit::LogLsn(self.log_lsn));
        v.push(Edit::NextFile(self.next_file));
        v.push(Edit::LastSeq(self.last_seq));
        v
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes a record of edits.
pub fn encode(edits: &[Edit]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in edits {
        match e {
            Edit::Snapshot => out.push(1),
            Edit::AddTable(t) => {
                out.push(2);
                for v in [
                    u64::from(t.level),
                    t.number,
                    t.size,
                    t.min_seqno,
                    t.max_seqno,
                ] {
                    put_varint(&mut out, v);
                }
                put_bytes(&mut out, &t.smallest);
                put_bytes(&mut out, &t.largest);
            }
            Edit::RemoveTable { level, number } => {
                out.push(3);
                put_varint(&mut out, u64::from(*level));
                put_varint(&mut out, *number);
            }
            Edit::LogLsn(v) => {
                out.push(4);
                put_varint(&mut out, *v);
            }
            Edit::NextFile(v) => {
                out.push(5);
                put_varint(&mut out, *v);
            }
            Edit::LastSeq(v) => {
                out.push(6);
                put_varint(&mut out, *v);
            }
        }
    }
    out
}

/// Decodes a record of edits; every length and tag is checked.
pub fn decode(mut b: &[u8]) -> std::result::Result<Vec<Edit>, &'static str> {
    let num = |b: &mut &[u8]| -> std::result::Result<u64, &'static str> {
        let (v, n) = get_varint(b).ok_or("bad varint in manifest edit")?;
        *b = &b[n..];
        Ok(v)
    };
    let bytes = |b: &mut &[u8]| -> std::result::Result<Vec<u8>, &'static str> {
        let (len, n) = get_varint(b).ok_or("bad length in manifest edit")?;
        let len = usize::try_from(len).map_err(|_| "length overflows")?;
        let body = b
            .get(n..n.checked_add(len).ok_or("length overflows")?)
            .ok_or("key runs past the edit")?;
        let v = body.to_vec();
        *b = &b[n + len..];
        Ok(v)
    };
    let level = |v: u64| u32::try_from(v).map_err(|_| "level out of range");
    let mut out = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        out.push(match tag {
            1 => Edit::Snapshot,
            2 => {
                let lv = level(num(&mut b)?)?;
                let number = num(&mut b)?;
                let size = num(&mut b)?;
                let min_seqno = num(&mut b)?;
                let max_seqno = num(&mut b)?;
                let smallest = bytes(&mut b)?;
                let largest = bytes(&mut b)?;
                Edit::AddTable(TableMeta {
                    level: lv,
                    number,
                    size,
                    min_seqno,
                    max_seqno,
                    smallest,
                    largest,
                })
            }
            3 => {
                let lv = level(num(&mut b)?)?;
                Edit::RemoveTable {
                    level: lv,
                    number: num(&mut b)?,
                }
            }
            4 => Edit::LogLsn(num(&mut b)?),
            5 => Edit::NextFile(num(&mut b)?),
            6 => Edit::LastSeq(num(&mut b)?),
            _ => return Err("unknown manifest edit tag"),
        });
    }
    if out.is_empty() {
        return Err("empty manifest record");
    }
    Ok(out)
}

/// A manifest replayed but not yet opened for writing.
#[derive(Debug)]
pub struct RecoveredManifest {
    dir: PathBuf,
    /// The state its edits describe.
    pub state: ManifestState,
    since_snapshot: u64,
    /// What replaying its log found, a cut tail included.
    pub recovery: Recovery,
}

/// The open manifest log.
pub struct Manifest {
    wal: Wal,
    state: ManifestState,
    since_snapshot: u64,
}

impl Manifest {
    fn options() -> WalOptions {
        WalOptions {
            sync: SyncPolicy::Always,
            segment_size: 4 << 20,
            preallocate: Preallocate::None,
            recycle_segments: 0,
            ..WalOptions::default()
        }
    }

    /// Opens (or creates) the manifest in `dir` and replays it.
    pub fn open(storage: StorageRef, dir: &Path) -> Result<Manifest> {
        let r = Manifest::recover(&*storage, dir)?;
        Manifest::open_recovered(storage, r)
    }

    /// Replays the manifest in `dir` without changing anything on disk
    /// (a missing directory is an empty manifest). The database checks
    /// the state against its tables and WAL before it commits to it with
    /// [`Manifest::open_recovered`], so an open it refuses leaves the
    /// manifest as it was.
    pub fn recover(storage: &dyn Storage, dir: &Path) -> Result<RecoveredManifest> {
        let mut state = ManifestState {
            next_file: 1,
            ..ManifestState::default()
        };
        let mut since = 0;
        let mut snapshots = 0u64;
        let rec = if storage.exists(dir)? {
            strata_wal::recover(storage, dir, Self::options().recovery, |lsn, rec| {
                // A record whose checksum passed but whose edit does not
                // parse was written by a broken or newer writer: refuse
                // (the WAL reader names the segment and offset).
                let edits = decode(rec).map_err(|r| strata_wal::Error::Corruption {
                    path: PathBuf::new(),
                    offset: 0,
                    reason: format!("manifest record at LSN {lsn}: {r}"),
                })?;
                if edits.first() == Some(&Edit::Snapshot) {
                    since = 0;
                    snapshots += 1;
                }
                since += 1;
                for e in &edits {
                    state.apply(e);
                }
                Ok(())
            })?
        } else {
            Recovery {
                next_lsn: 1,
                ..Recovery::default()
            }
        };
        // Segments are released only after a snapshot record that repeats
        // them is durable. A log that no longer starts at LSN 1 but holds
        // no readable snapshot lost it to damage read as a torn tail: the
        // state replayed is not the database's (and its tables would be
        // taken for orphans), so refuse rather than serve it.
        if let Some(first) = rec.segments.first() {
            if first.first_lsn > 1 && snapshots == 0 {
                let cut = rec
                    .truncated
                    .as_ref()
                    .map(|c| {
                        format!(
                            " (cut at {} offset {}: {})",
                            c.path.display(),
                            c.offset,
                            c.reason
                        )
                    })
                    .unwrap_or_default();
                return Err(Error::corruption(
                    &first.path,
                    0,
                    format!(
                        "the manifest starts at record {} but holds no readable snapshot of what came before{cut}",
                        first.first_lsn
                    ),
                ));
            }
        }
        state.next_file = state.next_file.max(1);
        Ok(RecoveredManifest {
            dir: dir.to_path_buf(),
            state,
            since_snapshot: since,
            recovery: rec,
        })
    }

    /// Opens a recovered manifest for new edits (cutting a torn tail for
    /// good).
    pub fn open_recovered(storage: StorageRef, r: RecoveredManifest) -> Result<Manifest> {
        let wal = Wal::open_recovered(storage, &r.dir, Self::options(), &r.recovery)?;
        let mut m = Manifest {
            wal,
            state: r.state,
            since_snapshot: r.since_snapshot,
        };
        // Each open starts a segment; left alone, a database opened often
        // would keep one per open until the next snapshot and replay them
        // all. Start from a snapshot instead (RocksDB writes a new MANIFEST
        // at every open): the older segments are released once it is
        // durable, and a crash before that replays them and then it.
        if m.wal.segments().len() > 1 {
            m.snapshot()?;
        }
        Ok(m)
    }

    /// The current state.
    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    /// Makes `edits` durable and applies them.
    pub fn apply(&mut self, edits: &[Edit]) -> Result<()> {
        self.wal.append(&encode(edits))?;
        for e in edits {
            self.state.apply(e);
        }
        self.since_snapshot += 1;
        if self.since_snapshot >= SNAPSHOT_EVERY {
            self.snapshot()?;
        }
        Ok(())
    }

    /// Appends the whole state as one record and releases the segments
    /// before it.
    fn snapshot(&mut self) -> Result<()> {
        let lsn = self.wal.append(&encode(&self.state.snapshot_edits()))?;
        self.wal.purge_before(lsn)?;
        self.since_snapshot = 1;
        Ok(())
    }

    /// Takes the next file number (made durable with the next edit that
    /// records it; numbers are never reused because every table's edit
    /// carries `NextFile` past it).
    pub fn new_file_number(&mut self) -> u64 {
        let n = self.state.next_file;
        self.state.next_file += 1;
        n
    }

    /// Flushes and closes the log.
    pub fn close(&self) -> Result<()> {
        Ok(self.wal.close()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_round_trip_and_damage_is_refused() {
        let edits = vec![
            Edit::Snapshot,
            Edit::AddTable(TableMeta {
                level: 0,
                number: 7,
                size: 1234,
                min_seqno: 3,
                max_seqno: 9,
                smallest: b"a\0\0\0\0\0\0\0\0".to_vec(),
                largest: b"z\0\0\0\0\0\0\0\0".to_vec(),
            }),
            Edit::RemoveTable {
                level: 1,
                number: 2,
            },
            Edit::LogLsn(55),
            Edit::NextFile(8),
            Edit::LastSeq(9),
        ];
        let rec = encode(&edits);
        assert_eq!(decode(&rec).expect("decode"), edits);
        for cut in 1..rec.len() {
            // A cut inside an edit fails; a cut between edits is a shorter valid record.
            if let Ok(d) = decode(&rec[..cut]) {
                assert!(d.len() < edits.len());
            }
        }
        assert!(decode(&[]).is_err());
        assert!(decode(&[9]).is_err());
    }
}
