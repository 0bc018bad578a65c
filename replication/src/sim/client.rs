//! Simulated clients: idempotent producers (acks=all, or acks=1 whose
//! losses are allowed and counted), consumers reading to the high
//! watermark, and ListOffsets(latest) callers. Each records what it did in
//! the [`History`]; retries use exponential backoff with full jitter.

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_io::rng::Rng;
use strata_log::{batch, Batch, ProducerInfo, Record};

use super::checker::{History, LatestOp, Outcome, SendOp};
use crate::backoff::Backoff;
use crate::msg::{
    Acks, Addr, ClientId, Envelope, ErrorCode, FetchRequest, Msg, NodeId, ProduceRequest,
    ProduceResult,
};

/// What a client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An idempotent producer with these acks.
    Producer(Acks),
    /// A consumer of every partition from offset 0.
    Consumer,
    /// Asks ListOffsets(latest) of every partition in turn.
    Latest,
}

/// Client timeouts (milliseconds).
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    /// `request.timeout.ms`.
    pub request_timeout_ms: u64,
    /// `delivery.timeout.ms`: a send gives up after this.
    pub delivery_timeout_ms: u64,
    /// The produce timeout asked of the leader (acks=all).
    pub produce_timeout_ms: u64,
    /// Pause after an empty poll or between ListOffsets calls.
    pub poll_interval_ms: u64,
    /// Producers are idempotent (`enable.idempotence`); without it a retry
    /// after an indeterminate error may append a second copy.
    pub idempotent: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout_ms: 1500,
            delivery_timeout_ms: 10_000,
            produce_timeout_ms: 1000,
            poll_interval_ms: 50,
            idempotent: true,
        }
    }
}

#[derive(Clone, Debug)]
struct Current {
    op: usize,
    partition: u32,
    batch: Batch,
    in_flight: Option<(u64, u64)>,
    retry_at: u64,
    maybe_written: bool,
    give_up_at: u64,
    backoff: Backoff,
}

impl Current {
    /// How a send ends that is given up: indeterminate if any attempt may
    /// have been appended, else definitely failed.
    fn unfinished_outcome(&self) -> Outcome {
        if self.maybe_written {
            Outcome::Indeterminate
        } else {
            Outcome::Failed
        }
    }
}

/// One client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its id.
    pub id: ClientId,
    /// What it does.
    pub kind: Kind,
    cfg: ClientConfig,
    replicas: Vec<Vec<NodeId>>,
    leaders: BTreeMap<u32, NodeId>,
    /// The largest leader epoch seen per partition: older metadata is
    /// ignored and requests carry it (KIP-320).
    epochs: BTreeMap<u32, i32>,
    meta: Option<(u64, u32, u64)>,
    next_corr: u64,
    next_action: u64,
    // Producer.
    session: i64,
    seqs: BTreeMap<u32, i32>,
    counter: u64,
    cur: Option<Current>,
    /// No new sends (the heal phase finishes what is in flight).
    pub stop_new: bool,
    // Consumer and ListOffsets.
    /// Consumer positions.
    pub positions: BTreeMap<u32, u64>,
    next_partition: u32,
    request: Option<(u64, u32, u64, u64)>,
}

impl Client {
    /// A client of partitions whose replicas are `replicas[p]`.
    pub fn new(id: ClientId, kind: Kind, replicas: Vec<Vec<NodeId>>, cfg: ClientConfig) -> Client {
        let positions = (0..replicas.len() as u32).map(|p| (p, 0)).collect();
        Client {
            id,
            kind,
            cfg,
            replicas,
            leaders: BTreeMap::new(),
            epochs: BTreeMap::new(),
            meta: None,
            next_corr: 1,
            next_action: 0,
            session: 0,
            seqs: BTreeMap::new(),
            counter: 0,
            cur: None,
            stop_new: false,
            positions,
            next_partition: 0,
            request: None,
        }
    }

    /// The send in progress: its index in the history and the correlation
    /// id of its attempt in flight.
    pub fn in_flight_send(&self) -> Option<(usize, u64)> {
        let c = self.cur.as_ref()?;
        Some((c.op, c.in_flight?.0))
    }

    /// Whether a send is still in progress.
    pub fn busy(&self) -> bool {
        self.cur.is_some()
    }

    fn corr(&mut self) -> u64 {
        let c = self.next_corr;
        self.next_corr += 1;
        c
    }

    fn producer_id(&self) -> i64 {
        i64::from(self.id) * 1_000_000 + self.session
    }

