//! Garbage thrown at a running `strata serve`: malformed and truncated
//! frames, sizes over socket.request.max.bytes, unknown API keys and
//! versions, random bytes, 1,000 idle connections, a client that sends
//! one byte at a time. Each gets an error answer or a closed connection;
//! the broker keeps serving everyone else and loses nothing it
//! acknowledged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Broker {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(["serve", "--listen", &addr.to_string(), "--data"])
        .arg(dir.path().join("data"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("start strata serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker {
        child,
        addr,
        _dir: dir,
    }
}

fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(b.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

fn frame(key: ApiKey, version: i16, cid: i32, body: &impl Encodable) -> Vec<u8> {
    let mut h = RequestHeader::default();
    h.request_api_key = key as i16;
    h.request_api_version = version;
    h.correlation_id = cid;
    h.client_id = Some(StrBytes::from_static_str("garbage-test"));
    let mut b = BytesMut::new();
    h.encode(&mut b, key.request_header_version(version))
        .expect("header");
    body.encode(&mut b, version).expect("body");
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

/// Reads one response frame: (correlation id, body after a v0 header).
fn read_response(s: &mut TcpStream) -> Option<(i32, Bytes)> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).ok()?;
    let mut b = Bytes::from(buf);
    let cid = b.get_i32();
    Some((cid, b))
}

/// Whether the broker closed the connection (EOF, or reset) within 5 s;
/// a read that times out means it is still open.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut one = [0u8; 1];
    match s.read(&mut one) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn api_versions_ok(b: &Broker) {
    let mut s = connect(b);
    s.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        1,
        &ApiVersionsRequest::default(),
    ))
    .expect("send");
    let (cid, mut body) = read_response(&mut s).expect("answer");
    assert_eq!(cid, 1);
    let r = ApiVersionsResponse::decode(&mut body, 3).expect("decode");
    assert_eq!(r.error_code, 0);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

fn produce_one(s: &mut TcpStream, value: &[u8]) -> i64 {
    let rec = strata_log::Record::new(1, Some(b"k"), Some(value));
    let batch =
        strata_log::batch::build(0, -1, strata_log::ProducerInfo::NONE, &[rec]).expect("batch");
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(batch.bytes.clone());
    let mut td = produce_request::TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str("g"));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    s.write_all(&frame(ApiKey::Produce, 9, 5, &req))
        .expect("send");
    let (_, mut body) = read_response(s).expect("produce answer");
    // v9 responses have a v1 header: one byte of empty tagged fields.
    body.advance(1);
    let r = ProduceResponse::decode(&mut body, 9).expect("decode");
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "{p:?}");
    p.base_offset
}

/// A Fetch of partition 0 of topic `g` from offset 0.
fn fetch_g(max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 0;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str("g"));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = min_bytes;
    req.max_bytes = 1 << 20;
    req.topics = vec![ft];
    req
}

fn fetch_all(s: &mut TcpStream) -> usize {
    let req = fetch_g(100, 1);
    s.write_all(&frame(ApiKey::Fetch, 11, 6, &req))
        .expect("send");
    let (_, mut body) = read_response(s).expect("fetch answer");
    let r = FetchResponse::decode(&mut body, 11).expect("decode");
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let mut recs = p.records.clone().unwrap_or_default();
    let mut n = 0;
    while !recs.is_empty() {
        match strata_log::batch::Batch::parse(&recs) {
            strata_log::batch::Parsed::Batch(b) => {
                n += b.header.record_count as usize;
                recs.advance(b.bytes.len());
            }
            other => panic!("fetched bytes do not parse: {other:?}"),
        }
    }
    n
}

