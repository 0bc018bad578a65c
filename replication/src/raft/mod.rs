//! Raft, for the controller quorum, as a state machine in the style of the
//! rest of this crate: no I/O, no threads, no clock. Inputs are ticks and
//! messages, each with `now` (milliseconds from an injected clock), and
//! proposals; the output is a [`Ready`]: the hard state and log entries to
//! make durable, the messages to send once they are, and the entries now
//! committed, to apply in order (etcd's raft has the same shape).
//!
//! What it implements, and the trap each rule closes:
//! * Elections with randomized timeouts; a vote only for a candidate whose
//!   log is at least as up-to-date (election restriction, §5.4.1).
//! * Log replication with the consistency check on (prev index, prev
//!   term), conflicting suffixes truncated, a follower's hint to skip back.
//! * Commitment only of an entry of the leader's own term counted on a
//!   majority (§5.4.2, figure 8); earlier entries commit with it. A new
//!   leader appends an empty entry so that this happens without waiting
//!   for a client. `Config::unsafe_commit_by_counting` turns the rule off,
//!   for the test that shows figure 8's loss.
//! * Pre-vote (§9.6): a node whose timer fires asks first whether it could
//!   win, without raising its term; voters say no while they hear from a
//!   leader. An isolated node then cannot inflate its term and depose a
//!   healthy leader when it comes back.
//! * Check-quorum: a leader that has not heard from a majority within an
//!   election timeout steps down, so a leader cut off from the quorum stops
//!   serving; voters that heard from a leader within the minimum election
//!   timeout ignore vote requests (leader stickiness).
//!
//! * Snapshots: the application compacts the log up to an applied index
//!   with its state; a follower too far behind gets the snapshot
//!   (InstallSnapshot) and keeps any suffix of its log that agrees with it.
//!
//! Not yet: membership changes, leadership transfer (docs/raft.md lists
//! them).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use strata_io::rng::Rng;

/// A node of the quorum.
pub type NodeId = u32;
/// A term.
pub type Term = u64;
/// A log index (1-based; 0 means "before the first entry").
pub type Index = u64;

/// A log entry. An empty `data` is the no-op a new leader appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created it.
    pub term: Term,
    /// Its index.
    pub index: Index,
    /// The command.
    pub data: Bytes,
}

/// A snapshot of the application's state after applying every entry up
/// to `index` (whose term was `term`); the log before it is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Last entry it covers.
    pub index: Index,
    /// That entry's term.
    pub term: Term,
    /// The application's state, opaque here.
    pub data: Bytes,
}

/// A Raft message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Could I win an election in `term` (one more than the sender's)?
    PreVote {
        /// The term the sender would campaign in.
        term: Term,
        /// Index of its last entry.
        last_index: Index,
        /// Term of its last entry.
        last_term: Term,
    },
    /// The answer to a pre-vote.
    PreVoteResponse {
        /// The term asked about.
        term: Term,
        /// Whether the voter would vote.
        granted: bool,
        /// The voter's own term (a higher one makes the asker follow it).
        current_term: Term,
    },
    /// RequestVote.
    Vote {
        /// The candidate's term.
        term: Term,
        /// Index of its last entry.
        last_index: Index,
        /// Term of its last entry.
        last_term: Term,
        /// The leader handed leadership over: voters that still hear from
        /// that leader vote anyway.
        transfer: bool,
    },
    /// The leader asks a caught-up follower to campaign at once
    /// (leadership transfer, for a controlled shutdown).
    TimeoutNow {
        /// The leader's term.
        term: Term,
    },
    /// The answer to a vote request.
    VoteResponse {
        /// The voter's term.
        term: Term,
        /// Whether it voted for the candidate.
        granted: bool,
    },
    /// AppendEntries (a heartbeat when `entries` is empty).
    Append {
        /// The leader's term.
        term: Term,
        /// Index of the entry before `entries`.
        prev_index: Index,
        /// Its term.
        prev_term: Term,
        /// Entries to store.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// InstallSnapshot: for a follower that needs entries the leader has
    /// compacted away. Answered with an `AppendResponse`.
    Snapshot {
        /// The leader's term.
        term: Term,
        /// The leader's commit index.
        commit: Index,
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// The answer to an append.
    AppendResponse {
        /// The follower's term.
        term: Term,
        /// Whether the consistency check passed.
        success: bool,
        /// On success, the index up to which the follower's log matches
        /// the leader's; on failure, the follower's last index (a hint).
        index: Index,
    },
}

impl Message {
    /// The term the message carries.
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::Append { term, .. }
            | Message::Snapshot { term, .. }
            | Message::TimeoutNow { term }
            | Message::AppendResponse { term, .. } => *term,
        }
    }
}

