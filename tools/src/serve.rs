//! `strata serve`: flags to a broker configuration, then the broker
//! (crate `strata-broker`) runs until SIGTERM or SIGINT.

use std::path::PathBuf;

use strata_broker::{Options, ServerConfig};

use crate::error::{CliError, Result};

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

/// Runs the broker until SIGTERM or SIGINT.
pub fn run(args: Args) -> Result<i32> {
    let mut cfg = ServerConfig::default();
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
    let data = match args.data {
        Some(d) => d,
        None => {
            eprintln!("strata serve: no --data given: using ./strata-data");
            PathBuf::from("strata-data")
        }
    };
    let storage = crate::common::storage_for(&args.io, &data)?;
    Ok(strata_broker::run(Options {
        listen: args.listen,
        advertised: args.advertised,
        data,
        storage,
        config: cfg,
    })?)
}
