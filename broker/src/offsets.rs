//! Committed offsets and who coordinates a group.
//!
//! In a cluster, as in Kafka, offsets live in the internal compacted topic
//! `__consumer_offsets` (`offsets.topic.num.partitions`, default 50;
//! `offsets.topic.replication.factor`, default the topics' default). A
//! group maps to partition `(String.hashCode(group) & 0x7fffffff) % n`,
//! Kafka's rule, and the leader of that partition coordinates it: any
//! other node answers NOT_COORDINATOR. A commit is one record batch
//! appended to that partition through the replication core with acks=all,
//! answered only once the batch is below the high watermark, so a commit
//! that was acknowledged survives the coordinator's death. A new leader
//! loads the partition (every record up to its log end, which will all be
//! committed under its leadership) before it answers for the partition's
//! groups; a leadership it held before is dropped then, with the groups'
//! members (fenced by the leader epoch the load is keyed on).
//!
//! A single node keeps offsets in the log manager's metadata store, as
//! before (until it runs as a cluster of one).
//!
//! Record format (Kafka's, so Kafka's tooling reads the topic): key
//! version 1 = `i16 1, group (i16 length + UTF-8), topic (same), i32
//! partition`; value version 3 = `i16 3, i64 offset, i32 leader epoch
//! (-1), metadata (i16 length + UTF-8), i64 commit timestamp`; a null
//! value deletes the offset. Keys of version 2 (group metadata) are
//! skipped on load. docs/kafka-protocol.md has the byte layout.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use strata_log::batch::{self, ProducerInfo, Record};
use strata_log::Partition;
use strata_replication::msg::{Acks, ErrorCode, ProduceResult};

use crate::cluster::Cluster;
use crate::codes::{code, log_code};
use crate::state::Broker;

/// The internal topic of committed offsets.
pub const TOPIC: &str = "__consumer_offsets";

/// How long a commit waits for its record to be replicated.
const COMMIT_TIMEOUT_MS: u64 = 5000;

/// How long FindCoordinator waits for the controller to create the topic.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Java's `String.hashCode` (over UTF-16 code units), which Kafka's rule
/// for a group's partition uses.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The partition of `__consumer_offsets` that holds `group`'s offsets.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    (java_string_hash(group) & 0x7fff_ffff) as u32 % partitions.max(1)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(i16::MAX as usize);
    out.extend_from_slice(&(n as i16).to_be_bytes());
    out.extend_from_slice(&b[..n]);
}

/// The key of an offset commit record (version 1).
pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + topic.len());
    k.extend_from_slice(&1i16.to_be_bytes());
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The value of an offset commit record (version 3).
pub fn offset_value(offset: i64, metadata: &str, commit_timestamp: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + metadata.len());
    v.extend_from_slice(&3i16.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&(-1i32).to_be_bytes());
    put_str(&mut v, metadata);
    v.extend_from_slice(&commit_timestamp.to_be_bytes());
    v
}

/// A decoded record of the offsets topic.
#[derive(Debug, PartialEq, Eq)]
pub enum OffsetRecord {
    /// An offset commit (`None`: deleted).
    Offset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Offset and metadata.
        value: Option<(i64, String)>,
    },
    /// Group metadata or a key version this broker does not use.
    Other,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        if self.0.len() < n {
            return Err("record too short");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn str(&mut self) -> Result<String, &'static str> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| "negative string length")?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8")
    }
}

/// Decodes a record of the offsets topic; an error names what is wrong
/// (never a panic: the fuzz target `offsets_record` checks it).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<OffsetRecord, &'static str> {
    let mut k = Reader(key);
    let version = k.i16()?;
    if !(0..=1).contains(&version) {
        return Ok(OffsetRecord::Other);
    }
    let group = k.str()?;
    let topic = k.str()?;
    let partition = k.i32()?;
    let value = match value {
        None => None,
        Some(v) => {
            let mut r = Reader(v);
            let version = r.i16()?;
            let offset = r.i64()?;
            match version {
                // offset, metadata, commit timestamp (and expiry in v1)
                0 | 1 => Some((offset, r.str()?)),
                // offset, leader epoch, metadata, commit timestamp
                3 => {
                    r.i32()?;
                    Some((offset, r.str()?))
                }
                _ => return Err("unknown offset value version"),
            }
        }
    };
    Ok(OffsetRecord::Offset {
        group,
        topic,
        partition,
        value,
    })
}

