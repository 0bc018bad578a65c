//! One replica of one partition: the leader's and the follower's rules.
//!
//! A state machine: inputs are messages, partition states from the
//! controller and ticks, each with the time `now` (milliseconds from an
//! injected clock); outputs are messages. Its storage is the local
//! [`Partition`], passed into every call: the page-cache operations
//! (append, truncate, read) run in place, and durability is explicit: the
//! replica fsyncs once per fetch response (a follower) or once per input
//! that appended (a leader), which is the group commit of everything that
//! input brought. Any storage error is returned and stops the node, as a
//! failed log directory stops a broker: a failed fsync is never retried.
//!
//! By role: `leader` (fetches, produces, ListOffsets, ISR changes, the high
//! watermark) and `follower` (fetching and truncating); this file holds the
//! state, the changes of partition state and the timers.

use std::collections::BTreeMap;

use strata_io::rng::Rng;
use strata_log::{Error as LogError, Partition};

use crate::backoff::Backoff;
use crate::msg::{
    Acks, Addr, AlterPartition, Envelope, ErrorCode, FetchRequest, FetchResponse, Msg, NodeId,
    PartitionState, ProduceRequest, ProduceResult,
};
use crate::{Error, Result};

mod follower;
mod leader;

/// How a replica behaves.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaConfig {
    /// `min.insync.replicas`: acks=all is refused and the high watermark
    /// stops while the ISR is smaller.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: a follower that has not caught up to the
    /// leader's log end for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.ack.unsynced` (unsafe, Kafka's behaviour): count what
    /// replicas appended instead of what they fsynced, and fsync only
    /// every `unsynced_flush_interval_ms`. For comparison only: a power
    /// cut of min.insync.replicas nodes loses acknowledged writes.
    pub ack_unsynced: bool,
    /// With `ack_unsynced`: how often the log is fsynced.
    pub unsynced_flush_interval_ms: u64,
    /// The pre-KIP-101 rule, for the checker's proof only: a new follower
    /// truncates to its high watermark and fetches without the epoch check.
    pub legacy_truncate_to_hw: bool,
    /// Most bytes a fetch returns.
    pub fetch_max_bytes: usize,
    /// Wait after an empty or failed fetch (Kafka's long poll stands in for
    /// it on the network).
    pub fetch_backoff_ms: u64,
    /// A fetch not answered in this time is sent again.
    pub fetch_timeout_ms: u64,
    /// `replica.fetch.wait.max.ms`: when non-zero, the leader's network
    /// layer holds a fetch that finds nothing new for up to this long (a
    /// long poll), so a follower fetches again at once after an empty
    /// answer instead of waiting `fetch_backoff_ms`.
    pub fetch_wait_max_ms: u64,
    /// First retry ceiling of AlterPartition (exponential, full jitter).
    pub retry_base_ms: u64,
    /// Largest retry ceiling.
    pub retry_cap_ms: u64,
    /// Group commit off the stepping thread (the server's setting): a
    /// leader never fsyncs produced data itself. Its caller fsyncs the
    /// partitions produces touched (one fsync for every produce that
    /// landed before it, on another thread) and then calls
    /// [`Replica::on_flushed`], which moves the high watermark over what
    /// is now durable. acks=0 and acks=1 are answered at the append, as
    /// Kafka does; only fsynced data counts toward the high watermark
    /// either way. Off: each produce is fsynced as it lands, and a tick
    /// fsyncs what recovery left unsynced. A follower fsyncs each fetched
    /// answer itself in both modes.
    pub group_sync: bool,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 30_000,
            ack_unsynced: false,
            unsynced_flush_interval_ms: 1000,
            legacy_truncate_to_hw: false,
            fetch_max_bytes: 1 << 20,
            fetch_backoff_ms: 50,
            fetch_timeout_ms: 1000,
            fetch_wait_max_ms: 0,
            retry_base_ms: 50,
            retry_cap_ms: 2000,
            group_sync: false,
        }
    }
}

/// What the leader knows of one follower, from its fetches in this epoch.
#[derive(Clone, Debug)]
struct Progress {
    broker_epoch: u64,
    /// Its log end (the fetch offset), once it fetched in this epoch.
    leo: Option<u64>,
    /// What it has fsynced.
    durable: u64,
    last_caught_up: u64,
    last_fetch: u64,
    leader_leo_at_last_fetch: u64,
}

#[derive(Clone, Debug)]
struct PendingAlter {
    req: AlterPartition,
    isr: Vec<NodeId>,
    retry_at: u64,
    backoff: Backoff,
    /// An answer said our partition epoch is stale: an earlier attempt of
    /// this very change may have been applied. Stop retrying and keep
    /// counting the proposal in the maximal ISR until a newer partition
    /// state arrives (KIP-497's rule).
    awaiting_state: bool,
}

#[derive(Clone, Debug)]
struct Waiting {
    client: Addr,
    corr: u64,
    first: u64,
    last: u64,
    deadline: u64,
}

