//! Follower fetches over Kafka's Fetch API (`replica.fetch.protocol=kafka`):
//! one thread per (leader, partition) keeps a connection to the leader's
//! Kafka listener and sends the replica's fetches as Fetch v12 requests
//! with the replica id set, as Kafka's replica fetcher does; the answers
//! go back to the driver. Strata's two additions travel as tagged fields
//! of the partition: the follower's durable (fsynced) end, which the
//! leader's high watermark counts, and its broker epoch (KIP-903).
//! A lost connection or a bad answer drops the fetch; the replica sends
//! it again after its fetch timeout.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam::channel::{self, Sender};
use kafka_protocol::messages::{
    fetch_request, ApiKey, BrokerId, FetchRequest as KFetch, FetchResponse as KFetchResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use strata_log::batch::{Batch, Parsed};
use strata_replication::msg::{ErrorCode, FetchRequest, FetchResponse};

use super::{Cluster, Input, Node};
use crate::error::{io, Result};

/// Tag of the follower's durable end (u64, big-endian).
pub const TAG_DURABLE: i32 = 0x5301;
/// Tag of the follower's broker epoch (u64, big-endian).
pub const TAG_BROKER_EPOCH: i32 = 0x5302;
/// The Fetch version followers send.
const VERSION: i16 = 12;

/// Starts the fetcher of `topic`/`index` at `leader`.
pub(super) fn spawn(
    c: Arc<Cluster>,
    leader: Node,
    topic: String,
    index: u32,
) -> Result<Sender<FetchRequest>> {
    let (tx, rx) = channel::bounded::<FetchRequest>(16);
    std::thread::Builder::new()
        .name(format!("strata-fetch-{}-{topic}-{index}", leader.id))
        .spawn(move || {
            let mut conn: Option<TcpStream> = None;
            let mut cid = 0i32;
            while let Ok(f) = rx.recv() {
                if conn.is_none() {
                    conn = connect(&leader, c.cfg.fetch_wait_max_ms);
                }
                let Some(s) = conn.as_mut() else {
                    continue;
                };
                cid = cid.wrapping_add(1);
                match fetch_once(s, c.me, &topic, index, cid, &f) {
                    Ok(resp) => {
                        let _ = c.tx.send(Input::FetchAnswer {
                            from: leader.id,
                            resp,
                        });
                    }
                    Err(e) => {
                        tracing::info!(leader = leader.id, topic = %topic, partition = index, error = %e, "replica fetch failed");
                        conn = None;
                    }
                }
            }
        })
        .map_err(io("starting a replica fetcher"))?;
    Ok(tx)
}

fn connect(leader: &Node, wait_ms: u64) -> Option<TcpStream> {
    let addr: SocketAddr = (leader.host.as_str(), leader.port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_nodelay(true);
    // The leader holds an empty fetch up to the wait: answers come within
    // it, or the leader is gone.
    let _ = s.set_read_timeout(Some(Duration::from_millis(wait_ms + 2000)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    Some(s)
}

fn fetch_once(
    s: &mut TcpStream,
    me: u32,
    topic: &str,
    index: u32,
    cid: i32,
    f: &FetchRequest,
) -> std::result::Result<FetchResponse, String> {
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = index as i32;
    fp.current_leader_epoch = f.leader_epoch;
    fp.fetch_offset = f.fetch_offset as i64;
    fp.last_fetched_epoch = f.last_fetched_epoch;
    fp.log_start_offset = -1;
    fp.partition_max_bytes = i32::try_from(f.max_bytes).unwrap_or(i32::MAX);
    let mut tags = BTreeMap::new();
    tags.insert(
        TAG_DURABLE,
        Bytes::copy_from_slice(&f.durable_offset.to_be_bytes()),
    );
    let epoch = f.replica.map_or(0, |(_, e)| e);
    tags.insert(
        TAG_BROKER_EPOCH,
        Bytes::copy_from_slice(&epoch.to_be_bytes()),
    );
    fp.unknown_tagged_fields = tags;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
    ft.partitions = vec![fp];
    let mut req = KFetch::default();
    req.replica_id = BrokerId(me as i32);
    req.max_wait_ms = 0;
    req.min_bytes = 1;
    req.max_bytes = i32::try_from(f.max_bytes).unwrap_or(i32::MAX);
    req.topics = vec![ft];
    let frame =
        crate::wire::client::frame("strata-replica-fetcher", ApiKey::Fetch, VERSION, cid, &req)
            .map_err(|e| e.to_string())?;
    s.write_all(&frame).map_err(|e| e.to_string())?;
    let mut body = crate::wire::client::read_response(s, true).map_err(|e| e.to_string())?;
    let r = KFetchResponse::decode(&mut body, VERSION).map_err(|e| e.to_string())?;
    let p = r
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("an answer without the partition")?;
    let error = match p.error_code {
        0 => None,
        c => Some(ErrorCode::from_kafka_code(c).unwrap_or(ErrorCode::NotLeaderOrFollower)),
    };
    let diverging = (p.diverging_epoch.epoch >= 0 && p.diverging_epoch.end_offset >= 0)
        .then_some((p.diverging_epoch.epoch, p.diverging_epoch.end_offset as u64));
    let mut batches = Vec::new();
    let mut rest = p.records.clone().unwrap_or_default();
    while !rest.is_empty() {
        match Batch::parse(&rest) {
            Parsed::Batch(b) => {
                let n = b.bytes.len();
                batches.push(b);
                rest = rest.slice(n..);
            }
            // A cut-off last batch (max bytes): the next fetch gets it.
            Parsed::Incomplete => break,
            Parsed::Invalid(why) => return Err(format!("record batch: {why}")),
        }
    }
    Ok(FetchResponse {
        corr: f.corr,
        partition: f.partition,
        leader_epoch: p.current_leader.leader_epoch,
        error,
        high_watermark: u64::try_from(p.high_watermark).unwrap_or(0),
        diverging,
        log_start_offset: u64::try_from(p.log_start_offset).unwrap_or(0),
        batches,
    })
}

/// The leader's side: the answer to a follower's Kafka Fetch, with its
/// record batches as chunks for the socket (slices of the segments: the
/// same uncopied path consumers get).
pub fn encode_answer(
    me: u32,
    topic: &TopicName,
    index: i32,
    r: FetchResponse,
) -> (KFetchResponse, Vec<Bytes>) {
    use kafka_protocol::messages::fetch_response;
    let mut pd = fetch_response::PartitionData::default();
    pd.partition_index = index;
    pd.error_code = r.error.map_or(0, |e| e.kafka_code());
    pd.high_watermark = r.high_watermark as i64;
    pd.last_stable_offset = r.high_watermark as i64;
    pd.log_start_offset = r.log_start_offset as i64;
    if let Some((e, end)) = r.diverging {
        pd.diverging_epoch.epoch = e;
        pd.diverging_epoch.end_offset = end as i64;
    }
    pd.current_leader.leader_id = BrokerId(me as i32);
    pd.current_leader.leader_epoch = r.leader_epoch;
    pd.records = Some(Bytes::new());
    let mut t = fetch_response::FetchableTopicResponse::default();
    t.topic = topic.clone();
    t.partitions = vec![pd];
    let mut out = KFetchResponse::default();
    out.responses = vec![t];
    (out, r.batches.into_iter().map(|b| b.bytes).collect())
}

/// Reads a u64 tag of a fetched partition.
pub fn tag_u64(tags: &BTreeMap<i32, Bytes>, tag: i32) -> Option<u64> {
    let b = tags.get(&tag)?;
    let a: [u8; 8] = b.as_ref().try_into().ok()?;
    Some(u64::from_be_bytes(a))
}
