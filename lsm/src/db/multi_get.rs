//! Batched point lookups, RocksDB's MultiGet: every key of a batch is
//! looked up in the memtables first; the keys left go to their tables in
//! rounds, and in each round the data blocks that are not cached are read
//! all at once through [`strata_io::Storage::read_many`] (one io_uring
//! submission: the disk sees the batch at queue depth N instead of N reads
//! one after another). A key whose block holds no version of it moves on
//! to its next table in the next round; with bloom filters that is rare.
//!
//! The answers are those `get` would give, key by key, at one sequence
//! number: range tombstones, snapshots and the newest-source-first rule
//! are the same code paths.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use strata_io::ReadReq;

use super::version::Sst;
use super::{Db, Snapshot};
use crate::key::Kind;
use crate::table::{format::BlockHandle, PlannedGet, Table};
use crate::Result;

/// A block to read: its table, where, and the buffer it is read into.
type BlockRead<'a> = (&'a Arc<Sst>, BlockHandle, Arc<[u8]>);

/// A key still looking.
struct Pending<'a> {
    /// Its index in the caller's batch.
    i: usize,
    /// The newest range tombstone over it.
    hidden_below: u64,
    /// Its tables, newest first, that the bloom filters do not rule out.
    tables: Vec<&'a Arc<Sst>>,
    next: usize,
}

impl Db {
    /// The newest value of each key (as of `snapshot` if given), in the
    /// order given: what [`Db::get`] returns for each, read in batches.
    pub fn multi_get(
        &self,
        keys: &[&[u8]],
        snapshot: Option<&Snapshot>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let seq = match snapshot {
            Some(s) => s.seq,
            None => self.inner.last_seq.load(Ordering::Acquire),
        };
        let stats = &self.inner.stats;
        stats.gets.fetch_add(keys.len() as u64, Ordering::Relaxed);
        let v = self.inner.version.read().clone();
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let answer = |hidden_below: u64, best: Option<(u64, Kind, Vec<u8>)>| match best {
            Some((s, Kind::Put, value)) if s > hidden_below => Some(value),
            _ => None,
        };
        let mut pending: Vec<Pending> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let (hidden_below, best) = v.lookup_start(key, seq);
            if best.is_some() {
                out[i] = answer(hidden_below, best);
                continue;
            }
            let tables: Vec<&Arc<Sst>> = v
                .tables_for_key(key)
                .filter(|f| {
                    let may = f.table.may_contain(key);
                    if !may {
                        stats.bloom_skips.fetch_add(1, Ordering::Relaxed);
                    }
                    may
                })
                .collect();
            pending.push(Pending {
                i,
                hidden_below,
                tables,
                next: 0,
            });
        }
        while !pending.is_empty() {
            // Each key's next table: answered from the cache, or a block
            // to read with the others.
            let mut reads: Vec<(usize, &Arc<Sst>, BlockHandle)> = Vec::new();
            let mut still = Vec::with_capacity(pending.len());
            for mut p in pending {
                let key = keys[p.i];
                // Past its last table: in none, not found.
                while let Some(f) = p.tables.get(p.next).copied() {
                    stats.tables_probed.fetch_add(1, Ordering::Relaxed);
                    match f.table.plan_get(key, seq)? {
                        PlannedGet::Done(Some(e)) => {
                            out[p.i] = answer(p.hidden_below, Some(e));
                            break;
                        }
                        PlannedGet::Done(None) => p.next += 1,
                        PlannedGet::Read(h) => {
                            reads.push((still.len(), f, h));
                            still.push(p);
                            break;
                        }
                    }
                }
            }
            if reads.is_empty() {
                break;
            }
            // One read per distinct block, however many keys want it.
            let mut slot: HashMap<(u64, u64), usize> = HashMap::new();
            // Each read lands in the buffer the cached block keeps.
            let mut blocks: Vec<BlockRead> = Vec::new();
            let mut wants = Vec::with_capacity(reads.len());
            for &(k, f, h) in &reads {
                let s = *slot.entry((f.number, h.offset)).or_insert_with(|| {
                    let len = Table::block_len(h).unwrap_or(0);
                    blocks.push((f, h, std::iter::repeat_n(0u8, len).collect()));
                    blocks.len() - 1
                });
                wants.push((k, s));
            }
            let results = {
                let mut reqs: Vec<ReadReq> = blocks
                    .iter_mut()
                    .filter_map(|(f, h, buf)| {
                        // Just allocated, so never shared.
                        Some(ReadReq {
                            file: &**f.table.file(),
                            offset: h.offset,
                            buf: Arc::get_mut(buf)?,
                        })
                    })
                    .collect();
                self.inner.storage.read_many(&mut reqs)
            };
            if results.len() != blocks.len() {
                return Err(crate::Error::InvalidArgument(
                    "multi_get: a block buffer was shared".into(),
                ));
            }
            let mut loaded = Vec::with_capacity(blocks.len());
            for ((f, h, buf), r) in blocks.iter().zip(results) {
                if r? < buf.len() {
                    return Err(crate::Error::corruption(
                        f.table.path(),
                        h.offset,
                        "block runs past end of file",
                    ));
                }
                loaded.push(f.table.load_block(*h, buf.clone())?);
            }
            let mut next_round = Vec::new();
            for ((_, s), mut p) in wants.into_iter().zip(still) {
                let (f, h, _) = &blocks[s];
                match f.table.search_block(&loaded[s], *h, keys[p.i], seq)? {
                    Some(e) => out[p.i] = answer(p.hidden_below, Some(e)),
                    None => {
                        p.next += 1;
                        next_round.push(p);
                    }
                }
            }
            pending = next_round;
        }
        Ok(out)
    }
}