    /// Asks a random replica who leads `p` (one question at a time).
    fn ask_leader(&mut self, now: u64, p: u32, rng: &mut Rng, out: &mut Vec<Envelope>) {
        if self.meta.is_some_and(|(_, _, deadline)| now < deadline) {
            return;
        }
        let reps = &self.replicas[p as usize];
        let to = reps[rng.below(reps.len() as u64) as usize];
        let corr = self.corr();
        self.meta = Some((corr, p, now + self.cfg.request_timeout_ms));
        out.push(Envelope {
            to: Addr::Node(to),
            msg: Msg::Metadata { corr, partition: p },
        });
    }

    /// Time passes.
    pub fn tick(&mut self, now: u64, rng: &mut Rng, h: &mut History, out: &mut Vec<Envelope>) {
        match self.kind {
            Kind::Producer(acks) => self.tick_producer(now, acks, rng, h, out),
            Kind::Consumer | Kind::Latest => self.tick_reader(now, rng, out),
        }
    }

    fn finish(&mut self, now: u64, h: &mut History, outcome: Outcome) {
        if let Some(c) = self.cur.take() {
            h.sends[c.op].complete = Some(now);
            h.sends[c.op].outcome = outcome;
            if let Outcome::Ok(_) = outcome {
                *self.seqs.entry(c.partition).or_insert(0) += 1;
            } else {
                // The producer state may or may not hold the send: start a
                // new producer session rather than guess the next sequence.
                self.session += 1;
                self.seqs.clear();
            }
        }
    }

