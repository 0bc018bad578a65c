//! The history checker, after Jepsen's kafka workload: every client
//! operation with its invocation and completion time and outcome, and every
//! record consumers read, checked for lost, unseen, duplicated and
//! inconsistent writes, reads of failed writes (G1a), order, and
//! ListOffsets(latest) never going back.

use std::collections::{BTreeMap, BTreeSet};

use crate::msg::{Acks, ClientId};

/// How a send ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    Pending,
    /// Acknowledged at this offset.
    Ok(u64),
    /// Definitely not written.
    Failed,
    /// May or may not have been written.
    Indeterminate,
}

/// One producer send (one record, one unique value).
#[derive(Clone, Debug)]
pub struct SendOp {
    /// The producer.
    pub client: ClientId,
    /// Partition.
    pub partition: u32,
    /// The unique value.
    pub value: u64,
    /// Acks asked for.
    pub acks: Acks,
    /// Invocation time.
    pub invoke: u64,
    /// Completion time.
    pub complete: Option<u64>,
    /// Outcome.
    pub outcome: Outcome,
}

/// A ListOffsets(latest) answer.
#[derive(Clone, Copy, Debug)]
pub struct LatestOp {
    /// The caller.
    pub client: ClientId,
    /// Partition.
    pub partition: u32,
    /// Invocation time.
    pub invoke: u64,
    /// Completion time.
    pub complete: u64,
    /// The offset answered.
    pub offset: u64,
}

/// Everything the clients did and saw.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Sends, in invocation order.
    pub sends: Vec<SendOp>,
    /// Records read by consumers: (partition, offset) -> values seen there.
    pub reads: BTreeMap<(u32, u64), BTreeSet<u64>>,
    /// Where each value was read: value -> (partition, offset)s.
    pub read_at: BTreeMap<u64, BTreeSet<(u32, u64)>>,
    /// ListOffsets(latest) answers.
    pub latest: Vec<LatestOp>,
    /// Violations found online (a consumer skipped or went back).
    pub online: Vec<String>,
}

impl History {
    /// A consumer read `value` at `offset`.
    pub fn read(&mut self, partition: u32, offset: u64, value: u64) {
        self.reads
            .entry((partition, offset))
            .or_default()
            .insert(value);
        self.read_at
            .entry(value)
            .or_default()
            .insert((partition, offset));
    }
}

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// acks=all sends acknowledged.
    pub acked: u64,
    /// acks=1 sends acknowledged.
    pub acked_leader_only: u64,
    /// acks=1 acknowledged sends never read (allowed, counted).
    pub leader_only_lost: u64,
    /// Sends that ended indeterminate.
    pub indeterminate: u64,
    /// Sends that definitely failed.
    pub failed: u64,
    /// Violations: (property, detail), the first ones found.
    pub violations: Vec<(String, String)>,
}

impl Verdict {
    fn flag(&mut self, property: &str, detail: String) {
        if self.violations.len() < 20 {
            self.violations.push((property.to_string(), detail));
        }
    }
}

/// Timed operations, (invoke, complete, value), by key.
type Timed<K> = BTreeMap<K, Vec<(u64, u64, u64)>>;

