//! The block cache: decoded data blocks shared by all tables, bounded in
//! bytes, least recently used evicted first. Sharded by key so concurrent
//! readers rarely meet on one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::table::block::Block;

const SHARDS: usize = 16;

/// (table id, block offset).
pub type BlockKey = (u64, u64);

#[derive(Default)]
struct Shard {
    map: HashMap<BlockKey, (Block, u64)>,
    /// Access tick -> key, oldest first.
    lru: BTreeMap<u64, BlockKey>,
    usage: usize,
    tick: u64,
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

/// A sharded LRU cache of blocks.
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

    /// The cached block, marking it recently used.
    pub fn get(&self, k: &BlockKey) -> Option<Block> {
        let mut s = self.shard(k).lock();
        let s = &mut *s;
        s.tick += 1;
        let tick = s.tick;
        match s.map.get_mut(k) {
            Some((b, t)) => {
                s.lru.remove(t);
                *t = tick;
                s.lru.insert(tick, *k);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(b.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Adds a block, evicting the least recently used beyond capacity.
    pub fn insert(&self, k: BlockKey, b: Block) {
        let size = b.bytes().len();
        if size > self.per_shard {
            return;
        }
        let mut s = self.shard(&k).lock();
        let s = &mut *s;
        s.tick += 1;
        let tick = s.tick;
        if let Some((old, t)) = s.map.insert(k, (b, tick)) {
            s.lru.remove(&t);
            s.usage -= old.bytes().len();
        }
        s.lru.insert(tick, k);
        s.usage += size;
        while s.usage > self.per_shard {
            let Some((_, victim)) = s.lru.pop_first() else {
                break;
            };
            if let Some((old, _)) = s.map.remove(&victim) {
                s.usage -= old.bytes().len();
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
