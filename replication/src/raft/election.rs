//! Roles: the election timer, (pre-)campaigns, becoming leader or
//! follower, and handing leadership over.

use bytes::Bytes;

use super::*;

impl Raft {
    pub(super) fn become_follower(&mut self, now: i64, term: Term, leader: Option<NodeId>) {
        if term != self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.reset_election_timer(now);
    }

    /// Advances time: elections, heartbeats, check-quorum.
    pub fn tick(&mut self, now: i64) {
        if self.transfer.is_some_and(|(_, until)| now >= until) {
            // The target did not take over in time: lead on.
            self.transfer = None;
        }
        if self.role == Role::Leader {
            if self.cfg.check_quorum
                && now - self.leader_since >= self.cfg.election_timeout_ms.0 as i64
            {
                let window = self.cfg.election_timeout_ms.0 as i64;
                let heard = 1 + self
                    .progress
                    .values()
                    .filter(|p| now - p.heard < window)
                    .count();
                if heard < self.quorum() {
                    // Cut off from the quorum: stop leading.
                    let term = self.term;
                    self.become_follower(now, term, None);
                    return;
                }
            }
            if now >= self.heartbeat_deadline {
                self.heartbeat_deadline = now + self.cfg.heartbeat_ms as i64;
                for id in self.others() {
                    self.send_append(id);
                }
            }
            return;
        }
        if now >= self.election_deadline {
            if self.cfg.pre_vote {
                self.pre_campaign(now);
            } else {
                self.campaign(now);
            }
        }
    }

    pub(super) fn pre_campaign(&mut self, now: i64) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeSet::from([self.cfg.id]);
        self.reset_election_timer(now);
        if self.votes.len() >= self.quorum() {
            self.campaign(now);
            return;
        }
        let msg = Message::PreVote {
            term: self.term + 1,
            last_index: self.last_index(),
            last_term: self.last_term(),
        };
        for id in self.others() {
            self.send(id, msg.clone());
        }
    }

    pub(super) fn campaign(&mut self, now: i64) {
        self.campaign_with(now, false);
    }

    pub(super) fn campaign_with(&mut self, now: i64, transfer: bool) {
        self.term += 1;
        self.voted_for = Some(self.cfg.id);
        self.persist_hard_state();
        self.role = Role::Candidate;
        self.leader = None;
        self.votes = BTreeSet::from([self.cfg.id]);
        self.reset_election_timer(now);
        if self.votes.len() >= self.quorum() {
            self.become_leader(now);
            return;
        }
        let msg = Message::Vote {
            term: self.term,
            last_index: self.last_index(),
            last_term: self.last_term(),
            transfer,
        };
        for id in self.others() {
            self.send(id, msg.clone());
        }
    }

    pub(super) fn become_leader(&mut self, now: i64) {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.leader_since = now;
        let next = self.last_index() + 1;
        self.progress = self
            .others()
            .into_iter()
            .map(|id| {
                (
                    id,
                    Progress {
                        next,
                        matched: 0,
                        heard: now,
                    },
                )
            })
            .collect();
        // The no-op of the new term: committing it commits every entry
        // before it (an earlier term's entries never commit by counting).
        self.append_local(Bytes::new());
        self.heartbeat_deadline = now + self.cfg.heartbeat_ms as i64;
        for id in self.others() {
            self.send_append(id);
        }
        self.maybe_commit();
    }

    pub(super) fn append_local(&mut self, data: Bytes) -> Index {
        let e = Entry {
            term: self.term,
            index: self.last_index() + 1,
            data,
        };
        self.out.append.push(e.clone());
        self.log.push(e);
        self.last_index()
    }

    /// Hands leadership to `to` (a controlled shutdown): proposals are
    /// refused meanwhile; once `to` holds the whole log it is told to
    /// campaign at once, and wins the next term. Abandoned after an
    /// election timeout if it does not happen. `false` if this node does
    /// not lead or `to` is not another voter.
    pub fn transfer_leadership(&mut self, now: i64, to: NodeId) -> bool {
        if self.role != Role::Leader || to == self.cfg.id || !self.progress.contains_key(&to) {
            return false;
        }
        self.transfer = Some((to, now + self.cfg.election_timeout_ms.0 as i64));
        self.maybe_hand_over(to);
        true
    }

    /// Tells the transfer target to campaign if it holds the whole log;
    /// otherwise sends it what it lacks.
    pub(super) fn maybe_hand_over(&mut self, to: NodeId) {
        if self.transfer.map(|(t, _)| t) != Some(to) {
            return;
        }
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.matched == self.last_index());
        if caught_up {
            let term = self.term;
            self.send(to, Message::TimeoutNow { term });
        } else {
            self.send_append(to);
        }
    }
}
