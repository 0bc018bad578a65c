//! `strata cluster up|status|down`: a local cluster of `strata serve`
//! processes on 127.0.0.1, for trying replication and failover on one
//! machine.
//!
//! `up` starts N nodes in the background (each its own process group, so
//! the shell's Ctrl-C does not reach them), every one a broker, nodes 1
//! to K (`--voters`, at most 3 by default) also the voters of the
//! controller quorum, then waits until each has registered
//! with an elected controller, and prints the bootstrap address. The
//! nodes are listed in `DIR/cluster.txt` (id, pid, Kafka address,
//! status address); `status` asks each node's `GET /status` and prints
//! the controller and every partition's leader, ISR, ELR and each
//! replica's high watermark and log end; `down` stops them with SIGTERM
//! (a clean shutdown) and waits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{CliError, Result};

/// `strata cluster` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Starts a local cluster in the background and waits until it is ready.
    Up(UpArgs),
    /// Nodes, controller, partitions (leader, ISR, ELR, HW and LEO per replica).
    Status(DirArg),
    /// Stops the cluster's nodes (SIGTERM, then waits).
    Down(DirArg),
    /// Failover time: SIGKILLs the leader of a partition again and again
    /// and measures the time to the first acks=all write acknowledged by
    /// the new leader (P50/P99), restarting the victim each time.
    Failover(FailoverArgs),
}

/// `strata cluster failover` flags.
#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// The directory `strata cluster up` used.
    #[arg(long, default_value = "strata-cluster")]
    dir: PathBuf,
    /// How many kills.
    #[arg(long, default_value_t = 50)]
    kills: u32,
    /// Topic to write to (one partition, created if missing).
    #[arg(long, default_value = "failover")]
    topic: String,
}

/// `strata cluster` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `strata cluster up` flags.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Number of nodes (each a broker).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// How many of them (nodes 1 to K) are also the controller quorum's
    /// voters; the others are brokers only. Default: all nodes, at most 3.
    #[arg(long)]
    voters: Option<u32>,
    /// Directory for the nodes' data and logs.
    #[arg(long, default_value = "strata-cluster")]
    dir: PathBuf,
    /// Kafka port of node 1; node i listens on base-port + i - 1, and
    /// serves /status and /metrics on base-port + 100 + i - 1.
    #[arg(long = "base-port", default_value_t = 9092)]
    base_port: u16,
    /// A setting for every node, as `strata serve --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Seconds to wait for the cluster to be ready.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// The cluster directory.
#[derive(clap::Args, Debug)]
pub struct DirArg {
    /// The directory `strata cluster up` used.
    #[arg(long, default_value = "strata-cluster")]
    dir: PathBuf,
}

/// One node as `cluster.txt` lists it.
#[derive(Clone, Debug)]
struct NodeEntry {
    id: u32,
    pid: u32,
    kafka: String,
    status: String,
}

fn local(what: String, e: std::io::Error) -> CliError {
    CliError::Local { what, source: e }
}

fn read_nodes(dir: &Path) -> Result<Vec<NodeEntry>> {
    let path = dir.join("cluster.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::Usage(format!(
                "no cluster in {} (start one with `strata cluster up --dir {}`)",
                dir.display(),
                dir.display()
            ))
        } else {
            local(format!("reading {}", path.display()), e)
        }
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || {
            CliError::Usage(format!(
                "{}:{}: damaged line {line:?}",
                path.display(),
                i + 1
            ))
        };
        if f.len() != 5 || f[0] != "node" {
            return Err(bad());
        }
        out.push(NodeEntry {
            id: f[1].parse().map_err(|_| bad())?,
            pid: f[2].parse().map_err(|_| bad())?,
            kafka: f[3].to_string(),
            status: f[4].to_string(),
        });
    }
    Ok(out)
}

/// A node's log file, appended to, for its stdout and stderr.
fn node_log(dir: &Path, node: u32) -> Result<(std::fs::File, std::fs::File)> {
    let path = dir.join(format!("node-{node}.log"));
    let open = |e| local(format!("opening {}", path.display()), e);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(open)?;
    let err = log.try_clone().map_err(open)?;
    Ok((log, err))
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) is not alive.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// `GET path` on a node's status address, with short timeouts.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let sa = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// `key=value` fields of a status line.
fn fields(line: &str) -> std::collections::BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// Runs `strata cluster`.
pub fn run(args: Args) -> Result<i32> {
    match args.cmd {
        Cmd::Up(a) => up(a),
        Cmd::Status(d) => status(&d.dir),
        Cmd::Down(d) => down(&d.dir),
        Cmd::Failover(f) => failover(f),
    }
}