/// Checks a whole history. `final_read`: every partition was read by a
/// consumer to its end after the heal, so every acknowledged write must
/// have been seen.
pub fn check(h: &History, final_read: bool) -> Verdict {
    let mut v = Verdict::default();
    for o in &h.online {
        v.flag("consumer order", o.clone());
    }
    // Inconsistent offsets: one offset, two values.
    for ((p, o), vals) in &h.reads {
        if vals.len() > 1 {
            v.flag(
                "inconsistent offset",
                format!("partition {p} offset {o} was read with values {vals:?}"),
            );
        }
    }
    // Duplicates: one value at two offsets.
    for (val, at) in &h.read_at {
        if at.len() > 1 {
            v.flag("duplicate", format!("value {val} was read at {at:?}"));
        }
    }
    let max_read: BTreeMap<u32, u64> = h.reads.keys().fold(BTreeMap::new(), |mut m, &(p, o)| {
        let e = m.entry(p).or_insert(0);
        *e = (*e).max(o);
        m
    });
    let mut by_producer: BTreeMap<(ClientId, u32), Vec<u64>> = BTreeMap::new();
    for s in &h.sends {
        match s.outcome {
            Outcome::Failed => {
                v.failed += 1;
                if let Some(at) = h.read_at.get(&s.value) {
                    v.flag(
                        "read of a failed write (G1a)",
                        format!(
                            "value {} from client {} definitely failed but was read at {at:?}",
                            s.value, s.client
                        ),
                    );
                }
            }
            Outcome::Indeterminate | Outcome::Pending => v.indeterminate += 1,
            Outcome::Ok(off) => {
                let seen = h.read_at.get(&s.value);
                if s.acks != Acks::All {
                    v.acked_leader_only += 1;
                    if final_read && seen.is_none() {
                        v.leader_only_lost += 1;
                    }
                    continue;
                }
                v.acked += 1;
                by_producer
                    .entry((s.client, s.partition))
                    .or_default()
                    .push(off);
                let at_offset = h.reads.get(&(s.partition, off));
                match at_offset {
                    Some(vals) if !vals.contains(&s.value) => v.flag(
                        "lost write",
                        format!(
                            "value {} acknowledged at partition {} offset {off}, but that offset was read as {vals:?}",
                            s.value, s.partition
                        ),
                    ),
                    Some(_) => {}
                    None if max_read.get(&s.partition).is_some_and(|&m| m > off) => v.flag(
                        "lost write",
                        format!(
                            "value {} acknowledged at partition {} offset {off} was never read, though later offsets were",
                            s.value, s.partition
                        ),
                    ),
                    None if final_read => v.flag(
                        "unseen acknowledged write",
                        format!(
                            "value {} acknowledged at partition {} offset {off} was not read after the heal",
                            s.value, s.partition
                        ),
                    ),
                    None => {}
                }
            }
        }
    }
    // One producer's sends land in send order.
    for ((c, p), offs) in &by_producer {
        if offs.windows(2).any(|w| w[1] <= w[0]) {
            v.flag(
                "producer order",
                format!("client {c} partition {p}: acknowledged offsets {offs:?} not increasing"),
            );
        }
    }
    // An acknowledged offset is above every offset acknowledged before the
    // send began (real-time order).
    let mut per_part: Timed<u32> = BTreeMap::new();
    for s in &h.sends {
        if let (Outcome::Ok(off), Some(done), Acks::All) = (s.outcome, s.complete, s.acks) {
            per_part
                .entry(s.partition)
                .or_default()
                .push((s.invoke, done, off));
        }
    }
    for (p, ops) in per_part {
        monotonic(
            &mut v,
            &ops,
            "acknowledged offset order",
            |b, a| {
                format!("partition {p}: a send begun at {b} got offset below one acknowledged before: {a}")
            },
            true,
        );
    }
    // ListOffsets(latest) never goes back for a caller (which tracks
    // leader epochs, as Kafka's clients do since KIP-320: across callers a
    // deposed leader that has not heard of its successor can still answer
    // a caller that has not either).
    let mut latest: Timed<(ClientId, u32)> = BTreeMap::new();
    for l in &h.latest {
        latest
            .entry((l.client, l.partition))
            .or_default()
            .push((l.invoke, l.complete, l.offset));
    }
    for ((c, p), ops) in latest {
        monotonic(
            &mut v,
            &ops,
            "latest offset went back",
            |b, a| {
                format!("client {c} partition {p}: ListOffsets(latest) begun at {b} answered less than one answered before: {a}")
            },
            false,
        );
    }
    v
}

