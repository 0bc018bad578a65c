//! Cluster mode of `strata serve`: this process is one broker of several,
//! and, if it is among `controller.quorum.voters`, one voter of the Raft
//! quorum that replicates the controller. The replication core runs here
//! unchanged: [`strata_replication::broker::Broker`] for this node's
//! replicas and [`QuorumNode`] for the controller, both state machines,
//! driven by one thread that owns them.
//!
//! The driver thread takes inputs from a channel (frames from other
//! nodes, produce requests from client connections, topic creations) and
//! a 10 ms tick with the time from the process's monotonic clock. It
//! persists Raft's output before sending its messages (a failed write or
//! fsync stops the process: it is never retried), routes the broker's and
//! controller's messages to the local machine or to peers, and answers
//! the produce requests waiting on it.
//!
//! Between nodes: the Kafka listener also takes Strata's peer frames,
//! told apart by an API key no Kafka request uses ([`PEER_API_KEY`]);
//! docs/cluster.md has the layout. Peer frames are one-way: the protocol
//! machines carry their own correlation and retry on loss, so a sender
//! whose queue is full, or whose peer is down, drops the frame.
//!
//! A follower's fetch that finds nothing new is held at the leader for up
//! to `replica.fetch.wait.max.ms` and answered when a produce lands (a
//! long poll), so followers ask again at once after each answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::Mutex;
use strata_log::{Batch, Partition};
use strata_replication::broker::{Broker as ReplBroker, BrokerConfig};
use strata_replication::controller::ControllerConfig;
use strata_replication::msg::{
    Acks, ErrorCode, FetchRequest, FetchResponse, NodeId, PartitionState, ProduceResult,
};
use strata_replication::quorum::QuorumNode;
use strata_replication::raft::{self, storage::RaftStorage, Raft};
use strata_replication::replica::ReplicaConfig;

use crate::error::{Error, Result};
use crate::state::Shared;

mod driver;
pub mod fetcher;
mod flusher;
mod peer;

/// The API key of a peer frame: outside Kafka's range (Kafka's keys are
/// below 100), so a Kafka client can never send one by accident.
pub const PEER_API_KEY: i16 = 0x7f53;

/// Frame kinds (the byte after the API key).
const TO_BROKER: u8 = 0;
const TO_CONTROLLER: u8 = 1;
const FROM_CONTROLLER: u8 = 2;
const RAFT: u8 = 3;
const NOT_CONTROLLER: u8 = 4;

/// How often the state machines tick.
const TICK: Duration = Duration::from_millis(10);

pub use crate::config::{parse_voters, Node};

/// Cluster settings (from `strata serve`'s configuration).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node.
    pub me: NodeId,
    /// The controller quorum's voters. Every node needs them (brokers
    /// find the controller through them); a node whose id is not among
    /// them is a broker only.
    pub voters: Vec<Node>,
    /// default.replication.factor
    pub replication_factor: u32,
    /// min.insync.replicas
    pub min_insync_replicas: usize,
    /// replica.lag.time.max.ms
    pub replica_lag_time_max_ms: u64,
    /// replica.fetch.wait.max.ms
    pub fetch_wait_max_ms: u64,
    /// broker.heartbeat.interval.ms
    pub heartbeat_interval_ms: u64,
    /// broker.session.timeout.ms: the failure detector never fences a
    /// broker after less silence than this.
    pub session_timeout_ms: u64,
    /// controller.quorum.election.timeout.ms (each wait is drawn from
    /// this to twice this).
    pub election_timeout_ms: u64,
    /// replica.ack.unsynced (unsafe; for measurement).
    pub ack_unsynced: bool,
    /// test.faults.enable: transport-level drops on request.
    pub test_faults: bool,
    /// replica.fetch.protocol: followers fetch with Kafka's Fetch API
    /// (`true`), or with the protocol message in a peer frame.
    pub kafka_fetch: bool,
}

