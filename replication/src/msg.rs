//! The messages of the protocol and the partition state the controller
//! owns. Field names follow Kafka's (Fetch v12+, AlterPartition, broker
//! heartbeats of KRaft) so the network server maps them one to one.

use strata_log::Batch;

/// A broker's id.
pub type NodeId = u32;
/// A client's id (simulator clients; the server uses connection ids).
pub type ClientId = u32;

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    /// The controller.
    Controller,
    /// A broker.
    Node(NodeId),
    /// A client.
    Client(ClientId),
}

/// A message and its destination, as a state machine outputs it.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The recipient.
    pub to: Addr,
    /// The message.
    pub msg: Msg,
}

/// A partition's replication state, decided by the controller alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// Partition number.
    pub partition: u32,
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The leader (`None`: offline, no eligible replica is alive).
    pub leader: Option<NodeId>,
    /// Bumped with every new leadership: the fencing token of the leader.
    pub leader_epoch: i32,
    /// Bumped with every change of this state: a compare-and-set version
    /// for ISR changes (Kafka's partition epoch).
    pub partition_epoch: i32,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Eligible leader replicas (KIP-966): removed from the ISR while it was
    /// below min.insync.replicas, so they hold everything committed.
    pub elr: Vec<NodeId>,
    /// The controller epoch that made this decision.
    pub controller_epoch: u32,
    /// The Kafka topic and partition index this partition serves (empty
    /// topic: an anonymous partition, as in the simulator).
    pub topic: String,
    /// Its index within `topic`.
    pub index: u32,
}

impl PartitionState {
    /// A deleted partition's tombstone: no replicas (DeleteTopic).
    pub fn is_deleted(&self) -> bool {
        self.replicas.is_empty()
    }
}

/// A registered broker as the controller tells the others of it: how
/// brokers that are not controller voters find each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    /// The broker.
    pub node: NodeId,
    /// `host:port` it registered with.
    pub endpoint: String,
    /// Fenced: not heard from lately (Metadata leaves it out).
    pub fenced: bool,
}

/// A digest of a broker list, so a heartbeat can say which list it holds
/// in four bytes and the controller sends the list only when it changed.
/// Never 0 (0 means "no list").
pub fn brokers_digest(list: &[BrokerInfo]) -> u32 {
    digest_of(list.iter().map(|b| (b.node, b.endpoint.as_str(), b.fenced)))
}

/// [`brokers_digest`] of a list given as (node, endpoint, fenced), so a
/// controller can compare without building the list.
pub fn digest_of<'a>(list: impl Iterator<Item = (NodeId, &'a str, bool)>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (node, endpoint, fenced) in list {
        h.update(&node.to_be_bytes());
        h.update(&(endpoint.len() as u32).to_be_bytes());
        h.update(endpoint.as_bytes());
        h.update(&[u8::from(fenced)]);
    }
    h.finalize().max(1)
}

/// Outcome codes, Kafka's where Kafka has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// 6: this node does not lead the partition. Definite for a produce
    /// refused before its append, indeterminate for one appended by a leader
    /// that then lost its leadership.
    NotLeaderOrFollower,
    /// 74: the request's leader epoch is older than the replica's.
    FencedLeaderEpoch,
    /// 75: the request's leader epoch is newer than the replica knows.
    UnknownLeaderEpoch,
    /// 19: acks=all refused before the append: |ISR| < min.insync.replicas.
    NotEnoughReplicas,
    /// 20: appended, then the ISR fell below min.insync.replicas before it
    /// committed. Indeterminate: it may still commit.
    NotEnoughReplicasAfterAppend,
    /// 7: not committed in time. Indeterminate.
    RequestTimedOut,
    /// 1: the offset is outside the log.
    OffsetOutOfRange,
    /// 78: a new leader's high watermark has not reached its epoch start
    /// (KIP-207); ask again.
    OffsetNotAvailable,
    /// 45: an idempotent producer's sequence is not the next expected.
    OutOfOrderSequence,
    /// 108: an ISR change based on an old partition epoch.
    InvalidUpdateVersion,
    /// 107: an ISR addition of a fenced broker or of a stale broker epoch
    /// (KIP-903).
    IneligibleReplica,
    /// 77: a request from a broker epoch the controller no longer knows.
    StaleBrokerEpoch,
    /// 56: the replica's storage failed.
    KafkaStorageError,
    /// 36: a topic of that name exists.
    TopicAlreadyExists,
    /// 38: more replicas asked for than there are live brokers.
    InvalidReplicationFactor,
    /// 37: a partition count of zero or too many.
    InvalidPartitions,
    /// 41: this node is not the active controller.
    NotController,
    /// 3: no such topic.
    UnknownTopicOrPartition,
}

