//! The broker's metrics and their Prometheus text endpoint
//! (`--metrics-listen HOST:PORT`, `GET /metrics`, text format 0.0.4):
//! requests and their latency per API (histograms), requests refused,
//! open connections, fsync latency, group rebalances, and each
//! partition's log start, log end and high watermark.
//!
//! Counters are atomics bumped on the request path; the endpoint reads
//! them and the partitions when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Histogram bucket bounds, seconds (Prometheus `le`).
const BOUNDS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with cumulative-on-read buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0u64;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BOUNDS.iter().enumerate() {
            cum += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything the broker counts.
#[derive(Default)]
pub struct Metrics {
    /// Per served API: requests answered and their latency.
    apis: Vec<(ApiKey, AtomicU64, Histogram)>,
    /// Requests refused (malformed, unsupported, too large): connection
    /// closed or an error answer without a handler.
    pub refused: AtomicU64,
    /// Open client connections.
    pub connections: AtomicU64,
    /// Connections accepted since the start.
    pub accepted: AtomicU64,
    /// fsyncs of partition logs: the flusher's, and acks=all appends with
    /// their fsync; in a cluster, each replica's append with its fsync.
    pub fsync: Histogram,
}

impl Metrics {
    /// Counters for every served API.
    pub fn new() -> Metrics {
        Metrics {
            apis: crate::wire::SUPPORTED
                .iter()
                .map(|&(k, _, _)| (k, AtomicU64::new(0), Histogram::default()))
                .collect(),
            ..Metrics::default()
        }
    }

    /// One request of `key` answered in `d`.
    pub fn request(&self, key: ApiKey, d: Duration) {
        if let Some((_, n, h)) = self.apis.iter().find(|(k, _, _)| *k == key) {
            n.fetch_add(1, Ordering::Relaxed);
            h.observe(d);
        }
    }

    /// The Prometheus text exposition; `partitions` is (topic, partition,
    /// log start, log end, high watermark).
    pub fn render(&self, partitions: &[(String, u32, u64, u64, u64)], rebalances: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP strata_requests_total Requests answered, by API.\n");
        out.push_str("# TYPE strata_requests_total counter\n");
        for (k, n, _) in &self.apis {
            let _ = writeln!(
                out,
                "strata_requests_total{{api=\"{k:?}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP strata_request_seconds Time from a request's arrival to its encoded answer (before the socket write), by API.\n",
        );
        out.push_str("# TYPE strata_request_seconds histogram\n");
        for (k, _, h) in &self.apis {
            h.render(
                &mut out,
                "strata_request_seconds",
                &format!("api=\"{k:?}\""),
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "strata_requests_refused_total",
            "Requests refused: malformed, unsupported or too large.",
            "counter",
            self.refused.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "strata_connections",
            "Open client connections.",
            "gauge",
            self.connections.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "strata_connections_accepted_total",
            "Client connections accepted.",
            "counter",
            self.accepted.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "strata_group_rebalances_total",
            "Consumer group rebalances completed.",
            "counter",
            rebalances,
        );
        out.push_str("# HELP strata_fsync_seconds Partition log fsyncs: the flusher's and acks=all appends with theirs; in a cluster, each replica's append with its fsync (the leader's per produce, a follower's per fetch answer).\n");
        out.push_str("# TYPE strata_fsync_seconds histogram\n");
        self.fsync.render(&mut out, "strata_fsync_seconds", "");
        for (name, help, pick) in [
            (
                "strata_partition_log_start_offset",
                "First offset of a partition.",
                0usize,
            ),
            (
                "strata_partition_log_end_offset",
                "Offset after a partition's last record.",
                1,
            ),
            (
                "strata_partition_high_watermark",
                "Offset below which a partition's records are fsynced and visible.",
                2,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (t, p, start, end, hw) in partitions {
                let v = [start, end, hw][pick];
                let _ = writeln!(out, "{name}{{topic=\"{t}\",partition=\"{p}\"}} {v}");
            }
        }
        out
    }
}

/// Answers one HTTP connection: `GET /metrics` gets the exposition, any
/// other path 404, anything unreadable a closed connection.
pub async fn serve_http(
    mut stream: tokio::net::TcpStream,
    // Given the request target, query included.
    body: impl FnOnce(&str) -> Option<String>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(1024);
    // The request head, up to a blank line (bounded: 16 KiB, 5 s).
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 << 10 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, text) = match (method, body(path)) {
        ("GET", Some(text)) => ("200 OK", text),
        _ => (
            "404 Not Found",
            "GET /metrics is served (and /status on a cluster node)\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_counters_histograms_and_partitions() {
        let m = Metrics::new();
        m.request(ApiKey::Produce, Duration::from_micros(300));
        m.request(ApiKey::Produce, Duration::from_millis(30));
        m.fsync.observe(Duration::from_micros(800));
        let text = m.render(&[("events".into(), 0, 0, 10, 7)], 3);
        assert!(text.contains("strata_group_rebalances_total 3"));
        assert!(text.contains("strata_requests_total{api=\"Produce\"} 2"));
        assert!(text.contains("strata_request_seconds_bucket{api=\"Produce\",le=\"0.0005\"} 1"));
        assert!(text.contains("strata_request_seconds_bucket{api=\"Produce\",le=\"0.05\"} 2"));
        assert!(text.contains("strata_request_seconds_count{api=\"Produce\"} 2"));
        assert!(text.contains("strata_fsync_seconds_bucket{le=\"0.001\"} 1"));
        assert!(
            text.contains("strata_partition_high_watermark{topic=\"events\",partition=\"0\"} 7")
        );
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().expect("value");
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }
}
