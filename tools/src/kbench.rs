//! `strata kbench produce|consume`: a load generator that speaks the Kafka
//! protocol itself, with batches encoded once before the clock starts, so
//! it measures the broker and not a client library.
//!
//! produce: each connection sends Produce requests (one batch of
//! `--batch-size` records each) for one partition, connection i to
//! partition i mod P, on that partition's leader (so it works against a
//! cluster), and reads the answers. Without `--throughput` it runs closed loop, one request in
//! flight per connection. With it, open loop: request `i` of a connection
//! has an intended start time on a fixed schedule, and its latency runs
//! from that time, not from when it was sent, so a stall counts against
//! every request queued behind it (coordinated omission corrected, as
//! wrk2 does).
//!
//! consume: fetches every partition from offset 0 until `--num-records`
//! records have arrived, counting records from the batch headers.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hdrhistogram::Histogram;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strata_log::batch::{self, ProducerInfo, Record};

use crate::error::{CliError, Result};

/// `strata kbench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// produce or consume.
    #[arg(value_parser = ["produce", "consume"])]
    mode: String,
    /// A broker, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic (created by the broker's auto-creation if missing).
    #[arg(long, default_value = "kbench")]
    topic: String,
    /// Records to produce or consume.
    #[arg(long = "num-records", default_value_t = 1_000_000)]
    num_records: u64,
    /// Bytes of each record's value.
    #[arg(long = "record-size", default_value_t = 1024)]
    record_size: usize,
    /// Records per batch (one Produce request each).
    #[arg(long = "batch-size", default_value_t = 100)]
    batch_size: usize,
    /// Records per second offered, open loop (-1: closed loop, as fast as
    /// the broker answers).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    throughput: i64,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Connections (each with one request in flight).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// consume: max bytes per partition per fetch.
    #[arg(long = "fetch-size", default_value_t = 8 << 20)]
    fetch_size: i32,
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Local {
        what: what.to_string(),
        source: e,
    }
}

fn proto(e: anyhow::Error) -> CliError {
    CliError::Usage(format!("protocol: {e}"))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A request frame: size, header v1/v2, body.
pub(crate) fn frame(key: ApiKey, version: i16, cid: i32, body: &impl Encodable) -> Result<Vec<u8>> {
    strata_broker::wire::client::frame("strata-kbench", key, version, cid, body).map_err(proto)
}

/// Reads one response; returns the body after the correlation id (and the
/// header's tagged fields if `flexible`).
pub(crate) fn read_response(s: &mut TcpStream, flexible: bool) -> Result<Bytes> {
    strata_broker::wire::client::read_response(s, flexible).map_err(io_err("reading a response"))
}

fn connect(addr: &str) -> Result<TcpStream> {
    let a = addr
        .to_socket_addrs()
        .map_err(io_err("resolving --bootstrap"))?
        .next()
        .ok_or_else(|| CliError::Usage(format!("--bootstrap {addr}: no address")))?;
    let s = TcpStream::connect(a).map_err(io_err("connecting to the broker"))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// The topic's partitions and each one's leader address (auto-creating
/// the topic; waiting up to 10 s for every partition to have a leader, as
/// a cluster elects them).
fn partitions(addr: &str, topic: &str) -> Result<Vec<(i32, String)>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = metadata(addr, topic, true)?;
        let t = r
            .topics
            .first()
            .ok_or_else(|| CliError::Usage("no topic in the Metadata answer".into()))?;
        let brokers: std::collections::HashMap<i32, String> = r
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let leaders: Vec<(i32, Option<String>)> = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, brokers.get(&p.leader_id.0).cloned()))
            .collect();
        let ready =
            t.error_code == 0 && !leaders.is_empty() && leaders.iter().all(|(_, l)| l.is_some());
        if ready {
            let mut out: Vec<(i32, String)> = leaders
                .into_iter()
                .filter_map(|(p, l)| l.map(|l| (p, l)))
                .collect();
            out.sort();
            // Each leader must know its leadership too (in a cluster it
            // hears of the new topic a moment after the node asked);
            // else the first Produce gets UNKNOWN_TOPIC_OR_PARTITION.
            if out
                .iter()
                .all(|(p, l)| l == addr || leader_agrees(l, topic, *p))
            {
                return Ok(out);
            }
        }
        if Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "topic {topic}: no leader for every partition after 10 s (Metadata error {})",
                t.error_code
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One Metadata request (v8) for `topic` to the node at `addr`.
fn metadata(addr: &str, topic: &str, auto_create: bool) -> Result<MetadataResponse> {
    let mut c = connect(addr)?;
    let mut req = MetadataRequest::default();
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(s(topic)));
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = auto_create;
    c.write_all(&frame(ApiKey::Metadata, 8, 1, &req)?)
        .map_err(io_err("sending Metadata"))?;
    let mut body = read_response(&mut c, false)?;
    MetadataResponse::decode(&mut body, 8).map_err(proto)
}