    fn tick_producer(
        &mut self,
        now: u64,
        acks: Acks,
        rng: &mut Rng,
        h: &mut History,
        out: &mut Vec<Envelope>,
    ) {
        if self.cur.is_none() {
            if self.stop_new || now < self.next_action {
                return;
            }
            let partition = rng.below(self.replicas.len() as u64) as u32;
            self.counter += 1;
            let value = (u64::from(self.id) << 32) | self.counter;
            let seq = *self.seqs.get(&partition).unwrap_or(&0);
            let producer = if self.cfg.idempotent {
                ProducerInfo {
                    id: self.producer_id(),
                    epoch: 0,
                    base_sequence: seq,
                }
            } else {
                ProducerInfo::NONE
            };
            let rec = Record {
                offset: 0,
                timestamp: now as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(&value.to_be_bytes())),
                headers: Vec::new(),
            };
            let Ok(b) = batch::build(0, -1, producer, &[rec]) else {
                return;
            };
            h.sends.push(SendOp {
                client: self.id,
                partition,
                value,
                acks,
                invoke: now,
                complete: None,
                outcome: Outcome::Pending,
            });
            self.cur = Some(Current {
                op: h.sends.len() - 1,
                partition,
                batch: b,
                in_flight: None,
                retry_at: now,
                maybe_written: false,
                give_up_at: now + self.cfg.delivery_timeout_ms,
                backoff: Backoff::new(20, 1000),
            });
        }
        let Some(c) = &mut self.cur else {
            return;
        };
        if let Some((_, deadline)) = c.in_flight {
            if now < deadline {
                return;
            }
            c.in_flight = None;
            c.maybe_written = true;
            c.retry_at = now + c.backoff.next_delay(rng.next_u64());
            self.leaders.remove(&c.partition);
        }
        if now >= c.give_up_at {
            let o = c.unfinished_outcome();
            self.finish(now, h, o);
            return;
        }
        if now < c.retry_at {
            return;
        }
        let p = c.partition;
        match self.leaders.get(&p).copied() {
            Some(leader) => {
                let corr = self.corr();
                let Some(c) = &mut self.cur else {
                    return;
                };
                c.in_flight = Some((corr, now + self.cfg.request_timeout_ms));
                out.push(Envelope {
                    to: Addr::Node(leader),
                    msg: Msg::Produce(ProduceRequest {
                        corr,
                        partition: p,
                        acks,
                        timeout_ms: self.cfg.produce_timeout_ms,
                        batch: c.batch.clone(),
                    }),
                });
            }
            None => self.ask_leader(now, p, rng, out),
        }
    }

    fn tick_reader(&mut self, now: u64, rng: &mut Rng, out: &mut Vec<Envelope>) {
        if let Some((_, p, _, deadline)) = self.request {
            if now < deadline {
                return;
            }
            self.request = None;
            self.leaders.remove(&p);
        }
        if now < self.next_action {
            return;
        }
        let p = self.next_partition;
        let Some(&leader) = self.leaders.get(&p) else {
            self.ask_leader(now, p, rng, out);
            return;
        };
        let corr = self.corr();
        self.request = Some((corr, p, now, now + self.cfg.request_timeout_ms));
        let leader_epoch = self.epochs.get(&p).copied().unwrap_or(-1);
        let msg = match self.kind {
            Kind::Consumer => Msg::Fetch(FetchRequest {
                corr,
                partition: p,
                replica: None,
                leader_epoch,
                fetch_offset: *self.positions.get(&p).unwrap_or(&0),
                last_fetched_epoch: -1,
                durable_offset: 0,
                max_bytes: 16 << 10,
            }),
            _ => Msg::ListOffsets {
                corr,
                partition: p,
                leader_epoch,
            },
        };
        out.push(Envelope {
            to: Addr::Node(leader),
            msg,
        });
    }

    fn rotate(&mut self, now: u64, pause: bool) {
        self.next_partition = (self.next_partition + 1) % self.replicas.len() as u32;
        if pause {
            self.next_action = now + self.cfg.poll_interval_ms;
        }
    }

    /// A message arrives.
    pub fn handle(&mut self, now: u64, msg: Msg, rng: &mut Rng, h: &mut History) {
        match msg {
            Msg::MetadataResponse { corr, state } => {
                if let Some((c, p, _)) = self.meta {
                    if c == corr {
                        self.meta = None;
                        if let Some(s) = state {
                            let known = self.epochs.get(&p).copied().unwrap_or(-1);
                            if let (Some(l), true) = (s.leader, s.leader_epoch >= known) {
                                self.leaders.insert(p, l);
                                self.epochs.insert(p, s.leader_epoch);
                            }
                        }
                    }
                }
            }
            Msg::ProduceResponse { corr, result, .. } => {
                let Some(c) = &mut self.cur else {
                    return;
                };
                if c.in_flight.map(|(x, _)| x) != Some(corr) {
                    return;
                }
                c.in_flight = None;
                let p = c.partition;
                match result {
                    ProduceResult::Ok { first, .. } => {
                        self.finish(now, h, Outcome::Ok(first));
                        self.next_action = now + rng.below(20);
                        return;
                    }
                    ProduceResult::Failed(ErrorCode::OutOfOrderSequence) => {
                        let o = c.unfinished_outcome();
                        self.finish(now, h, o);
                        return;
                    }
                    ProduceResult::Failed(code) | ProduceResult::Indeterminate(code) => {
                        if matches!(result, ProduceResult::Indeterminate(_)) {
                            c.maybe_written = true;
                        }
                        if code == ErrorCode::NotLeaderOrFollower {
                            self.leaders.remove(&p);
                        }
                    }
                }
                if let Some(c) = &mut self.cur {
                    c.retry_at = now + c.backoff.next_delay(rng.next_u64());
                }
            }
            Msg::FetchResponse(r) => {
                let Some((c, p, _, _)) = self.request else {
                    return;
                };
                if c != r.corr {
                    return;
                }
                self.request = None;
                if let Some(code) = r.error {
                    if code == ErrorCode::OffsetOutOfRange {
                        let pos = self.positions.get(&p).copied().unwrap_or(0);
                        h.online.push(format!(
                            "consumer {} at partition {p} position {pos}: the leader answered OFFSET_OUT_OF_RANGE, so records it had read as committed are gone",
                            self.id
                        ));
                    }
                    self.leaders.remove(&p);
                    self.rotate(now, true);
                    return;
                }
                let mut pos = self.positions.get(&p).copied().unwrap_or(0);
                let mut got = false;
                for b in &r.batches {
                    for rec in b.records() {
                        if rec.offset < pos {
                            continue;
                        }
                        if rec.offset != pos {
                            h.online.push(format!(
                                "consumer {} at partition {p} skipped from offset {pos} to {}",
                                self.id, rec.offset
                            ));
                        }
                        let value = rec
                            .value
                            .as_ref()
                            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                            .map(u64::from_be_bytes);
                        match value {
                            Some(v) => h.read(p, rec.offset, v),
                            None => h.online.push(format!(
                                "consumer {} read an undecodable value at partition {p} offset {}",
                                self.id, rec.offset
                            )),
                        }
                        pos = rec.offset + 1;
                        got = true;
                    }
                }
                self.positions.insert(p, pos);
                self.rotate(now, !got);
            }
            Msg::ListOffsetsResponse { corr, result, .. } => {
                let Some((c, p, invoke, _)) = self.request else {
                    return;
                };
                if c != corr {
                    return;
                }
                self.request = None;
                match result {
                    Ok(offset) => h.latest.push(LatestOp {
                        client: self.id,
                        partition: p,
                        invoke,
                        complete: now,
                        offset,
                    }),
                    Err(
                        ErrorCode::NotLeaderOrFollower
                        | ErrorCode::FencedLeaderEpoch
                        | ErrorCode::UnknownLeaderEpoch,
                    ) => {
                        self.leaders.remove(&p);
                    }
                    Err(_) => {}
                }
                self.rotate(now, true);
            }
            _ => {}
        }
    }
}
