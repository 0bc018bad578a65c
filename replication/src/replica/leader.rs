//! The leader's rules: answering fetches (the divergence check, follower
//! progress, lastCaughtUpTime), produces and ListOffsets, ISR changes
//! (proposals, the controller's answers, the maximal ISR) and the high
//! watermark.

use super::*;

impl Replica {
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
            log_start_offset: log.log_start_offset(),
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
        if !self.cfg.ack_unsynced && !self.cfg.group_sync {
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

    pub(super) fn maybe_shrink_isr(&mut self, now: u64, out: &mut Vec<Envelope>) {
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
    pub(super) fn maybe_expand_isr(
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

    pub(super) fn propose(&mut self, now: u64, isr: Vec<NodeId>, out: &mut Vec<Envelope>) {
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
    pub(super) fn update_hw(&mut self, log: &Partition, out: &mut Vec<Envelope>) -> Result<()> {
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
