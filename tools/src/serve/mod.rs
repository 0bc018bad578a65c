//! `strata serve`: one broker that speaks the Kafka wire protocol over the
//! segmented log (replication factor 1), so unmodified Kafka clients
//! produce, consume and use consumer groups. Protocol and behaviour:
//! docs/kafka-protocol.md.
//!
//! Threads: a tokio runtime runs the accept loop and one task per
//! connection; the connection reads a request, answers it, reads the
//! next (so answers go back in request order, as Kafka's muting does).
//! Disk work (appends, fsyncs, reads, offset commits) runs on tokio's
//! blocking pool, so a slow disk never holds the accept loop or other
//! connections' tasks. A fetch that finds too little waits on a
//! notification that the high watermark moved, up to its max_wait_ms.
//! A flusher thread fsyncs unsynced appends every log.flush.interval.ms
//! and moves the high watermark, which only ever covers fsynced data.

mod admin;
mod api;
pub mod cluster;
mod cluster_api;
mod config;
mod groups;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ResponseKind;
use parking_lot::Mutex;
use strata_log::{LogManager, ManagerOptions, Partition};
use strata_replication::group::{GroupCoordinator, Reply, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

use crate::error::{CliError, Result};
use strata_tools::wire::{self, Refused};

pub use config::ServerConfig;

/// `strata serve` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// I/O backend of the logs: auto (io_uring unless a probe in the data
    /// directory finds it slower for a synced write), std or uring.
    #[arg(long = "io", default_value = "auto")]
    pub io: String,
    /// Data directory (default: ./strata-data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// host:port clients are told to connect to (default: the listen
    /// address).
    #[arg(long)]
    pub advertised: Option<String>,
    /// A properties file with Kafka's setting names (num.partitions,
    /// auto.create.topics.enable, log.segment.bytes, log.retention.ms, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// One setting, as in the file (repeatable; wins over the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Serve Prometheus metrics on this address (`GET /metrics`); the
    /// same as `metrics.listen`.
    #[arg(long = "metrics-listen", value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,
    /// This node's id (node.id).
    #[arg(long = "node-id")]
    pub node_id: Option<u32>,
    /// The controller quorum, `1@HOST:PORT,2@HOST:PORT,3@HOST:PORT`
    /// (controller.quorum.voters): runs this node in a cluster; the
    /// addresses are the nodes' --listen addresses.
    #[arg(long = "controller-voters", value_name = "ID@HOST:PORT,...")]
    pub controller_voters: Option<String>,
}

/// The broker's shared state.
pub struct Broker {
    cfg: ServerConfig,
    logs: LogManager,
    host: String,
    port: i32,
    groups: Mutex<GroupCoordinator>,
    waiting: Mutex<std::collections::HashMap<Token, oneshot::Sender<Reply>>>,
    next_token: AtomicU64,
    /// Woken whenever a high watermark moves (long-polling fetches).
    data: Notify,
    start: Instant,
    /// Serialises topic creation and deletion.
    admin: Mutex<()>,
    stop: AtomicBool,
    metrics: metrics::Metrics,
    /// Cluster mode: the replication driver's handle.
    cluster: Option<Arc<cluster::Cluster>>,
}

fn log_err(e: strata_log::Error) -> CliError {
    CliError::Usage(format!("log: {e}"))
}

impl Broker {
    /// Milliseconds on the broker's monotonic clock (group sessions and
    /// rebalances run on it, never on wall time).
    fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// The partition's current leader epoch (this node leads every
    /// partition; the epoch is the newest in its epoch cache).
    fn epoch(p: &Partition) -> i32 {
        p.latest_epoch().unwrap_or(0)
    }

    /// Moves the high watermark over what is fsynced; wakes fetches. In
    /// memory: the flusher stores it now and then (`store_hw`).
    fn advance_hw(&self, p: &Partition) -> strata_log::Result<()> {
        let durable = p.durable_end_offset();
        if durable > p.high_watermark() {
            p.advance_high_watermark(durable);
            self.data.notify_waiters();
        }
        Ok(())
    }

    /// Opens every partition of a topic (recovering it) and gives new
    /// ones their first leader epoch.
    fn open_topic(&self, topic: &str, count: u32) -> strata_log::Result<()> {
        for i in 0..count {
            let p = self.logs.partition(topic, i)?;
            if p.latest_epoch().is_none() {
                p.assign_epoch(0)?;
            }
            // Whatever recovery kept is fsynced from here on.
            p.flush()?;
            self.advance_hw(&p)?;
        }
        Ok(())
    }

