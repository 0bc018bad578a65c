//! The listener and framing: the accept loop, one task per connection
//! (a request is read, answered, then the next: answers go back in
//! request order, as Kafka's muting does), the flusher thread, and
//! [`run`], which opens the logs and starts everything from an
//! [`Options`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ResponseKind;
use parking_lot::Mutex;
use strata_io::StorageRef;
use strata_log::{LogManager, ManagerOptions};
use strata_replication::group::GroupCoordinator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::cluster;
use crate::config::ServerConfig;
use crate::dispatch::{self, Answer};
use crate::error::{io, Error, Result};
use crate::metrics;
use crate::state::{Broker, Shared};
use crate::wire::{self, Refused};

/// What a broker runs with: `strata serve` turns its flags into one.
pub struct Options {
    /// The address to listen on (`IP:PORT`).
    pub listen: String,
    /// host:port clients are told to connect to (default: the listen
    /// address, or this node's entry in controller.quorum.voters).
    pub advertised: Option<String>,
    /// The data directory.
    pub data: PathBuf,
    /// The storage backend of the logs.
    pub storage: StorageRef,
    /// The settings (Kafka's names).
    pub config: ServerConfig,
}

/// Runs the broker until SIGTERM or SIGINT; the exit code to return.
pub fn run(opts: Options) -> Result<i32> {
    let Options {
        listen,
        advertised,
        data,
        storage,
        config: cfg,
    } = opts;
    let mut cfg_advertised: Option<String> = None;
    let cluster = match &cfg.voters {
        None => None,
        Some(v) => {
            let voters = cluster::parse_voters(v).map_err(Error::Config)?;
            let me = u32::try_from(cfg.node_id)
                .map_err(|_| Error::Config(format!("node.id {} must be positive", cfg.node_id)))?;
            if me == 0 || me > 1023 {
                return Err(Error::Config(format!(
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
        if advertised.is_none() {
            if let Some(n) = c.voters.iter().find(|n| n.id == c.me) {
                cfg_advertised = Some(format!("{}:{}", n.host, n.port));
            }
        }
    }
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| Error::Config(format!("--listen {}: expected IP:PORT", listen)))?;
    let advertised = advertised.or(cfg_advertised).unwrap_or_else(|| {
        if listen.ip().is_unspecified() {
            format!("127.0.0.1:{}", listen.port())
        } else {
            listen.to_string()
        }
    });
    let (host, port) = advertised
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| Error::Config(format!("--advertised {advertised}: expected HOST:PORT")))?;
    if cluster.is_none() && data.join("raft").is_dir() {
        return Err(Error::DataDir(format!(
            "{}: this directory holds a cluster node's data (raft/); run it with --controller-voters, or start a single node on a new directory",
            data.display()
        )));
    }
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
    )?;
    let group_cfg = cfg.group;
    // Member ids unique to this node and start: a group's coordinator
    // moves between nodes (and restarts), and ids must never repeat.
    let group_instance = (u64::from(cfg.node_id as u32) << 48)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 & 0xffff_ffff_ffff);
    let shared = Arc::new(Shared {
        cfg,
        logs,
        host,
        port: i32::from(port),
        data: Notify::new(),
        start: Instant::now(),
        metrics: metrics::Metrics::new(),
    });
    let broker = Arc::new(Broker {
        shared: shared.clone(),
        groups: Mutex::new(GroupCoordinator::with_instance(group_cfg, group_instance)),
        waiting: Mutex::new(Default::default()),
        next_token: AtomicU64::new(1),
        admin: Mutex::new(()),
        stop: AtomicBool::new(false),
        cluster: cluster.clone(),
        offsets: Default::default(),
    });
    // In a cluster the replicas open their logs as the controller's
    // states arrive, and the replication core moves high watermarks.
    let driver = match &cluster {
        Some(c) => Some(c.start(shared, &data)?),
        None => {
            for (topic, count) in broker.logs.topics() {
                broker.open_topic(&topic, count)?;
            }
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-serve")
        .build()
        .map_err(io("starting the runtime"))?;
    let flusher = if cluster.is_some() {
        None
    } else {
        let b = broker.clone();
        std::thread::Builder::new()
            .name("strata-flusher".into())
            .spawn(move || flusher(&b))
            .map(Some)
            .map_err(io("starting the flusher"))?
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
    broker.logs.close()?;
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
        .map_err(io(format!("listening on {listen}")))?;
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
            .map_err(io(format!("listening for metrics on {addr}")))?;
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
        .map_err(io("installing the SIGTERM handler"))?;
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
                tracing::Instrument::instrument(dispatch::handle(b, req), span)
                    .await
                    .map(|answer| (key, version, cid, answer))
            }
            Err(Refused::ApiVersionsTooNew { correlation_id }) => Some((
                kafka_protocol::messages::ApiKey::ApiVersions,
                0,
                correlation_id,
                Answer::Kind(ResponseKind::ApiVersions(wire::api_versions(
                    wire::UNSUPPORTED_VERSION,
                ))),
            )),
            Err(Refused::Unsupported {
                api_key,
                api_version,
                correlation_id,
            }) => match dispatch::unsupported(api_key, api_version) {
                Some((key, body)) => {
                    b.metrics.refused.fetch_add(1, Ordering::Relaxed);
                    Some((key, api_version, correlation_id, Answer::Kind(body)))
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
            Answer::Kind(body) => {
                wire::encode_response(key, version, cid, &body).map(|b| vec![b.freeze()])
            }
            Answer::Fetch(resp, records) => wire::encode_fetch_chunks(version, cid, resp, records),
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