impl ErrorCode {
    /// Every code, for decoding.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::RequestTimedOut,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::OffsetNotAvailable,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::InvalidUpdateVersion,
        ErrorCode::IneligibleReplica,
        ErrorCode::StaleBrokerEpoch,
        ErrorCode::KafkaStorageError,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidPartitions,
        ErrorCode::NotController,
        ErrorCode::UnknownTopicOrPartition,
    ];

    /// The code for Kafka's number, if it is one of ours.
    pub fn from_kafka_code(c: i16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|e| e.kafka_code() == c)
    }

    /// Kafka's numeric code.
    pub fn kafka_code(self) -> i16 {
        match self {
            ErrorCode::NotLeaderOrFollower => 6,
            ErrorCode::FencedLeaderEpoch => 74,
            ErrorCode::UnknownLeaderEpoch => 75,
            ErrorCode::NotEnoughReplicas => 19,
            ErrorCode::NotEnoughReplicasAfterAppend => 20,
            ErrorCode::RequestTimedOut => 7,
            ErrorCode::OffsetOutOfRange => 1,
            ErrorCode::OffsetNotAvailable => 78,
            ErrorCode::OutOfOrderSequence => 45,
            ErrorCode::InvalidUpdateVersion => 108,
            ErrorCode::IneligibleReplica => 107,
            ErrorCode::StaleBrokerEpoch => 77,
            ErrorCode::KafkaStorageError => 56,
            ErrorCode::TopicAlreadyExists => 36,
            ErrorCode::InvalidReplicationFactor => 38,
            ErrorCode::InvalidPartitions => 37,
            ErrorCode::NotController => 41,
            ErrorCode::UnknownTopicOrPartition => 3,
        }
    }
}

/// How many replicas must have a produce before it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// No answer at all.
    None,
    /// The leader appended it (to its page cache).
    Leader,
    /// Committed: the high watermark passed it, so every ISR member has
    /// fsynced it.
    All,
}

/// A produce's outcome, with what the client may conclude from an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceResult {
    /// Appended at these offsets (and committed, for acks=all).
    Ok {
        /// First offset.
        first: u64,
        /// Last offset.
        last: u64,
    },
    /// Not appended: retrying cannot duplicate it.
    Failed(ErrorCode),
    /// Maybe appended and maybe committed later (timeouts,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND, leadership lost after the append):
    /// only an idempotent retry is safe.
    Indeterminate(ErrorCode),
}

/// A fetch from a follower (`replica` set) or a consumer.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// Correlation id, echoed.
    pub corr: u64,
    /// Partition.
    pub partition: u32,
    /// The fetching replica and its broker epoch; `None` for a consumer.
    pub replica: Option<(NodeId, u64)>,
    /// The fetcher's current leader epoch (`-1`: unchecked, consumers).
    pub leader_epoch: i32,
    /// Where to read from (a follower: its log end).
    pub fetch_offset: u64,
    /// Epoch of the fetcher's last batch (`-1`: empty log), for the
    /// divergence check (KIP-320).
    pub last_fetched_epoch: i32,
    /// The follower's durable log end: what it has fsynced (Strata's
    /// addition; Kafka counts the fetch offset).
    pub durable_offset: u64,
    /// Most bytes to return (at least one whole batch).
    pub max_bytes: usize,
}

/// The answer to a fetch.
#[derive(Clone, Debug)]
pub struct FetchResponse {
    /// Correlation id of the request.
    pub corr: u64,
    /// Partition.
    pub partition: u32,
    /// The leader epoch of the answering leader.
    pub leader_epoch: i32,
    /// An error instead of data.
    pub error: Option<ErrorCode>,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// Where the fetcher's log diverged: (epoch, end offset) to truncate by.
    pub diverging: Option<(i32, u64)>,
    /// The leader's log start offset: a follower deletes what lies before
    /// it (DeleteRecords and retention replicate this way, as in Kafka),
    /// and one whose log ends before it starts over there.
    pub log_start_offset: u64,
    /// Batches from the fetch offset, verbatim.
    pub batches: Vec<Batch>,
}

/// A produce request.
#[derive(Clone, Debug)]
pub struct ProduceRequest {
    /// Correlation id.
    pub corr: u64,
    /// Partition.
    pub partition: u32,
    /// Acks wanted.
    pub acks: Acks,
    /// How long the leader waits for the commit (acks=all).
    pub timeout_ms: u64,
    /// The batch (its producer id, epoch and sequence in its header).
    pub batch: Batch,
}

/// A leader's request to change the ISR (Kafka's AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartition {
    /// Partition.
    pub partition: u32,
    /// The requesting leader.
    pub leader: NodeId,
    /// Its leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch the change is based on.
    pub partition_epoch: i32,
    /// The wanted ISR with each member's broker epoch, as the leader saw it
    /// in their fetches (KIP-903).
    pub new_isr: Vec<(NodeId, u64)>,
}

