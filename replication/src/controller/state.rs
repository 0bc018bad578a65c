//! The controller's durable state and its text form (one record a line,
//! ending with a CRC-32 line; docs/cluster.md).

use std::collections::BTreeMap;

use crate::msg::{NodeId, PartitionState};
use crate::{Error, Result};

/// What the controller keeps on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerState {
    /// The controller epoch (bumped at each start).
    pub epoch: u32,
    /// The next broker epoch to hand out.
    pub next_broker_epoch: u64,
    /// Registered brokers: (broker epoch, incarnation).
    pub brokers: BTreeMap<NodeId, (u64, u64)>,
    /// Where each registered broker said it is reached (`host:port`);
    /// brokers that gave none (the simulator's) are absent.
    pub endpoints: BTreeMap<NodeId, String>,
    /// Every partition's state.
    pub partitions: BTreeMap<u32, PartitionState>,
}

/// A broker endpoint the state can hold: `host:port`, printable, no
/// spaces (the state is a text of space-separated fields), bounded.
pub fn valid_endpoint(s: &str) -> bool {
    s.len() <= 255
        && s.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        && s.bytes().all(|b| b.is_ascii_graphic())
}

fn list(v: &[NodeId]) -> String {
    v.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_list(s: &str) -> Option<Vec<NodeId>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|x| x.parse().ok()).collect()
}

impl ControllerState {
    /// Text lines, one record each, ending with a checksum line.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("controller {} {}\n", self.epoch, self.next_broker_epoch);
        for (n, (e, inc)) in &self.brokers {
            let at = self.endpoints.get(n).map_or(".", String::as_str);
            s.push_str(&format!("broker {n} {e} {inc} {at}\n"));
        }
        for p in self.partitions.values() {
            s.push_str(&format!(
                "partition {} {} {} {} {} {} {} {} {}\n",
                p.partition,
                list(&p.replicas),
                p.leader.map_or(-1, i64::from),
                p.leader_epoch,
                p.partition_epoch,
                list(&p.isr),
                list(&p.elr),
                p.controller_epoch,
                if p.topic.is_empty() {
                    ".".to_string()
                } else {
                    format!("{}/{}", p.topic, p.index)
                }
            ));
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!("crc {crc}\n"));
        s.into_bytes()
    }

    /// Parses [`ControllerState::encode`]'s output; any damage is an error.
    pub fn decode(b: &[u8]) -> Result<ControllerState> {
        let bad = |m: &str| Error::BadControllerState(m.to_string());
        let text = std::str::from_utf8(b).map_err(|_| bad("not UTF-8"))?;
        let body_end = text.rfind("crc ").ok_or_else(|| bad("no checksum line"))?;
        let crc: u32 = text[body_end + 4..]
            .trim()
            .parse()
            .map_err(|_| bad("bad checksum line"))?;
        if crc32fast::hash(&text.as_bytes()[..body_end]) != crc {
            return Err(bad("checksum mismatch"));
        }
        let mut st = ControllerState {
            epoch: 0,
            next_broker_epoch: 1,
            brokers: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            partitions: BTreeMap::new(),
        };
        let mut seen_head = false;
        for line in text[..body_end].lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> Result<i64> {
                f.get(i)
                    .and_then(|x| x.parse::<i64>().ok())
                    .ok_or_else(|| bad(&format!("bad field {i} in {line:?}")))
            };
            let ids = |i: usize| -> Result<Vec<NodeId>> {
                f.get(i)
                    .and_then(|x| parse_list(x))
                    .ok_or_else(|| bad(&format!("bad list {i} in {line:?}")))
            };
            match f.first().copied() {
                Some("controller") => {
                    st.epoch = num(1)? as u32;
                    st.next_broker_epoch = num(2)? as u64;
                    seen_head = true;
                }
                Some("broker") => {
                    let inc: u64 = f
                        .get(3)
                        .and_then(|x| x.parse().ok())
                        .ok_or_else(|| bad(&format!("bad incarnation in {line:?}")))?;
                    let n = num(1)? as NodeId;
                    st.brokers.insert(n, (num(2)? as u64, inc));
                    // No field: written before brokers had endpoints.
                    match f.get(4).copied() {
                        None | Some(".") => {}
                        Some(at) if valid_endpoint(at) => {
                            st.endpoints.insert(n, at.to_string());
                        }
                        Some(_) => return Err(bad(&format!("bad endpoint in {line:?}"))),
                    }
                }
                Some("partition") => {
                    let leader = num(3)?;
                    let p = PartitionState {
                        partition: num(1)? as u32,
                        replicas: ids(2)?,
                        leader: (leader >= 0).then_some(leader as NodeId),
                        leader_epoch: num(4)? as i32,
                        partition_epoch: num(5)? as i32,
                        isr: ids(6)?,
                        elr: ids(7)?,
                        controller_epoch: num(8)? as u32,
                        topic: String::new(),
                        index: 0,
                    };
                    let mut p = p;
                    match f.get(9).copied() {
                        Some(".") => {}
                        Some(t) => {
                            let (name, idx) = t
                                .rsplit_once('/')
                                .and_then(|(n, i)| Some((n, i.parse::<u32>().ok()?)))
                                .filter(|(n, _)| !n.is_empty())
                                .ok_or_else(|| bad(&format!("bad topic field in {line:?}")))?;
                            p.topic = name.to_string();
                            p.index = idx;
                        }
                        None => return Err(bad(&format!("no topic field in {line:?}"))),
                    }
                    st.partitions.insert(p.partition, p);
                }
                _ => return Err(bad(&format!("unknown line {line:?}"))),
            }
        }
        if !seen_head {
            return Err(bad("no controller line"));
        }
        Ok(st)
    }
}
