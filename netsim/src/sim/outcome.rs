//! What a run is asked to differ in, and what it measured.

use proto::swarm::{PickerMode, Role};

use super::Sim;
pub use super::faults::FaultStats;
use crate::flows::{Flows, Sharing};

/// How a run differs from the scenario's defaults (for baselines and checks).
#[derive(Debug, Clone)]
pub struct Options {
    /// What progress reports call the run.
    pub name: &'static str,
    /// Chunk choice.
    pub picker: PickerMode,
    /// Same-site preference, cross-site rules, and site-local topology.
    pub locality: bool,
    /// Masters stand back and stripe their work.
    pub master_policy: bool,
    /// How flows share capacity.
    pub sharing: Sharing,
    /// Give up at this many times the bound.
    pub time_limit: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            name: "imageswarm",
            picker: PickerMode::RarestFirst,
            locality: true,
            master_policy: true,
            sharing: Sharing::Local,
            time_limit: 20.0,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Per node: site, role, malicious, completion time (s) if any.
    pub nodes: Vec<NodeOutcome>,
    /// Bytes uploaded by masters.
    pub master_bytes: f64,
    /// Bytes carried over the WAN, `[from site][to site]`.
    pub wan_bytes: Vec<Vec<f64>>,
    /// Per site, per tenth of the bound: the bytes that entered it over the
    /// WAN over what its WAN link could carry (by chunk arrival, so a tenth
    /// may show a little over 100 %).
    pub wan_in_use: Vec<Vec<f64>>,
    /// Bans issued.
    pub bans: u64,
    /// The largest number of corrupt chunks one honest host took from one
    /// malicious peer (the design says 1).
    pub max_corrupt_per_pair: u32,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub end: f64,
    /// Per tenth of the bound: the bytes delivered over the hosts' total
    /// download capacity (1.0 is every downlink full the whole time).
    pub download_use: Vec<f64>,
    /// Per tenth of the bound: the bytes the masters sent over their upload
    /// capacity.
    pub master_use: Vec<f64>,
    /// Invariants that failed, each with the time and the node (see
    /// `sim::faults`); empty in a correct run.
    pub violations: Vec<String>,
    /// Every step of the run folded into one number: the same seed gives
    /// the same trace.
    pub trace: u64,
    /// What the scenario's faults did.
    pub faults: FaultStats,
}

impl Outcome {
    /// Bytes that entered `site` over the WAN.
    pub fn wan_in(&self, site: usize) -> f64 {
        self.wan_bytes.iter().map(|row| row[site]).sum()
    }

    /// Bytes that left `site` over the WAN.
    pub fn wan_out(&self, site: usize) -> f64 {
        self.wan_bytes[site].iter().sum()
    }

    /// Why the run fails the checks every run must pass, if it does: an
    /// invariant failed, or an honest host never completed.
    pub fn failure(&self) -> Option<String> {
        let stuck = self.nodes.iter().filter(|n| n.honest_receiver() && n.completed.is_none()).count();
        if let Some(first) = self.violations.first() {
            Some(format!("{} invariant failures, the first: {first}", self.violations.len()))
        } else if stuck > 0 {
            Some(format!("{stuck} honest hosts never completed"))
        } else {
            None
        }
    }
}

/// One node's result.
#[derive(Debug, Clone)]
pub struct NodeOutcome {
    /// Its site.
    pub site: u32,
    /// Its role.
    pub role: Role,
    /// Whether it serves corrupt data.
    pub malicious: bool,
    /// When the whole verified image was installed, seconds.
    pub completed: Option<f64>,
}

impl NodeOutcome {
    /// Whether the node counts as an honest receiver.
    pub fn honest_receiver(&self) -> bool {
        self.role != Role::Master && !self.malicious
    }
}

impl Sim<'_> {
    /// What the run measured.
    pub(super) fn outcome(&self) -> Outcome {
        let use_of = |bytes: &[f64], capacity: f64| bytes.iter().map(|b| b / (capacity * self.tenth())).collect();
        let capacity = |role: fn(Role) -> bool, cap: fn(&Flows, u32) -> f64| -> f64 {
            (0..self.nodes.len()).filter(|&i| role(self.nodes[i].info.role)).map(|i| cap(&self.flows, i as u32)).sum()
        };
        Outcome {
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeOutcome {
                    site: n.info.site,
                    role: n.info.role,
                    malicious: n.malicious,
                    completed: n.completed,
                })
                .collect(),
            master_bytes: self.master_bytes,
            wan_bytes: self.wan_bytes.clone(),
            wan_in_use: (0..self.s.sites.len())
                .map(|i| use_of(&self.wan_in_tenths[i], self.flows.capacity_wan_in(i as u32)))
                .collect(),
            bans: self.bans,
            max_corrupt_per_pair: self.corrupt.values().copied().max().unwrap_or(0),
            events: self.processed,
            end: self.t,
            download_use: use_of(&self.delivered, capacity(|r| r != Role::Master, Flows::capacity_down)),
            master_use: use_of(&self.seeded, capacity(|r| r == Role::Master, Flows::capacity_up)),
            violations: self.violations.clone(),
            trace: self.trace,
            faults: self.plan.stats,
        }
    }
}
