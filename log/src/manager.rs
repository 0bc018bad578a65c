//! Topics, their partitions and consumer-group offsets under one root
//! directory: `<root>/meta` (the metadata store) and
//! `<root>/<topic>-<partition>/` (segments), as Kafka lays out a log dir.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use strata_io::StorageRef;

use crate::config::{CleanupPolicy, LogConfig};
use crate::meta::{decode_u64, Meta};

/// A committed offset: (topic, partition, offset, metadata).
pub type CommittedOffset = (String, u32, u64, Vec<u8>);

/// Metadata key of the on-disk format generation.
const FORMAT_KEY: &str = "format";
/// The format this build writes and reads.
const FORMAT: u64 = 2;
use crate::partition::{Partition, RecoveryReport};
use crate::{Error, Result};

/// How a [`LogManager`] runs.
#[derive(Clone, Copy, Debug)]
pub struct ManagerOptions {
    /// How often a background thread applies retention to every open
    /// partition and runs the cleaner of compacted ones
    /// (`log.retention.check.interval.ms`, 5 minutes in Kafka); `None`: only
    /// when [`LogManager::run_maintenance`] is called.
    pub maintenance_interval: Option<Duration>,
    /// `min.cleanable.dirty.ratio`: the cleaner runs on a compacted
    /// partition once this share of its sealed bytes is uncleaned.
    pub min_cleanable_dirty_ratio: f64,
    /// Threads of the log's own: the maintenance thread and the metadata
    /// store's flush and compaction threads (default). Off: the
    /// deterministic mode for tests and the replication simulator. No
    /// thread runs and nothing reads the wall clock (`maintenance_interval`
    /// is ignored; call [`LogManager::run_maintenance`] with the simulated
    /// time), so the same calls make the same storage operations.
    pub background_threads: bool,
    /// Append to segments with `O_DIRECT` through the same path as the WAL
    /// ([`strata_io::AppendWriter`]): writes bypass the page cache, so a
    /// producer's bytes reach the device without a copy into the cache and
    /// a flush has no dirty pages to write back. Reads stay buffered (and
    /// mapped for sealed segments). Off by default.
    pub direct_io: bool,
    /// With `direct_io`: an unsynced append returns once its bytes are in
    /// the partition's 1 MiB staging buffer, and full buffers are written
    /// while the next fills (up to 4 in flight; on io_uring from
    /// registered buffers). Reads and flushes write what is held first.
    /// The price: until written, acknowledged unflushed appends live in
    /// this process, so a process crash (not only a power cut) can lose up
    /// to 4 MiB of them per active segment, as RocksDB's
    /// `manual_wal_flush` can. Off by default: each append is written
    /// before it returns.
    pub write_behind: bool,
    /// With `direct_io`: keep the next 8 MiB of each active segment
    /// written as zeros (durably) ahead of its appends, filled in the
    /// background (`log.preallocate`, after Kafka's setting of that name,
    /// which preallocates sparsely). Synced appends then overwrite
    /// allocated blocks, which on ext4 and XFS needs no journal commit.
    /// Costs writing every byte twice. Off by default.
    pub preallocate: bool,
}

/// How a partition's segments are appended (from [`ManagerOptions`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentIo {
    /// [`ManagerOptions::direct_io`].
    pub direct_io: bool,
    /// [`ManagerOptions::write_behind`].
    pub write_behind: bool,
    /// [`ManagerOptions::preallocate`].
    pub preallocate: bool,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            maintenance_interval: Some(Duration::from_secs(300)),
            min_cleanable_dirty_ratio: 0.5,
            background_threads: true,
            direct_io: false,
            write_behind: false,
            preallocate: false,
        }
    }
}

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Segments deleted by retention.
    pub segments_deleted: usize,
    /// Partitions the cleaner compacted.
    pub partitions_cleaned: usize,
}

struct Shared {
    partitions: Mutex<HashMap<(String, u32), Arc<Partition>>>,
    stop: Mutex<bool>,
    wake: Condvar,
    opts: ManagerOptions,
}