/// What the driver reports for `strata cluster status` and Metadata.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Every partition's newest state heard, by id.
    pub states: BTreeMap<u32, PartitionState>,
    /// (topic, index) to id.
    pub by_name: BTreeMap<(String, u32), u32>,
    /// The hosted partitions' logs, by id.
    pub local: HashMap<u32, Arc<Partition>>,
    /// The controller quorum's leader, as this node knows it.
    pub controller: Option<NodeId>,
    /// This voter's Raft term and role.
    pub raft: Option<(u64, &'static str)>,
    /// This start's broker epoch, once registered.
    pub broker_epoch: Option<u64>,
    /// ISR changes of partitions this node leads: (shrinks, expands).
    pub isr_changes: (u64, u64),
    /// Times this voter became the quorum's leader.
    pub elections_won: u64,
    /// Per led partition and follower: (topic, index, follower, leader
    /// log end minus the follower's fsynced end), refreshed every 500 ms.
    pub follower_lag: Vec<(String, u32, NodeId, u64)>,
    /// The brokers Metadata lists: registered and not fenced, as the
    /// controller last said, and this node (empty until the controller
    /// has answered: then the voters are listed).
    pub brokers: Vec<Node>,
}

impl View {
    /// The cluster's lines for `GET /metrics` (Prometheus text).
    pub fn metrics_text(&self, me: NodeId) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let led: Vec<&PartitionState> = self
            .states
            .values()
            .filter(|s| s.leader == Some(me))
            .collect();
        let under = led
            .iter()
            .filter(|s| s.isr.len() < s.replicas.len())
            .count();
        let offline = self.states.values().filter(|s| s.leader.is_none()).count();
        let mut g = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        g(
            "strata_cluster_leader_partitions",
            "Partitions this node leads.",
            "gauge",
            led.len() as u64,
        );
        g(
            "strata_cluster_under_replicated_partitions",
            "Partitions this node leads whose ISR is smaller than their replica set.",
            "gauge",
            under as u64,
        );
        g(
            "strata_cluster_offline_partitions",
            "Partitions without a leader, as this node last heard.",
            "gauge",
            offline as u64,
        );
        g(
            "strata_cluster_isr_shrinks_total",
            "ISR shrinks of partitions this node led.",
            "counter",
            self.isr_changes.0,
        );
        g(
            "strata_cluster_isr_expands_total",
            "ISR expansions of partitions this node led.",
            "counter",
            self.isr_changes.1,
        );
        g(
            "strata_controller_elections_won_total",
            "Times this voter became the controller quorum's leader.",
            "counter",
            self.elections_won,
        );
        g(
            "strata_controller_raft_term",
            "This voter's Raft term.",
            "gauge",
            self.raft.map_or(0, |r| r.0),
        );
        g(
            "strata_controller_is_leader",
            "1 if this voter leads the controller quorum.",
            "gauge",
            u64::from(self.raft.is_some_and(|r| r.1 == "leader")),
        );
        out.push_str("# HELP strata_cluster_follower_lag_records Leader log end minus the follower's fsynced end, per led partition and follower.\n# TYPE strata_cluster_follower_lag_records gauge\n");
        for (t, i, f, lag) in &self.follower_lag {
            let _ = writeln!(
                out,
                "strata_cluster_follower_lag_records{{topic=\"{t}\",partition=\"{i}\",follower=\"{f}\"}} {lag}"
            );
        }
        out
    }
}

