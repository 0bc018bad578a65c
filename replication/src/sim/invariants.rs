//! What the simulator checks while it runs: after every event of a node,
//! HW <= LEO, one leader per epoch, agreement with the committed ledger
//! below the HW, leader completeness, every live ISR member holding every
//! acknowledged record; and that last one once more at the end.

use super::*;

/// A record's value as the workload writes it (8 bytes, big-endian);
/// `u64::MAX` for anything else, which no send uses.
fn value_of(r: &strata_log::Record) -> u64 {
    r.value
        .as_ref()
        .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
        .map_or(u64::MAX, u64::from_be_bytes)
}

/// Every record of a log, offset to value (what a read returns until the
/// first error).
fn log_values(log: &strata_log::Partition) -> BTreeMap<u64, u64> {
    let mut have = BTreeMap::new();
    let mut cur = log.log_start_offset();
    while cur < log.log_end_offset() {
        let Ok(batches) = log.read(cur, 1 << 20, None) else {
            break;
        };
        if batches.is_empty() {
            break;
        }
        for b in &batches {
            for r in b.records() {
                have.insert(r.offset, value_of(&r));
            }
            cur = b.last_offset() + 1;
        }
    }
    have
}

impl World {
    pub(super) fn check_node(&mut self, n: NodeId) {
        self.check_node_inner(n, true);
    }

    /// The per-step checks of node `n` (`strict`), or (not `strict`, for
    /// a node stopping on an I/O error) only the recording of what its
    /// consistent partitions committed.
    pub(super) fn check_node_inner(&mut self, n: NodeId, strict: bool) {
        let i = Self::idx(n);
        let Some(rt) = self.nodes[i].rt.as_ref() else {
            return;
        };
        let mut found: Vec<(String, String)> = Vec::new();
        let mut new_leaderships = Vec::new();
        let mut ledger_adds = Vec::new();
        let mut cursor_moves = Vec::new();
        for (&p, log) in &rt.logs {
            let Some(r) = rt.broker.replica(p) else {
                continue;
            };
            let (hw, leo) = (log.high_watermark(), log.log_end_offset());
            if hw > leo {
                if strict {
                    found.push((
                        "HW <= LEO".into(),
                        format!("node {n} partition {p}: HW {hw} > LEO {leo}"),
                    ));
                }
                continue;
            }
            if let Some(e) = r.leading().filter(|_| strict) {
                match self.leaders_by_epoch.get(&(p, e)) {
                    Some(&other) if other != n => found.push((
                        "one leader per epoch".into(),
                        format!("partition {p} epoch {e} led by node {other} and node {n}"),
                    )),
                    _ => {}
                }
                if !self.leaderships.contains(&(n, p, e)) {
                    new_leaderships.push((p, e));
                }
            }
            // Agreement below the HW with the committed ledger.
            let commit_epoch = r
                .leading()
                .or_else(|| r.state().map(|s| s.leader_epoch))
                .unwrap_or(0);
            let start = log.log_start_offset();
            let mut cur = self.cursors.get(&(n, p)).copied().unwrap_or(0).max(start);
            if hw < cur {
                cur = hw;
            }
            while cur < hw {
                let batches = match log.read(cur, 1 << 20, Some(hw)) {
                    Ok(b) => b,
                    Err(e) => {
                        if strict {
                            found.push((
                                "readable log".into(),
                                format!("node {n} partition {p} at {cur}: {e}"),
                            ));
                        }
                        break;
                    }
                };
                if batches.is_empty() {
                    break;
                }
                for b in &batches {
                    for rec in b.records() {
                        if rec.offset < cur {
                            continue;
                        }
                        let v = value_of(&rec);
                        match self.ledger.get(&(p, rec.offset)).map(|&(x, _)| x) {
                            Some(x) if x != v => found.push((
                                "log matching below the HW".into(),
                                format!(
                                    "node {n} partition {p} offset {} holds {v} below its HW {hw}, but {x} was committed there",
                                    rec.offset
                                ),
                            )),
                            Some(_) => {}
                            None => {
                                ledger_adds.push(((p, rec.offset), (v, commit_epoch)))
                            }
                        }
                        cur = rec.offset + 1;
                    }
                }
            }
            cursor_moves.push(((n, p), cur));
        }
        for (k, v) in ledger_adds {
            self.ledger.entry(k).or_insert(v);
        }
        for (k, v) in cursor_moves {
            self.cursors.insert(k, v);
        }
        for (p, e) in new_leaderships {
            self.leaderships.insert((n, p, e));
            self.leaders_by_epoch.entry((p, e)).or_insert(n);
            self.trace(format!(
                "{} node {n} leads partition {p} in epoch {e}",
                self.now
            ));
            // Leader completeness: it holds every committed record.
            if let Some(miss) = self.missing_committed(n, p, e) {
                found.push((
                    "leader completeness".into(),
                    format!("node {n}, new leader of partition {p} in epoch {e}, {miss}"),
                ));
            }
        }
        for (prop, d) in found {
            self.violate(&prop, d);
        }
        if strict && !self.done {
            self.check_member_holds_acked(n);
        }
    }

