//! What the driver publishes for the request handlers, `/status` and
//! `/metrics`: partition states and logs, the brokers Metadata lists, the
//! controller as known here, and counters.

use strata_replication::raft;

use super::super::Node;
use super::Driver;

impl Driver {
    /// The brokers Metadata lists: those the controller says are live,
    /// and this node.
    pub(super) fn publish_brokers(&mut self) {
        let me = self.c.me;
        let mut list: Vec<Node> = self
            .broker
            .brokers()
            .iter()
            .filter(|b| !b.fenced && b.node != me)
            .filter_map(|b| Node::parse(b.node, &b.endpoint))
            .collect();
        if !self.broker.brokers().is_empty() {
            if let Some(n) = Node::parse(me, &format!("{}:{}", self.b.host, self.b.port)) {
                list.push(n);
            }
            list.sort_by_key(|n| n.id);
        }
        let mut v = self.c.view.lock();
        if v.brokers != list {
            v.brokers = list;
        }
    }

    /// Publishes the view the request handlers read, and wakes fetches
    /// when a high watermark moved.
    pub(super) fn publish(&mut self) {
        let mut moved = false;
        for (&id, p) in &self.logs {
            let hw = p.high_watermark();
            if self.hws.insert(id, hw) != Some(hw) {
                moved = true;
            }
        }
        if moved {
            self.b.data.notify_waiters();
        }
        let sig = (
            self.broker.view().len() + self.logs.len(),
            self.broker
                .view()
                .values()
                .map(|s| i64::from(s.partition_epoch))
                .sum::<i64>(),
        );
        let controller = match self.quorum {
            Some(_) => self.controller_leader(),
            None => self.controller_known,
        };
        let raft = self.quorum.as_ref().map(|(q, _)| {
            let role = match q.raft().role() {
                raft::Role::Leader => "leader",
                raft::Role::Follower => "follower",
                raft::Role::Candidate => "candidate",
                raft::Role::PreCandidate => "pre-candidate",
            };
            (q.raft().term(), role)
        });
        let leading = raft.is_some_and(|r| r.1 == "leader");
        if leading != self.was_leader {
            if leading {
                self.elections_won += 1;
            }
            let term = raft.map_or(0, |r| r.0);
            tracing::info!(term, leading, "controller quorum: leadership changed");
        }
        self.was_leader = leading;
        let now = self.now();
        let lag = if now >= self.next_lag_sample {
            self.next_lag_sample = now + 500;
            let mut lag = Vec::new();
            for (&id, log) in &self.logs {
                let Some(r) = self.broker.replica(id) else {
                    continue;
                };
                let Some(st) = self.broker.view().get(&id) else {
                    continue;
                };
                let leo = log.log_end_offset();
                for (f, _, durable) in r.follower_progress() {
                    lag.push((st.topic.clone(), st.index, f, leo.saturating_sub(durable)));
                }
            }
            Some(lag)
        } else {
            None
        };
        let mut v = self.c.view.lock();
        v.controller = controller;
        v.raft = raft;
        v.broker_epoch = self.broker.broker_epoch();
        v.isr_changes = self.isr_changes;
        v.elections_won = self.elections_won;
        if let Some(lag) = lag {
            v.follower_lag = lag;
        }
        // By a flag, not the count: a deletion and a creation in one
        // step leave the count as it was (the view kept the deleted logs
        // and never listed the new ones).
        if std::mem::take(&mut self.logs_changed) || v.local.len() != self.logs.len() {
            v.local = self.logs.iter().map(|(&k, p)| (k, p.clone())).collect();
        }
        if sig == self.published {
            return;
        }
        self.published = sig;
        for (&id, s) in self.broker.view() {
            let name = (s.topic.clone(), s.index);
            if s.is_deleted() {
                // A deleted topic's tombstone: the name is free again
                // (a topic created again under it has other ids).
                if v.by_name.get(&name) == Some(&id) {
                    v.by_name.remove(&name);
                }
            } else if v.by_name.get(&name).is_none_or(|&old| old <= id) {
                v.by_name.insert(name, id);
            }
            if let Some(old) = v.states.get(&id) {
                // Counted by the leader that keeps its leadership.
                if s.leader == Some(self.c.me)
                    && old.leader == s.leader
                    && old.partition_epoch < s.partition_epoch
                {
                    if s.isr.len() < old.isr.len() {
                        self.isr_changes.0 += 1;
                    } else if s.isr.len() > old.isr.len() {
                        self.isr_changes.1 += 1;
                    }
                }
            }
            if v.states
                .get(&id)
                .is_none_or(|o| o.partition_epoch < s.partition_epoch)
            {
                v.states.insert(id, s.clone());
            }
        }
    }
}