enum Input {
    Peer {
        kind: u8,
        from: NodeId,
        body: Bytes,
    },
    Produce {
        partition: u32,
        acks: Acks,
        timeout_ms: u64,
        batch: Batch,
        reply: Sender<ProduceResult>,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        reply: Sender<std::result::Result<Vec<PartitionState>, ErrorCode>>,
    },
    DeleteTopic {
        name: String,
        reply: Sender<std::result::Result<u32, ErrorCode>>,
    },
    /// A follower's fetch that came as a Kafka Fetch request (replica id
    /// set); the answer goes back on `reply`.
    ReplicaFetch {
        from: NodeId,
        req: FetchRequest,
        reply: tokio::sync::oneshot::Sender<FetchResponse>,
    },
    /// The answer to this node's Kafka Fetch to leader `from`.
    FetchAnswer {
        from: NodeId,
        resp: FetchResponse,
    },
    /// The flusher fsynced these partitions.
    Flushed(Vec<u32>),
    /// The flusher's fsync of a partition failed: the node stops.
    FlushFailed {
        partition: u32,
        error: strata_log::Error,
    },
    Stop,
}

/// The handle the rest of the server holds.
pub struct Cluster {
    /// This node's id.
    pub me: NodeId,
    /// The controller quorum's voters.
    pub voters: Vec<Node>,
    /// Settings.
    pub cfg: ClusterConfig,
    tx: Sender<Input>,
    rx: Mutex<Option<Receiver<Input>>>,
    view: Mutex<View>,
    next_corr: AtomicU64,
    stopped: std::sync::atomic::AtomicBool,
    /// With test.faults.enable: peers whose frames this node drops, going
    /// out and coming in.
    blocked: Mutex<(BTreeSet<NodeId>, BTreeSet<NodeId>)>,
}

impl Cluster {
    /// A handle; [`Cluster::start`] starts the driver.
    pub fn new(cfg: ClusterConfig) -> Arc<Cluster> {
        let (tx, rx) = channel::unbounded();
        Arc::new(Cluster {
            me: cfg.me,
            voters: cfg.voters.clone(),
            cfg,
            tx,
            rx: Mutex::new(Some(rx)),
            view: Mutex::new(View::default()),
            next_corr: AtomicU64::new(1),
            stopped: std::sync::atomic::AtomicBool::new(false),
            blocked: Mutex::new((BTreeSet::new(), BTreeSet::new())),
        })
    }

    /// The brokers Metadata lists: the live registered ones, or the
    /// voters until the controller has said.
    pub fn brokers(&self) -> Vec<Node> {
        let v = self.view.lock();
        if v.brokers.is_empty() {
            self.voters.clone()
        } else {
            v.brokers.clone()
        }
    }

    /// A copy of what the driver last published.
    pub fn view(&self) -> View {
        self.view.lock().clone()
    }

    /// The state and log of partition `index` of `topic`, if this node
    /// leads it; else Kafka's error code (3: unknown, 6: not the leader).
    pub fn leader_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> std::result::Result<(u32, Arc<Partition>), i16> {
        let v = self.view.lock();
        let idx = u32::try_from(index).map_err(|_| 3i16)?;
        let id = *v.by_name.get(&(topic.to_string(), idx)).ok_or(3i16)?;
        let st = v.states.get(&id).ok_or(3i16)?;
        if st.leader != Some(self.me) {
            return Err(6);
        }
        v.local.get(&id).map(|p| (id, p.clone())).ok_or(6)
    }