impl Shared {
    fn maintain(&self, now_ms: i64) -> MaintenanceStats {
        let parts: Vec<Arc<Partition>> = self.partitions.lock().values().cloned().collect();
        let mut stats = MaintenanceStats::default();
        for p in parts {
            match p.enforce_retention(now_ms) {
                Ok(n) => stats.segments_deleted += n,
                Err(e) => tracing::warn!(dir = %p.dir().display(), error = %e, "retention failed"),
            }
            if p.config().cleanup_policy == CleanupPolicy::Compact
                && p.dirty_ratio() >= self.opts.min_cleanable_dirty_ratio
            {
                match p.compact(now_ms) {
                    Ok(_) => stats.partitions_cleaned += 1,
                    Err(e) => {
                        tracing::warn!(dir = %p.dir().display(), error = %e, "cleaner failed")
                    }
                }
            }
        }
        stats
    }
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Open topics and partitions.
///
/// Locks: `shared.partitions` (the open partitions) is taken before
/// `topics` (the topic configurations) when both are needed, and held
/// while a partition is opened (so it is opened once); otherwise no
/// partition lock is taken under them (maintenance copies the partition
/// list and releases it first). `maintenance` and `shared.stop` are taken
/// alone.
pub struct LogManager {
    storage: StorageRef,
    root: PathBuf,
    meta: Arc<Meta>,
    topics: Mutex<HashMap<String, (u32, LogConfig)>>,
    shared: Arc<Shared>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Topic names as Kafka allows them: 1-249 of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
pub fn check_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "topic name {name:?}: use 1-249 of a-z, A-Z, 0-9, '.', '_' and '-'"
        )))
    }
}

fn check_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.len() > 249 {
        return Err(Error::InvalidArgument(format!(
            "group name {name:?}: 1-249 bytes, no '/'"
        )));
    }
    Ok(())
}

impl LogManager {
    /// Opens (creating if needed) the log directory `root` with default
    /// options (retention and cleaning every 5 minutes in the background).
    pub fn open(storage: StorageRef, root: impl AsRef<Path>) -> Result<LogManager> {
        LogManager::open_with(storage, root, ManagerOptions::default())
    }