/// Whether the node at `addr` says it leads `partition` of `topic`.
fn leader_agrees(addr: &str, topic: &str, partition: i32) -> bool {
    let ask = || -> Result<bool> {
        let r = metadata(addr, topic, false)?;
        let me = r
            .brokers
            .iter()
            .find(|b| format!("{}:{}", b.host.as_str(), b.port) == addr)
            .map(|b| b.node_id);
        Ok(r.topics.first().is_some_and(|t| {
            t.partitions
                .iter()
                .any(|p| p.partition_index == partition && Some(p.leader_id) == me)
        }))
    };
    ask().unwrap_or(false)
}

/// The topic's partitions and their leaders' addresses (auto-creating it).
pub(crate) fn topic_leaders(addr: &str, topic: &str) -> Result<Vec<(i32, String)>> {
    partitions(addr, topic)
}

fn hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| CliError::Usage(format!("histogram: {e}")))
}

/// Runs the benchmark.
pub fn run(a: Args) -> Result<()> {
    if a.batch_size == 0 || a.connections == 0 || a.num_records == 0 {
        return Err(CliError::Usage(
            "--batch-size, --connections and --num-records must be at least 1".into(),
        ));
    }
    match a.mode.as_str() {
        "produce" => produce(&a),
        _ => consume(&a),
    }
}

