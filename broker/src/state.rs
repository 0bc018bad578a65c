//! The broker's shared state and the partition lookups every handler
//! uses: which log serves a topic's partition here, the checks a produced
//! batch passes before any append, topic creation on this node. Below
//! the handlers, above the cluster driver (which sees only [`Shared`]).

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{FetchResponse, MetadataRequest};
use parking_lot::Mutex;
use strata_log::batch::Batch;
use strata_log::{Error as LogError, LogConfig, Partition};
use strata_replication::group::{GroupCoordinator, Reply, Token};
use tokio::sync::oneshot;

use crate::cluster;
use crate::codes::{code, log_code};
pub(crate) use crate::shared::Shared;

/// The broker's state: what the cluster driver shares ([`Shared`], which
/// this derefs to), the group coordinator and the cluster handle.
pub struct Broker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) groups: Mutex<GroupCoordinator>,
    pub(crate) waiting: Mutex<std::collections::HashMap<Token, oneshot::Sender<Reply>>>,
    pub(crate) next_token: AtomicU64,
    /// Serialises topic creation and deletion.
    pub(crate) admin: Mutex<()>,
    pub(crate) stop: AtomicBool,
    /// Cluster mode: the replication driver's handle.
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    /// The partitions of `__consumer_offsets` this node has loaded.
    pub(crate) offsets: crate::offsets::OffsetCache,
}

/// Runs disk work (appends, fsyncs, reads) where it may block: on this
/// worker thread, after tokio hands the worker's other tasks (the accept
/// loop, other connections) to another thread. No thread hop per
/// request, as `spawn_blocking` would cost (a third of the CPU time of a
/// small-request load went to those wake-ups).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    Some(tokio::task::block_in_place(f))
}

impl Deref for Broker {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Broker {
    /// A topic's configuration: in a cluster what its replicas' logs
    /// use, on a single node what the topic was created with.
    pub(crate) fn topic_config(&self, topic: &str) -> Result<LogConfig, i16> {
        match &self.cluster {
            Some(c) => c
                .partition_count(topic)
                .map(|_| crate::shared::replica_log_config(&self.cfg.log, topic))
                .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
            None => self.logs.topic_config(topic).map_err(|e| log_code(&e)),
        }
    }

    /// The topic's id (Metadata v10+, DeleteTopics by id). In a cluster
    /// it comes from the topic's first partition id as well as its name:
    /// a topic deleted and created again gets another id, as in Kafka, so
    /// clients drop what they cached of the old one (leader epochs that
    /// start over would otherwise look stale to them).
    pub(crate) fn topic_id(&self, topic: &str) -> uuid::Uuid {
        match &self.cluster {
            Some(c) => match c.first_partition_id(topic) {
                Some(id) => crate::codes::topic_id(&format!("{topic}/{id}")),
                None => crate::codes::topic_id(topic),
            },
            None => crate::codes::topic_id(topic),
        }
    }

    /// Every topic and its partition count.
    pub(crate) fn topics(&self) -> Vec<(String, u32)> {
        match &self.cluster {
            Some(c) => {
                let v = c.view();
                let mut out: Vec<(String, u32)> = Vec::new();
                for (t, _) in v.by_name.keys() {
                    match out.last_mut() {
                        Some((n, k)) if n == t => *k += 1,
                        _ => out.push((t.clone(), 1)),
                    }
                }
                out
            }
            None => self.logs.topics(),
        }
    }

    /// How many partitions `topic` has (`None`: no such topic), in the
    /// cluster's metadata or the single node's logs.
    pub(crate) fn partition_count(&self, topic: &str) -> Option<u32> {
        match &self.cluster {
            Some(c) => c.partition_count(topic),
            None => self.logs.partition_count(topic),
        }
    }

    /// Opens every partition of a topic (recovering it) and gives new
    /// ones their first leader epoch.
    pub(crate) fn open_topic(&self, topic: &str, count: u32) -> strata_log::Result<()> {
        for i in 0..count {
            let p = self.logs.partition(topic, i)?;
            if p.latest_epoch().is_none() {
                p.assign_epoch(0)?;
            }
            // Whatever recovery kept is fsynced from here on.
            p.flush()?;
            self.advance_hw(&p)?;
        }
        Ok(())
    }

    /// (topic, partition, log start, log end, high watermark) of every
    /// partition, for the metrics.
    pub(crate) fn partition_offsets(&self) -> Vec<(String, u32, u64, u64, u64)> {
        let mut out = Vec::new();
        if let Some(c) = &self.cluster {
            // The replicas this node hosts, by their cluster names.
            let v = c.view();
            for ((t, i), id) in &v.by_name {
                if let Some(p) = v.local.get(id) {
                    out.push((
                        t.clone(),
                        *i,
                        p.log_start_offset(),
                        p.log_end_offset(),
                        p.high_watermark(),
                    ));
                }
            }
            return out;
        }
        for (t, n) in self.logs.topics() {
            for i in 0..n {
                if let Ok(p) = self.logs.partition(&t, i) {
                    out.push((
                        t.clone(),
                        i,
                        p.log_start_offset(),
                        p.log_end_offset(),
                        p.high_watermark(),
                    ));
                }
            }
        }
        out
    }