    /// Opens (creating if needed) the log directory `root`.
    pub fn open_with(
        storage: StorageRef,
        root: impl AsRef<Path>,
        opts: ManagerOptions,
    ) -> Result<LogManager> {
        let root = root.as_ref().to_path_buf();
        strata_io::create_dir_durable(&*storage, &root)?;
        let meta = Arc::new(Meta::open(
            storage.clone(),
            &root.join("meta"),
            opts.background_threads,
        )?);
        // The on-disk format generation: 2 is Kafka's v2 batches with
        // CRC-32C. A directory with topics but no mark was written by the
        // earlier CRC-32 format, whose batches would read as damage; it is
        // refused, not migrated (nothing of it was deployed).
        let fresh = meta.scan("topic/")?.is_empty();
        match meta.get(FORMAT_KEY)? {
            Some(v) if v == FORMAT.to_be_bytes() => {}
            Some(v) => {
                return Err(Error::UnsupportedFormat(format!(
                    "{} holds log format {v:?}; this build reads format {FORMAT}",
                    root.display()
                )))
            }
            None if fresh => meta.put_u64(FORMAT_KEY, FORMAT, true)?,
            None => {
                return Err(Error::UnsupportedFormat(format!(
                    "{} was written by an earlier Strata log format (batches with CRC-32 \
                     over every byte, before Kafka's v2 CRC-32C); there is no migration: \
                     move the directory away and start again",
                    root.display()
                )))
            }
        }
        let mut topics = HashMap::new();
        for (k, v) in meta.scan("topic/")? {
            let name = k.trim_start_matches("topic/").to_string();
            let text = String::from_utf8(v).map_err(|_| meta.bad(&k, "config is not UTF-8"))?;
            let (count, cfg) = text
                .split_once('\n')
                .and_then(|(first, rest)| {
                    let n = first.strip_prefix("partitions=")?.parse::<u32>().ok()?;
                    Some((n, rest))
                })
                .ok_or_else(|| meta.bad(&k, "no partition count"))?;
            let cfg = LogConfig::decode(cfg).map_err(|e| meta.bad(&k, &e.to_string()))?;
            topics.insert(name, (count, cfg));
        }
        let shared = Arc::new(Shared {
            partitions: Mutex::new(HashMap::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            opts,
        });
        let maintenance = match opts.maintenance_interval {
            Some(every) if opts.background_threads => {
                let sh = shared.clone();
                let h = std::thread::Builder::new()
                    .name("strata-log-maintenance".into())
                    .spawn(move || loop {
                        {
                            let mut stop = sh.stop.lock();
                            if !*stop {
                                sh.wake.wait_for(&mut stop, every);
                            }
                            if *stop {
                                return;
                            }
                        }
                        sh.maintain(now_ms());
                    })
                    .map_err(|e| {
                        Error::InvalidArgument(format!("cannot start the maintenance thread: {e}"))
                    })?;
                Some(h)
            }
            _ => None,
        };
        Ok(LogManager {
            storage,
            root,
            meta,
            topics: Mutex::new(topics),
            shared,
            maintenance: Mutex::new(maintenance),
        })
    }

    /// Applies retention to every open partition and runs the cleaner of
    /// compacted partitions past the dirty ratio, as the background thread
    /// does, at `now_ms`.
    pub fn run_maintenance(&self, now_ms: i64) -> MaintenanceStats {
        self.shared.maintain(now_ms)
    }

    fn stop_maintenance(&self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.maintenance.lock().take() {
            let _ = h.join();
        }
    }

    /// Creates a topic with `partitions` partitions; durable on return.
    pub fn create_topic(&self, name: &str, partitions: u32, cfg: LogConfig) -> Result<()> {
        check_topic_name(name)?;
        cfg.validate()?;
        if partitions == 0 {
            return Err(Error::InvalidArgument(
                "a topic needs at least one partition".into(),
            ));
        }
        let mut topics = self.topics.lock();
        if topics.contains_key(name) {
            return Err(Error::InvalidArgument(format!(
                "topic {name} already exists"
            )));
        }
        // What a deletion interrupted by a crash left under this name.
        self.clear_topic_data(name, partitions)?;
        let text = format!("partitions={partitions}\n{}", cfg.encode());
        self.meta
            .put(&format!("topic/{name}"), text.as_bytes(), true)?;
        topics.insert(name.to_string(), (partitions, cfg));
        Ok(())
    }

    /// Deletes a topic: its configuration first (durable, so the topic is
    /// gone even if a crash interrupts the rest), then its partitions'
    /// files and metadata. A topic created again under the name starts
    /// empty (`create_topic` clears what a crash left).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let mut parts = self.shared.partitions.lock();
        let count = {
            let mut topics = self.topics.lock();
            let (count, _) = topics
                .get(name)
                .cloned()
                .ok_or_else(|| Error::UnknownTopicOrPartition(name.to_string()))?;
            self.meta.delete(&format!("topic/{name}"), true)?;
            topics.remove(name);
            count
        };
        for i in 0..count {
            parts.remove(&(name.to_string(), i));
        }
        drop(parts);
        self.clear_topic_data(name, count)
    }

    /// Removes the files and metadata of partitions `0..count` of `name`
    /// (and of any higher partition a crash left behind).
    fn clear_topic_data(&self, name: &str, count: u32) -> Result<()> {
        let storage = &*self.storage;
        let prefix = format!("{name}-");
        let mut dirs: Vec<u32> = storage
            .list_dir(&self.root)?
            .into_iter()
            .filter_map(|d| d.strip_prefix(&prefix)?.parse().ok())
            .collect();
        dirs.extend(0..count);
        dirs.sort_unstable();
        dirs.dedup();
        for i in dirs {
            let dir = self.root.join(format!("{name}-{i}"));
            let files = match storage.list_dir(&dir) {
                Ok(f) => f,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for f in files {
                storage.remove_file(&dir.join(f))?;
            }
            storage.sync_dir(&dir)?;
            let dead: Vec<String> = self
                .meta
                .scan(&crate::meta::part_prefix(name, i))?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            if !dead.is_empty() {
                self.meta.write(&[], &dead, true)?;
            }
        }
        Ok(())
    }

    /// Allocates `n` producer ids, durably (none is handed out twice, even
    /// across crashes); the first of them.
    pub fn allocate_producer_ids(&self, n: u64) -> Result<i64> {
        let _one = self.topics.lock();
        let next = self.meta.get_u64("producer-ids/next")?.unwrap_or(0);
        let end = next
            .checked_add(n)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| Error::InvalidArgument("producer ids exhausted".into()))?;
        self.meta.put_u64("producer-ids/next", end, true)?;
        Ok(next as i64)
    }