fn produce(a: &Args) -> Result<()> {
    let acks: i16 = match a.acks.as_str() {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        other => return Err(CliError::Usage(format!("--acks {other}: 0, 1 or all"))),
    };
    let parts = partitions(&a.bootstrap, &a.topic)?;
    let mut value = vec![0u8; a.record_size];
    strata_io::rng::Rng::new(42).fill(&mut value);
    let value = Bytes::from(value);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let recs: Vec<Record> = (0..a.batch_size)
        .map(|_| Record {
            offset: 0,
            timestamp: now,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        })
        .collect();
    let b = batch::build(0, -1, ProducerInfo::NONE, &recs)
        .map_err(|e| CliError::Usage(format!("batch: {e}")))?;
    let batch_bytes = b.bytes.len();
    // One pre-encoded request per partition.
    let frames: Vec<Vec<u8>> = parts
        .iter()
        .map(|&(p, _)| {
            let mut pd = produce_request::PartitionProduceData::default();
            pd.index = p;
            pd.records = Some(b.bytes.clone());
            let mut td = produce_request::TopicProduceData::default();
            td.name = TopicName(s(&a.topic));
            td.partition_data = vec![pd];
            let mut req = ProduceRequest::default();
            req.acks = acks;
            req.timeout_ms = 30_000;
            req.topic_data = vec![td];
            frame(ApiKey::Produce, 8, p, &req)
        })
        .collect::<Result<_>>()?;
    let frames = Arc::new(frames);
    let total_batches = a.num_records.div_ceil(a.batch_size as u64);
    let per_conn = total_batches.div_ceil(a.connections as u64);
    // Open loop: each connection's share of the offered rate.
    let interval = (a.throughput > 0).then(|| {
        Duration::from_secs_f64(a.batch_size as f64 * a.connections as f64 / a.throughput as f64)
    });
    let done = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new(total_batches * a.batch_size as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..a.connections {
        let frames = frames.clone();
        let done = done.clone();
        // Connection c produces to partition c mod P, on its leader.
        let slot = c % parts.len();
        let addr = parts[slot].1.clone();
        let n = per_conn.min(total_batches.saturating_sub(per_conn * c as u64));
        let bar = bar.clone();
        let batch = a.batch_size as u64;
        handles.push(std::thread::spawn(move || -> Result<Histogram<u64>> {
            let mut h = hist()?;
            let mut conn = connect(&addr)?;
            let begin = Instant::now();
            for i in 0..n {
                let intended = match interval {
                    Some(iv) => {
                        let due = begin + iv.mul_f64(i as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        due
                    }
                    None => Instant::now(),
                };
                let f = &frames[slot];
                conn.write_all(f).map_err(io_err("sending Produce"))?;
                if acks != 0 {
                    let mut body = read_response(&mut conn, false)?;
                    let r = ProduceResponse::decode(&mut body, 8).map_err(proto)?;
                    let code = r
                        .responses
                        .first()
                        .and_then(|t| t.partition_responses.first())
                        .map_or(-1, |p| p.error_code);
                    if code != 0 {
                        return Err(CliError::Usage(format!("Produce answered error {code}")));
                    }
                }
                h.saturating_record(intended.elapsed().as_micros().max(1) as u64);
                done.fetch_add(batch, Ordering::Relaxed);
                bar.inc(batch);
            }
            Ok(h)
        }));
    }
    let mut h = hist()?;
    for t in handles {
        let part = t
            .join()
            .map_err(|_| CliError::Usage("a connection thread failed".into()))??;
        h.add(&part)
            .map_err(|e| CliError::Usage(format!("histogram: {e}")))?;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let records = done.load(Ordering::Relaxed);
    let mb = (records / a.batch_size as u64) as f64 * batch_bytes as f64 / 1e6;
    println!(
        "{records} records sent, {:.1} records/sec ({:.2} MB/sec), {:.3} ms avg latency, {:.3} ms max latency, {:.3} ms 50th, {:.3} ms 99th, {:.3} ms 99.9th.",
        records as f64 / secs,
        mb / secs,
        h.mean() / 1000.0,
        h.max() as f64 / 1000.0,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
    );
    println!(
        "(acks={}, {} connection(s), {} partition(s), batches of {} x {} B = {} B, {})",
        a.acks,
        a.connections,
        parts.len(),
        a.batch_size,
        a.record_size,
        batch_bytes,
        match interval {
            Some(_) => format!("open loop at {} records/s offered", a.throughput),
            None => "closed loop".to_string(),
        }
    );
    Ok(())
}

fn consume(a: &Args) -> Result<()> {
    let leaders = partitions(&a.bootstrap, &a.topic)?;
    // One connection fetches every partition: they must share a leader
    // (always so on one node).
    let leader = leaders[0].1.clone();
    if leaders.iter().any(|(_, l)| *l != leader) {
        return Err(CliError::Usage(format!(
            "consume: the partitions of {} have different leaders; use a topic with one partition, or one node",
            a.topic
        )));
    }
    let parts = leaders.len() as i32;
    let mut conn = connect(&leader)?;
    let mut next: Vec<i64> = vec![0; parts as usize];
    let (mut records, mut bytes) = (0u64, 0u64);
    let bar = indicatif::ProgressBar::new(a.num_records);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut fetches = 0u64;
    while records < a.num_records {
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = TopicName(s(&a.topic));
        ft.partitions = (0..parts)
            .map(|p| {
                let mut fp = fetch_request::FetchPartition::default();
                fp.partition = p;
                fp.fetch_offset = next[p as usize];
                fp.partition_max_bytes = a.fetch_size;
                fp
            })
            .collect();
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = 500;
        req.min_bytes = 1;
        req.max_bytes = a.fetch_size.saturating_mul(parts);
        req.topics = vec![ft];
        conn.write_all(&frame(ApiKey::Fetch, 11, 1, &req)?)
            .map_err(io_err("sending Fetch"))?;
        let mut body = read_response(&mut conn, false)?;
        let r = FetchResponse::decode(&mut body, 11).map_err(proto)?;
        fetches += 1;
        let mut got = 0u64;
        for t in &r.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(CliError::Usage(format!(
                        "Fetch partition {} error {}",
                        p.partition_index, p.error_code
                    )));
                }
                let Some(mut recs) = p.records.clone() else {
                    continue;
                };
                bytes += recs.len() as u64;
                // Whole batches: base offset, length, ..., record count at 57.
                while recs.len() >= 61 {
                    let len =
                        12 + u32::from_be_bytes([recs[8], recs[9], recs[10], recs[11]]) as usize;
                    if len > recs.len() {
                        break;
                    }
                    let base = i64::from_be_bytes([
                        recs[0], recs[1], recs[2], recs[3], recs[4], recs[5], recs[6], recs[7],
                    ]);
                    let delta = i32::from_be_bytes([recs[23], recs[24], recs[25], recs[26]]);
                    let count = u32::from_be_bytes([recs[57], recs[58], recs[59], recs[60]]);
                    got += u64::from(count);
                    next[p.partition_index as usize] = base + i64::from(delta) + 1;
                    recs.advance(len);
                }
            }
        }
        if got == 0 && started.elapsed() > Duration::from_secs(5) && records == 0 {
            return Err(CliError::Usage(format!(
                "topic {} holds no records to consume (produce first)",
                a.topic
            )));
        }
        records += got;
        bar.inc(got);
        if got == 0 && fetches > 1 && records > 0 {
            println!("the topic ran out after {records} records");
            break;
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{records} records consumed in {fetches} fetches, {:.1} records/sec, {:.2} MB/sec ({:.3} s)",
        records as f64 / secs,
        bytes as f64 / 1e6 / secs,
        secs
    );
    Ok(())
}
