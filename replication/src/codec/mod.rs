//! The bytes of the messages nodes send each other: the replication
//! protocol's [`Msg`] (replica fetches, produce forwarding, broker
//! registrations and heartbeats, ISR changes, topic creation) and Raft's
//! [`raft::Message`]. docs/cluster.md has the byte layout.
//!
//! Big-endian fixed-width integers; a string or byte run is a u32 length
//! and its bytes; a list is a u32 count and its items; an option is a
//! 0/1 byte and the value. Record batches travel as their own bytes and
//! are checked (CRC-32C and records) again on arrival, so a damaged frame
//! can never put a wrong batch in a log. Decoding never trusts a count:
//! each item takes at least one byte, so a count past the bytes left is
//! refused before anything is allocated.

use bytes::Bytes;
use strata_log::Batch;

use crate::msg::{
    Acks, AlterPartition, BrokerInfo, ErrorCode, FetchRequest, FetchResponse, Msg, PartitionState,
    ProduceRequest, ProduceResult,
};
use crate::raft::{self, Entry, Snapshot};

/// Why a frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message at byte {at}: {what}")]
pub struct DecodeError {
    /// Byte position in the body.
    pub at: usize,
    /// What was wrong.
    pub what: String,
}

type R<T> = std::result::Result<T, DecodeError>;

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn len(&mut self, n: usize) {
        self.u32(n as u32);
    }
    fn code(&mut self, c: ErrorCode) {
        self.u16(c.kafka_code() as u16);
    }
    fn ids(&mut self, v: &[u32]) {
        self.len(v.len());
        for &x in v {
            self.u32(x);
        }
    }
    fn state(&mut self, s: &PartitionState) {
        self.u32(s.partition);
        self.ids(&s.replicas);
        match s.leader {
            Some(l) => {
                self.bool(true);
                self.u32(l);
            }
            None => self.bool(false),
        }
        self.i32(s.leader_epoch);
        self.i32(s.partition_epoch);
        self.ids(&s.isr);
        self.ids(&s.elr);
        self.u32(s.controller_epoch);
        self.bytes(s.topic.as_bytes());
        self.u32(s.index);
    }
}

struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    fn err<T>(&self, what: impl Into<String>) -> R<T> {
        Err(DecodeError {
            at: self.at,
            what: what.into(),
        })
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.b.len() - self.at < n {
            return self.err(format!("{n} bytes wanted, {} left", self.b.len() - self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.arr::<1>()?[0])
    }
    fn bool(&mut self) -> R<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => self.err(format!("boolean byte {v}")),
        }
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn i32(&mut self) -> R<i32> {
        Ok(i32::from_be_bytes(self.arr()?))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> R<String> {
        let b = self.bytes()?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("string not UTF-8"),
        }
    }
    /// A list count, refused if the items could not fit in what is left
    /// (each is at least `min` bytes).
    fn len(&mut self, min: usize) -> R<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.b.len() - self.at {
            return self.err(format!("list of {n} items past the frame's end"));
        }
        Ok(n)
    }
    fn code(&mut self) -> R<ErrorCode> {
        let c = self.u16()? as i16;
        match ErrorCode::from_kafka_code(c) {
            Some(e) => Ok(e),
            None => self.err(format!("unknown error code {c}")),
        }
    }
    fn ids(&mut self) -> R<Vec<u32>> {
        let n = self.len(4)?;
        (0..n).map(|_| self.u32()).collect()
    }
    fn state(&mut self) -> R<PartitionState> {
        Ok(PartitionState {
            partition: self.u32()?,
            replicas: self.ids()?,
            leader: if self.bool()? {
                Some(self.u32()?)
            } else {
                None
            },
            leader_epoch: self.i32()?,
            partition_epoch: self.i32()?,
            isr: self.ids()?,
            elr: self.ids()?,
            controller_epoch: self.u32()?,
            topic: self.string()?,
            index: self.u32()?,
        })
    }
    fn batch(&mut self) -> R<Batch> {
        let b = self.bytes()?;
        match Batch::from_bytes(Bytes::copy_from_slice(b)) {
            Ok(b) => Ok(b),
            Err(e) => self.err(format!("record batch: {e}")),
        }
    }
    fn end(&self) -> R<()> {
        if self.at != self.b.len() {
            return self.err(format!(
                "{} bytes after the message",
                self.b.len() - self.at
            ));
        }
        Ok(())
    }
}

