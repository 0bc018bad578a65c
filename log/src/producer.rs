//! Idempotent-producer state: per producer id, its epoch and the sequence
//! ranges and offsets of its last [`KEEP`] batches, as Kafka keeps them.
//!
//! * A batch whose sequence range equals one of those is a retried
//!   duplicate: the log returns the original offsets and appends nothing.
//! * Otherwise its first sequence must follow the last one (wrapping at
//!   `i32::MAX` to 0); a new producer or a new epoch starts at 0.
//! * An epoch older than the producer's current one is fenced.
//!
//! The state is rebuilt at open from a snapshot (taken at segment roll and
//! kept in the metadata store) plus a replay of the batches after it.

use std::collections::{BTreeMap, VecDeque};

use crate::batch::BatchHeader;
use crate::{Error, Result};

/// Batches remembered per producer (Kafka's in-flight request limit).
pub const KEEP: usize = 5;

/// One remembered batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    /// First sequence.
    pub first_seq: i32,
    /// Last sequence.
    pub last_seq: i32,
    /// First offset.
    pub first_offset: u64,
    /// Last offset.
    pub last_offset: u64,
}

/// One producer's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// Its last batches, oldest first.
    pub batches: VecDeque<BatchMeta>,
}

/// What an append must do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// A retried duplicate of the batch at these offsets.
    Duplicate {
        /// First offset of the original.
        first_offset: u64,
        /// Last offset of the original.
        last_offset: u64,
    },
}

/// All producers of a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: BTreeMap<i64, ProducerEntry>,
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

impl ProducerState {
    /// Decides what to do with a batch before it is appended.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict> {
        let p = h.producer;
        if p.id < 0 {
            return Ok(Verdict::Append);
        }
        if p.base_sequence < 0 {
            return Err(Error::InvalidBatch(format!(
                "producer {} sent a negative base sequence",
                p.id
            )));
        }
        let last_seq = h.last_sequence();
        let out_of_order = |expected: i32| Error::OutOfOrderSequence {
            producer_id: p.id,
            epoch: p.epoch,
            expected,
            got: p.base_sequence,
        };
        // A new producer, or a new epoch of one, starts at sequence 0.
        let Some(e) = self.producers.get(&p.id).filter(|e| p.epoch <= e.epoch) else {
            if p.base_sequence != 0 {
                return Err(out_of_order(0));
            }
            return Ok(Verdict::Append);
        };
        if p.epoch < e.epoch {
            return Err(Error::ProducerFenced {
                producer_id: p.id,
                epoch: p.epoch,
                current: e.epoch,
            });
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == p.base_sequence && b.last_seq == last_seq)
        {
            return Ok(Verdict::Duplicate {
                first_offset: b.first_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = e.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if p.base_sequence != expected {
            return Err(out_of_order(expected));
        }
        Ok(Verdict::Append)
    }

    /// Records an appended (or replayed) batch.
    pub fn update(&mut self, h: &BatchHeader) {
        let p = h.producer;
        if p.id < 0 {
            return;
        }
        let e = self.producers.entry(p.id).or_default();
        if p.epoch != e.epoch {
            e.epoch = p.epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq: p.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while e.batches.len() > KEEP {
            e.batches.pop_front();
        }
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// One producer's state.
    pub fn get(&self, id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&id)
    }

    /// Snapshot bytes: `count u32`, then per producer `id i64, epoch i16,
    /// n u8, n x (first_seq i32, last_seq i32, first_offset u64,
    /// last_offset u64)`, all big-endian, then a CRC-32 of everything
    /// before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, e) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses snapshot bytes; `Err` with a reason if they are damaged.
    pub fn decode(b: &[u8]) -> std::result::Result<ProducerState, &'static str> {
        if b.len() < 8 {
            return Err("producer snapshot too short");
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err("producer snapshot checksum mismatch");
        }
        let mut r = Reader { b: body, at: 0 };
        let n = r.u32()?;
        let mut producers = BTreeMap::new();
        for _ in 0..n {
            let id = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let k = r.u8()? as usize;
            if k > KEEP {
                return Err("producer snapshot holds too many batches");
            }
            let mut batches = VecDeque::new();
            for _ in 0..k {
                batches.push_back(BatchMeta {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    first_offset: r.u64()?,
                    last_offset: r.u64()?,
                });
            }
            producers.insert(id, ProducerEntry { epoch, batches });
        }
        if r.at != body.len() {
            return Err("bytes after the producer snapshot");
        }
        Ok(ProducerState { producers })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], &'static str> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or("producer snapshot cut short")?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, &'static str> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> std::result::Result<u32, &'static str> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, &'static str> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
}