/// Operations (invoke, complete, value): for each, every operation
/// completed before it was invoked has a value below it (`strict`) or at
/// most it.
fn monotonic(
    v: &mut Verdict,
    ops: &[(u64, u64, u64)],
    property: &str,
    msg: impl Fn(u64, String) -> String,
    strict: bool,
) {
    let mut by_complete: Vec<(u64, u64)> = ops.iter().map(|&(_, c, x)| (c, x)).collect();
    by_complete.sort_unstable();
    let mut prefix_max = Vec::with_capacity(by_complete.len());
    let mut m = 0u64;
    for &(_, x) in &by_complete {
        m = m.max(x);
        prefix_max.push(m);
    }
    for &(inv, _, x) in ops {
        let n = by_complete.partition_point(|&(c, _)| c < inv);
        if n == 0 {
            continue;
        }
        let before = prefix_max[n - 1];
        let bad = if strict { before >= x } else { before > x };
        if bad {
            v.flag(property, msg(inv, format!("{before} (this one {x})")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(client: ClientId, value: u64, invoke: u64, complete: u64, outcome: Outcome) -> SendOp {
        SendOp {
            client,
            partition: 0,
            value,
            acks: Acks::All,
            invoke,
            complete: Some(complete),
            outcome,
        }
    }

    #[test]
    fn each_anomaly_is_reported() {
        // A clean history passes.
        let mut h = History::default();
        h.sends.push(send(1, 10, 0, 5, Outcome::Ok(0)));
        h.sends.push(send(1, 11, 6, 9, Outcome::Ok(1)));
        h.read(0, 0, 10);
        h.read(0, 1, 11);
        assert!(check(&h, true).violations.is_empty());
        // Lost: offset 0 read with another value.
        let mut lost = h.clone();
        lost.reads.clear();
        lost.read_at.clear();
        lost.read(0, 0, 99);
        lost.read(0, 1, 11);
        let v = check(&lost, true);
        assert!(v.violations.iter().any(|(p, _)| p == "lost write"), "{v:?}");
        // Inconsistent offset and duplicate.
        let mut dup = h.clone();
        dup.read(0, 1, 12);
        dup.read(0, 2, 10);
        let v = check(&dup, true);
        assert!(v.violations.iter().any(|(p, _)| p == "inconsistent offset"));
        assert!(v.violations.iter().any(|(p, _)| p == "duplicate"));
        // G1a.
        let mut g1a = h.clone();
        g1a.sends.push(send(2, 50, 10, 11, Outcome::Failed));
        g1a.read(0, 2, 50);
        assert!(check(&g1a, true)
            .violations
            .iter()
            .any(|(p, _)| p.contains("G1a")));
        // Unseen after the heal.
        let mut unseen = h.clone();
        unseen.sends.push(send(2, 51, 10, 11, Outcome::Ok(2)));
        assert!(check(&unseen, false).violations.is_empty());
        assert!(check(&unseen, true)
            .violations
            .iter()
            .any(|(p, _)| p == "unseen acknowledged write"));
        // Real-time order of acknowledged offsets.
        let mut order = History::default();
        order.sends.push(send(1, 1, 0, 5, Outcome::Ok(7)));
        order.sends.push(send(2, 2, 6, 8, Outcome::Ok(3)));
        order.read(0, 7, 1);
        order.read(0, 3, 2);
        assert!(check(&order, true)
            .violations
            .iter()
            .any(|(p, _)| p == "acknowledged offset order"));
        // Latest going back.
        let mut latest = History::default();
        latest.latest.push(LatestOp {
            client: 1,
            partition: 0,
            invoke: 0,
            complete: 1,
            offset: 9,
        });
        latest.latest.push(LatestOp {
            client: 1,
            partition: 0,
            invoke: 2,
            complete: 3,
            offset: 8,
        });
        assert!(check(&latest, true)
            .violations
            .iter()
            .any(|(p, _)| p == "latest offset went back"));
    }
}