/// Encodes a protocol message.
pub fn encode_msg(m: &Msg) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(64));
    match m {
        Msg::Fetch(f) => {
            w.u8(1);
            w.u64(f.corr);
            w.u32(f.partition);
            match f.replica {
                Some((n, e)) => {
                    w.bool(true);
                    w.u32(n);
                    w.u64(e);
                }
                None => w.bool(false),
            }
            w.i32(f.leader_epoch);
            w.u64(f.fetch_offset);
            w.i32(f.last_fetched_epoch);
            w.u64(f.durable_offset);
            w.u64(f.max_bytes as u64);
        }
        Msg::FetchResponse(r) => {
            w.u8(2);
            w.u64(r.corr);
            w.u32(r.partition);
            w.i32(r.leader_epoch);
            match r.error {
                Some(c) => {
                    w.bool(true);
                    w.code(c);
                }
                None => w.bool(false),
            }
            w.u64(r.high_watermark);
            match r.diverging {
                Some((e, o)) => {
                    w.bool(true);
                    w.i32(e);
                    w.u64(o);
                }
                None => w.bool(false),
            }
            w.u64(r.log_start_offset);
            w.len(r.batches.len());
            for b in &r.batches {
                w.bytes(&b.bytes);
            }
        }
        Msg::Produce(p) => {
            w.u8(3);
            w.u64(p.corr);
            w.u32(p.partition);
            w.u8(match p.acks {
                Acks::None => 0,
                Acks::Leader => 1,
                Acks::All => 2,
            });
            w.u64(p.timeout_ms);
            w.bytes(&p.batch.bytes);
        }
        Msg::ProduceResponse {
            corr,
            partition,
            result,
        } => {
            w.u8(4);
            w.u64(*corr);
            w.u32(*partition);
            match result {
                ProduceResult::Ok { first, last } => {
                    w.u8(0);
                    w.u64(*first);
                    w.u64(*last);
                }
                ProduceResult::Failed(c) => {
                    w.u8(1);
                    w.code(*c);
                }
                ProduceResult::Indeterminate(c) => {
                    w.u8(2);
                    w.code(*c);
                }
            }
        }
        Msg::ListOffsets {
            corr,
            partition,
            leader_epoch,
        } => {
            w.u8(5);
            w.u64(*corr);
            w.u32(*partition);
            w.i32(*leader_epoch);
        }
        Msg::ListOffsetsResponse {
            corr,
            partition,
            result,
        } => {
            w.u8(6);
            w.u64(*corr);
            w.u32(*partition);
            match result {
                Ok(o) => {
                    w.bool(true);
                    w.u64(*o);
                }
                Err(c) => {
                    w.bool(false);
                    w.code(*c);
                }
            }
        }
        Msg::Metadata { corr, partition } => {
            w.u8(7);
            w.u64(*corr);
            w.u32(*partition);
        }
        Msg::MetadataResponse { corr, state } => {
            w.u8(8);
            w.u64(*corr);
            match state {
                Some(s) => {
                    w.bool(true);
                    w.state(s);
                }
                None => w.bool(false),
            }
        }
        Msg::Register {
            node,
            incarnation,
            endpoint,
        } => {
            w.u8(9);
            w.u32(*node);
            w.u64(*incarnation);
            w.bytes(endpoint.as_bytes());
        }
        Msg::RegisterResponse {
            incarnation,
            broker_epoch,
            controller_epoch,
        } => {
            w.u8(10);
            w.u64(*incarnation);
            w.u64(*broker_epoch);
            w.u32(*controller_epoch);
        }
        Msg::Heartbeat {
            node,
            broker_epoch,
            known,
            brokers_seen,
        } => {
            w.u8(11);
            w.u32(*node);
            w.u64(*broker_epoch);
            w.len(known.len());
            for &(p, e) in known {
                w.u32(p);
                w.i32(e);
            }
            w.u32(*brokers_seen);
        }
        Msg::HeartbeatResponse {
            controller_epoch,
            broker_epoch,
            stale,
            fenced,
            updates,
            brokers,
        } => {
            w.u8(12);
            w.u32(*controller_epoch);
            w.u64(*broker_epoch);
            w.bool(*stale);
            w.bool(*fenced);
            w.len(updates.len());
            for s in updates {
                w.state(s);
            }
            match brokers {
                Some(list) => {
                    w.bool(true);
                    w.len(list.len());
                    for b in list {
                        w.u32(b.node);
                        w.bytes(b.endpoint.as_bytes());
                        w.bool(b.fenced);
                    }
                }
                None => w.bool(false),
            }
        }
        Msg::AlterPartition(a) => {
            w.u8(13);
            w.u32(a.partition);
            w.u32(a.leader);
            w.i32(a.leader_epoch);
            w.i32(a.partition_epoch);
            w.len(a.new_isr.len());
            for &(n, e) in &a.new_isr {
                w.u32(n);
                w.u64(e);
            }
        }
        Msg::AlterPartitionResponse {
            controller_epoch,
            partition,
            result,
        } => {
            w.u8(14);
            w.u32(*controller_epoch);
            w.u32(*partition);
            match result {
                Ok(s) => {
                    w.bool(true);
                    w.state(s);
                }
                Err(c) => {
                    w.bool(false);
                    w.code(*c);
                }
            }
        }
        Msg::PartitionUpdate(s) => {
            w.u8(15);
            w.state(s);
        }
        Msg::CreateTopic {
            corr,
            name,
            partitions,
            replication_factor,
        } => {
            w.u8(16);
            w.u64(*corr);
            w.bytes(name.as_bytes());
            w.u32(*partitions);
            w.u32(*replication_factor);
        }
        Msg::DeleteTopic { corr, name } => {
            w.u8(20);
            w.u64(*corr);
            w.bytes(name.as_bytes());
        }
        Msg::DeleteTopicResponse { corr, result } => {
            w.u8(21);
            w.u64(*corr);
            match result {
                Ok(n) => {
                    w.bool(true);
                    w.u32(*n);
                }
                Err(c) => {
                    w.bool(false);
                    w.code(*c);
                }
            }
        }
        Msg::CreateTopicResponse { corr, result } => {
            w.u8(17);
            w.u64(*corr);
            match result {
                Ok(states) => {
                    w.bool(true);
                    w.len(states.len());
                    for s in states {
                        w.state(s);
                    }
                }
                Err(c) => {
                    w.bool(false);
                    w.code(*c);
                }
            }
        }
        Msg::ControlledShutdown { node, broker_epoch } => {
            w.u8(18);
            w.u32(*node);
            w.u64(*broker_epoch);
        }
        Msg::ControlledShutdownResponse {
            controller_epoch,
            broker_epoch,
            remaining,
        } => {
            w.u8(19);
            w.u32(*controller_epoch);
            w.u64(*broker_epoch);
            w.u32(*remaining);
        }
    }
    w.0
}