    /// Group coordinator replies go to the requests waiting on them.
    pub(crate) fn dispatch(&self, replies: Vec<(Token, Reply)>) {
        let mut w = self.waiting.lock();
        for (t, r) in replies {
            if let Some(tx) = w.remove(&t) {
                // A closed connection dropped its receiver: nothing to do.
                let _ = tx.send(r);
            }
        }
    }

    /// Sends a request to the group coordinator and waits for its reply.
    pub(crate) async fn group_call(
        &self,
        req: strata_replication::group::Request,
    ) -> Option<Reply> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(token, tx);
        let replies = self.groups.lock().handle(self.now_ms(), token, req);
        self.dispatch(replies);
        rx.await.ok()
    }
}

/// The topics a Metadata request names (`None`: every topic; v0 says so
/// with an empty list, v1+ with null), and whether it may auto-create.
pub(crate) fn wanted_topics(
    b: &Broker,
    r: MetadataRequest,
    version: i16,
) -> (Option<Vec<String>>, bool) {
    let auto = b.cfg.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
    let wanted = match r.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| t.name.map(|n| n.as_str().to_string()))
                .collect(),
        ),
    };
    (wanted, auto)
}

/// The partition `index` of `topic`, if both exist (and, in a cluster,
/// this node leads it); else the error code to answer with.
pub(crate) fn part(b: &Broker, topic: &str, index: i32) -> Result<Arc<Partition>, i16> {
    if let Some(c) = &b.cluster {
        return c.leader_partition(topic, index).map(|(_, p)| p);
    }
    u32::try_from(index)
        .ok()
        .and_then(|i| b.logs.partition(topic, i).ok())
        .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
}

/// Checks a client's view of the leader epoch (KIP-320): -1 means none.
pub(crate) fn check_leader_epoch(p: &Partition, current: i32) -> i16 {
    let epoch = Shared::epoch(p);
    if current < 0 || current == epoch {
        code::NONE
    } else if current < epoch {
        code::FENCED_LEADER_EPOCH
    } else {
        code::UNKNOWN_LEADER_EPOCH
    }
}

pub(crate) type Failure = (i16, Option<String>);

/// A produced partition's records as a batch an append may take (one
/// cluster or one node alike): within message.max.bytes, record batch v2
/// with a good header and CRC (Produce v3+ sends exactly one), not
/// transactional, records valid by LogValidator's rules.
pub(crate) fn check_produced(b: &Broker, records: Option<Bytes>) -> Result<Batch, Failure> {
    let bytes = records.ok_or((code::CORRUPT_MESSAGE, Some("no records".into())))?;
    if bytes.len() > b.cfg.message_max_bytes {
        return Err((
            code::MESSAGE_TOO_LARGE,
            Some(format!(
                "{} bytes is over message.max.bytes ({})",
                bytes.len(),
                b.cfg.message_max_bytes
            )),
        ));
    }
    // Record batch v2 (Produce v3+): exactly one batch per partition.
    let batch = Batch::from_bytes_header_and_crc(bytes)
        .map_err(|e| (code::CORRUPT_MESSAGE, Some(e.to_string())))?;
    if batch.header.attributes & 0x10 != 0 {
        return Err((
            code::INVALID_RECORD,
            Some("transactional batches are not supported".into()),
        ));
    }
    batch
        .validate_for_append()
        .map_err(|e| (code::INVALID_RECORD, Some(e.to_string())))?;
    Ok(batch)
}

/// A fetch answer: the response with every partition's records empty, and
/// the batches that stand for them, per topic and partition (slices of the
/// segments, written to the socket as they are: see
/// `wire::encode_fetch_chunks`).
pub type Fetched = (FetchResponse, Vec<Vec<Vec<Bytes>>>);

/// Creates a topic (auto-creation and CreateTopics): durable, opened,
/// each partition at leader epoch 0.
pub(crate) fn create_topic(
    b: &Broker,
    name: &str,
    partitions: u32,
    cfg: LogConfig,
) -> Result<(), i16> {
    let _one = b.admin.lock();
    if b.logs.topic_config(name).is_ok() {
        return Err(code::TOPIC_ALREADY_EXISTS);
    }
    if strata_log::manager::check_topic_name(name).is_err() {
        return Err(code::INVALID_TOPIC_EXCEPTION);
    }
    b.logs
        .create_topic(name, partitions, cfg)
        .map_err(|e| match e {
            LogError::InvalidArgument(_) => code::INVALID_CONFIG,
            e => log_code(&e),
        })?;
    b.open_topic(name, partitions).map_err(|e| log_code(&e))?;
    tracing::info!(topic = name, partitions, "topic created");
    Ok(())
}
