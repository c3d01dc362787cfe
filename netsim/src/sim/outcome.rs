//! What a run is asked to differ in, and what it measured.

use proto::swarm::{PickerMode, Role};

use crate::flows::Sharing;

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
