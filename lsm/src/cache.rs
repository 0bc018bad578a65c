//! The block cache: decoded data blocks shared by all tables, bounded in
//! bytes. Sharded by key so concurrent readers rarely meet on one lock.
//!
//! Eviction is CLOCK (second chance), an approximation of LRU that makes a
//! hit a hash lookup and a flag store: a block found in the cache is marked
//! referenced; the clock hand passes over referenced blocks once (clearing
//! the mark) and evicts the first unreferenced one.
//!
//! Evicted blocks that no reader still holds leave their buffers in a small
//! per-shard pool that reads take from, so a scan that streams blocks
//! through a full cache reuses memory instead of allocating and freeing a
//! block-sized buffer per block.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::table::block::Block;

const SHARDS: usize = 16;
/// Spare buffers kept per shard.
const POOL: usize = 32;

/// (table id, block offset).
pub type BlockKey = (u64, u64);

#[derive(Default)]
struct Shard {
    /// Block and its "referenced since the hand last passed" mark.
    map: HashMap<BlockKey, (Block, bool)>,
    /// Keys in clock order; the hand is at the front.
    ring: VecDeque<BlockKey>,
    usage: usize,
    pool: Vec<Arc<[u8]>>,
}

/// Hit and miss counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that had to read the file.
    pub misses: u64,
    /// Bytes held now.
    pub usage: u64,
}

/// A sharded CLOCK cache of blocks.
pub struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl BlockCache {
    /// A cache holding at most about `capacity` bytes of blocks.
    pub fn new(capacity: usize) -> Self {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, k: &BlockKey) -> &Mutex<Shard> {
        let h = (k.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        &self.shards[(h >> 59) as usize % SHARDS]
    }

    /// The cached block, marking it referenced.
    pub fn get(&self, k: &BlockKey) -> Option<Block> {
        let mut s = self.shard(k).lock();
        match s.map.get_mut(k) {
            Some((b, referenced)) => {
                *referenced = true;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(b.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A spare buffer of at least `len` bytes (and not much more) for the
    /// block that will be cached under `k`, if the pool has one.
    pub fn take_buffer(&self, k: &BlockKey, len: usize) -> Option<Arc<[u8]>> {
        let mut s = self.shard(k).lock();
        let i = s
            .pool
            .iter()
            .rposition(|b| b.len() >= len && b.len() <= len.saturating_mul(2))?;
        Some(s.pool.swap_remove(i))
    }

    /// Adds a block, evicting beyond capacity.
    pub fn insert(&self, k: BlockKey, b: Block) {
        let size = b.bytes().len();
        if size > self.per_shard {
            return;
        }
        let mut s = self.shard(&k).lock();
        let s = &mut *s;
        match s.map.insert(k, (b, false)) {
            Some((old, _)) => s.usage -= old.bytes().len(),
            None => s.ring.push_back(k),
        }
        s.usage += size;
        // Each key gets at most one second chance per sweep.
        let mut budget = 2 * s.ring.len();
        while s.usage > self.per_shard && budget > 0 {
            budget -= 1;
            let Some(victim) = s.ring.pop_front() else {
                break;
            };
            match s.map.get_mut(&victim) {
                Some((_, referenced)) if *referenced => {
                    *referenced = false;
                    s.ring.push_back(victim);
                }
                Some(_) => {
                    if let Some((old, _)) = s.map.remove(&victim) {
                        s.usage -= old.bytes().len();
                        let buf = old.into_buffer();
                        if Arc::strong_count(&buf) == 1 && s.pool.len() < POOL {
                            s.pool.push(buf);
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            usage: self.shards.iter().map(|s| s.lock().usage as u64).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::block::BlockBuilder;

    fn block(n: usize) -> Block {
        let mut b = BlockBuilder::new(16);
        b.add(b"k", &vec![0u8; n]);
        Block::new(b.finish().into()).expect("block")
    }

    #[test]
    fn evicted_buffers_are_reused() {
        let c = BlockCache::new(16 * 1000);
        for i in 0..2000u64 {
            c.insert((1, i), block(100));
        }
        // Some shard has a spare buffer of a block's size.
        let found = (0..2000u64).any(|i| c.take_buffer(&(2, i), 100).is_some());
        assert!(found, "no evicted buffer was kept");
        // A buffer still read elsewhere is not recycled.
        let c = BlockCache::new(16 * 300);
        let held: Vec<Block> = (0..200u64).map(|_| block(100)).collect();
        for (i, b) in held.iter().enumerate() {
            c.insert((1, i as u64), b.clone());
        }
        assert!((0..200u64).all(|i| c.take_buffer(&(2, i), 100).is_none()));
    }

    #[test]
    fn stays_within_capacity_and_evicts_the_least_recently_used() {
        let c = BlockCache::new(16 * 1000);
        for i in 0..2000u64 {
            c.insert((1, i), block(100));
        }
        assert!(c.stats().usage <= 16 * 1000);
        // Recently inserted blocks are there; the oldest are gone.
        assert!(c.get(&(1, 1999)).is_some());
        assert!(c.get(&(1, 0)).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (1, 1));
    }
}