/// Every message of the protocol.
#[derive(Clone, Debug)]
pub enum Msg {
    /// Replica or consumer fetch.
    Fetch(FetchRequest),
    /// Its answer.
    FetchResponse(FetchResponse),
    /// Client produce.
    Produce(ProduceRequest),
    /// Its answer (never sent for acks=0).
    ProduceResponse {
        /// Correlation id.
        corr: u64,
        /// Partition.
        partition: u32,
        /// Outcome.
        result: ProduceResult,
    },
    /// ListOffsets(latest): the high watermark.
    ListOffsets {
        /// Correlation id.
        corr: u64,
        /// Partition.
        partition: u32,
        /// The caller's current leader epoch (`-1`: unchecked); a leader of
        /// another epoch refuses (KIP-320), so a deposed leader cannot answer
        /// with its stale high watermark.
        leader_epoch: i32,
    },
    /// Its answer.
    ListOffsetsResponse {
        /// Correlation id.
        corr: u64,
        /// Partition.
        partition: u32,
        /// The latest offset, or why not.
        result: Result<u64, ErrorCode>,
    },
    /// Who leads a partition, as this node knows it.
    Metadata {
        /// Correlation id.
        corr: u64,
        /// Partition.
        partition: u32,
    },
    /// Its answer.
    MetadataResponse {
        /// Correlation id.
        corr: u64,
        /// The state, if this node hosts the partition.
        state: Option<PartitionState>,
    },
    /// A starting broker registers; `incarnation` is new at every start.
    Register {
        /// The broker.
        node: NodeId,
        /// Random per process start.
        incarnation: u64,
        /// Where clients and other brokers reach it (`host:port`; empty
        /// in the simulator, whose network needs none).
        endpoint: String,
    },
    /// The broker epoch assigned to that start.
    RegisterResponse {
        /// Echoed.
        incarnation: u64,
        /// The broker epoch.
        broker_epoch: u64,
        /// The controller epoch.
        controller_epoch: u32,
    },
    /// A broker's heartbeat, with the partition epochs it knows.
    Heartbeat {
        /// The broker.
        node: NodeId,
        /// Its broker epoch.
        broker_epoch: u64,
        /// (partition, partition epoch) it holds.
        known: Vec<(u32, i32)>,
        /// [`brokers_digest`] of the broker list it holds (0: none yet).
        brokers_seen: u32,
    },
    /// The controller's answer: fenced or not, and the newer states.
    HeartbeatResponse {
        /// The sending controller's epoch: brokers drop answers from a
        /// controller epoch older than one they have heard.
        controller_epoch: u32,
        /// The broker epoch heard.
        broker_epoch: u64,
        /// The epoch is unknown (the broker must register again).
        stale: bool,
        /// The broker is fenced (not electable) until heartbeats resume.
        fenced: bool,
        /// States newer than the broker's.
        updates: Vec<PartitionState>,
        /// Every registered broker, when the list differs from the one the
        /// heartbeat said it holds.
        brokers: Option<Vec<BrokerInfo>>,
    },
    /// A leader asks for an ISR change.
    AlterPartition(AlterPartition),
    /// The controller's answer: the new state or why not.
    AlterPartitionResponse {
        /// The sending controller's epoch.
        controller_epoch: u32,
        /// Partition.
        partition: u32,
        /// New state or error.
        result: Result<PartitionState, ErrorCode>,
    },
    /// The controller pushes a changed state to the replicas.
    PartitionUpdate(PartitionState),
    /// A broker asks the controller for a new topic (Kafka's CreateTopics,
    /// forwarded).
    CreateTopic {
        /// Correlation id, echoed.
        corr: u64,
        /// Topic name (already checked by the broker).
        name: String,
        /// Partition count.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u32,
    },
    /// A broker asks the controller to delete a topic (Kafka's
    /// DeleteTopics): each partition's state becomes a tombstone (no
    /// replicas, no leader, a new partition epoch) that brokers apply by
    /// dropping their replica and its log. Ids are never reused.
    DeleteTopic {
        /// Correlation id, echoed.
        corr: u64,
        /// Topic name.
        name: String,
    },
    /// Its answer: how many partitions were deleted, or why not
    /// (UNKNOWN_TOPIC_OR_PARTITION).
    DeleteTopicResponse {
        /// Echoed.
        corr: u64,
        /// Partitions deleted, or an error.
        result: std::result::Result<u32, ErrorCode>,
    },
    /// Its answer: the new partitions' states, or why not.
    CreateTopicResponse {
        /// Echoed.
        corr: u64,
        /// The partitions, or an error.
        result: Result<Vec<PartitionState>, ErrorCode>,
    },
    /// A broker about to stop asks the controller to move its leaderships
    /// away and stop electing it (Kafka's controlled shutdown).
    ControlledShutdown {
        /// The broker.
        node: NodeId,
        /// Its broker epoch.
        broker_epoch: u64,
    },
    /// The answer: how many partitions it still leads (0: done).
    ControlledShutdownResponse {
        /// The sending controller's epoch.
        controller_epoch: u32,
        /// Echoed.
        broker_epoch: u64,
        /// Partitions still led by the broker.
        remaining: u32,
    },
}

