//! Named scenarios: scripted fault sequences over the simulator, each the
//! shape of a failure that lost data in Kafka or Redpanda. Each one passes
//! with Strata's rules; the switches bring an old rule back to show the
//! checker catching what it caused.

use super::{FaultMode, SimConfig, SimReport, World};

/// Old rules a scenario may switch back on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    /// Count unsynced data toward acks (Kafka's default).
    pub unsafe_unsynced_acks: bool,
    /// Truncate followers to their HW (pre-KIP-101).
    pub legacy_truncate_to_hw: bool,
}

/// A named scenario.
pub struct Scenario {
    /// Its name (`strata sim --scenario NAME`).
    pub name: &'static str,
    /// What it does.
    pub about: &'static str,
    /// Runs it.
    pub run: fn(Switches) -> SimReport,
}

fn world(sw: Switches, seed: u64, partitions: u32) -> World {
    World::new(SimConfig {
        seed,
        partitions,
        faults: FaultMode::None,
        unsafe_unsynced_acks: sw.unsafe_unsynced_acks,
        legacy_truncate_to_hw: sw.legacy_truncate_to_hw,
        ..SimConfig::default()
    })
}

fn baseline(sw: Switches) -> SimReport {
    let mut w = world(sw, 1, 2);
    w.run_for(20_000);
    w.finish()
}

/// Every scenario.
pub const ALL: &[Scenario] = &[Scenario {
    name: "baseline",
    about: "no faults: 20 s of produce, consume and ListOffsets",
    run: baseline,
}];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}