#[test]
fn garbage_gets_an_error_or_a_closed_connection_and_the_broker_serves_on() {
    let b = start(&[
        "--set",
        "socket.request.max.bytes=1048576",
        "--set",
        "socket.request.read.timeout.ms=1000",
        "--set",
        "num.partitions=1",
    ]);
    // An acknowledged write before the garbage.
    let mut good = connect(&b);
    let mut md = MetadataRequest::default();
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("g")));
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    good.write_all(&frame(ApiKey::Metadata, 9, 2, &md))
        .expect("send");
    read_response(&mut good).expect("metadata");
    assert_eq!(produce_one(&mut good, b"before"), 0);

    // Random bytes in a well-sized frame.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..50 {
        let mut s = connect(&b);
        let mut body = Vec::new();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push(seed as u8);
        }
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        let _ = s.write_all(&f);
        assert!(closed(&mut s), "random frame");
    }
    // A header that promises more than the frame holds.
    let mut s = connect(&b);
    let f = frame(ApiKey::Metadata, 9, 3, &md);
    let mut cut = ((f.len() - 4 - 5) as i32).to_be_bytes().to_vec();
    cut.extend_from_slice(&f[4..f.len() - 5]);
    s.write_all(&cut).expect("send");
    assert!(closed(&mut s), "truncated body");
    // A negative size, and one over socket.request.max.bytes.
    for size in [-5i32, 2 << 20] {
        let mut s = connect(&b);
        s.write_all(&size.to_be_bytes()).expect("send");
        assert!(closed(&mut s), "size {size}");
    }
    // Unknown API key: closed, as there is no response type to answer in.
    let mut s = connect(&b);
    let mut f = frame(ApiKey::ApiVersions, 0, 4, &ApiVersionsRequest::default());
    f[4..6].copy_from_slice(&999i16.to_be_bytes());
    s.write_all(&f).expect("send");
    assert!(closed(&mut s), "unknown api key");
    // ApiVersions at a version from the future: v0 body, error 35, list.
    let mut s = connect(&b);
    let mut f = frame(ApiKey::ApiVersions, 0, 8, &ApiVersionsRequest::default());
    f[6..8].copy_from_slice(&77i16.to_be_bytes());
    s.write_all(&f).expect("send");
    let (cid, mut body) = read_response(&mut s).expect("answer");
    assert_eq!(cid, 8);
    let r = ApiVersionsResponse::decode(&mut body, 0).expect("v0 body");
    assert_eq!(r.error_code, 35);
    assert!(!r.api_keys.is_empty());
    // An API the broker does not serve, with an error field: answered.
    let mut s = connect(&b);
    let mut sasl = SaslHandshakeRequest::default();
    sasl.mechanism = StrBytes::from_static_str("PLAIN");
    s.write_all(&frame(ApiKey::SaslHandshake, 1, 9, &sasl))
        .expect("send");
    let (cid, mut body) = read_response(&mut s).expect("answer");
    assert_eq!(cid, 9);
    let r = SaslHandshakeResponse::decode(&mut body, 1).expect("decode");
    assert_eq!(r.error_code, 33);
    // Array counts of i32::MAX in a few bytes (kafka-protocol reserves
    // capacity from them before it finds the bytes missing): closed, and
    // the broker lives on.
    for (key, version, body) in [
        (3i16, 0i16, 0x7fff_ffffi32.to_be_bytes().to_vec()),
        (19, 2, 0x7fff_ffffi32.to_be_bytes().to_vec()),
        (
            2,
            1,
            [(-1i32).to_be_bytes(), 0x7fff_ffffi32.to_be_bytes()].concat(),
        ),
    ] {
        let mut s = connect(&b);
        let mut f = Vec::new();
        f.extend_from_slice(&key.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&12i32.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes());
        f.extend_from_slice(&body);
        let mut framed = (f.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&f);
        s.write_all(&framed).expect("send");
        assert!(closed(&mut s), "huge array count for key {key}");
        api_versions_ok(&b);
    }
    // DescribeAcls: no authorizer, SECURITY_DISABLED as Kafka says.
    let mut s = connect(&b);
    let mut acl = DescribeAclsRequest::default();
    acl.resource_type_filter = 1;
    acl.pattern_type_filter = 1;
    acl.operation = 1;
    acl.permission_type = 1;
    s.write_all(&frame(ApiKey::DescribeAcls, 1, 13, &acl))
        .expect("send");
    let (cid, mut body) = read_response(&mut s).expect("answer");
    assert_eq!(cid, 13);
    let r = DescribeAclsResponse::decode(&mut body, 1).expect("decode");
    assert_eq!(r.error_code, 54);
    // A version of a served API outside its range: closed.
    let mut s = connect(&b);
    s.write_all(&frame(ApiKey::Fetch, 17, 10, &FetchRequest::default()))
        .expect("send");
    assert!(closed(&mut s), "fetch v17");

    // 1,000 connections held open: others are still served.
    let crowd: Vec<TcpStream> = (0..1000).map(|_| connect(&b)).collect();
    api_versions_ok(&b);
    // One byte at a time, slower than socket.request.read.timeout.ms
    // allows for the whole request: closed after it, while others work.
    let mut slow = connect(&b);
    let f = frame(ApiKey::ApiVersions, 3, 11, &ApiVersionsRequest::default());
    let started = Instant::now();
    let mut cut_off = false;
    for byte in &f {
        if slow.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        api_versions_ok(&b);
        std::thread::sleep(Duration::from_millis(150));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(cut_off || closed(&mut slow), "slow client not cut off");
    drop(crowd);

    // Clients that leave while their answers are on their way: the
    // broker's writes fail on that socket only.
    // (SIGPIPE's default action once killed the whole broker here.)
    for _ in 0..30 {
        let mut s = connect(&b);
        let req = fetch_g(50, 1 << 30);
        // Two requests, then gone: the first answer meets a closed socket
        // (the peer resets it), the second write then fails with EPIPE.
        let mut two = frame(ApiKey::Fetch, 11, 20, &req);
        two.extend_from_slice(&frame(
            ApiKey::ApiVersions,
            3,
            21,
            &ApiVersionsRequest::default(),
        ));
        s.write_all(&two).expect("send");
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    api_versions_ok(&b);

    // Nothing acknowledged was lost; the good connection still works.
    assert_eq!(produce_one(&mut good, b"after"), 1);
    assert_eq!(fetch_all(&mut good), 2);
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn the_metrics_endpoint_counts_requests_fsyncs_and_offsets() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let maddr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let b = start(&["--metrics-listen", &maddr.to_string()]);
    let mut c = connect(&b);
    let mut md = MetadataRequest::default();
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("g")));
    md.topics = Some(vec![t]);
    md.allow_auto_topic_creation = true;
    c.write_all(&frame(ApiKey::Metadata, 9, 2, &md))
        .expect("send");
    read_response(&mut c).expect("metadata");
    for i in 0..3 {
        assert_eq!(produce_one(&mut c, b"m"), i);
    }
    let text = http_get(maddr, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("strata_requests_total{api=\"Produce\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("strata_requests_total{api=\"Metadata\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strata_request_seconds_count{api=\"Produce\"} 3"),
        "{text}"
    );
    // Each acks=all append fsyncs (the flusher may add its own).
    let fsyncs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("strata_fsync_seconds_count "))
        .and_then(|v| v.parse().ok())
        .expect("fsync count");
    assert!(fsyncs >= 3, "{text}");
    assert!(
        text.contains("strata_partition_high_watermark{topic=\"g\",partition=\"0\"} 3"),
        "{text}"
    );
    assert!(text.contains("strata_connections 1"), "{text}");
    assert!(http_get(maddr, "/other").starts_with("HTTP/1.1 404"));
}