impl Msg {
    /// A one-line summary for traces (no payload bytes).
    pub fn summary(&self) -> String {
        match self {
            Msg::Fetch(f) => format!(
                "Fetch p{} r{:?} e{} off{} last_e{} dur{}",
                f.partition,
                f.replica.map(|r| r.0),
                f.leader_epoch,
                f.fetch_offset,
                f.last_fetched_epoch,
                f.durable_offset
            ),
            Msg::FetchResponse(r) => format!(
                "FetchResponse p{} e{} err{:?} hw{} div{:?} batches{}",
                r.partition,
                r.leader_epoch,
                r.error,
                r.high_watermark,
                r.diverging,
                r.batches.len()
            ),
            Msg::Produce(p) => format!(
                "Produce p{} acks{:?} corr{} seq{}",
                p.partition, p.acks, p.corr, p.batch.header.producer.base_sequence
            ),
            Msg::ProduceResponse {
                corr,
                partition,
                result,
            } => format!("ProduceResponse p{partition} corr{corr} {result:?}"),
            Msg::ListOffsets {
                corr,
                partition,
                leader_epoch,
            } => format!("ListOffsets p{partition} corr{corr} e{leader_epoch}"),
            Msg::ListOffsetsResponse {
                corr,
                partition,
                result,
            } => format!("ListOffsetsResponse p{partition} corr{corr} {result:?}"),
            Msg::Metadata { corr, partition } => format!("Metadata p{partition} corr{corr}"),
            Msg::MetadataResponse { corr, state } => format!(
                "MetadataResponse corr{corr} leader{:?} e{:?}",
                state.as_ref().and_then(|s| s.leader),
                state.as_ref().map(|s| s.leader_epoch)
            ),
            Msg::Register {
                node,
                incarnation,
                endpoint,
            } => format!("Register n{node} inc{incarnation} {endpoint}"),
            Msg::RegisterResponse {
                broker_epoch,
                controller_epoch,
                ..
            } => format!("RegisterResponse be{broker_epoch} ce{controller_epoch}"),
            Msg::Heartbeat {
                node, broker_epoch, ..
            } => format!("Heartbeat n{node} be{broker_epoch}"),
            Msg::HeartbeatResponse {
                stale,
                fenced,
                updates,
                brokers,
                ..
            } => format!(
                "HeartbeatResponse stale{stale} fenced{fenced} updates{} brokers{:?}",
                updates.len(),
                brokers.as_ref().map(Vec::len)
            ),
            Msg::AlterPartition(a) => format!(
                "AlterPartition p{} l{} le{} pe{} isr{:?}",
                a.partition, a.leader, a.leader_epoch, a.partition_epoch, a.new_isr
            ),
            Msg::AlterPartitionResponse {
                partition, result, ..
            } => match result {
                Ok(s) => format!(
                    "AlterPartitionResponse p{partition} ok {}",
                    state_summary(s)
                ),
                Err(e) => format!("AlterPartitionResponse p{partition} {e:?}"),
            },
            Msg::PartitionUpdate(s) => format!("PartitionUpdate {}", state_summary(s)),
            Msg::CreateTopic {
                corr,
                name,
                partitions,
                replication_factor,
            } => format!("CreateTopic {name} corr{corr} p{partitions} rf{replication_factor}"),
            Msg::ControlledShutdown { node, broker_epoch } => {
                format!("ControlledShutdown n{node} be{broker_epoch}")
            }
            Msg::ControlledShutdownResponse {
                broker_epoch,
                remaining,
                ..
            } => format!("ControlledShutdownResponse be{broker_epoch} remaining{remaining}"),
            Msg::DeleteTopic { corr, name } => format!("DeleteTopic {name} corr{corr}"),
            Msg::DeleteTopicResponse { corr, result } => {
                format!("DeleteTopicResponse corr{corr} {result:?}")
            }
            Msg::CreateTopicResponse { corr, result } => match result {
                Ok(ps) => format!("CreateTopicResponse corr{corr} ok {}", ps.len()),
                Err(e) => format!("CreateTopicResponse corr{corr} {e:?}"),
            },
        }
    }
}

/// A one-line summary of a partition state.
pub fn state_summary(s: &PartitionState) -> String {
    format!(
        "p{} leader{:?} le{} pe{} isr{:?} elr{:?} ce{}",
        s.partition, s.leader, s.leader_epoch, s.partition_epoch, s.isr, s.elr, s.controller_epoch
    )
}