fn up(a: UpArgs) -> Result<i32> {
    if a.nodes == 0 || a.nodes > 9 {
        return Err(CliError::Usage(format!(
            "--nodes {}: a local cluster has 1 to 9 nodes",
            a.nodes
        )));
    }
    let n_voters = a.voters.unwrap_or(a.nodes.min(3));
    if n_voters == 0 || n_voters > a.nodes {
        return Err(CliError::Usage(format!(
            "--voters {n_voters}: between 1 and --nodes ({})",
            a.nodes
        )));
    }
    if u32::from(a.base_port) + 100 + a.nodes > 65535 {
        return Err(CliError::Usage(format!(
            "--base-port {}: too high",
            a.base_port
        )));
    }
    if let Ok(nodes) = read_nodes(&a.dir) {
        if nodes.iter().any(|n| alive(n.pid)) {
            return Err(CliError::Usage(format!(
                "a cluster is already running in {} (stop it with `strata cluster down --dir {}`)",
                a.dir.display(),
                a.dir.display()
            )));
        }
    }
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| local(format!("creating {}", a.dir.display()), e))?;
    let exe = std::env::current_exe().map_err(|e| local("finding the strata binary".into(), e))?;
    let kafka = |i: u32| format!("127.0.0.1:{}", u32::from(a.base_port) + i - 1);
    let stat = |i: u32| format!("127.0.0.1:{}", u32::from(a.base_port) + 100 + i - 1);
    let voters: Vec<String> = (1..=n_voters)
        .map(|i| format!("{i}@{}", kafka(i)))
        .collect();
    let voters = voters.join(",");
    let mut entries = Vec::new();
    for i in 1..=a.nodes {
        let (log, err) = node_log(&a.dir, i)?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .arg("--node-id")
            .arg(i.to_string())
            .arg("--listen")
            .arg(kafka(i))
            .arg("--data")
            .arg(a.dir.join(format!("node-{i}")))
            .arg("--controller-voters")
            .arg(&voters)
            .arg("--metrics-listen")
            .arg(stat(i))
            // Every broker's, not only the voters' (the user's --set wins).
            .arg("--set")
            .arg(format!("default.replication.factor={}", a.nodes.min(3)));
        for s in &a.set {
            cmd.arg("--set").arg(s);
        }
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| local(format!("starting node {i}"), e))?;
        entries.push(NodeEntry {
            id: i,
            pid: child.id(),
            kafka: kafka(i),
            status: stat(i),
        });
    }
    let text: String = entries
        .iter()
        .map(|n| format!("node {} {} {} {}\n", n.id, n.pid, n.kafka, n.status))
        .collect();
    let path = a.dir.join("cluster.txt");
    std::fs::write(&path, text).map_err(|e| local(format!("writing {}", path.display()), e))?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    loop {
        let mut ready = 0;
        for n in &entries {
            if !alive(n.pid) {
                let log = std::fs::read_to_string(a.dir.join(format!("node-{}.log", n.id)))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                let _ = down(&a.dir);
                return Err(CliError::Usage(format!(
                    "node {} exited while starting; its log ends:\n{}",
                    n.id,
                    tail.join("\n")
                )));
            }
            if let Some(body) = http_get(&n.status, "/status") {
                let f = body.lines().next().map(fields).unwrap_or_default();
                if f.get("broker_epoch").is_some_and(|e| *e != "-")
                    && f.get("controller").is_some_and(|c| *c != "-")
                {
                    ready += 1;
                }
            }
        }
        if ready == entries.len() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "the cluster in {} was not ready after {} s ({ready} of {} nodes registered); see its node-*.log files",
                a.dir.display(),
                a.timeout,
                entries.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let bootstrap: Vec<&str> = entries.iter().map(|n| n.kafka.as_str()).collect();
    println!(
        "cluster of {} nodes ({} controller voters) up in {} (logs: node-N.log there)",
        entries.len(),
        n_voters,
        a.dir.display()
    );
    println!("bootstrap: {}", bootstrap.join(","));
    Ok(0)
}

