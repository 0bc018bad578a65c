//! What every torture workload shares: the child's loop (open, then
//! report each operation's start and acknowledgement on stdout), the
//! parent's kill cycle, and the closing report.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Args;
use crate::error::{CliError, Result};

/// A seeded workload: the operations of cycle `c` are the same in the
/// parent and the child, so nothing but two counters crosses the pipe.
pub(crate) trait Workload {
    /// One operation.
    type Op;
    /// The workload of `cycle`.
    fn new(a: &Args, cycle: u64) -> Self;
    /// The next operation.
    fn next(&mut self) -> Self::Op;
    /// How many operations `next` has handed out.
    fn count(&self) -> u64;
    /// The flags the child needs to rebuild this workload (beyond the
    /// seed and the cycle, which every child gets).
    fn child_flags(a: &Args) -> Vec<String>;
}

/// The child's side, after it opened what it tortures: says `R`, then for
/// each operation `I n` before and `A n` after `run` acknowledged it, until
/// it is killed (or an operation fails, which ends it with that error).
pub(crate) fn child_loop<W: Workload>(
    a: &Args,
    mut run: impl FnMut(&W::Op, u64) -> Result<()>,
) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| CliError::Local {
        what: "write to the parent".into(),
        source: e,
    };
    writeln!(out, "R").and_then(|()| out.flush()).map_err(io)?;
    let mut w = W::new(a, a.cycle);
    loop {
        let op = w.next();
        let n = w.count();
        writeln!(out, "I {n}")
            .and_then(|()| out.flush())
            .map_err(io)?;
        run(&op, n)?;
        writeln!(out, "A {n}")
            .and_then(|()| out.flush())
            .map_err(io)?;
    }
}

/// Starts a child for `cycle`, kills it with SIGKILL after `kill_after`,
/// and returns what it reported: (last intent, last acknowledged), or a
/// failure (the child's own error).
pub(crate) fn kill_cycle<W: Workload>(
    a: &Args,
    exe: &Path,
    dir: &Path,
    cycle: u64,
    kill_after: Duration,
) -> Result<std::result::Result<Killed, String>> {
    let mut cmd = Command::new(exe);
    cmd.args(["torture", "--child"])
        .arg(format!("--db={}", dir.display()))
        .arg(format!("--cycle={cycle}"))
        .arg(format!("--seed={}", a.seed))
        .args(W::child_flags(a))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = cmd.spawn().map_err(|e| CliError::Local {
        what: "start the child".into(),
        source: e,
    })?;
    let stdout = proc
        .stdout
        .take()
        .ok_or_else(|| CliError::Usage("no child stdout".into()))?;
    // The reader thread follows the pipe until the child dies.
    let reader = std::thread::spawn(move || {
        let (mut ready, mut intent, mut acked) = (false, 0u64, 0u64);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split(' ');
            match (
                parts.next(),
                parts.next().and_then(|n| n.parse::<u64>().ok()),
            ) {
                (Some("R"), _) => ready = true,
                (Some("I"), Some(n)) => intent = n,
                (Some("A"), Some(n)) => acked = n,
                _ => {}
            }
        }
        (ready, intent, acked)
    });
    std::thread::sleep(kill_after);
    let _ = proc.kill(); // SIGKILL
    let status = proc.wait().map_err(|e| CliError::Local {
        what: "wait for the child".into(),
        source: e,
    })?;
    let (ready, intent, acked) = reader
        .join()
        .map_err(|_| CliError::Usage("pipe reader panicked".into()))?;
    if !ready && status.success() {
        return Ok(Err(format!(
            "cycle {cycle}: the child exited before opening the database"
        )));
    }
    // The child's own error (not a kill): report it.
    if !status.success() && status.code().is_some() {
        let mut err = String::new();
        if let Some(mut e) = proc.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Ok(Err(format!(
            "cycle {cycle}: the child failed: {}",
            err.trim()
        )));
    }
    Ok(Ok(Killed {
        intent,
        acked,
        opened: ready,
    }))
}

/// What a killed child had done.
pub(crate) struct Killed {
    /// Operations it had started.
    pub(crate) intent: u64,
    /// Operations it had acknowledged.
    pub(crate) acked: u64,
    /// Whether its open had returned (otherwise the kill struck inside the
    /// open: recovery, its flush, the release of WAL segments).
    pub(crate) opened: bool,
}

/// Prints the summary and, on a failure, the failure and the command that
/// reproduces it; the exit code.
pub(crate) fn report(a: &Args, summary: String, failure: Option<String>) -> i32 {
    println!(
        "{summary}; {}",
        if failure.is_some() {
            "1 failure"
        } else {
            "0 failures"
        }
    );
    let Some(f) = failure else {
        return 0;
    };
    eprintln!("strata torture: FAILED: {f}");
    let style = super::style_name(a.compaction_style);
    eprintln!(
        "reproduce: strata torture{} --seed={} --cycles={} --compaction_style={style} --io={} --sync_ratio={} --keys={} --max_kill_ms={}",
        if a.power_loss {
            " --power_loss"
        } else if a.corrupt {
            " --corrupt"
        } else if a.log && a.direct {
            " --log --direct"
        } else if a.log {
            " --log"
        } else {
            ""
        },
        a.seed,
        a.cycles,
        a.io,
        a.sync_ratio,
        a.keys,
        a.max_kill_ms
    );
    1
}