    /// The node's state as `GET /status` shows it (what `strata cluster
    /// status` reads): one `node` line, then one `partition` line per
    /// partition, `key=value` fields.
    pub fn status_text(&self) -> String {
        let v = self.view();
        let list = |x: &[NodeId]| {
            x.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = format!(
            "node id={} broker_epoch={} controller={} raft_term={} raft_role={}\n",
            self.me,
            v.broker_epoch.map_or("-".into(), |e| e.to_string()),
            v.controller.map_or("-".into(), |n| n.to_string()),
            v.raft.map_or("-".into(), |r| r.0.to_string()),
            v.raft.map_or("-", |r| r.1),
        );
        for ((topic, index), id) in &v.by_name {
            let Some(st) = v.states.get(id) else { continue };
            out.push_str(&format!(
                "partition topic={topic} index={index} leader={} leader_epoch={} replicas={} isr={} elr={}",
                st.leader.map_or("-".into(), |n| n.to_string()),
                st.leader_epoch,
                list(&st.replicas),
                list(&st.isr),
                list(&st.elr),
            ));
            if let Some(p) = v.local.get(id) {
                out.push_str(&format!(
                    " hw={} leo={} durable={}",
                    p.high_watermark(),
                    p.log_end_offset(),
                    p.durable_end_offset()
                ));
            }
            out.push('\n');
        }
        out
    }

    /// Whether frames to `to` are dropped (a fault test's cut).
    pub(super) fn blocked_out(&self, to: NodeId) -> bool {
        self.blocked.lock().0.contains(&to)
    }

    /// `GET /fault/drop?out=2,3&in=3` and `GET /fault/heal`, with
    /// test.faults.enable: sets which peers' frames this node drops in
    /// its own transport, going out and coming in (a network fault where
    /// namespaces are not available). `None`: not enabled, or not a fault
    /// path.
    pub fn fault_request(&self, target: &str) -> Option<String> {
        if !self.cfg.test_faults {
            return None;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let ids = |key: &str| -> BTreeSet<NodeId> {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == key)
                .flat_map(|(_, v)| v.split(',').filter_map(|n| n.parse().ok()))
                .collect()
        };
        let mut b = self.blocked.lock();
        match path {
            "/fault/drop" => *b = (ids("out"), ids("in")),
            "/fault/heal" => *b = (BTreeSet::new(), BTreeSet::new()),
            _ => return None,
        }
        tracing::warn!(out = ?b.0, r#in = ?b.1, "test fault: peer frames dropped");
        Some(format!("out {:?} in {:?}\n", b.0, b.1))
    }

    /// The newest state heard of partition `id` (no copy of the whole view).
    pub fn partition_state(&self, id: u32) -> Option<PartitionState> {
        self.view.lock().states.get(&id).cloned()
    }

    /// The leader of partition `index` of `topic`, as last heard.
    pub fn leader_of(&self, topic: &str, index: u32) -> Option<NodeId> {
        let v = self.view.lock();
        let id = v.by_name.get(&(topic.to_string(), index))?;
        v.states.get(id)?.leader
    }

    /// The cluster-wide id of the topic's partition 0 (`None`: no topic).
    pub fn first_partition_id(&self, topic: &str) -> Option<u32> {
        let v = self.view.lock();
        v.by_name.get(&(topic.to_string(), 0)).copied()
    }

    /// How many partitions the topic has in the cluster (`None`: none).
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        let v = self.view.lock();
        let n = v
            .by_name
            .range((topic.to_string(), 0)..)
            .take_while(|((t, _), _)| t == topic)
            .count();
        (n > 0).then_some(n as u32)
    }

    /// Whether the topic exists in the cluster.
    pub fn topic_exists(&self, topic: &str) -> bool {
        let v = self.view.lock();
        v.by_name
            .range((topic.to_string(), 0)..)
            .next()
            .is_some_and(|((t, _), _)| t == topic)
    }

    /// A frame from a peer (called by the connection that read it).
    pub fn peer_frame(&self, frame: &[u8]) -> std::result::Result<(), String> {
        // key (2) | kind (1) | from (4) | crc32c of body (4) | body
        if frame.len() < 11 {
            return Err(format!("peer frame of {} bytes", frame.len()));
        }
        let kind = frame[2];
        let from = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]);
        let crc = u32::from_be_bytes([frame[7], frame[8], frame[9], frame[10]]);
        let body = &frame[11..];
        if crc32c::crc32c(body) != crc {
            return Err(format!("peer frame from node {from}: checksum mismatch"));
        }
        // Brokers outside the voters are not known in advance: any node
        // id but this node's own is taken.
        if from == self.me || from == 0 || from > 1023 {
            return Err(format!("peer frame from node {from}"));
        }
        if self.blocked.lock().1.contains(&from) {
            return Ok(()); // a fault test's cut: lost
        }
        let _ = self.tx.send(Input::Peer {
            kind,
            from,
            body: Bytes::copy_from_slice(body),
        });
        Ok(())
    }

    /// Hands a produce to the partition's leader replica; the answer comes
    /// on the returned channel (none for acks=0).
    pub fn produce(
        &self,
        partition: u32,
        acks: Acks,
        timeout_ms: u64,
        batch: Batch,
    ) -> Receiver<ProduceResult> {
        let (reply, rx) = channel::bounded(1);
        let _ = self.tx.send(Input::Produce {
            partition,
            acks,
            timeout_ms,
            batch,
            reply,
        });
        rx
    }

    /// Asks the controller for a topic; waits up to `timeout`.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        timeout: Duration,
    ) -> std::result::Result<Vec<PartitionState>, ErrorCode> {
        let (reply, rx) = channel::bounded(1);
        let _ = self.tx.send(Input::CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            reply,
        });
        let res = rx
            .recv_timeout(timeout)
            .map_err(|_| ErrorCode::RequestTimedOut)?;
        if let Ok(states) = &res {
            // Known here at once, before the heartbeats bring them.
            let mut v = self.view.lock();
            for s in states {
                v.by_name.insert((s.topic.clone(), s.index), s.partition);
                if v.states
                    .get(&s.partition)
                    .is_none_or(|o| o.partition_epoch < s.partition_epoch)
                {
                    v.states.insert(s.partition, s.clone());
                }
            }
        }
        res
    }

    /// Asks the controller to delete a topic; waits up to `timeout`. The
    /// answer is the number of partitions deleted; each replica drops
    /// its log as the tombstones reach it.
    pub fn delete_topic(
        &self,
        name: &str,
        timeout: Duration,
    ) -> std::result::Result<u32, ErrorCode> {
        let (reply, rx) = channel::bounded(1);
        let _ = self.tx.send(Input::DeleteTopic {
            name: name.to_string(),
            reply,
        });
        let res = rx
            .recv_timeout(timeout)
            .map_err(|_| ErrorCode::RequestTimedOut)?;
        if res.is_ok() {
            // Gone here at once, before the heartbeats bring the tombstones.
            let mut v = self.view.lock();
            v.by_name.retain(|(t, _), _| t != name);
        }
        res
    }

    /// A follower's Kafka Fetch of partition `index` of `topic`: the
    /// protocol's answer, once the leader replica gives it (held up to
    /// `replica.fetch.wait.max.ms` if there is nothing new). `None`: no
    /// such partition.
    pub fn replica_fetch(
        &self,
        from: NodeId,
        topic: &str,
        index: i32,
        mut req: FetchRequest,
    ) -> Option<tokio::sync::oneshot::Receiver<FetchResponse>> {
        let id = {
            let v = self.view.lock();
            let idx = u32::try_from(index).ok()?;
            *v.by_name.get(&(topic.to_string(), idx))?
        };
        req.partition = id;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Input::ReplicaFetch { from, req, reply });
        Some(rx)
    }

    /// Asks the driver to stop: a controlled shutdown (leaderships moved
    /// away, Raft leadership handed over), then its Raft storage closes.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }

    /// Whether the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn corr(&self) -> u64 {
        self.next_corr.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts the driver thread and the peer senders.
    pub fn start(
        self: &Arc<Self>,
        b: Arc<Shared>,
        data: &Path,
    ) -> Result<std::thread::JoinHandle<()>> {
        let rx = self
            .rx
            .lock()
            .take()
            .ok_or_else(|| Error::Config("the cluster driver is already running".into()))?;
        // One layout per directory: every log here must be a cluster
        // replica's, named as this version names them.
        if let Some((t, _)) = b
            .logs
            .topics()
            .into_iter()
            .find(|(t, n)| *n != 1 || !is_local_topic(t))
        {
            return Err(Error::DataDir(format!(
                "{}: topic {t:?} is not a cluster replica's log of this version (a single node's topic, or an earlier cluster layout); start this node on a new directory (nothing is migrated)",
                data.display()
            )));
        }
        let storage = strata_io::open_storage(strata_io::Backend::Std);
        let voter = self.voters.iter().any(|n| n.id == self.me);
        let quorum = if voter {
            let (st, hs, snap, entries) = RaftStorage::open(storage, &data.join("raft"))?;
            let mut rc = raft::Config::new(self.me, self.voters.iter().map(|n| n.id).collect());
            rc.election_timeout_ms = (
                self.cfg.election_timeout_ms,
                2 * self.cfg.election_timeout_ms,
            );
            // Several heartbeats per election timeout, however short.
            rc.heartbeat_ms = (self.cfg.election_timeout_ms / 5).clamp(10, 100);
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                ^ u64::from(self.me);
            let snapshot_data = snap.as_ref().map(|s| s.data.to_vec());
            let r = Raft::restore(rc, hs, snap, entries, 0, seed);
            let cc = ControllerConfig {
                min_insync_replicas: self.cfg.min_insync_replicas,
                heartbeat_interval_ms: self.cfg.heartbeat_interval_ms,
                min_session_timeout_ms: self.cfg.session_timeout_ms,
                takeover_grace_ms: 3 * self.cfg.heartbeat_interval_ms,
                ack_unsynced: self.cfg.ack_unsynced,
                ..ControllerConfig::default()
            };
            Some((QuorumNode::new(r, snapshot_data, cc, Vec::new()), st))
        } else {
            None
        };
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let bc = BrokerConfig {
            heartbeat_interval_ms: self.cfg.heartbeat_interval_ms,
            replica: ReplicaConfig {
                min_insync_replicas: self.cfg.min_insync_replicas,
                replica_lag_time_max_ms: self.cfg.replica_lag_time_max_ms,
                fetch_wait_max_ms: self.cfg.fetch_wait_max_ms,
                ack_unsynced: self.cfg.ack_unsynced,
                fetch_timeout_ms: self.cfg.fetch_wait_max_ms + 2000,
                group_sync: true,
                ..ReplicaConfig::default()
            },
        };
        let mut broker = ReplBroker::new(self.me, incarnation, Vec::new(), bc);
        broker.set_endpoint(&format!("{}:{}", b.host, b.port));
        driver::spawn(self.clone(), b, broker, quorum, incarnation, rx)
    }
}

