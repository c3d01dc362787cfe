//! Who connects to whom, as the real node meets it: hosts start over time,
//! announce to the tracker ([`Registry`], the tracker's own selection),
//! dial what it names within the node's connection limits, and announce
//! again every interval; hosts that leave and come back do all of it again.
//!
//! # Model
//! * Masters run from the start; a host starts as [`crate::scenario::Startup`]
//!   says. A start takes the image up (a restarted host with the chunks it
//!   kept, and without the manifest unless it is complete) and announces.
//! * An announcement's answer is dialled, peer by peer, while the host has
//!   fewer than `max_peers` connections; a dial becomes a connection
//!   `connect_s` later if both ends are up, not connected yet, neither has
//!   banned the other, and both have fewer than `max_connections`.
//!   Connections are symmetric, as libp2p's are.
//! * A ban cuts the connection and refuses the banned peer for the rest of
//!   the run. A host that leaves drops every connection and flow, keeps
//!   its verified chunks, and starts again after `down_s`.
//! * Without locality (the random baseline) every host announces under one
//!   site, so the tracker hands out peers of any site.

use proto::bitfield::Bitfield;
use proto::swarm::Role;
use proto::tracker::Registry;
use proto::transfer::Host;
use proto::wire::Announce;

use super::{IMAGE, Kind, Sim};
use crate::Rng;
use crate::scenario::Scenario;
use crate::sim::Options;

/// How long an announcement stays on record, as the tracker's default.
const TRACKER_TTL_S: u64 = 120;

/// The tracker, and what start-up and dialling need per host.
pub(super) struct Peering {
    registry: Registry,
    /// Per node, when it starts first.
    starts: Vec<f64>,
    /// Per site, the name hosts announce under.
    site_names: Vec<String>,
    /// Per node, the peers it banned.
    banned: Vec<Vec<u32>>,
}

impl Peering {
    pub(super) fn new(s: &Scenario, opt: &Options) -> Self {
        let site_names = s.sites.iter().map(|x| if opt.locality { x.name.clone() } else { "any".to_owned() }).collect();
        Self { registry: Registry::new(TRACKER_TTL_S), starts: Vec::new(), site_names, banned: Vec::new() }
    }

    /// When node `n` starts first.
    pub(super) fn start_of(&self, n: u32) -> f64 {
        self.starts.get(n as usize).copied().unwrap_or(0.0)
    }
}