type Key = (String, String, i32);

/// One loaded partition of the offsets topic.
struct Loaded {
    /// The leader epoch it was loaded under.
    epoch: i32,
    offsets: HashMap<Key, (i64, String)>,
}

/// What this node has loaded of the offsets topic, by partition index.
#[derive(Default)]
pub struct OffsetCache {
    parts: Mutex<HashMap<u32, Loaded>>,
}

/// This node coordinates a group: the partition that holds it, its log
/// and the leadership it was loaded under.
struct Here {
    index: u32,
    id: u32,
    epoch: i32,
}

fn partitions(b: &Broker) -> u32 {
    b.cfg.offsets_topic_num_partitions
}

/// The coordinator of `group` (FindCoordinator): node id, host and port.
/// In a cluster the offsets topic is created on first use, as Kafka does.
pub(crate) fn coordinator_of(b: &Broker, group: &str) -> Result<(i32, String, i32), i16> {
    let Some(c) = &b.cluster else {
        return Ok((b.cfg.node_id, b.host.clone(), b.port));
    };
    if !c.topic_exists(TOPIC) {
        let rf = b
            .cfg
            .offsets_topic_replication_factor
            .unwrap_or(c.cfg.replication_factor);
        match c.create_topic(TOPIC, partitions(b), rf, CREATE_TIMEOUT) {
            Ok(_) => tracing::info!(
                partitions = partitions(b),
                replication_factor = rf,
                "created {TOPIC}"
            ),
            Err(ErrorCode::TopicAlreadyExists) => {}
            Err(e) => {
                tracing::warn!(error = ?e, "creating {TOPIC} failed");
                return Err(code::COORDINATOR_NOT_AVAILABLE);
            }
        }
    }
    let index = partition_for(group, partitions(b));
    let leader = c
        .leader_of(TOPIC, index)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    let node = c
        .brokers()
        .into_iter()
        .find(|n| n.id == leader)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    Ok((leader as i32, node.host, i32::from(node.port)))
}

/// Whether this node coordinates `group` now (loading its partition of
/// the offsets topic first if this leadership has not yet): `Err` is
/// Kafka's code for the client (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE).
/// A single node coordinates every group.
pub(crate) fn check_coordinator(b: &Broker, group: &str) -> Result<(), i16> {
    match &b.cluster {
        None => Ok(()),
        Some(c) => here(b, c, group).map(|_| ()),
    }
}

fn here(b: &Broker, c: &Cluster, group: &str) -> Result<Here, i16> {
    let index = partition_for(group, partitions(b));
    let (id, log) = c
        .leader_partition(TOPIC, index as i32)
        .map_err(|e| match e {
            6 => code::NOT_COORDINATOR,
            _ => code::COORDINATOR_NOT_AVAILABLE,
        })?;
    let epoch = c
        .partition_state(id)
        .map(|s| s.leader_epoch)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    let mut parts = b.offsets.parts.lock();
    if parts.get(&index).is_none_or(|l| l.epoch != epoch) {
        // A new leadership here: what an earlier one held is stale.
        let n = partitions(b);
        let replies = b
            .groups
            .lock()
            .drop_groups(|g| partition_for(g, n) == index);
        b.dispatch(replies);
        let offsets = load(&log).map_err(|e| {
            tracing::error!(partition = index, error = %e, "loading {TOPIC} failed");
            code::COORDINATOR_NOT_AVAILABLE
        })?;
        tracing::info!(
            partition = index,
            leader_epoch = epoch,
            offsets = offsets.len(),
            "loaded {TOPIC}: coordinating its groups"
        );
        parts.insert(index, Loaded { epoch, offsets });
    }
    Ok(Here { index, id, epoch })
}