/// The local log of a cluster partition: one single-partition topic per
/// replica, named by topic, index and the partition's cluster-wide id.
/// The id makes it unique across deletions: a topic deleted and created
/// again gets new ids, so a replica that was down meanwhile can never
/// take the old topic's log for the new one's, nor delete the new one's
/// when it sweeps the old tombstone.
pub fn local_topic(topic: &str, index: u32, id: u32) -> String {
    format!("{topic}-{index}-p{id}")
}

/// Whether `name` is a local log name [`local_topic`] makes.
pub fn is_local_topic(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.rsplit_once("-p").is_some_and(|(rest, id)| {
        digits(id)
            && rest
                .rsplit_once('-')
                .is_some_and(|(t, i)| !t.is_empty() && digits(i))
    })
}

/// Longest topic name a cluster takes: Kafka's 249, less what
/// [`local_topic`] adds (`-` index `-p` id, at most 22 bytes).
pub const MAX_TOPIC_NAME: usize = 249 - 22;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_log_names_carry_the_partition_id() {
        assert_eq!(local_topic("events", 3, 17), "events-3-p17");
        assert!(is_local_topic(&local_topic("a-b-1", 0, 0)));
        assert!(is_local_topic(&local_topic("x-p1", 2, 9)));
        // A single node's topics and the layout before ids are refused.
        for name in [
            "events",
            "events-3",
            "events-p3",
            "-3-p1",
            "events-3-p",
            "e-x-p1",
        ] {
            assert!(!is_local_topic(name), "{name}");
        }
    }
}