#[derive(Clone, Debug)]
struct Leader {
    epoch: i32,
    /// The log end when this leadership began (KIP-207's epoch start).
    start_offset: u64,
    /// The ISR the controller committed.
    isr: Vec<NodeId>,
    partition_epoch: i32,
    pending: Option<PendingAlter>,
    /// Proposals given up on (refused) that a delayed or duplicated copy
    /// could still get applied: the controller takes any request based on
    /// its current partition epoch, so they count in the maximal ISR until
    /// a newer partition state shows that epoch has passed.
    abandoned: Vec<(i32, Vec<NodeId>)>,
    /// No ISR change proposed before this (after a refusal).
    next_alter_at: u64,
    followers: BTreeMap<NodeId, Progress>,
    waiting: Vec<Waiting>,
}

impl Leader {
    /// The ISR plus members whose addition is in flight, and members whose
    /// removal is in flight: the set the high watermark must cover.
    fn maximal_isr(&self) -> Vec<NodeId> {
        let mut m = self.isr.clone();
        let pending = self.pending.iter().map(|p| &p.isr);
        let abandoned = self
            .abandoned
            .iter()
            .filter(|(base, _)| *base >= self.partition_epoch)
            .map(|(_, isr)| isr);
        for isr in pending.chain(abandoned) {
            for n in isr {
                if !m.contains(n) {
                    m.push(*n);
                }
            }
        }
        m
    }
}

#[derive(Clone, Debug)]
struct Follower {
    leader: NodeId,
    epoch: i32,
    in_flight: Option<(u64, u64)>,
    next_fetch: u64,
    backoff: Backoff,
}

#[derive(Clone, Debug)]
enum Role {
    Idle,
    Leader(Box<Leader>),
    Follower(Follower),
}

/// One replica's state.
#[derive(Clone, Debug)]
pub struct Replica {
    node: NodeId,
    partition: u32,
    cfg: ReplicaConfig,
    broker_epoch: u64,
    state: Option<PartitionState>,
    role: Role,
    next_corr: u64,
    next_flush: u64,
}

fn log_err(partition: u32) -> impl Fn(LogError) -> Error {
    move |source| Error::Log { partition, source }
}

impl Replica {
    /// A replica of `partition` on `node` that knows no state yet.
    pub fn new(node: NodeId, partition: u32, broker_epoch: u64, cfg: ReplicaConfig) -> Replica {
        Replica {
            node,
            partition,
            cfg,
            broker_epoch,
            state: None,
            role: Role::Idle,
            next_corr: 1,
            next_flush: 0,
        }
    }

    /// The partition state this replica acts on.
    pub fn state(&self) -> Option<&PartitionState> {
        self.state.as_ref()
    }

    /// The leader epoch, if this replica leads.
    pub fn leading(&self) -> Option<i32> {
        match &self.role {
            Role::Leader(l) => Some(l.epoch),
            _ => None,
        }
    }

    /// The ISR as the leader counts it for the high watermark (maximal).
    pub fn maximal_isr(&self) -> Option<Vec<NodeId>> {
        match &self.role {
            Role::Leader(l) => Some(l.maximal_isr()),
            _ => None,
        }
    }