/// Every offset in a partition of the offsets topic, up to its log end.
fn load(log: &Partition) -> strata_log::Result<HashMap<Key, (i64, String)>> {
    let mut out = HashMap::new();
    let mut at = log.log_start_offset();
    let end = log.log_end_offset();
    while at < end {
        let batches = log.read(at, 1 << 20, Some(end))?;
        let Some(last) = batches.last() else { break };
        at = last.header.next_offset();
        for bt in &batches {
            let records = match bt.try_records() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "{TOPIC}: a batch that does not decode is skipped");
                    continue;
                }
            };
            for r in records {
                let Some(key) = &r.key else { continue };
                match decode(key, r.value.as_deref()) {
                    Ok(OffsetRecord::Offset {
                        group,
                        topic,
                        partition,
                        value,
                    }) => {
                        let k = (group, topic, partition);
                        match value {
                            Some(v) => out.insert(k, v),
                            None => out.remove(&k),
                        };
                    }
                    Ok(OffsetRecord::Other) => {}
                    Err(why) => {
                        tracing::warn!(
                            offset = r.offset,
                            why,
                            "{TOPIC}: a record that does not decode is skipped"
                        )
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One partition's offset to commit.
pub(crate) struct Commit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

/// Commits `commits` for `group` together: on a single node one write of
/// the metadata store; in a cluster one batch on the group's partition of
/// the offsets topic, answered once replicated (acks=all). `Err` is the
/// Kafka code for every partition of the request.
pub(crate) fn commit(b: &Broker, group: &str, commits: &[Commit]) -> Result<(), i16> {
    let Some(c) = &b.cluster else {
        let batch: Vec<(String, u32, u64, Vec<u8>)> = commits
            .iter()
            .filter_map(|x| {
                Some((
                    x.topic.clone(),
                    u32::try_from(x.partition).ok()?,
                    u64::try_from(x.offset).ok()?,
                    x.metadata.as_bytes().to_vec(),
                ))
            })
            .collect();
        return b
            .logs
            .commit_offsets(group, &batch)
            .map_err(|e| log_code(&e));
    };
    if commits.is_empty() {
        return Ok(());
    }
    let h = here(b, c, group)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let records: Vec<Record> = commits
        .iter()
        .map(|x| {
            Record::new(
                now,
                Some(&offset_key(group, &x.topic, x.partition)),
                Some(&offset_value(x.offset, &x.metadata, now)),
            )
        })
        .collect();
    let batch = batch::build(0, h.epoch, ProducerInfo::NONE, &records).map_err(|e| {
        tracing::error!(error = %e, "building an offset commit batch failed");
        code::UNKNOWN_SERVER_ERROR
    })?;
    let rx = c.produce(h.id, Acks::All, COMMIT_TIMEOUT_MS, batch);
    let result = rx
        .recv_timeout(Duration::from_millis(COMMIT_TIMEOUT_MS + 1000))
        .map_err(|_| code::REQUEST_TIMED_OUT)?;
    match result {
        ProduceResult::Ok { .. } => {
            let mut parts = b.offsets.parts.lock();
            if let Some(l) = parts.get_mut(&h.index).filter(|l| l.epoch == h.epoch) {
                for x in commits {
                    l.offsets.insert(
                        (group.to_string(), x.topic.clone(), x.partition),
                        (x.offset, x.metadata.clone()),
                    );
                }
            }
            Ok(())
        }
        // Kafka's mapping of a failed append to the offsets topic.
        ProduceResult::Failed(e) | ProduceResult::Indeterminate(e) => Err(match e {
            ErrorCode::NotLeaderOrFollower
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::KafkaStorageError => code::NOT_COORDINATOR,
            ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::RequestTimedOut => code::COORDINATOR_NOT_AVAILABLE,
            _ => code::UNKNOWN_SERVER_ERROR,
        }),
    }
}

/// `group`'s committed offset of one partition (`None`: none).
pub(crate) fn fetch_one(
    b: &Broker,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<(i64, String)>, i16> {
    let Some(c) = &b.cluster else {
        let Ok(p) = u32::try_from(partition) else {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
        };
        return b
            .logs
            .fetch_offset(group, topic, p)
            .map(|o| o.map(|(off, meta)| (off as i64, String::from_utf8_lossy(&meta).into_owned())))
            .map_err(|e| log_code(&e));
    };
    let h = here(b, c, group)?;
    let parts = b.offsets.parts.lock();
    Ok(parts.get(&h.index).and_then(|l| {
        l.offsets
            .get(&(group.to_string(), topic.to_string(), partition))
            .cloned()
    }))
}

/// Every committed offset of `group`: (topic, partition, offset, metadata).
pub(crate) fn fetch_all(b: &Broker, group: &str) -> Result<Vec<(String, i32, i64, String)>, i16> {
    let Some(c) = &b.cluster else {
        return b
            .logs
            .group_offsets(group)
            .map(|all| {
                all.into_iter()
                    .map(|(t, p, off, meta)| {
                        (
                            t,
                            p as i32,
                            off as i64,
                            String::from_utf8_lossy(&meta).into_owned(),
                        )
                    })
                    .collect()
            })
            .map_err(|e| log_code(&e));
    };
    let h = here(b, c, group)?;
    let parts = b.offsets.parts.lock();
    let mut out: Vec<(String, i32, i64, String)> = parts
        .get(&h.index)
        .map(|l| {
            l.offsets
                .iter()
                .filter(|((g, _, _), _)| g == group)
                .map(|((_, t, p), (o, m))| (t.clone(), *p, *o, m.clone()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    Ok(out)
}

/// Whether `group` is one this node coordinates now (ListGroups lists
/// only those). Loads nothing.
pub(crate) fn coordinated_here(b: &Broker, group: &str) -> bool {
    let Some(c) = &b.cluster else { return true };
    let index = partition_for(group, partitions(b));
    c.leader_partition(TOPIC, index as i32).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_partitions_follow_kafkas_rule() {
        // Values Java's String.hashCode gives.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // Java's famous Integer.MIN_VALUE hash: Kafka's Utils.abs maps it
        // to 0 (Math.abs would stay negative), and so does the mask here.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Another negative hash: the sign bit is masked.
        let neg = (0..1000)
            .map(|i| format!("consumer-group-{i}"))
            .find(|g| java_string_hash(g) < 0)
            .expect("some group id hashes negative");
        assert_eq!(
            partition_for(&neg, 50),
            (java_string_hash(&neg) & 0x7fff_ffff) as u32 % 50
        );
        // Outside the BMP: UTF-16 surrogates, as Java hashes them.
        assert_eq!(
            java_string_hash("\u{1F600}"),
            0xD83Di32.wrapping_mul(31).wrapping_add(0xDE00)
        );
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_errors() {
        let k = offset_key("g", "events", 3);
        let v = offset_value(42, "meta", 1_700_000_000_000);
        assert_eq!(
            decode(&k, Some(&v)),
            Ok(OffsetRecord::Offset {
                group: "g".into(),
                topic: "events".into(),
                partition: 3,
                value: Some((42, "meta".into())),
            })
        );
        assert_eq!(
            decode(&k, None),
            Ok(OffsetRecord::Offset {
                group: "g".into(),
                topic: "events".into(),
                partition: 3,
                value: None,
            })
        );
        // Group metadata keys (version 2) are not offsets.
        assert_eq!(
            decode(&[0, 2, 0, 1, b'g'], Some(&[])),
            Ok(OffsetRecord::Other)
        );
        for cut in 0..k.len() {
            assert!(decode(&k[..cut], Some(&v)).is_err(), "key cut at {cut}");
        }
        for cut in 0..v.len() - 8 {
            assert!(decode(&k, Some(&v[..cut])).is_err(), "value cut at {cut}");
        }
        let mut bad = v.clone();
        bad[1] = 9;
        assert!(decode(&k, Some(&bad)).is_err());
        let mut neg = k.clone();
        neg[2] = 0xff; // negative group length
        assert!(decode(&neg, Some(&v)).is_err());
    }
}