impl Sim<'_> {
    /// Schedules every node's first start.
    pub(super) fn schedule_starts(&mut self, rng: &mut Rng) {
        let st = &self.s.startup;
        self.peering.banned = vec![Vec::new(); self.nodes.len()];
        self.peering.starts =
            (0..self.nodes.len())
                .map(|i| {
                    if self.nodes[i].info.role == Role::Master {
                        0.0
                    } else {
                        st.list_s + rng.unit() * st.list_spread_s
                    }
                })
                .collect();
        for n in 0..self.nodes.len() as u32 {
            let at = self.peering.starts[n as usize];
            self.schedule(at, Kind::Start { node: n });
        }
    }

    /// Node `n` starts (or starts again): it takes its image up, with the
    /// chunks it kept, and announces.
    pub(super) fn start(&mut self, n: u32) {
        let now = self.now_us();
        let node = &self.nodes[n as usize];
        let chunks = self.manifest.chunk_count();
        // A node that stopped commits what it wrote; one that crashed has
        // only what it had committed.
        let have = match node.host.image(IMAGE) {
            Some(_) if node.crashed => node.durable.clone(),
            Some(t) => t.have().clone(),
            None if node.info.role == Role::Master => Bitfield::full(chunks),
            None => Bitfield::new(chunks),
        };
        self.presence[n as usize].alive = true;
        let spec = self.spec(n as usize, have.clone());
        let node = &mut self.nodes[n as usize];
        node.crashed = false;
        node.durable = have;
        node.committing = None;
        node.host = Host::new();
        // The new host's timers are its own; one armed for the old host
        // would hold back every earlier one.
        node.timer = None;
        if let Some((_, e)) = node.host.add_images(now, vec![(IMAGE, spec)]).pop() {
            tracing::error!(node = n, error = %e, "the image cannot be taken up");
        }
        self.completed(n);
        self.dirty.push(n);
        self.announce(n);
    }

    /// Node `n` announces to the tracker and dials what it names.
    pub(super) fn announce(&mut self, n: u32) {
        if !self.presence[n as usize].alive {
            return;
        }
        let node = &self.nodes[n as usize];
        let a = Announce {
            image: IMAGE,
            site: self.peering.site_names[node.info.site as usize].clone(),
            role: node.info.role,
            complete: node.host.image(IMAGE).is_some_and(|t| t.have().is_full()),
            addrs: Vec::new(),
            want: self.s.swarm.tracker_want,
        };
        let answer = self.peering.registry.announce(self.t as u64, n.to_le_bytes().to_vec(), a);
        let connect = self.t + self.s.startup.connect_s;
        let mut dialled = self.nodes[n as usize].links.len();
        for hint in answer.peers {
            if dialled >= self.s.swarm.max_peers {
                break;
            }
            let Ok(bytes) = <[u8; 4]>::try_from(hint.peer.as_slice()) else { continue };
            let to = u32::from_le_bytes(bytes);
            if !self.nodes[n as usize].links.contains(&to) {
                dialled += 1;
                self.schedule(connect, Kind::Connect { from: n, to });
            }
        }
        let epoch = self.presence[n as usize].epoch;
        self.schedule(self.t + self.s.startup.announce_interval_s, Kind::Announce { node: n, epoch });
    }

    /// A dial from `from` to `to` completes, if both may have the connection.
    pub(super) fn connect(&mut self, from: u32, to: u32) {
        let up = |x: u32| self.presence[x as usize].alive;
        let room = |x: u32| self.nodes[x as usize].links.len() < self.s.swarm.max_connections as usize;
        let banned =
            self.peering.banned[from as usize].contains(&to) || self.peering.banned[to as usize].contains(&from);
        if from == to || !up(from) || !up(to) || banned || !room(from) || !room(to) {
            return;
        }
        if self.nodes[from as usize].links.contains(&to) {
            return;
        }
        let now = self.now_us();
        self.nodes[from as usize].links.push(to);
        self.nodes[to as usize].links.push(from);
        self.nodes[from as usize].host.handle_connected(now, u64::from(to));
        self.nodes[to as usize].host.handle_connected(now, u64::from(from));
        self.dirty.push(from);
        self.dirty.push(to);
    }

    /// `a` banned `b`: the connection closes, and stays closed.
    pub(super) fn unlink(&mut self, a: u32, b: u32) {
        self.peering.banned[a as usize].push(b);
        self.disconnect(a, b);
    }

    pub(super) fn disconnect(&mut self, a: u32, b: u32) {
        let now = self.now_us();
        self.nodes[a as usize].links.retain(|&x| x != b);
        self.nodes[b as usize].links.retain(|&x| x != a);
        self.abort_flows_between(a, b);
        self.nodes[a as usize].host.handle_disconnected(now, u64::from(b));
        self.nodes[b as usize].host.handle_disconnected(now, u64::from(a));
        self.dirty.push(a);
        self.dirty.push(b);
    }

    /// Node `n` goes away for its `down_for`.
    pub(super) fn leave(&mut self, n: u32) {
        for id in self.flows.of_node(n) {
            self.abort(id);
        }
        for p in self.nodes[n as usize].links.clone() {
            self.disconnect(n, p);
        }
        self.presence[n as usize].alive = false;
        let down = self.nodes[n as usize].down_for;
        self.schedule(self.t + down, Kind::Join { node: n });
    }

    /// Node `n` comes back: a restart keeps the verified chunks (the
    /// committed ones after a crash) and nothing else.
    pub(super) fn join(&mut self, n: u32) {
        self.presence[n as usize].epoch += 1;
        self.start(n);
    }
}