fn status(dir: &Path) -> Result<i32> {
    let nodes = read_nodes(dir)?;
    // topic, index -> (leader, epoch, isr, elr, per replica hw/leo)
    type Row = (String, String, String, String, Vec<String>, i64);
    let mut parts: std::collections::BTreeMap<(String, u32), Row> = Default::default();
    let mut down_count = 0;
    println!("NODE  PID      ADDRESS            STATE  RAFT               BROKER EPOCH");
    for n in &nodes {
        let body = if alive(n.pid) {
            http_get(&n.status, "/status")
        } else {
            None
        };
        let Some(body) = body else {
            down_count += 1;
            println!(
                "{:<5} {:<8} {:<18} {}",
                n.id,
                n.pid,
                n.kafka,
                if alive(n.pid) { "silent" } else { "down" }
            );
            continue;
        };
        let mut lines = body.lines();
        let head = lines.next().map(fields).unwrap_or_default();
        println!(
            "{:<5} {:<8} {:<18} up     {:<18} {}",
            n.id,
            n.pid,
            n.kafka,
            match head.get("raft_role") {
                Some(role) if *role != "-" =>
                    format!("{role} (term {})", head.get("raft_term").unwrap_or(&"-")),
                _ => "not a voter".to_string(),
            },
            head.get("broker_epoch").unwrap_or(&"-")
        );
        if let Some(c) = head.get("controller") {
            parts.entry(("".into(), 0)).or_insert_with(|| {
                (
                    c.to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    Vec::new(),
                    -1,
                )
            });
        }
        for l in lines {
            let f = fields(l);
            let (Some(t), Some(i)) = (f.get("topic"), f.get("index").and_then(|i| i.parse().ok()))
            else {
                continue;
            };
            let epoch: i64 = f
                .get("leader_epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(-1);
            let row = parts.entry((t.to_string(), i)).or_insert_with(|| {
                (
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    Vec::new(),
                    -1,
                )
            });
            // The newest leader epoch any node knows wins.
            if epoch > row.5 {
                row.0 = f.get("leader").unwrap_or(&"-").to_string();
                row.1 = epoch.to_string();
                row.2 = f.get("isr").unwrap_or(&"").to_string();
                row.3 = f.get("elr").unwrap_or(&"").to_string();
                row.5 = epoch;
            }
            if let (Some(hw), Some(leo)) = (f.get("hw"), f.get("leo")) {
                row.4.push(format!("{}:{hw}/{leo}", n.id));
            }
        }
    }
    if let Some(c) = parts.remove(&("".to_string(), 0)) {
        println!("\ncontroller leader: {}", c.0);
    }
    println!(
        "\n{:<20} {:>4}  {:<6} {:>5}  {:<8} {:<8} REPLICAS (node:hw/leo)",
        "TOPIC", "PART", "LEADER", "EPOCH", "ISR", "ELR"
    );
    for ((t, i), r) in &parts {
        println!(
            "{:<20} {:>4}  {:<6} {:>5}  {:<8} {:<8} {}",
            t,
            i,
            r.0,
            r.1,
            if r.2.is_empty() { "-" } else { &r.2 },
            if r.3.is_empty() { "-" } else { &r.3 },
            r.4.join(" ")
        );
    }
    Ok(if down_count > 0 { 1 } else { 0 })
}

fn down(dir: &Path) -> Result<i32> {
    let nodes = read_nodes(dir)?;
    for n in nodes.iter().filter(|n| alive(n.pid)) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(n.pid.to_string())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|n| alive(n.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut code = 0;
    for n in nodes.iter().filter(|n| alive(n.pid)) {
        eprintln!("node {} (pid {}) did not stop in 20 s: killed", n.id, n.pid);
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(n.pid.to_string())
            .status();
        code = 1;
    }
    let _ = std::fs::remove_file(dir.join("cluster.txt"));
    println!("cluster in {} stopped (data kept)", dir.display());
    Ok(code)
}

/// The leader of partition 0 of `topic`, from the nodes' /status (the
/// newest leader epoch wins), and whether its ISR holds every replica.
fn leader_of(nodes: &[NodeEntry], topic: &str) -> Option<(u32, bool)> {
    let mut best: Option<(i64, u32, bool)> = None;
    for n in nodes.iter().filter(|n| alive(n.pid)) {
        let Some(body) = http_get(&n.status, "/status") else {
            continue;
        };
        for l in body.lines().skip(1) {
            let f = fields(l);
            if f.get("topic") != Some(&topic) || f.get("index") != Some(&"0") {
                continue;
            }
            let epoch: i64 = f
                .get("leader_epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(-1);
            let Some(leader) = f.get("leader").and_then(|l| l.parse().ok()) else {
                continue;
            };
            let full = f.get("isr").map(|i| i.split(',').count())
                == f.get("replicas").map(|r| r.split(',').count());
            if best.is_none_or(|(e, _, _)| epoch > e) {
                best = Some((epoch, leader, full));
            }
        }
    }
    best.map(|(_, l, full)| (l, full))
}

/// One acks=all Produce of a tiny batch to `addr`; whether it was
/// acknowledged (error 0) within `timeout`.
fn produce_once(addr: &str, topic: &str, timeout: Duration) -> bool {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let Ok(sa) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sa, timeout) else {
        return false;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(timeout));
    let rec = strata_log::batch::Record::new(0, None, Some(b"failover"));
    let Ok(b) = strata_log::batch::build(0, -1, strata_log::batch::ProducerInfo::NONE, &[rec])
    else {
        return false;
    };
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(b.bytes.clone());
    let mut td = produce_request::TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.to_string()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = timeout.as_millis() as i32;
    req.topic_data = vec![td];
    let Ok(f) = crate::kbench::frame(ApiKey::Produce, 8, 1, &req) else {
        return false;
    };
    if s.write_all(&f).is_err() {
        return false;
    }
    let Ok(mut body) = crate::kbench::read_response(&mut s, false) else {
        return false;
    };
    ProduceResponse::decode(&mut body, 8)
        .ok()
        .and_then(|r| {
            r.responses
                .first()
                .and_then(|t| t.partition_responses.first())
                .map(|p| p.error_code == 0)
        })
        .unwrap_or(false)
}

fn restart_node(dir: &Path, node: u32, cmdline: &[String]) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let (log, err) = node_log(dir, node)?;
    let child = Command::new(&cmdline[0])
        .args(&cmdline[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| local(format!("restarting node {node}"), e))?;
    let mut nodes = read_nodes(dir)?;
    for n in nodes.iter_mut().filter(|n| n.id == node) {
        n.pid = child.id();
    }
    let text: String = nodes
        .iter()
        .map(|n| format!("node {} {} {} {}\n", n.id, n.pid, n.kafka, n.status))
        .collect();
    let path = dir.join("cluster.txt");
    std::fs::write(&path, text).map_err(|e| local(format!("writing {}", path.display()), e))?;
    Ok(child.id())
}

fn failover(a: FailoverArgs) -> Result<i32> {
    let nodes = read_nodes(&a.dir)?;
    if nodes.len() < 3 {
        return Err(CliError::Usage(
            "failover needs a cluster of at least 3 nodes".into(),
        ));
    }
    // Create the topic (one partition) by writing to it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((l, true)) = leader_of(&nodes, &a.topic) {
            let addr = &nodes
                .iter()
                .find(|n| n.id == l)
                .map(|n| n.kafka.clone())
                .unwrap_or_default();
            if produce_once(addr, &a.topic, Duration::from_secs(5)) {
                break;
            }
        } else {
            // Metadata with auto-creation through the first node.
            let _ = crate::kbench::topic_leaders(&nodes[0].kafka, &a.topic);
        }
        if Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "topic {}: no writable leader with a full ISR after 30 s",
                a.topic
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| CliError::Usage(format!("histogram: {e}")))?;
    for k in 0..a.kills {
        let nodes = read_nodes(&a.dir)?;
        // A healthy start: every replica in the ISR.
        let wait_until = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            match leader_of(&nodes, &a.topic) {
                Some((l, true)) => break l,
                _ if Instant::now() >= wait_until => {
                    return Err(CliError::Usage(format!(
                        "kill {k}: the partition did not get back a full ISR in 60 s"
                    )))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let victim = nodes
            .iter()
            .find(|n| n.id == leader)
            .cloned()
            .ok_or_else(|| CliError::Usage(format!("leader {leader} is not in cluster.txt")))?;
        let cmdline: Vec<String> = std::fs::read(format!("/proc/{}/cmdline", victim.pid))
            .map_err(|e| local(format!("reading node {}'s command line", victim.id), e))?
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let others: Vec<String> = nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.kafka.clone())
            .collect();
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(victim.pid.to_string())
            .status();
        let t0 = Instant::now();
        let mut done = None;
        while done.is_none() && t0.elapsed() < Duration::from_secs(60) {
            for addr in &others {
                if produce_once(addr, &a.topic, Duration::from_millis(500)) {
                    done = Some(t0.elapsed());
                    break;
                }
            }
            if done.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let Some(took) = done else {
            return Err(CliError::Usage(format!(
                "kill {k} of node {leader}: no write acknowledged in 60 s"
            )));
        };
        h.saturating_record(took.as_micros().max(1) as u64);
        eprintln!(
            "kill {:>3}: node {leader}: first acked write after {:.0} ms",
            k + 1,
            took.as_secs_f64() * 1000.0
        );
        while alive(victim.pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
        restart_node(&a.dir, victim.id, &cmdline)?;
    }
    println!(
        "failover over {} kills: P50 {:.0} ms, P99 {:.0} ms, max {:.0} ms (SIGKILL of the leader to the first acks=all write acknowledged by the new one)",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    Ok(0)
}
