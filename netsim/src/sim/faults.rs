//! Faults seeded into a run ([`crate::scenario::Faults`]): partitions that
//! heal, requests lost or late in transit, swizzle-clogging and crashes
//! that lose uncommitted chunks; and the invariants checked at every step.
//!
//! # Contract
//! * Every choice comes from the scenario's seed, drawn in event order, so
//!   the same seed gives the same run ([`Sim::trace`] folds every step
//!   into one number to compare).
//! * Faults touch only what travels between nodes and what a crash loses;
//!   each node still runs the unchanged transfer machine.
//! * A violated invariant is recorded, with the time and the node, in
//!   [`super::Outcome::violations`]: a chunk written that is not the
//!   image's, a chunk served by an honest host that does not hold it, an
//!   install before every chunk is durable.

use std::cmp::Reverse;

use proto::manifest::ChunkBody;
use proto::swarm::Role;

use super::{IMAGE, Kind, Msg, Sim, SimChunk, Wire};
use crate::scenario::Faults;
use crate::{At, Rng};

/// The fault plan drawn at the start of a run, and the draws made as it
/// goes.
pub(super) struct Plan {
    cfg: Faults,
    rng: Rng,
    /// Per partition, per node: whether it is on the cut side.
    cut: Vec<Vec<bool>>,
    /// Per node: when it is clogged, if ever.
    clogged: Vec<Option<(f64, f64)>>,
    /// What the faults did so far.
    pub(super) stats: FaultStats,
}

/// What the faults did in a run, to show that each one bit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Messages and chunks lost to partitions.
    pub blocked: u64,
    /// Requests and answers whose stream failed in transit.
    pub lost: u64,
    /// Messages held back by jitter or a clog.
    pub delayed: u64,
    /// Crashes.
    pub crashes: u64,
}

/// A message held back by jitter or a clog, delivered in time order.
pub(super) struct Late {
    pub(super) at: At,
    pub(super) seq: u64,
    pub(super) msg: Msg,
}

impl PartialEq for Late {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Late {}

impl PartialOrd for Late {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Late {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Plan {
    /// Draws which hosts each partition cuts and when each clogged host is
    /// clogged; masters are never cut or clogged, so that the image stays
    /// reachable from the masters' side.
    pub(super) fn draw(cfg: &Faults, roles: &[Role], rng: &mut Rng) -> Self {
        let hosts: Vec<usize> = (0..roles.len()).filter(|&i| roles[i] != Role::Master).collect();
        let pick = |rng: &mut Rng, fraction: f64| rng.sample(&hosts, (hosts.len() as f64 * fraction).round() as usize);
        let cut = cfg
            .partitions
            .iter()
            .map(|p| {
                let mut side = vec![false; roles.len()];
                pick(rng, p.fraction).into_iter().for_each(|i| side[i] = true);
                side
            })
            .collect();
        let mut clogged = vec![None; roles.len()];
        if let Some(c) = &cfg.clog {
            let set = pick(rng, c.fraction);
            let m = set.len();
            // Unclogged in a shuffled order: each takes a distinct slot.
            let mut order: Vec<usize> = (0..m).collect();
            for i in (1..m).rev() {
                order.swap(i, (rng.unit() * (i + 1) as f64) as usize);
            }
            for (k, &n) in set.iter().enumerate() {
                let start = c.at_s + k as f64 * c.step_s;
                let end = c.at_s + (m + order[k]) as f64 * c.step_s;
                clogged[n] = Some((start, end));
            }
        }
        Self { cfg: cfg.clone(), rng: Rng::new(rng.unit().to_bits()), cut, clogged, stats: FaultStats::default() }
    }

    pub(super) fn commit_s(&self) -> f64 {
        self.cfg.commit_ms / 1000.0
    }

    /// Whether what `from` sends to `to` at `t` is lost to a partition.
    pub(super) fn blocked(&self, t: f64, from: u32, to: u32) -> bool {
        self.cfg.partitions.iter().zip(&self.cut).any(|(p, side)| {
            let (a, b) = (side[from as usize], side[to as usize]);
            p.at_s <= t && t < p.at_s + p.for_s && a != b && (!p.one_way || b)
        })
    }

    /// When a message sent by `from` to `to`, due at `at`, arrives: later
    /// with jitter, and not before a clogged end is unclogged.
    fn arrival(&mut self, at: f64, from: u32, to: u32, jitter: bool) -> f64 {
        let mut at = at;
        if jitter && self.cfg.jitter_ms > 0.0 {
            at += self.rng.unit() * self.cfg.jitter_ms / 1000.0;
        }
        for n in [from, to] {
            if let Some((start, end)) = self.clogged[n as usize]
                && start <= at
                && at < end
            {
                at = end;
            }
        }
        at
    }