    /// (topic, partition, log start, log end, high watermark) of every
    /// partition, for the metrics.
    fn partition_offsets(&self) -> Vec<(String, u32, u64, u64, u64)> {
        let mut out = Vec::new();
        if let Some(c) = &self.cluster {
            // The replicas this node hosts, by their cluster names.
            let v = c.view();
            for ((t, i), id) in &v.by_name {
                if let Some(p) = v.local.get(id) {
                    out.push((
                        t.clone(),
                        *i,
                        p.log_start_offset(),
                        p.log_end_offset(),
                        p.high_watermark(),
                    ));
                }
            }
            return out;
        }
        for (t, n) in self.logs.topics() {
            for i in 0..n {
                if let Ok(p) = self.logs.partition(&t, i) {
                    out.push((
                        t.clone(),
                        i,
                        p.log_start_offset(),
                        p.log_end_offset(),
                        p.high_watermark(),
                    ));
                }
            }
        }
        out
    }

    /// Group coordinator replies go to the requests waiting on them.
    fn dispatch(&self, replies: Vec<(Token, Reply)>) {
        let mut w = self.waiting.lock();
        for (t, r) in replies {
            if let Some(tx) = w.remove(&t) {
                // A closed connection dropped its receiver: nothing to do.
                let _ = tx.send(r);
            }
        }
    }

    /// Sends a request to the group coordinator and waits for its reply.
    async fn group_call(&self, req: strata_replication::group::Request) -> Option<Reply> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(token, tx);
        let replies = self.groups.lock().handle(self.now_ms(), token, req);
        self.dispatch(replies);
        rx.await.ok()
    }
}

