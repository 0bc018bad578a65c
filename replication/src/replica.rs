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

use std::collections::BTreeMap;

use strata_io::rng::Rng;
use strata_log::{Error as LogError, Partition};

use crate::backoff::Backoff;
use crate::msg::{
    Acks, Addr, AlterPartition, Envelope, ErrorCode, FetchRequest, FetchResponse, Msg, NodeId,
    PartitionState, ProduceRequest, ProduceResult,
};
use crate::{Error, Result};

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
    /// First retry ceiling of AlterPartition (exponential, full jitter).
    pub retry_base_ms: u64,
    /// Largest retry ceiling.
    pub retry_cap_ms: u64,
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
            retry_base_ms: 50,
            retry_cap_ms: 2000,
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

    /// A fetch from a follower or a consumer.
    pub fn on_fetch(
        &mut self,
        now: u64,
        from: Addr,
        req: FetchRequest,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        let partition = self.partition;
        let reply = |out: &mut Vec<Envelope>, r: FetchResponse| {
            Self::send(out, from, Msg::FetchResponse(r));
        };
        let empty = |epoch: i32, error: Option<ErrorCode>, hw: u64| FetchResponse {
            corr: req.corr,
            partition,
            leader_epoch: epoch,
            error,
            high_watermark: hw,
            diverging: None,
            batches: Vec::new(),
        };
        let Role::Leader(lead) = &self.role else {
            reply(out, empty(-1, Some(ErrorCode::NotLeaderOrFollower), 0));
            return Ok(());
        };
        let epoch = lead.epoch;
        let hw = log.high_watermark();
        if req.leader_epoch >= 0 && req.leader_epoch != epoch {
            let code = if req.leader_epoch < epoch {
                ErrorCode::FencedLeaderEpoch
            } else {
                ErrorCode::UnknownLeaderEpoch
            };
            reply(out, empty(epoch, Some(code), hw));
            return Ok(());
        }
        let Some((follower, broker_epoch)) = req.replica else {
            // A consumer: committed data only.
            let leo = log.log_end_offset();
            if req.fetch_offset > leo || req.fetch_offset < log.log_start_offset() {
                reply(out, empty(epoch, Some(ErrorCode::OffsetOutOfRange), hw));
                return Ok(());
            }
            let batches = match log.read(req.fetch_offset, req.max_bytes, Some(hw)) {
                Ok(b) => b,
                Err(LogError::OffsetOutOfRange { .. }) => {
                    reply(out, empty(epoch, Some(ErrorCode::OffsetOutOfRange), hw));
                    return Ok(());
                }
                Err(e) => return Err(self.err()(e)),
            };
            let mut r = empty(epoch, None, hw);
            r.batches = batches;
            reply(out, r);
            return Ok(());
        };
        if !lead.followers.contains_key(&follower) {
            reply(out, empty(epoch, Some(ErrorCode::NotLeaderOrFollower), hw));
            return Ok(());
        }
        // KIP-320 inside Fetch: does the follower's log agree with ours up
        // to its fetch offset? If not, tell it where to truncate.
        if req.last_fetched_epoch >= 0 {
            let div = match log.end_offset_for_epoch(req.last_fetched_epoch) {
                Some((e, end)) if e != req.last_fetched_epoch || end < req.fetch_offset => {
                    Some((e, end))
                }
                Some(_) => None,
                None => Some((-1, log.log_start_offset())),
            };
            if let Some(d) = div {
                let mut r = empty(epoch, None, hw);
                r.diverging = Some(d);
                reply(out, r);
                return Ok(());
            }
        }
        let leo = log.log_end_offset();
        if req.fetch_offset > leo {
            reply(out, empty(epoch, Some(ErrorCode::OffsetOutOfRange), hw));
            return Ok(());
        }
        if let Role::Leader(lead) = &mut self.role {
            if let Some(p) = lead.followers.get_mut(&follower) {
                // Kafka's lastCaughtUpTime: caught up now if it asked for
                // our end; or caught up at its previous fetch if it asks
                // for what was our end then.
                if req.fetch_offset >= leo {
                    p.last_caught_up = now;
                } else if req.fetch_offset >= p.leader_leo_at_last_fetch {
                    p.last_caught_up = p.last_caught_up.max(p.last_fetch);
                }
                p.last_fetch = now;
                p.leader_leo_at_last_fetch = leo;
                p.leo = Some(req.fetch_offset);
                p.durable = req.durable_offset.min(req.fetch_offset);
                p.broker_epoch = broker_epoch;
            }
        }
        self.update_hw(log, out)?;
        self.maybe_expand_isr(now, follower, log, out);
        let batches = match log.read(
            req.fetch_offset,
            self.cfg.fetch_max_bytes.min(req.max_bytes),
            None,
        ) {
            Ok(b) => b,
            Err(LogError::OffsetOutOfRange { .. }) => Vec::new(),
            Err(e) => return Err(self.err()(e)),
        };
        let mut r = empty(epoch, None, log.high_watermark());
        r.batches = batches;
        reply(out, r);
        Ok(())
    }

    /// The leader's answer to this follower's fetch.
    pub fn on_fetch_response(
        &mut self,
        now: u64,
        resp: FetchResponse,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        let Role::Follower(f) = &mut self.role else {
            return Ok(());
        };
        if f.in_flight.map(|(c, _)| c) != Some(resp.corr) {
            // A duplicate, or the answer to a fetch given up on.
            return Ok(());
        }
        f.in_flight = None;
        if resp.error.is_some() {
            let wait = f.backoff.next_delay(now ^ resp.corr.wrapping_mul(0x9E37));
            f.next_fetch = now + self.cfg.fetch_backoff_ms.max(wait);
            return Ok(());
        }
        if resp.leader_epoch != f.epoch {
            f.next_fetch = now + self.cfg.fetch_backoff_ms;
            return Ok(());
        }
        f.backoff.reset();
        if let Some((e, end)) = resp.diverging {
            // KIP-279: truncate to the end of the largest epoch we share,
            // bounded by the leader's end of it; if we did not know the
            // leader's epoch, the next fetch asks again with ours.
            let target = match log.end_offset_for_epoch(e) {
                Some((_, ours)) => ours.min(end),
                None => end.min(log.log_start_offset()),
            };
            f.next_fetch = now;
            log.truncate_to(target).map_err(self.err())?;
            self.maybe_fetch(now, log, out);
            return Ok(());
        }
        let mut appended = false;
        for b in &resp.batches {
            if b.base_offset() < log.log_end_offset() {
                continue;
            }
            match log.append_as_follower(b, false) {
                Ok(()) => appended = true,
                // Not ours to take (an epoch older than our cache, a gap):
                // the next fetch sorts it out.
                Err(LogError::InvalidBatch(_)) | Err(LogError::StaleEpoch { .. }) => break,
                Err(e) => return Err(self.err()(e)),
            }
        }
        if appended && !self.cfg.ack_unsynced {
            // One fsync per fetch: the group commit of the follower.
            log.flush().map_err(self.err())?;
        }
        let hw = resp.high_watermark.min(log.log_end_offset());
        if hw > log.high_watermark() {
            log.set_high_watermark(hw).map_err(self.err())?;
        }
        if let Role::Follower(f) = &mut self.role {
            f.next_fetch = if resp.batches.is_empty() {
                now + self.cfg.fetch_backoff_ms
            } else {
                now
            };
        }
        self.maybe_fetch(now, log, out);
        Ok(())
    }

    fn maybe_fetch(&mut self, now: u64, log: &Partition, out: &mut Vec<Envelope>) {
        let legacy = self.cfg.legacy_truncate_to_hw;
        let Role::Follower(f) = &mut self.role else {
            return;
        };
        if f.in_flight.is_some() || now < f.next_fetch {
            return;
        }
        let corr = self.next_corr;
        self.next_corr += 1;
        f.in_flight = Some((corr, now + self.cfg.fetch_timeout_ms));
        let last_epoch = if legacy {
            -1
        } else {
            log.epochs().last().map_or(-1, |&(e, _)| e)
        };
        let leo = log.log_end_offset();
        Self::send(
            out,
            Addr::Node(f.leader),
            Msg::Fetch(FetchRequest {
                corr,
                partition: self.partition,
                replica: Some((self.node, self.broker_epoch)),
                leader_epoch: f.epoch,
                fetch_offset: leo,
                last_fetched_epoch: last_epoch,
                durable_offset: log.durable_end_offset().min(leo),
                max_bytes: self.cfg.fetch_max_bytes,
            }),
        );
    }

    /// A produce from a client.
    pub fn on_produce(
        &mut self,
        now: u64,
        from: Addr,
        req: ProduceRequest,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        let partition = self.partition;
        let respond = |out: &mut Vec<Envelope>, result: ProduceResult| {
            if req.acks != Acks::None {
                Self::send(
                    out,
                    from,
                    Msg::ProduceResponse {
                        corr: req.corr,
                        partition,
                        result,
                    },
                );
            }
        };
        let Role::Leader(lead) = &self.role else {
            respond(out, ProduceResult::Failed(ErrorCode::NotLeaderOrFollower));
            return Ok(());
        };
        let epoch = lead.epoch;
        if req.acks == Acks::All && lead.isr.len() < self.cfg.min_insync_replicas {
            respond(out, ProduceResult::Failed(ErrorCode::NotEnoughReplicas));
            return Ok(());
        }
        let info = match log.append(req.batch.clone(), epoch, false) {
            Ok(i) => i,
            Err(LogError::OutOfOrderSequence { .. }) | Err(LogError::ProducerFenced { .. }) => {
                respond(out, ProduceResult::Failed(ErrorCode::OutOfOrderSequence));
                return Ok(());
            }
            Err(LogError::StaleEpoch { .. }) => {
                respond(out, ProduceResult::Failed(ErrorCode::NotLeaderOrFollower));
                return Ok(());
            }
            Err(LogError::InvalidBatch(_)) => {
                respond(out, ProduceResult::Failed(ErrorCode::KafkaStorageError));
                return Ok(());
            }
            Err(e) => return Err(self.err()(e)),
        };
        let ok = ProduceResult::Ok {
            first: info.first_offset,
            last: info.last_offset,
        };
        match req.acks {
            Acks::None => {}
            Acks::Leader => respond(out, ok),
            Acks::All => {
                if let Role::Leader(lead) = &mut self.role {
                    lead.waiting.push(Waiting {
                        client: from,
                        corr: req.corr,
                        first: info.first_offset,
                        last: info.last_offset,
                        deadline: now + req.timeout_ms,
                    });
                }
            }
        }
        if !self.cfg.ack_unsynced {
            // The leader's own log counts once fsynced.
            log.flush().map_err(self.err())?;
        }
        self.update_hw(log, out)
    }

    /// ListOffsets(latest): the high watermark, once it reached this
    /// leadership's start (KIP-207), so "latest" never goes back.
    pub fn on_list_offsets(
        &self,
        from: Addr,
        corr: u64,
        leader_epoch: i32,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) {
        let result = match &self.role {
            Role::Leader(l) if leader_epoch >= 0 && leader_epoch < l.epoch => {
                Err(ErrorCode::FencedLeaderEpoch)
            }
            Role::Leader(l) if leader_epoch > l.epoch => Err(ErrorCode::UnknownLeaderEpoch),
            Role::Leader(l) => {
                let hw = log.high_watermark();
                if hw < l.start_offset {
                    Err(ErrorCode::OffsetNotAvailable)
                } else {
                    Ok(hw)
                }
            }
            _ => Err(ErrorCode::NotLeaderOrFollower),
        };
        Self::send(
            out,
            from,
            Msg::ListOffsetsResponse {
                corr,
                partition: self.partition,
                result,
            },
        );
    }

    /// The controller's answer to our AlterPartition.
    pub fn on_alter_response(
        &mut self,
        now: u64,
        result: std::result::Result<PartitionState, ErrorCode>,
        rng: &mut Rng,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) -> Result<()> {
        match result {
            Ok(st) => self.on_partition_state(now, st, log, out),
            Err(code) => {
                if let Role::Leader(l) = &mut self.role {
                    let delay = Backoff::new(self.cfg.retry_base_ms, self.cfg.retry_cap_ms)
                        .next_delay(rng.next_u64())
                        .max(self.cfg.retry_base_ms);
                    l.next_alter_at = now + delay;
                    if code == ErrorCode::IneligibleReplica {
                        // This copy was refused, but the network may hold
                        // another (a retry or a duplicate) that the
                        // controller applies once the member is eligible,
                        // while the partition epoch has not moved (seed
                        // 34847): stop proposing, keep counting it.
                        if let Some(p) = l.pending.take() {
                            l.abandoned.push((p.req.partition_epoch, p.isr));
                        }
                    } else if let Some(p) = &mut l.pending {
                        // Stale epoch or leadership: a retry of a change
                        // the controller already applied gets this too, so
                        // the proposal may be the ISR now. Keep counting it
                        // until the newer state arrives (heartbeats bring
                        // it); dropping it let the high watermark pass a
                        // member the controller had just added (seed 6871).
                        p.awaiting_state = true;
                    }
                }
                Ok(())
            }
        }
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
        } else if log.durable_end_offset() < log.log_end_offset() {
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

    fn maybe_shrink_isr(&mut self, now: u64, out: &mut Vec<Envelope>) {
        let lag = self.cfg.replica_lag_time_max_ms;
        let me = self.node;
        let Role::Leader(l) = &self.role else {
            return;
        };
        if l.pending.is_some() || now < l.next_alter_at {
            return;
        }
        let lagging: Vec<NodeId> = l
            .isr
            .iter()
            .copied()
            .filter(|&r| r != me)
            .filter(|r| {
                l.followers
                    .get(r)
                    .is_none_or(|p| now.saturating_sub(p.last_caught_up) > lag)
            })
            .collect();
        if lagging.is_empty() {
            return;
        }
        let isr: Vec<NodeId> = l
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        self.propose(now, isr, out);
    }

    /// Adds a follower that caught up: its log end reached the high
    /// watermark and this epoch's start, it fetched in this epoch, and (our
    /// durability rule) it has fsynced up to there.
    fn maybe_expand_isr(
        &mut self,
        now: u64,
        follower: NodeId,
        log: &Partition,
        out: &mut Vec<Envelope>,
    ) {
        let unsynced = self.cfg.ack_unsynced;
        let Role::Leader(l) = &self.role else {
            return;
        };
        if l.pending.is_some() || now < l.next_alter_at || l.isr.contains(&follower) {
            return;
        }
        let Some(p) = l.followers.get(&follower) else {
            return;
        };
        let Some(leo) = p.leo else {
            return;
        };
        let need = log.high_watermark().max(l.start_offset);
        let have = if unsynced { leo } else { p.durable };
        if leo < need || have < need {
            return;
        }
        let mut isr = l.isr.clone();
        isr.push(follower);
        self.propose(now, isr, out);
    }

    fn propose(&mut self, now: u64, isr: Vec<NodeId>, out: &mut Vec<Envelope>) {
        let me = self.node;
        let broker_epoch = self.broker_epoch;
        let partition = self.partition;
        let (base, cap) = (self.cfg.retry_base_ms, self.cfg.retry_cap_ms);
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let new_isr = isr
            .iter()
            .map(|&r| {
                let e = if r == me {
                    broker_epoch
                } else {
                    l.followers.get(&r).map_or(0, |p| p.broker_epoch)
                };
                (r, e)
            })
            .collect();
        let req = AlterPartition {
            partition,
            leader: me,
            leader_epoch: l.epoch,
            partition_epoch: l.partition_epoch,
            new_isr,
        };
        let backoff = Backoff::new(base, cap);
        l.pending = Some(PendingAlter {
            req: req.clone(),
            isr,
            retry_at: now + base,
            backoff,
            awaiting_state: false,
        });
        Self::send(out, Addr::Controller, Msg::AlterPartition(req));
    }

    /// The high watermark: the least of what every member of the maximal
    /// ISR has fsynced (the leader included), never back, and still while
    /// the ISR is below min.insync.replicas. Then the produces it commits
    /// are answered.
    fn update_hw(&mut self, log: &Partition, out: &mut Vec<Envelope>) -> Result<()> {
        let me = self.node;
        let unsynced = self.cfg.ack_unsynced;
        let min_isr = self.cfg.min_insync_replicas;
        let partition = self.partition;
        let Role::Leader(l) = &mut self.role else {
            return Ok(());
        };
        let hw = log.high_watermark();
        let mut new_hw = hw;
        if l.isr.len() >= min_isr {
            let mut candidate = if unsynced {
                log.log_end_offset()
            } else {
                log.durable_end_offset()
            };
            for r in l.maximal_isr() {
                if r == me {
                    continue;
                }
                let v = match l.followers.get(&r) {
                    Some(Progress {
                        leo: Some(leo),
                        durable,
                        ..
                    }) => {
                        if unsynced {
                            *leo
                        } else {
                            *durable
                        }
                    }
                    // Not heard from in this epoch: it holds nothing yet.
                    _ => 0,
                };
                candidate = candidate.min(v);
            }
            if candidate > hw {
                new_hw = log
                    .set_high_watermark(candidate)
                    .map_err(log_err(partition))?;
            }
        }
        let shrunk = l.isr.len() < min_isr;
        let mut keep = Vec::new();
        for w in l.waiting.drain(..) {
            let result = if w.last < new_hw {
                Some(ProduceResult::Ok {
                    first: w.first,
                    last: w.last,
                })
            } else if shrunk {
                Some(ProduceResult::Indeterminate(
                    ErrorCode::NotEnoughReplicasAfterAppend,
                ))
            } else {
                None
            };
            match result {
                Some(result) => out.push(Envelope {
                    to: w.client,
                    msg: Msg::ProduceResponse {
                        corr: w.corr,
                        partition,
                        result,
                    },
                }),
                None => keep.push(w),
            }
        }
        l.waiting = keep;
        Ok(())
    }
}