    /// Whether a request or answer is lost in transit.
    fn lost(&mut self) -> bool {
        self.cfg.loss > 0.0 && self.rng.unit() < self.cfg.loss
    }
}

impl Sim<'_> {
    /// Schedules the partitions and the crashes.
    pub(super) fn schedule_faults(&mut self, rng: &mut Rng) {
        for (i, p) in self.s.faults.partitions.iter().enumerate() {
            self.schedule(p.at_s, Kind::Cut { partition: i as u32 });
        }
        if let Some(c) = self.s.faults.crash.clone() {
            let honest: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].info.role == Role::Worker && !self.nodes[i].malicious)
                .filter(|&i| self.nodes[i].down_for == 0.0)
                .collect();
            for i in rng.sample(&honest, (honest.len() as f64 * c.fraction).round() as usize) {
                let at = self.peering.start_of(i as u32) + rng.unit() * c.within_s;
                self.schedule(at, Kind::Crash { node: i as u32 });
            }
        }
    }

    /// A partition starts: a symmetric one closes every connection across
    /// it; a one-way one loses the chunks in flight towards the cut side.
    pub(super) fn cut(&mut self, partition: usize) {
        let t = self.t;
        for a in 0..self.nodes.len() as u32 {
            for b in self.nodes[a as usize].links.clone() {
                if self.plan.blocked(t, a, b) && self.plan.blocked(t, b, a) {
                    self.disconnect(a, b);
                } else if self.plan.blocked(t, a, b) {
                    self.abort_flows_between(a, b);
                }
            }
        }
        tracing::debug!(partition, t, "partition starts");
    }

    /// Node `n` crashes: it leaves, and comes back with what it committed.
    pub(super) fn crash(&mut self, n: u32) {
        if !self.presence[n as usize].alive {
            return;
        }
        let down = self.s.faults.crash.as_ref().map_or(0.0, |c| c.down_s);
        self.plan.stats.crashes += 1;
        self.nodes[n as usize].crashed = true;
        self.nodes[n as usize].down_for = down;
        self.leave(n);
    }

    /// Queues `m` for delivery, through the faults: lost to a partition,
    /// failed in transit (the asker is told), late, or clogged.
    pub(super) fn post(&mut self, m: Msg) {
        if self.plan.blocked(self.t, m.from, m.to) {
            self.plan.stats.blocked += 1;
            return;
        }
        let asks = matches!(m.wire, Wire::Request { .. } | Wire::AskManifest);
        let answers = matches!(m.wire, Wire::Refused { .. } | Wire::Manifest(_));
        let m = if (asks || answers) && self.plan.lost() {
            // The stream failed: the asker hears of it, from the other end.
            let wire = match m.wire {
                Wire::Request { index, .. } | Wire::Refused { index, .. } => Wire::Failed { index },
                _ => Wire::ManifestFailed,
            };
            self.plan.stats.lost += 1;
            let (from, to, epochs) =
                if asks { (m.to, m.from, (m.epochs.1, m.epochs.0)) } else { (m.from, m.to, m.epochs) };
            Msg { at: m.at, from, to, epochs, wire }
        } else {
            m
        };
        let jitter = !matches!(m.wire, Wire::Notice(_));
        let at = self.plan.arrival(m.at, m.from, m.to, jitter);
        if at == m.at && !self.cross(m.from, m.to) {
            self.lan.push_back(m);
        } else if at == m.at {
            self.wan.push_back(m);
        } else {
            self.plan.stats.delayed += 1;
            self.seq += 1;
            self.late.push(Reverse(Late { at: At(at), seq: self.seq, msg: Msg { at, ..m } }));
        }
    }

    /// Whether a chunk served from `from` to `to` now is lost on the way.
    pub(super) fn serve_blocked(&mut self, from: u32, to: u32) -> bool {
        let blocked = self.plan.blocked(self.t, from, to);
        self.plan.stats.blocked += u64::from(blocked);
        blocked
    }

    fn cross(&self, a: u32, b: u32) -> bool {
        self.crossing(a, b).is_some()
    }

    /// Checks a chunk about to be written against the image.
    pub(super) fn check_write(&mut self, n: u32, index: u32, body: &SimChunk) {
        if body.blake3() != self.manifest.hashes()[index as usize] {
            self.violation(n, format!("wrote chunk {index}, which is not the image's"));
        }
    }

    /// Checks that an honest node serves only what it holds.
    pub(super) fn check_serve(&mut self, n: u32, index: u32) {
        let node = &self.nodes[n as usize];
        let held = node.host.image(IMAGE).is_some_and(|t| t.have().get(index));
        if !node.malicious && !held {
            self.violation(n, format!("served chunk {index}, which it does not hold"));
        }
    }

    /// Checks that an install comes once every chunk is durable.
    pub(super) fn check_install(&mut self, n: u32) {
        if !self.nodes[n as usize].durable.is_full() {
            self.violation(n, "installed before every chunk was durable".into());
        }
    }

    fn violation(&mut self, n: u32, what: String) {
        tracing::error!(node = n, t = self.t, "{what}");
        self.violations.push(format!("t={:.6} node {n}: {what}", self.t));
    }

    /// Folds one step into the trace.
    pub(super) fn trace(&mut self, x: u64) {
        self.trace = mix(self.trace ^ x ^ self.t.to_bits());
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
