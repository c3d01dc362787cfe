//! A flow-level discrete-event simulator for imageswarm's swarm.
//!
//! # Contract
//! * Every node runs `proto::swarm::Swarm`, unchanged: the simulator only
//!   delivers its messages, carries its chunk transfers as flows and feeds
//!   back verification results, so what it measures is what ships.
//! * Scenarios are TOML files ([`scenario`]); one seed gives one report,
//!   bit for bit.
//! * Capacity sharing is described in [`flows`]; the event loop in [`sim`];
//!   the Kumar–Ross bound, baselines and reports in [`report`].

pub mod flows;
pub mod report;
pub mod scenario;
pub mod sim;

/// A time in seconds, totally ordered (for event queues).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct At(pub(crate) f64);

impl Eq for At {}

impl PartialOrd for At {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for At {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Gbit/s to bytes per second.
pub const GBIT: f64 = 1e9 / 8.0;

/// What can go wrong in a simulation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scenario file is unusable.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A report could not be written.
    #[error("report: {0}")]
    Io(String),
}

/// The simulator's own seeded generator (topology, churn, malicious hosts).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `k` distinct items of `pool` (all of them if `k` is larger).
    pub fn sample(&mut self, pool: &[usize], k: usize) -> Vec<usize> {
        if k >= pool.len() {
            return pool.to_vec();
        }
        let mut chosen = std::collections::BTreeSet::new();
        while chosen.len() < k {
            chosen.insert(pool[((u128::from(self.next_u64()) * pool.len() as u128) >> 64) as usize]);
        }
        chosen.into_iter().collect()
    }
}
