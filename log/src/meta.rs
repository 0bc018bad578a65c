//! The log's metadata, kept in a Strata LSM database (`<root>/meta`):
//! topic configurations, per-partition log start offsets, recovery points,
//! high watermarks, leader-epoch caches, producer-state snapshots and
//! consumer-group committed offsets. Keys (docs/segment.md):
//!
//! ```text
//! topic/<topic>                                   config, `key=value` lines
//! part/<topic>/<partition:010>/start              u64 BE: log start offset
//! part/<topic>/<partition:010>/recovery           u64 BE: flushed up to here
//! part/<topic>/<partition:010>/hwm                u64 BE: high watermark
//! part/<topic>/<partition:010>/epoch/<epoch:010>  u64 BE: the epoch's start offset
//! part/<topic>/<partition:010>/pidsnap/<off:020>  producer-state snapshot at offset
//! group/<group>/<topic>/<partition:010>           u64 BE offset, then metadata bytes
//! ```

use std::path::{Path, PathBuf};

use strata_io::StorageRef;
use strata_lsm::{Db, Options, ReadOptions, WriteBatch, WriteOptions};

use crate::{Error, Result};

/// The metadata store.
pub struct Meta {
    db: Db,
    dir: PathBuf,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").field("dir", &self.dir).finish()
    }
}

/// The key prefix of one partition.
pub fn part_prefix(topic: &str, partition: u32) -> String {
    format!("part/{topic}/{partition:010}/")
}

impl Meta {
    /// Opens (or creates) the store in `dir`; `background_threads` as in
    /// the engine's options.
    pub fn open(storage: StorageRef, dir: &Path, background_threads: bool) -> Result<Meta> {
        let opts = Options {
            write_buffer_size: 1 << 20,
            background_threads,
            ..Options::default()
        };
        Ok(Meta {
            db: Db::open(storage, dir, opts)?,
            dir: dir.to_path_buf(),
        })
    }

    /// A value.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key.as_bytes(), None)?)
    }

    /// Sets a value; durable on return with `sync`.
    pub fn put(&self, key: &str, value: &[u8], sync: bool) -> Result<()> {
        Ok(self
            .db
            .put(key.as_bytes(), value, WriteOptions::sync(sync))?)
    }

    /// Deletes a key; durable on return with `sync`.
    pub fn delete(&self, key: &str, sync: bool) -> Result<()> {
        Ok(self.db.delete(key.as_bytes(), WriteOptions::sync(sync))?)
    }

    /// Applies puts and deletes atomically.
    pub fn write(&self, puts: &[(String, Vec<u8>)], deletes: &[String], sync: bool) -> Result<()> {
        let mut b = WriteBatch::new();
        for (k, v) in puts {
            b.put(k.as_bytes(), v);
        }
        for k in deletes {
            b.delete(k.as_bytes());
        }
        Ok(self.db.write(&b, WriteOptions::sync(sync))?)
    }

    /// A u64 value; a value of the wrong size is corruption.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => decode_u64(&v)
                .map(Some)
                .ok_or_else(|| self.bad(key, "not an 8-byte number")),
        }
    }

    /// Sets a u64 value.
    pub fn put_u64(&self, key: &str, v: u64, sync: bool) -> Result<()> {
        self.put(key, &v.to_be_bytes(), sync)
    }

    /// Every key and value under `prefix`, in key order.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut it = self.db.iter(ReadOptions {
            prefix: Some(prefix.as_bytes().to_vec()),
            ..ReadOptions::default()
        });
        it.seek(prefix.as_bytes());
        let mut out = Vec::new();
        while it.valid() && it.key().starts_with(prefix.as_bytes()) {
            let k = String::from_utf8(it.key().to_vec())
                .map_err(|_| self.bad(prefix, "key is not UTF-8"))?;
            out.push((k, it.value().to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The number after a key's last `/` (an epoch, an offset).
    pub fn key_suffix<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        key.rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.bad(key, "no number at the end of the key"))
    }

    /// A corruption error about `key`.
    pub fn bad(&self, key: &str, why: &str) -> Error {
        Error::corruption(&self.dir, 0, format!("metadata key {key}: {why}"))
    }

    /// Closes the store.
    pub fn close(&self) -> Result<()> {
        Ok(self.db.close()?)
    }
}

/// A big-endian u64 of exactly 8 bytes.
pub fn decode_u64(v: &[u8]) -> Option<u64> {
    let a: [u8; 8] = v.try_into().ok()?;
    Some(u64::from_be_bytes(a))
}