/// Decodes [`encode_msg`]'s output; anything else is an error, never a
/// panic.
pub fn decode_msg(b: &[u8]) -> R<Msg> {
    let mut r = Rd { b, at: 0 };
    let m = match r.u8()? {
        1 => Msg::Fetch(FetchRequest {
            corr: r.u64()?,
            partition: r.u32()?,
            replica: if r.bool()? {
                Some((r.u32()?, r.u64()?))
            } else {
                None
            },
            leader_epoch: r.i32()?,
            fetch_offset: r.u64()?,
            last_fetched_epoch: r.i32()?,
            durable_offset: r.u64()?,
            max_bytes: usize::try_from(r.u64()?).unwrap_or(usize::MAX),
        }),
        2 => {
            let corr = r.u64()?;
            let partition = r.u32()?;
            let leader_epoch = r.i32()?;
            let error = if r.bool()? { Some(r.code()?) } else { None };
            let high_watermark = r.u64()?;
            let diverging = if r.bool()? {
                Some((r.i32()?, r.u64()?))
            } else {
                None
            };
            let log_start_offset = r.u64()?;
            let n = r.len(4)?;
            let batches = (0..n).map(|_| r.batch()).collect::<R<Vec<_>>>()?;
            Msg::FetchResponse(FetchResponse {
                corr,
                partition,
                leader_epoch,
                error,
                high_watermark,
                diverging,
                log_start_offset,
                batches,
            })
        }
        3 => Msg::Produce(ProduceRequest {
            corr: r.u64()?,
            partition: r.u32()?,
            acks: match r.u8()? {
                0 => Acks::None,
                1 => Acks::Leader,
                2 => Acks::All,
                v => return r.err(format!("acks {v}")),
            },
            timeout_ms: r.u64()?,
            batch: r.batch()?,
        }),
        4 => Msg::ProduceResponse {
            corr: r.u64()?,
            partition: r.u32()?,
            result: match r.u8()? {
                0 => ProduceResult::Ok {
                    first: r.u64()?,
                    last: r.u64()?,
                },
                1 => ProduceResult::Failed(r.code()?),
                2 => ProduceResult::Indeterminate(r.code()?),
                v => return r.err(format!("produce result {v}")),
            },
        },
        5 => Msg::ListOffsets {
            corr: r.u64()?,
            partition: r.u32()?,
            leader_epoch: r.i32()?,
        },
        6 => Msg::ListOffsetsResponse {
            corr: r.u64()?,
            partition: r.u32()?,
            result: if r.bool()? {
                Ok(r.u64()?)
            } else {
                Err(r.code()?)
            },
        },
        7 => Msg::Metadata {
            corr: r.u64()?,
            partition: r.u32()?,
        },
        8 => Msg::MetadataResponse {
            corr: r.u64()?,
            state: if r.bool()? { Some(r.state()?) } else { None },
        },
        9 => Msg::Register {
            node: r.u32()?,
            incarnation: r.u64()?,
            endpoint: r.string()?,
        },
        10 => Msg::RegisterResponse {
            incarnation: r.u64()?,
            broker_epoch: r.u64()?,
            controller_epoch: r.u32()?,
        },
        11 => {
            let node = r.u32()?;
            let broker_epoch = r.u64()?;
            let n = r.len(8)?;
            let known = (0..n)
                .map(|_| Ok((r.u32()?, r.i32()?)))
                .collect::<R<Vec<_>>>()?;
            Msg::Heartbeat {
                node,
                broker_epoch,
                known,
                brokers_seen: r.u32()?,
            }
        }
        12 => {
            let controller_epoch = r.u32()?;
            let broker_epoch = r.u64()?;
            let stale = r.bool()?;
            let fenced = r.bool()?;
            let n = r.len(8)?;
            let updates = (0..n).map(|_| r.state()).collect::<R<Vec<_>>>()?;
            let brokers = if r.bool()? {
                // node (4), endpoint length (4), fenced (1)
                let n = r.len(9)?;
                Some(
                    (0..n)
                        .map(|_| {
                            Ok(BrokerInfo {
                                node: r.u32()?,
                                endpoint: r.string()?,
                                fenced: r.bool()?,
                            })
                        })
                        .collect::<R<Vec<_>>>()?,
                )
            } else {
                None
            };
            Msg::HeartbeatResponse {
                controller_epoch,
                broker_epoch,
                stale,
                fenced,
                updates,
                brokers,
            }
        }
        13 => {
            let partition = r.u32()?;
            let leader = r.u32()?;
            let leader_epoch = r.i32()?;
            let partition_epoch = r.i32()?;
            let n = r.len(12)?;
            let new_isr = (0..n)
                .map(|_| Ok((r.u32()?, r.u64()?)))
                .collect::<R<Vec<_>>>()?;
            Msg::AlterPartition(AlterPartition {
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                new_isr,
            })
        }
        14 => Msg::AlterPartitionResponse {
            controller_epoch: r.u32()?,
            partition: r.u32()?,
            result: if r.bool()? {
                Ok(r.state()?)
            } else {
                Err(r.code()?)
            },
        },
        15 => Msg::PartitionUpdate(r.state()?),
        16 => Msg::CreateTopic {
            corr: r.u64()?,
            name: r.string()?,
            partitions: r.u32()?,
            replication_factor: r.u32()?,
        },
        17 => {
            let corr = r.u64()?;
            let result = if r.bool()? {
                let n = r.len(8)?;
                Ok((0..n).map(|_| r.state()).collect::<R<Vec<_>>>()?)
            } else {
                Err(r.code()?)
            };
            Msg::CreateTopicResponse { corr, result }
        }
        20 => Msg::DeleteTopic {
            corr: r.u64()?,
            name: r.string()?,
        },
        21 => Msg::DeleteTopicResponse {
            corr: r.u64()?,
            result: if r.bool()? {
                Ok(r.u32()?)
            } else {
                Err(r.code()?)
            },
        },
        18 => Msg::ControlledShutdown {
            node: r.u32()?,
            broker_epoch: r.u64()?,
        },
        19 => Msg::ControlledShutdownResponse {
            controller_epoch: r.u32()?,
            broker_epoch: r.u64()?,
            remaining: r.u32()?,
        },
        t => return r.err(format!("unknown message type {t}")),
    };
    r.end()?;
    Ok(m)
}