    /// Every committed offset of a group.
    pub fn group_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>> {
        check_group_name(group)?;
        let prefix = format!("group/{group}/");
        let mut out = Vec::new();
        for (k, v) in self.meta.scan(&prefix)? {
            let rest = &k[prefix.len()..];
            let parsed = rest.rsplit_once('/').and_then(|(t, p)| {
                let p: u32 = p.parse().ok()?;
                let off = decode_u64(v.get(..8)?)?;
                Some((t.to_string(), p, off, v[8..].to_vec()))
            });
            out.push(parsed.ok_or_else(|| self.meta.bad(&k, "bad committed offset"))?);
        }
        Ok(out)
    }

    /// Topics and their partition counts.
    pub fn topics(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .topics
            .lock()
            .iter()
            .map(|(k, (n, _))| (k.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// A topic's partition count (`None`: no such topic).
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.lock().get(topic).map(|(n, _)| *n)
    }

    /// A topic's configuration.
    pub fn topic_config(&self, topic: &str) -> Result<LogConfig> {
        self.topics
            .lock()
            .get(topic)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| Error::UnknownTopicOrPartition(topic.to_string()))
    }

    /// The partition, opened (and recovered) on first use.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        Ok(self.partition_with_report(topic, partition)?.0)
    }

    /// The partition and, if this call opened it, its recovery report.
    pub fn partition_with_report(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<Partition>, Option<RecoveryReport>)> {
        let key = (topic.to_string(), partition);
        let mut parts = self.shared.partitions.lock();
        if let Some(p) = parts.get(&key) {
            return Ok((p.clone(), None));
        }
        let (count, cfg) = self
            .topics
            .lock()
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition(topic.to_string()))?;
        if partition >= count {
            return Err(Error::UnknownTopicOrPartition(format!(
                "{topic}-{partition}"
            )));
        }
        let dir = self.root.join(format!("{topic}-{partition}"));
        let (p, report) = Partition::open_with(
            self.storage.clone(),
            self.meta.clone(),
            &dir,
            topic,
            partition,
            cfg,
            SegmentIo {
                direct_io: self.shared.opts.direct_io,
                write_behind: self.shared.opts.write_behind,
                preallocate: self.shared.opts.preallocate,
            },
        )?;
        let p = Arc::new(p);
        parts.insert(key, p.clone());
        Ok((p, Some(report)))
    }

    /// Commits a consumer group's offset for a partition (the next offset
    /// it will read), with free-form metadata; durable on return.
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        metadata: &[u8],
    ) -> Result<()> {
        check_group_name(group)?;
        check_topic_name(topic)?;
        let mut v = offset.to_be_bytes().to_vec();
        v.extend_from_slice(metadata);
        self.meta
            .put(&format!("group/{group}/{topic}/{partition:010}"), &v, true)
    }

    /// Commits several of a group's offsets at once: one synced write of
    /// the metadata store for all of them (an OffsetCommit request's
    /// partitions), all or none.
    pub fn commit_offsets(&self, group: &str, offsets: &[CommittedOffset]) -> Result<()> {
        check_group_name(group)?;
        let mut puts = Vec::with_capacity(offsets.len());
        for (topic, partition, offset, metadata) in offsets {
            check_topic_name(topic)?;
            let mut v = offset.to_be_bytes().to_vec();
            v.extend_from_slice(metadata);
            puts.push((format!("group/{group}/{topic}/{partition:010}"), v));
        }
        if puts.is_empty() {
            return Ok(());
        }
        self.meta.write(&puts, &[], true)
    }

    /// A group's committed offset and metadata for a partition.
    pub fn fetch_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        check_group_name(group)?;
        check_topic_name(topic)?;
        let k = format!("group/{group}/{topic}/{partition:010}");
        match self.meta.get(&k)? {
            None => Ok(None),
            Some(v) if v.len() >= 8 => {
                let off = decode_u64(&v[..8]).ok_or_else(|| self.meta.bad(&k, "bad offset"))?;
                Ok(Some((off, v[8..].to_vec())))
            }
            Some(_) => Err(self.meta.bad(&k, "committed offset cut short")),
        }
    }

    /// Stops the maintenance thread, flushes every open partition and
    /// closes the metadata store.
    pub fn close(&self) -> Result<()> {
        self.stop_maintenance();
        for p in self.shared.partitions.lock().values() {
            p.flush()?;
        }
        self.meta.close()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        self.stop_maintenance();
    }
}