/// A message with its ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The message.
    pub msg: Message,
}

/// What must survive a crash besides the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Current term.
    pub term: Term,
    /// Whom this node voted for in `term`.
    pub voted_for: Option<NodeId>,
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking whether it could win (pre-vote).
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every voter, this node included.
    pub voters: Vec<NodeId>,
    /// Election timeout range, ms: each wait is drawn from it.
    pub election_timeout_ms: (u64, u64),
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Ask before campaigning.
    pub pre_vote: bool,
    /// Leaders step down without a majority's contact; voters stick to a
    /// leader they heard from recently.
    pub check_quorum: bool,
    /// Most entries in one append.
    pub max_entries: usize,
    /// Commit any entry stored on a majority, of any term (the rule figure
    /// 8 of the Raft paper shows unsafe). For tests only.
    pub unsafe_commit_by_counting: bool,
}

impl Config {
    /// Defaults for a voter set: 1-2 s elections, 100 ms heartbeats,
    /// pre-vote and check-quorum on.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_timeout_ms: (1000, 2000),
            heartbeat_ms: 100,
            pre_vote: true,
            check_quorum: true,
            max_entries: 256,
            unsafe_commit_by_counting: false,
        }
    }
}

/// What the driver must do after an input, in this order: make
/// `hard_state` and the log changes durable (truncate from
/// `truncate_from`, then append `append`), then send `messages`, then
/// apply `committed`.
#[derive(Debug, Default)]
pub struct Ready {
    /// Term and vote to persist, if they changed.
    pub hard_state: Option<HardState>,
    /// Remove every stored entry at or after this index first.
    pub truncate_from: Option<Index>,
    /// Entries to store.
    pub append: Vec<Entry>,
    /// Messages to send once the above is durable.
    pub messages: Vec<Envelope>,
    /// Entries newly committed, in order.
    pub committed: Vec<Entry>,
    /// A snapshot to persist (the log before it may then be dropped).
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` came from the leader: the application replaces
    /// its state with it before applying `committed`.
    pub install: bool,
    /// With `install`: the whole stored log goes, and the log starts again
    /// after the snapshot (none of it agreed with the leader's).
    pub reset_log: bool,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.truncate_from.is_none()
            && self.append.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.snapshot.is_none()
    }
}

/// A proposal refused: this node does not lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
}

#[derive(Clone, Copy, Debug)]
struct Progress {
    next: Index,
    matched: Index,
    /// Last time this follower answered (check-quorum).
    heard: i64,
}

/// One node's Raft state.
#[derive(Debug)]
pub struct Raft {
    cfg: Config,
    term: Term,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    /// Entries after the snapshot: index `snap.index + 1 + k` at `log[k]`.
    log: Vec<Entry>,
    /// The last snapshot (index 0, term 0: none).
    snap: Snapshot,
    commit: Index,
    applied: Index,
    election_deadline: i64,
    heartbeat_deadline: i64,
    /// When this node last heard from a leader of its term.
    leader_contact: Option<i64>,
    /// When this node became leader (check-quorum grace).
    leader_since: i64,
    /// A leadership transfer in progress: the target and when it is
    /// abandoned.
    transfer: Option<(NodeId, i64)>,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    rng: Rng,
    out: Ready,
}

impl Raft {
    /// A node starting from what it persisted (`hard_state`, its latest
    /// snapshot and the log after it; all empty for a new node), as a
    /// follower, at `now`. `seed` makes its randomized timeouts
    /// reproducible. The application has loaded `snapshot`.
    pub fn restore(
        cfg: Config,
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        log: Vec<Entry>,
        now: i64,
        seed: u64,
    ) -> Raft {
        let snap = snapshot.unwrap_or(Snapshot {
            index: 0,
            term: 0,
            data: Bytes::new(),
        });
        let mut r = Raft {
            rng: Rng::new(seed ^ (u64::from(cfg.id) << 32) ^ 0x005E_ED0F_4AF7),
            cfg,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader: None,
            log: log.into_iter().filter(|e| e.index > snap.index).collect(),
            commit: snap.index,
            applied: snap.index,
            snap,
            election_deadline: 0,
            heartbeat_deadline: 0,
            leader_contact: None,
            leader_since: 0,
            transfer: None,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            out: Ready::default(),
        };
        r.reset_election_timer(now);
        r
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node follows (itself when leading).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Commit index.
    pub fn commit_index(&self) -> Index {
        self.commit
    }

    /// The entries after the snapshot.
    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    /// The latest snapshot's index and term (0, 0: none).
    pub fn snapshot_point(&self) -> (Index, Term) {
        (self.snap.index, self.snap.term)
    }

    /// Index of the last entry.
    pub fn last_index(&self) -> Index {
        self.snap.index + self.log.len() as Index
    }

    fn last_term(&self) -> Term {
        self.log.last().map_or(self.snap.term, |e| e.term)
    }

    /// The term of entry `index`; `None` if past the log or compacted
    /// into the snapshot (whose own last index is known).
    fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snap.index {
            return Some(self.snap.term);
        }
        if index < self.snap.index {
            return None;
        }
        self.log
            .get((index - self.snap.index - 1) as usize)
            .map(|e| e.term)
    }

    /// Position in `log` of entry `index` (which must be past the snapshot).
    fn pos(&self, index: Index) -> usize {
        (index - self.snap.index - 1) as usize
    }

    /// The application has applied every entry up to `index` and captured
    /// its state in `data`: the log up to it is dropped and the snapshot
    /// persisted (in the next `Ready`) and sent to followers too far
    /// behind. `index` must be applied already; `false` if it is not, or
    /// is not past the current snapshot.
    pub fn compact(&mut self, index: Index, data: Bytes) -> bool {
        if index <= self.snap.index || index > self.applied {
            return false;
        }
        let Some(term) = self.term_at(index) else {
            return false;
        };
        let k = self.pos(index) + 1;
        self.log.drain(..k);
        self.snap = Snapshot { index, term, data };
        self.out.snapshot = Some(self.snap.clone());
        self.out.install = false;
        true
    }

    fn quorum(&self) -> usize {
        self.cfg.voters.len() / 2 + 1
    }

    fn others(&self) -> Vec<NodeId> {
        self.cfg
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.cfg.id)
            .collect()
    }

    fn reset_election_timer(&mut self, now: i64) {
        let (lo, hi) = self.cfg.election_timeout_ms;
        let wait = lo + self.rng.below(hi.saturating_sub(lo).max(1));
        self.election_deadline = now + wait as i64;
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.messages.push(Envelope {
            from: self.cfg.id,
            to,
            msg,
        });
    }

    fn persist_hard_state(&mut self) {
        self.out.hard_state = Some(HardState {
            term: self.term,
            voted_for: self.voted_for,
        });
    }

    /// Takes what the driver must do now.
    pub fn ready(&mut self) -> Ready {
        if self.applied < self.commit {
            let from = self.pos(self.applied + 1);
            let to = self.pos(self.commit) + 1;
            self.out
                .committed
                .extend_from_slice(&self.log[from..to.min(self.log.len())]);
            self.applied = self.commit;
        }
        std::mem::take(&mut self.out)
    }

    /// Proposes a command; its index if this node leads.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, NotLeader> {
        if self.role != Role::Leader || self.transfer.is_some() {
            return Err(NotLeader {
                leader: self.transfer.map(|(to, _)| to).or(self.leader),
            });
        }
        let i = self.append_local(data);
        for id in self.others() {
            let p = self.progress.get(&id).copied();
            // Followers that are caught up get it at once; the others are
            // being walked back and get it on their next answer.
            if p.is_some_and(|p| p.next == i) {
                self.send_append(id);
            }
        }
        self.maybe_commit();
        Ok(i)
    }

    fn send_append(&mut self, to: NodeId) {
        let Some(p) = self.progress.get(&to).copied() else {
            return;
        };
        let prev_index = p.next.saturating_sub(1).min(self.last_index());
        let Some(prev_term) = self.term_at(prev_index) else {
            // The entries it needs were compacted: the snapshot instead.
            let msg = Message::Snapshot {
                term: self.term,
                commit: self.commit,
                snapshot: self.snap.clone(),
            };
            self.send(to, msg);
            return;
        };
        let from = self.pos(prev_index + 1);
        let to_idx = (from + self.cfg.max_entries).min(self.log.len());
        let entries = self.log[from..to_idx].to_vec();
        let msg = Message::Append {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
        };
        self.send(to, msg);
    }

    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matched: Vec<Index> = self.progress.values().map(|p| p.matched).collect();
        matched.push(self.last_index());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let n = matched[self.quorum() - 1];
        if n > self.commit
            && (self.cfg.unsafe_commit_by_counting || self.term_at(n) == Some(self.term))
        {
            self.commit = n;
        }
    }

    /// Whether a candidate's log (last index and term) is at least as
    /// up-to-date as this node's.
    fn log_ok(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Whether this node heard from a leader within the minimum election
    /// timeout (then it refuses to help depose it).
    fn in_lease(&self, now: i64) -> bool {
        self.cfg.check_quorum
            && self
                .leader_contact
                .is_some_and(|t| now - t < self.cfg.election_timeout_ms.0 as i64)
            && self.leader.is_some()
    }

    /// An append or snapshot from `from` claiming to lead `term`: a stale
    /// one is answered with this node's term (so the sender steps down)
    /// and `false`; otherwise this node follows `from` and its election
    /// timer restarts.
    fn hear_leader(&mut self, now: i64, from: NodeId, term: Term) -> bool {
        if term < self.term {
            let t = self.term;
            let last = self.last_index();
            self.send(
                from,
                Message::AppendResponse {
                    term: t,
                    success: false,
                    index: last,
                },
            );
            return false;
        }
        if term > self.term || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(now, term, Some(from));
        }
        self.leader_contact = Some(now);
        self.reset_election_timer(now);
        true
    }

    /// Handles a message from `from`.
    pub fn receive(&mut self, now: i64, from: NodeId, msg: Message) {
        if !self.cfg.voters.contains(&from) || from == self.cfg.id {
            return;
        }
        match msg {
            Message::PreVote {
                term,
                last_index,
                last_term,
            } => {
                let granted =
                    term > self.term && self.log_ok(last_index, last_term) && !self.in_lease(now);
                let current_term = self.term;
                self.send(
                    from,
                    Message::PreVoteResponse {
                        term,
                        granted,
                        current_term,
                    },
                );
            }
            Message::PreVoteResponse {
                term,
                granted,
                current_term,
            } => {
                if current_term > self.term {
                    self.become_follower(now, current_term, None);
                    return;
                }
                if self.role != Role::PreCandidate || term != self.term + 1 {
                    return;
                }
                if granted {
                    self.votes.insert(from);
                    if self.votes.len() >= self.quorum() {
                        self.campaign(now);
                    }
                }
            }
            Message::Vote {
                term,
                last_index,
                last_term,
                transfer,
            } => {
                if term > self.term {
                    if !transfer && self.in_lease(now) {
                        // A leader is alive: do not let this candidate
                        // raise terms and depose it.
                        return;
                    }
                    self.become_follower(now, term, None);
                }
                let granted = term == self.term
                    && self.voted_for.is_none_or(|v| v == from)
                    && self.log_ok(last_index, last_term);
                if granted {
                    self.voted_for = Some(from);
                    self.persist_hard_state();
                    self.reset_election_timer(now);
                }
                let t = self.term;
                self.send(from, Message::VoteResponse { term: t, granted });
            }
            Message::VoteResponse { term, granted } => {
                if term > self.term {
                    self.become_follower(now, term, None);
                    return;
                }
                if self.role != Role::Candidate || term != self.term || !granted {
                    return;
                }
                self.votes.insert(from);
                if self.votes.len() >= self.quorum() {
                    self.become_leader(now);
                }
            }
            Message::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if !self.hear_leader(now, from, term) {
                    return;
                }
                // An index inside the snapshot is committed, hence the
                // leader's too.
                let matches =
                    prev_index < self.snap.index || self.term_at(prev_index) == Some(prev_term);
                if !matches {
                    let hint = self.last_index().min(prev_index.saturating_sub(1));
                    let t = self.term;
                    self.send(
                        from,
                        Message::AppendResponse {
                            term: t,
                            success: false,
                            index: hint,
                        },
                    );
                    return;
                }
                let mut last_new = prev_index;
                for e in entries {
                    last_new = e.index;
                    if e.index <= self.snap.index {
                        // Already in the snapshot (committed, so equal).
                        continue;
                    }
                    match self.term_at(e.index) {
                        Some(t) if t == e.term => continue,
                        Some(_) => {
                            // A conflicting suffix: it was never committed
                            // (the leader's log holds every committed entry).
                            let k = self.pos(e.index);
                            self.log.truncate(k);
                            self.out.append.retain(|a| a.index < e.index);
                            self.out.truncate_from = Some(
                                self.out
                                    .truncate_from
                                    .map_or(e.index, |t: Index| t.min(e.index)),
                            );
                        }
                        None => {}
                    }
                    self.out.append.push(e.clone());
                    self.log.push(e);
                }
                let new_commit = commit.min(last_new);
                if new_commit > self.commit {
                    self.commit = new_commit;
                }
                let t = self.term;
                self.send(
                    from,
                    Message::AppendResponse {
                        term: t,
                        success: true,
                        index: last_new,
                    },
                );
            }
            Message::Snapshot {
                term,
                commit,
                snapshot,
            } => {
                if !self.hear_leader(now, from, term) {
                    return;
                }
                let at = snapshot.index;
                if at > self.commit {
                    if self.term_at(at) == Some(snapshot.term) {
                        // The log agrees up to it: keep what follows.
                        let k = self.pos(at) + 1;
                        self.log.drain(..k.min(self.log.len()));
                    } else {
                        // Nothing of the log is known good: all of it goes
                        // (the snapshot replaces it on disk too).
                        self.log.clear();
                        self.out.append.clear();
                        self.out.truncate_from = None;
                        self.out.reset_log = true;
                    }
                    self.snap = snapshot;
                    self.commit = at.max(commit.min(self.last_index()));
                    self.applied = at;
                    self.out.committed.clear();
                    self.out.snapshot = Some(self.snap.clone());
                    self.out.install = true;
                }
                let t = self.term;
                let idx = self.snap.index.max(self.commit.min(self.last_index()));
                self.send(
                    from,
                    Message::AppendResponse {
                        term: t,
                        success: true,
                        index: idx,
                    },
                );
            }
            Message::TimeoutNow { term } => {
                // Only from the leader of this node's term: campaign now,
                // without pre-vote (the leader agreed to step aside).
                if term == self.term && self.leader == Some(from) && self.role == Role::Follower {
                    self.campaign_with(now, true);
                }
            }
            Message::AppendResponse {
                term,
                success,
                index,
            } => {
                if term > self.term {
                    self.become_follower(now, term, None);
                    return;
                }
                if self.role != Role::Leader || term != self.term {
                    return;
                }
                let last = self.last_index();
                let Some(p) = self.progress.get_mut(&from) else {
                    return;
                };
                p.heard = now;
                if success {
                    if index > p.matched {
                        p.matched = index;
                    }
                    p.next = p.next.max(index + 1);
                    let behind = p.next <= last;
                    self.maybe_commit();
                    if self.transfer.is_some_and(|(t, _)| t == from) {
                        self.maybe_hand_over(from);
                    } else if behind {
                        self.send_append(from);
                    }
                } else {
                    // Walk back, skipping to the follower's end if shorter.
                    let back = p.next.saturating_sub(1).min(index + 1).max(p.matched + 1);
                    if back < p.next {
                        p.next = back.max(1);
                        self.send_append(from);
                    }
                }
            }
        }
    }
}

mod election;
pub mod sim;
pub mod storage;

#[cfg(test)]
mod tests;