/// Encodes a Raft message.
pub fn encode_raft(m: &raft::Message) -> Vec<u8> {
    use raft::Message as M;
    let mut w = W(Vec::with_capacity(64));
    match m {
        M::PreVote {
            term,
            last_index,
            last_term,
        } => {
            w.u8(1);
            w.u64(*term);
            w.u64(*last_index);
            w.u64(*last_term);
        }
        M::PreVoteResponse {
            term,
            granted,
            current_term,
        } => {
            w.u8(2);
            w.u64(*term);
            w.bool(*granted);
            w.u64(*current_term);
        }
        M::Vote {
            term,
            last_index,
            last_term,
            transfer,
        } => {
            w.u8(3);
            w.u64(*term);
            w.u64(*last_index);
            w.u64(*last_term);
            w.bool(*transfer);
        }
        M::TimeoutNow { term } => {
            w.u8(4);
            w.u64(*term);
        }
        M::VoteResponse { term, granted } => {
            w.u8(5);
            w.u64(*term);
            w.bool(*granted);
        }
        M::Append {
            term,
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            w.u8(6);
            w.u64(*term);
            w.u64(*prev_index);
            w.u64(*prev_term);
            w.len(entries.len());
            for e in entries {
                w.u64(e.term);
                w.u64(e.index);
                w.bytes(&e.data);
            }
            w.u64(*commit);
        }
        M::Snapshot {
            term,
            commit,
            snapshot,
        } => {
            w.u8(7);
            w.u64(*term);
            w.u64(*commit);
            w.u64(snapshot.index);
            w.u64(snapshot.term);
            w.bytes(&snapshot.data);
        }
        M::AppendResponse {
            term,
            success,
            index,
        } => {
            w.u8(8);
            w.u64(*term);
            w.bool(*success);
            w.u64(*index);
        }
    }
    w.0
}