/// Runs the broker until SIGTERM or SIGINT.
pub fn run(args: Args) -> Result<i32> {
    let mut cfg = ServerConfig::default();
    let mut cfg_advertised: Option<String> = None;
    if let Some(path) = &args.config {
        cfg.load(path)?;
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--set {kv}: expected KEY=VALUE")))?;
        cfg.set(k.trim(), v)?;
    }
    if let Some(m) = &args.metrics_listen {
        cfg.set("metrics.listen", m)?;
    }
    if let Some(n) = args.node_id {
        cfg.set("node.id", &n.to_string())?;
    }
    if let Some(v) = &args.controller_voters {
        cfg.set("controller.quorum.voters", v)?;
    }
    let cluster = match &cfg.voters {
        None => None,
        Some(v) => {
            let voters = cluster::parse_voters(v).map_err(CliError::Usage)?;
            let me = u32::try_from(cfg.node_id).map_err(|_| {
                CliError::Usage(format!("node.id {} must be positive", cfg.node_id))
            })?;
            if me == 0 || me > 1023 {
                return Err(CliError::Usage(format!(
                    "node.id {me}: a cluster node's id is 1-1023"
                )));
            }
            let rf = cfg
                .default_replication_factor
                .unwrap_or_else(|| voters.len().min(3) as u32);
            Some(cluster::Cluster::new(cluster::ClusterConfig {
                me,
                replication_factor: rf,
                min_insync_replicas: cfg.min_insync_replicas.min(rf as usize),
                replica_lag_time_max_ms: cfg.replica_lag_time_max_ms,
                fetch_wait_max_ms: cfg.replica_fetch_wait_max_ms,
                heartbeat_interval_ms: cfg.broker_heartbeat_interval_ms,
                session_timeout_ms: cfg.broker_session_timeout_ms,
                election_timeout_ms: cfg.election_timeout_ms,
                ack_unsynced: cfg.ack_unsynced,
                test_faults: cfg.test_faults,
                kafka_fetch: cfg.kafka_fetch,
                voters,
            }))
        }
    };
    if cfg.ack_unsynced {
        eprintln!("strata serve: replica.ack.unsynced=true: acks=all counts unsynced data (unsafe: for measurement)");
    }
    if let Some(c) = &cluster {
        // Clients are told the address the voters list gives this node
        // (a broker outside the quorum: its listen or advertised address).
        if args.advertised.is_none() {
            if let Some(n) = c.voters.iter().find(|n| n.id == c.me) {
                cfg_advertised = Some(format!("{}:{}", n.host, n.port));
            }
        }
    }
    let listen: SocketAddr = args
        .listen
        .parse()
        .map_err(|_| CliError::Usage(format!("--listen {}: expected IP:PORT", args.listen)))?;
    let advertised = args
        .advertised
        .clone()
        .or(cfg_advertised)
        .unwrap_or_else(|| {
            if listen.ip().is_unspecified() {
                format!("127.0.0.1:{}", listen.port())
            } else {
                listen.to_string()
            }
        });
    let (host, port) = advertised
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| CliError::Usage(format!("--advertised {advertised}: expected HOST:PORT")))?;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            let d = PathBuf::from("strata-data");
            eprintln!("strata serve: no --data given: using ./strata-data");
            d
        }
    };
    let storage = crate::common::storage_for(&args.io, &data)?;
    let logs = LogManager::open_with(
        storage,
        &data,
        ManagerOptions {
            background_threads: true,
            direct_io: cfg.log_direct_io,
            preallocate: cfg.log_preallocate,
            write_behind: cfg.log_write_behind,
            ..ManagerOptions::default()
        },
    )
    .map_err(log_err)?;
    let broker = Arc::new(Broker {
        groups: Mutex::new(GroupCoordinator::new(cfg.group)),
        cfg,
        logs,
        host,
        port: i32::from(port),
        waiting: Mutex::new(Default::default()),
        next_token: AtomicU64::new(1),
        data: Notify::new(),
        start: Instant::now(),
        admin: Mutex::new(()),
        stop: AtomicBool::new(false),
        metrics: metrics::Metrics::new(),
        cluster: cluster.clone(),
    });
    // In a cluster the replicas open their logs as the controller's
    // states arrive, and the replication core moves high watermarks.
    let driver = match &cluster {
        Some(c) => Some(c.start(broker.clone(), &data)?),
        None => {
            for (topic, count) in broker.logs.topics() {
                broker.open_topic(&topic, count).map_err(log_err)?;
            }
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-serve")
        .build()
        .map_err(|e| CliError::Local {
            what: "starting the runtime".into(),
            source: e,
        })?;
    let flusher = if cluster.is_some() {
        None
    } else {
        let b = broker.clone();
        std::thread::Builder::new()
            .name("strata-flusher".into())
            .spawn(move || flusher(&b))
            .map(Some)
            .map_err(|e| CliError::Local {
                what: "starting the flusher".into(),
                source: e,
            })?
    };
    let res = rt.block_on(serve(broker.clone(), listen, data));
    broker.stop.store(true, Ordering::SeqCst);
    if let Some(f) = flusher {
        let _ = f.join();
    }
    if let (Some(c), Some(d)) = (&cluster, driver) {
        c.stop();
        let _ = d.join();
    }
    // Requests still on the blocking pool finish before the logs close.
    rt.shutdown_timeout(Duration::from_secs(10));
    broker.logs.close().map_err(log_err)?;
    eprintln!("strata serve: stopped cleanly");
    res.map(|_| 0)
}

/// Fsyncs unsynced appends and moves high watermarks, every
/// log.flush.interval.ms.
fn flusher(b: &Broker) {
    let every = Duration::from_millis(b.cfg.flush_interval_ms);
    let store_every = (1000 / b.cfg.flush_interval_ms).max(1);
    let mut ticks = 0u64;
    while !b.stop.load(Ordering::SeqCst) {
        std::thread::sleep(every);
        ticks += 1;
        for (topic, count) in b.logs.topics() {
            for i in 0..count {
                let Ok(p) = b.logs.partition(&topic, i) else {
                    continue;
                };
                if p.log_end_offset() > p.durable_end_offset() {
                    let t = Instant::now();
                    let res = tracing::debug_span!("flush", topic = %topic, partition = i)
                        .in_scope(|| p.flush());
                    b.metrics.fsync.observe(t.elapsed());
                    if let Err(e) = res {
                        tracing::error!(topic = %topic, partition = i, error = %e, "flush failed: the partition stops");
                        continue;
                    }
                }
                if let Err(e) = b.advance_hw(&p) {
                    tracing::error!(topic = %topic, partition = i, error = %e, "high watermark update failed");
                }
                // Stored about once a second (unsynced, as Kafka's
                // checkpoint): a restart recomputes it from the durable end.
                if ticks.is_multiple_of(store_every) {
                    if let Err(e) = p.set_high_watermark(p.high_watermark()) {
                        tracing::error!(topic = %topic, partition = i, error = %e, "storing the high watermark failed");
                    }
                }
            }
        }
    }
}

async fn serve(broker: Arc<Broker>, listen: SocketAddr, data: PathBuf) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Local {
            what: format!("listening on {listen}"),
            source: e,
        })?;
    eprintln!(
        "strata serve: listening on {listen} (advertised {}:{}), data in {}",
        broker.host,
        broker.port,
        data.display()
    );
    // Group sessions and rebalance deadlines advance on this tick.
    {
        let b = broker.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let replies = b.groups.lock().tick(b.now_ms());
                b.dispatch(replies);
            }
        });
    }
    if let Some(addr) = &broker.cfg.metrics_listen {
        let l = TcpListener::bind(addr.as_str())
            .await
            .map_err(|e| CliError::Local {
                what: format!("listening for metrics on {addr}"),
                source: e,
            })?;
        eprintln!("strata serve: metrics on http://{addr}/metrics");
        let b = broker.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let b = b.clone();
                tokio::spawn(async move {
                    let render = |target: &str| match target.split('?').next().unwrap_or("") {
                        "/metrics" => {
                            let parts = tokio::task::block_in_place(|| b.partition_offsets());
                            let rebalances = b.groups.lock().rebalances();
                            let mut text = b.metrics.render(&parts, rebalances);
                            if let Some(c) = &b.cluster {
                                text.push_str(&c.view().metrics_text(c.me));
                            }
                            Some(text)
                        }
                        "/status" => b.cluster.as_ref().map(|c| c.status_text()),
                        _ => b.cluster.as_ref().and_then(|c| c.fault_request(target)),
                    };
                    let _ = metrics::serve_http(stream, render).await;
                });
            }
        });
    }
    let conns = Arc::new(AtomicUsize::new(0));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Local {
            what: "installing the SIGTERM handler".into(),
            source: e,
        })?;
    let mut last_refusal_log = Instant::now() - Duration::from_secs(10);
    // In a cluster a stop is a controlled shutdown, and peers still reach
    // this node through the listener until it is done.
    let mut stopping = false;
    loop {
        let stop_now = |why: &str| {
            eprintln!("strata serve: {why}: flushing and closing");
            match &broker.cluster {
                Some(c) => {
                    eprintln!(
                        "strata serve: controlled shutdown: moving leaderships to other nodes"
                    );
                    c.stop();
                    false
                }
                None => true,
            }
        };
        tokio::select! {
            _ = term.recv(), if !stopping => {
                if stop_now("SIGTERM") {
                    break;
                }
                stopping = true;
            }
            _ = tokio::signal::ctrl_c(), if !stopping => {
                if stop_now("interrupted") {
                    break;
                }
                stopping = true;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)), if stopping => {
                if broker.cluster.as_ref().is_none_or(|c| c.is_stopped()) {
                    break;
                }
            }
            acc = listener.accept() => {
                let (stream, peer) = match acc {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a
                        // little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if conns.load(Ordering::SeqCst) >= broker.cfg.max_connections {
                    if last_refusal_log.elapsed() >= Duration::from_secs(1) {
                        tracing::warn!(%peer, limit = broker.cfg.max_connections, "connection refused: max.connections reached");
                        last_refusal_log = Instant::now();
                    }
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                conns.fetch_add(1, Ordering::SeqCst);
                broker.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                let b = broker.clone();
                let c = conns.clone();
                tokio::spawn(async move {
                    connection(b, stream, peer).await;
                    c.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }
    Ok(())
}

/// One client connection: frames in, answers out, in order.
async fn connection(b: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    b.metrics.connections.fetch_add(1, Ordering::Relaxed);
    serve_connection(&b, stream, peer).await;
    b.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_connection(b: &Arc<Broker>, mut stream: TcpStream, peer: SocketAddr) {
    let idle = Duration::from_millis(b.cfg.connections_max_idle_ms);
    let read_timeout = Duration::from_millis(b.cfg.request_read_timeout_ms);
    loop {
        let size = match tokio::time::timeout(idle, stream.read_i32()).await {
            Err(_) => {
                tracing::info!(%peer, "idle connection closed (connections.max.idle.ms)");
                return;
            }
            Ok(Err(_)) => return, // closed by the client
            Ok(Ok(n)) => n,
        };
        if size < 0 || size as usize > b.cfg.socket_request_max_bytes {
            tracing::warn!(%peer, size, limit = b.cfg.socket_request_max_bytes,
                "request size out of bounds (socket.request.max.bytes): connection closed");
            return;
        }
        // Into uninitialised capacity: no zeroing of a large request.
        let mut frame = bytes::BytesMut::with_capacity(size as usize);
        let read = async {
            while frame.len() < size as usize {
                if stream.read_buf(&mut frame).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
            }
            Ok(())
        };
        match tokio::time::timeout(read_timeout, read).await {
            Err(_) => {
                tracing::warn!(%peer, size, "request not received within socket.request.read.timeout.ms: connection closed");
                return;
            }
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "connection closed inside a request");
                return;
            }
            Ok(Ok(_)) => {}
        }
        if frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == cluster::PEER_API_KEY {
            let Some(c) = &b.cluster else {
                tracing::warn!(%peer, "peer frame on a node not in a cluster: connection closed");
                return;
            };
            if let Err(e) = c.peer_frame(&frame) {
                tracing::warn!(%peer, error = %e, "bad peer frame: connection closed");
                return;
            }
            continue;
        }
        // Only the head is kept for a log line: a produced batch is then
        // the only holder of its bytes and is stamped in place.
        let head: String = frame.iter().take(48).map(|x| format!("{x:02x}")).collect();
        let started = Instant::now();
        let answer = match wire::decode_request(frame.freeze()) {
            Ok(req) => {
                let key = req.api_key;
                let version = req.header.request_api_version;
                let cid = req.header.correlation_id;
                // A span per request (produce, fetch, ...): its time and
                // anything logged inside it carry the API and correlation.
                let span = tracing::debug_span!("request", api = ?key, version, correlation_id = cid, %peer);
                tracing::Instrument::instrument(api::handle(b, req), span)
                    .await
                    .map(|answer| (key, version, cid, answer))
            }
            Err(Refused::ApiVersionsTooNew { correlation_id }) => Some((
                kafka_protocol::messages::ApiKey::ApiVersions,
                0,
                correlation_id,
                api::Answer::Kind(ResponseKind::ApiVersions(wire::api_versions(
                    wire::UNSUPPORTED_VERSION,
                ))),
            )),
            Err(Refused::Unsupported {
                api_key,
                api_version,
                correlation_id,
            }) => match api::unsupported(api_key, api_version) {
                Some((key, body)) => {
                    b.metrics.refused.fetch_add(1, Ordering::Relaxed);
                    Some((key, api_version, correlation_id, api::Answer::Kind(body)))
                }
                None => {
                    b.metrics.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, api_key, api_version,
                        "request for an API or version this broker does not serve: connection closed");
                    return;
                }
            },
            Err(Refused::Malformed(why)) => {
                b.metrics.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, reason = %why, size, head = %head, "malformed request: connection closed");
                return;
            }
        };
        let Some((key, version, cid, answer)) = answer else {
            continue; // acks=0: no answer
        };
        let chunks = match answer {
            api::Answer::Kind(body) => {
                wire::encode_response(key, version, cid, &body).map(|b| vec![b.freeze()])
            }
            api::Answer::Fetch(resp, records) => {
                wire::encode_fetch_chunks(version, cid, resp, records)
            }
        };
        let chunks = match chunks {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(%peer, ?key, version, error = %e, "response does not encode: connection closed");
                return;
            }
        };
        // Counted before the answer goes out: a client that reads its
        // answer and then the metrics sees its request counted.
        b.metrics.request(key, started.elapsed());
        if let Err(e) = write_chunks(&mut stream, &chunks).await {
            tracing::info!(%peer, error = %e, "connection closed while answering");
            return;
        }
    }
}

/// Writes every chunk, several per system call (record batches are slices
/// of memory-mapped segments: the kernel copies them to the socket, this
/// process never does).
async fn write_chunks(stream: &mut TcpStream, chunks: &[bytes::Bytes]) -> std::io::Result<()> {
    let (mut i, mut off) = (0usize, 0usize);
    while i < chunks.len() {
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&chunks[i][off..])
            .chain(chunks[i + 1..].iter().take(63).map(|c| &c[..]))
            .map(std::io::IoSlice::new)
            .collect();
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while i < chunks.len() && n > 0 {
            let left = chunks[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
        // Skip empty chunks so the loop always ends.
        while i < chunks.len() && chunks[i].len() == off {
            i += 1;
            off = 0;
        }
    }
    Ok(())
}
