//! Topics, their partitions and consumer-group offsets under one root
//! directory: `<root>/meta` (the metadata store) and
//! `<root>/<topic>-<partition>/` (segments), as Kafka lays out a log dir.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use strata_io::StorageRef;

use crate::config::LogConfig;
use crate::meta::{decode_u64, Meta};
use crate::partition::{Partition, RecoveryReport};
use crate::{Error, Result};

/// Open topics and partitions.
pub struct LogManager {
    storage: StorageRef,
    root: PathBuf,
    meta: Arc<Meta>,
    topics: Mutex<HashMap<String, (u32, LogConfig)>>,
    partitions: Mutex<HashMap<(String, u32), Arc<Partition>>>,
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
    /// Opens (creating if needed) the log directory `root`.
    pub fn open(storage: StorageRef, root: impl AsRef<Path>) -> Result<LogManager> {
        let root = root.as_ref().to_path_buf();
        storage.create_dir_all(&root)?;
        let meta = Arc::new(Meta::open(storage.clone(), &root.join("meta"))?);
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
        Ok(LogManager {
            storage,
            root,
            meta,
            topics: Mutex::new(topics),
            partitions: Mutex::new(HashMap::new()),
        })
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
        let text = format!("partitions={partitions}\n{}", cfg.encode());
        self.meta
            .put(&format!("topic/{name}"), text.as_bytes(), true)?;
        topics.insert(name.to_string(), (partitions, cfg));
        Ok(())
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
        let mut parts = self.partitions.lock();
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
        let (p, report) = Partition::open(
            self.storage.clone(),
            self.meta.clone(),
            &dir,
            topic,
            partition,
            cfg,
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

    /// Flushes every open partition and closes the metadata store.
    pub fn close(&self) -> Result<()> {
        for p in self.partitions.lock().values() {
            p.flush()?;
        }
        self.meta.close()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