    /// Node `n`, where the controller lists it in an ISR, holds every
    /// acknowledged record of that partition: after every event of `n`,
    /// reading only the acknowledgements it was not yet seen to hold.
    pub(super) fn check_member_holds_acked(&mut self, n: NodeId) {
        let Some(rt) = self.nodes[Self::idx(n)].rt.as_ref() else {
            return;
        };
        let Some(cs) = self.controller_state() else {
            return;
        };
        let registered = cs.brokers.get(&n).map(|&(e, _)| e);
        if self.cfg.unsafe_unsynced_acks && registered != rt.broker.broker_epoch() {
            // See `check_isr_holds_acked`.
            return;
        }
        let mut found = None;
        let mut moves = Vec::new();
        for (&p, log) in &rt.logs {
            if !cs.partitions.get(&p).is_some_and(|s| s.isr.contains(&n)) {
                continue;
            }
            let Some(acked) = self.acked.get(&p) else {
                continue;
            };
            let leo = log.log_end_offset();
            let (mut done, last_leo) = self.isr_verified.get(&(n, p)).copied().unwrap_or((0, 0));
            if leo < last_leo {
                done = 0;
            }
            for &(o, v) in &acked[done.min(acked.len())..] {
                let got = log.read(o, 1, None).ok().and_then(|bs| {
                    bs.iter()
                        .flat_map(|b| b.records())
                        .find(|r| r.offset == o)
                        .map(|r| value_of(&r))
                });
                if got != Some(v) {
                    found = Some(format!(
                        "ISR member {n} of partition {p} holds {got:?} at acknowledged offset {o} (value {v})"
                    ));
                    break;
                }
                done += 1;
            }
            moves.push(((n, p), (done, leo)));
            if found.is_some() {
                break;
            }
        }
        for (k, v) in moves {
            self.isr_verified.insert(k, v);
        }
        if let Some(d) = found {
            self.violate("acknowledged records on every ISR member", d);
        }
    }

    /// The first record committed in an epoch before `epoch` that node
    /// `n`'s log of `p` lacks (Raft's leader completeness: a leader of an
    /// epoch holds everything committed before it; a stale leader that
    /// learns of its epoch late need not hold what later epochs committed,
    /// even records written in earlier epochs).
    pub(super) fn missing_committed(&self, n: NodeId, p: u32, epoch: i32) -> Option<String> {
        let rt = self.nodes[Self::idx(n)].rt.as_ref()?;
        let log = rt.logs.get(&p)?;
        let committed: Vec<(u64, u64)> = self
            .ledger
            .range((p, 0)..(p + 1, 0))
            .filter(|(_, &(_, e))| e < epoch)
            .map(|(&(_, o), &(v, _))| (o, v))
            .collect();
        if committed.is_empty() {
            return None;
        }
        let leo = log.log_end_offset();
        let have = log_values(log);
        for (o, v) in committed {
            match have.get(&o) {
                Some(&x) if x == v => {}
                Some(&x) => {
                    return Some(format!(
                        "holds {x} at committed offset {o} (committed: {v})"
                    ))
                }
                None => {
                    return Some(format!(
                        "lacks committed offset {o} (value {v}); its log ends at {leo}"
                    ))
                }
            }
        }
        None
    }

    /// Every acknowledged record is on every live ISR member (as the
    /// controller records the ISR; with unsynced acks, members readmitted
    /// since their last restart).
    pub(super) fn check_isr_holds_acked(&mut self) {
        let acked: Vec<(u32, u64, u64)> = self
            .history
            .sends
            .iter()
            .filter_map(|s| match (s.outcome, s.acks) {
                (Outcome::Ok(o), Acks::All) => Some((s.partition, o, s.value)),
                _ => None,
            })
            .collect();
        for p in 0..self.cfg.partitions {
            let Some(st) = self.partition_state(p) else {
                continue;
            };
            for &n in &st.isr {
                let Some(rt) = self.nodes[Self::idx(n)].rt.as_ref() else {
                    continue;
                };
                // With unsynced acks a restarted broker lost its tail and
                // stays listed until it registers again (Kafka's window,
                // which the fault budget keeps out of elections): hold it
                // to the claim only once readmitted under its new epoch.
                let registered = self
                    .controller_state()
                    .and_then(|s| s.brokers.get(&n))
                    .map(|&(e, _)| e);
                if self.cfg.unsafe_unsynced_acks && registered != rt.broker.broker_epoch() {
                    continue;
                }
                let Some(log) = rt.logs.get(&p) else {
                    continue;
                };
                let have = log_values(log);
                for &(ap, o, v) in &acked {
                    if ap == p && have.get(&o) != Some(&v) {
                        self.violate(
                            "acknowledged records on every ISR member",
                            format!(
                                "ISR member {n} of partition {p} lacks value {v} at offset {o}"
                            ),
                        );
                        return;
                    }
                }
            }
        }
    }
}