/// Decodes [`encode_raft`]'s output.
pub fn decode_raft(b: &[u8]) -> R<raft::Message> {
    use raft::Message as M;
    let mut r = Rd { b, at: 0 };
    let m = match r.u8()? {
        1 => M::PreVote {
            term: r.u64()?,
            last_index: r.u64()?,
            last_term: r.u64()?,
        },
        2 => M::PreVoteResponse {
            term: r.u64()?,
            granted: r.bool()?,
            current_term: r.u64()?,
        },
        3 => M::Vote {
            term: r.u64()?,
            last_index: r.u64()?,
            last_term: r.u64()?,
            transfer: r.bool()?,
        },
        4 => M::TimeoutNow { term: r.u64()? },
        5 => M::VoteResponse {
            term: r.u64()?,
            granted: r.bool()?,
        },
        6 => {
            let term = r.u64()?;
            let prev_index = r.u64()?;
            let prev_term = r.u64()?;
            let n = r.len(20)?;
            let entries = (0..n)
                .map(|_| {
                    Ok(Entry {
                        term: r.u64()?,
                        index: r.u64()?,
                        data: Bytes::copy_from_slice(r.bytes()?),
                    })
                })
                .collect::<R<Vec<_>>>()?;
            M::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit: r.u64()?,
            }
        }
        7 => M::Snapshot {
            term: r.u64()?,
            commit: r.u64()?,
            snapshot: Snapshot {
                index: r.u64()?,
                term: r.u64()?,
                data: Bytes::copy_from_slice(r.bytes()?),
            },
        },
        8 => M::AppendResponse {
            term: r.u64()?,
            success: r.bool()?,
            index: r.u64()?,
        },
        t => return r.err(format!("unknown raft message type {t}")),
    };
    r.end()?;
    Ok(m)
}

#[cfg(test)]
mod tests;
