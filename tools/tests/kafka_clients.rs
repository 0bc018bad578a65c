//! Real Kafka clients that no one here wrote, each against a freshly
//! started `strata serve` (the scripts in tests/clients/ start, SIGKILL
//! and restart it): confluent-kafka (librdkafka), kafka-python and kcat;
//! and confluent-kafka's consumer groups and admin calls on a 3-node
//! `strata cluster` whose group coordinator is SIGKILLed.
//! `.ci/run` installs them; elsewhere a missing client skips its test
//! with a message, unless CI is set, where it fails.

use std::path::Path;
use std::process::Command;

fn have(check: &[&str]) -> bool {
    Command::new(check[0])
        .args(&check[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_script(script: &str, n: u32, needs: &[&str]) {
    if !have(needs) {
        let msg = format!(
            "{script}: `{}` failed: install the clients (apt install kcat; pip install kafka-python confluent-kafka lz4 python-snappy zstandard)",
            needs.join(" ")
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED {msg}");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new("python3")
        .arg(dir.join(script))
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg(n.to_string())
        .current_dir(&dir)
        .output()
        .expect("run python3");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    assert!(text.contains("all checks passed"), "{script}:\n{text}");
    println!("{text}");
}

#[test]
fn confluent_kafka_produces_consumes_with_groups_across_a_sigkill() {
    run_script(
        "confluent_kafka_client.py",
        100_000,
        &["python3", "-c", "import confluent_kafka"],
    );
}

#[test]
fn kafka_python_produces_consumes_with_groups_across_a_sigkill() {
    run_script(
        "kafka_python_client.py",
        100_000,
        &["python3", "-c", "import kafka, lz4, snappy, zstandard"],
    );
}

#[test]
fn kcat_lists_produces_consumes_and_joins_a_group() {
    run_script("kcat_client.py", 10_000, &["kcat", "-V"]);
}

/// A 3-node cluster: two members of one group that bootstrap through
/// different nodes split the partitions (one coordinator for the group),
/// commit, and go on from the committed offsets after the coordinator
/// (the leader of the group's `__consumer_offsets` partition) is
/// SIGKILLed: nothing skipped, nothing read twice.
#[test]
fn confluent_kafka_group_survives_a_sigkill_of_its_coordinator_on_three_nodes() {
    run_script(
        "cluster_groups.py",
        6_000,
        &["python3", "-c", "import confluent_kafka"],
    );
}