    /// As the leader: each follower's fetched log end (none before its
    /// first fetch in this epoch) and fsynced end, from its fetches.
    pub fn follower_progress(&self) -> Vec<(NodeId, Option<u64>, u64)> {
        match &self.role {
            Role::Leader(l) => l
                .followers
                .iter()
                .map(|(&n, p)| (n, p.leo, p.durable))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The leader's epoch start offset.
    pub fn epoch_start_offset(&self) -> Option<u64> {
        match &self.role {
            Role::Leader(l) => Some(l.start_offset),
            _ => None,
        }
    }

    fn err(&self) -> impl Fn(LogError) -> Error {
        log_err(self.partition)
    }

    fn send(out: &mut Vec<Envelope>, to: Addr, msg: Msg) {
        out.push(Envelope { to, msg });
    }

    /// A new state from the controller (a push, a heartbeat answer or an
    /// AlterPartition answer). Older and equal partition epochs are ignored.
    pub fn on_partition_state(
        &mut self,
        now: u64,
        st: PartitionState,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        if self
            .state
            .as_ref()
            .is_some_and(|cur| cur.partition_epoch >= st.partition_epoch)
        {
            return Ok(());
        }
        self.state = Some(st.clone());
        let me = self.node;
        match st.leader {
            Some(l) if l == me => {
                if let Role::Leader(lead) = &mut self.role {
                    if lead.epoch == st.leader_epoch {
                        // Same leadership, new ISR (ours or the
                        // controller's, which may have fenced a member).
                        lead.isr = st.isr.clone();
                        lead.partition_epoch = st.partition_epoch;
                        lead.pending = None;
                        let pe = st.partition_epoch;
                        lead.abandoned.retain(|(base, _)| *base >= pe);
                        self.update_hw(log, out)?;
                        return Ok(());
                    }
                }
                self.become_leader(now, &st, log, out)
            }
            Some(l) if st.replicas.contains(&me) => {
                let same = matches!(&self.role, Role::Follower(f) if f.leader == l && f.epoch == st.leader_epoch);
                if same {
                    return Ok(());
                }
                self.resign(out);
                if self.cfg.legacy_truncate_to_hw {
                    // Pre-KIP-101: the local high watermark may be below
                    // what the others committed.
                    log.truncate_to(log.high_watermark()).map_err(self.err())?;
                }
                // Every epoch bump starts a fresh fetch state, even under
                // the same leader (KAFKA-7164): the first fetch of the new
                // epoch carries the divergence check.
                self.role = Role::Follower(Follower {
                    leader: l,
                    epoch: st.leader_epoch,
                    in_flight: None,
                    next_fetch: now,
                    backoff: Backoff::new(self.cfg.fetch_backoff_ms, self.cfg.retry_cap_ms),
                });
                self.maybe_fetch(now, log, out);
                Ok(())
            }
            _ => {
                self.resign(out);
                self.role = Role::Idle;
                Ok(())
            }
        }
    }

    fn become_leader(
        &mut self,
        now: u64,
        st: &PartitionState,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        self.resign(out);
        match log.assign_epoch(st.leader_epoch) {
            Ok(()) => {}
            // The log saw a newer epoch: this state is stale for it.
            Err(LogError::StaleEpoch { .. }) => {
                self.role = Role::Idle;
                return Ok(());
            }
            Err(e) => return Err(self.err()(e)),
        }
        let leo = log.log_end_offset();
        let followers = st
            .replicas
            .iter()
            .filter(|&&r| r != self.node)
            .map(|&r| {
                (
                    r,
                    Progress {
                        broker_epoch: 0,
                        leo: None,
                        durable: 0,
                        // Kafka starts every follower as caught up now, so a
                        // new leader does not shrink the ISR at once.
                        last_caught_up: now,
                        last_fetch: now,
                        leader_leo_at_last_fetch: leo,
                    },
                )
            })
            .collect();
        self.role = Role::Leader(Box::new(Leader {
            epoch: st.leader_epoch,
            start_offset: leo,
            isr: st.isr.clone(),
            partition_epoch: st.partition_epoch,
            pending: None,
            abandoned: Vec::new(),
            next_alter_at: now,
            followers,
            waiting: Vec::new(),
        }));
        self.update_hw(log, out)
    }

    /// Leaves leadership: every produce still waiting may yet commit under
    /// the next leader, so its answer is indeterminate.
    fn resign(&mut self, out: &mut Vec<Envelope>) {
        if let Role::Leader(l) = &mut self.role {
            for w in l.waiting.drain(..) {
                Self::send(
                    out,
                    w.client,
                    Msg::ProduceResponse {
                        corr: w.corr,
                        partition: self.partition,
                        result: ProduceResult::Indeterminate(ErrorCode::NotLeaderOrFollower),
                    },
                );
            }
        }
        self.role = Role::Idle;
    }

    /// With [`ReplicaConfig::group_sync`]: the caller fsynced `log`;
    /// the high watermark moves over what is durable now (answering the
    /// acks=all produces it covers).
    pub fn on_flushed(&mut self, log: &Partition, out: &mut Vec<Envelope>) -> Result<()> {
        self.update_hw(log, out)
    }

    /// Time passes: fetch timeouts and retries, ISR shrinking, produce
    /// timeouts, AlterPartition retries.
    pub fn tick(
        &mut self,
        now: u64,
        log: &Partition,
        rng: &mut Rng,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        if self.cfg.ack_unsynced {
            if now >= self.next_flush {
                log.flush().map_err(self.err())?;
                self.next_flush = now + self.cfg.unsynced_flush_interval_ms;
            }
        } else if !self.cfg.group_sync && log.durable_end_offset() < log.log_end_offset() {
            // What recovery found past the last recorded flush (it may sit
            // in the page cache of a crashed process only): nothing counts
            // toward the high watermark until it is fsynced.
            log.flush().map_err(self.err())?;
        }
        match &mut self.role {
            Role::Idle => Ok(()),
            Role::Follower(f) => {
                if let Some((_, deadline)) = f.in_flight {
                    if now >= deadline {
                        f.in_flight = None;
                        f.next_fetch = now;
                    }
                }
                self.maybe_fetch(now, log, out);
                Ok(())
            }
            Role::Leader(l) => {
                if let Some(p) = &mut l.pending {
                    if !p.awaiting_state && now >= p.retry_at {
                        p.retry_at = now + p.backoff.next_delay(rng.next_u64()).max(1);
                        Self::send(out, Addr::Controller, Msg::AlterPartition(p.req.clone()));
                    }
                }
                let partition = self.partition;
                let mut keep = Vec::new();
                for w in l.waiting.drain(..) {
                    if now >= w.deadline {
                        Self::send(
                            out,
                            w.client,
                            Msg::ProduceResponse {
                                corr: w.corr,
                                partition,
                                result: ProduceResult::Indeterminate(ErrorCode::RequestTimedOut),
                            },
                        );
                    } else {
                        keep.push(w);
                    }
                }
                l.waiting = keep;
                self.maybe_shrink_isr(now, out);
                self.update_hw(log, out)
            }
        }
    }
}
