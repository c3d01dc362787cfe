//! The event loop: nodes running `proto::swarm`, messages with per-link
//! latency, chunk transfers as [`Flows`], churn and malicious peers.
//!
//! # Model
//! * Every node of the scenario runs one unchanged [`Swarm`]. Its
//!   [`Action`]s become messages (delivered after the link's latency),
//!   flows (chunk data, sharing capacity per [`crate::flows`]), bans and
//!   completions.
//! * Messages are delivered in send order per latency class: every message
//!   of a class has the same latency, so a FIFO per class is an exact
//!   priority queue, at O(1) per message.
//! * Data starts flowing when the request arrives; a flow's own first-byte
//!   latency is not modelled (it is small against a chunk's transfer time).
//! * A malicious host downloads like any other and serves only corrupt
//!   chunks: each arrives in full and fails verification at the receiver.
//! * A host that leaves drops every connection and flow and keeps its
//!   verified chunks; it rejoins after `down_s` with the same neighbours.
//! * Topology, as a tracker would hand it out: each host links to `degree`
//!   random hosts of its site (links are symmetric), each master to
//!   `master_peers` hosts of its site, each gateway to every master and to
//!   `gateway_peers` gateways of other sites. Without locality (the random
//!   baseline) hosts link to random hosts of any site.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use proto::bitfield::Bitfield;
use proto::swarm::{
    Action, Config, FetchStripe, Message, PeerInfo, PickerMode, Role, SiteShare, Stripe, Swarm, UploadPolicy,
};
use tracing::info;

use crate::flows::{Capacities, FlowId, Flows, Sharing};
use crate::scenario::Scenario;
use crate::{At, Error, Rng};

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
    /// When it held the whole verified image, seconds.
    pub completed: Option<f64>,
}

impl NodeOutcome {
    /// Whether the node counts as an honest receiver.
    pub fn honest_receiver(&self) -> bool {
        self.role != Role::Master && !self.malicious
    }
}

struct Node {
    info: PeerInfo,
    malicious: bool,
    swarm: Swarm,
    links: Vec<u32>,
    timer: Option<u64>,
    completed: Option<f64>,
    down_for: f64,
}

/// What sending and delivering a message read of both ends, kept apart from
/// [`Node`] in one small table: every message reads it for the peer at the
/// other end, whose node state it would otherwise pull into the cache.
#[derive(Debug, Clone, Copy)]
struct Presence {
    alive: bool,
    /// Counts rejoins: a message sent before one is dropped.
    epoch: u32,
    site: u32,
}

struct Msg {
    at: f64,
    from: u32,
    to: u32,
    epochs: (u32, u32),
    msg: Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Timer { node: u32, at: u64 },
    Leave { node: u32 },
    Join { node: u32 },
}

struct Sim<'a> {
    s: &'a Scenario,
    opt: Options,
    t: f64,
    chunk: u64,
    size: u64,
    nodes: Vec<Node>,
    /// Per node, as in `nodes`.
    presence: Vec<Presence>,
    flows: Flows,
    events: BinaryHeap<Reverse<(At, u64, Kind)>>,
    seq: u64,
    lan: VecDeque<Msg>,
    wan: VecDeque<Msg>,
    lan_s: f64,
    wan_s: f64,
    dirty: Vec<u32>,
    master_bytes: f64,
    wan_bytes: Vec<Vec<f64>>,
    /// Per site, per tenth of the bound: bytes in over the WAN.
    wan_in_tenths: Vec<Vec<f64>>,
    bans: u64,
    corrupt: BTreeMap<(u32, u32), u32>,
    processed: u64,
    honest_left: usize,
    /// Bytes delivered per tenth of the bound (all flows, complete or not).
    delivered: Vec<f64>,
    /// Of those, the masters' bytes.
    seeded: Vec<f64>,
    /// The scenario's lower bound on completion, seconds.
    bound: f64,
}

/// Runs a scenario once.
pub fn simulate(s: &Scenario, opt: &Options, bound: f64) -> Result<Outcome, Error> {
    let mut sim = Sim::build(s, opt.clone(), bound)?;
    sim.run();
    Ok(sim.outcome())
}

const GBIT: f64 = 1e9 / 8.0;

/// How the sites split what crosses from the masters' site, when the masters
/// are all at one site and the scenario splits that work.
fn site_share(s: &Scenario) -> Option<SiteShare> {
    let with_masters: Vec<u32> = (0..s.sites.len() as u32).filter(|&i| s.sites[i as usize].masters > 0).collect();
    match with_masters[..] {
        [source] if s.swarm.site_shares => {
            Some(SiteShare { source, sites: (0..s.sites.len() as u32).filter(|&x| x != source).collect() })
        }
        _ => None,
    }
}

/// Progress is logged at most this often, checked every `PROGRESS_EVERY` events.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: u64 = 1 << 16;

impl<'a> Sim<'a> {
    fn build(s: &'a Scenario, opt: Options, bound: f64) -> Result<Self, Error> {
        let size = s.image_bytes()?;
        let chunk = s.chunk_bytes()?;
        let chunks = u32::try_from(size.div_ceil(chunk)).map_err(|_| Error::Scenario("too many chunks".into()))?;
        let mut rng = Rng::new(s.seed);
        let masters: u32 = s.sites.iter().map(|x| x.masters).sum();
        let mut nodes = Vec::new();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let mut master_index = 0;
        let sw = &s.swarm;
        let share = site_share(s);
        for (site, x) in s.sites.iter().enumerate() {
            let site = site as u32;
            for _ in 0..x.masters {
                let stripe = (opt.master_policy && masters > 1).then_some(Stripe {
                    index: master_index,
                    count: masters,
                    grace: 2_000_000,
                });
                master_index += 1;
                let upload = UploadPolicy {
                    slots: sw.master_slots,
                    per_peer: sw.upload_per_peer,
                    max_queue: sw.max_queue * 4,
                    master_copies: if opt.master_policy { sw.master_copies } else { u16::MAX },
                    stripe,
                    ..UploadPolicy::default()
                };
                nodes.push(new_node(s, &opt, site, Role::Master, false, upload, Bitfield::full(chunks), nodes.len()));
                up.push(x.master_up_gbit * GBIT);
                down.push(x.master_up_gbit * GBIT);
            }
            for h in 0..x.hosts {
                let role = if h < x.gateways { Role::Gateway } else { Role::Worker };
                let upload = UploadPolicy {
                    slots: sw.upload_slots,
                    per_peer: sw.upload_per_peer,
                    max_queue: sw.max_queue,
                    ..UploadPolicy::default()
                };
                let mut node = new_node(s, &opt, site, role, false, upload, Bitfield::new(chunks), nodes.len());
                if role == Role::Gateway && opt.locality {
                    let mut cfg = node.swarm.config().clone();
                    cfg.fetch_stripe = Some(FetchStripe { gateway: (h, x.gateways), share: share.clone() });
                    cfg.max_inflight = cfg.max_inflight.max(cfg.cross_site_pipeline * 4);
                    node.swarm = Swarm::new(cfg, Bitfield::new(chunks));
                }
                nodes.push(node);
                up.push(x.host_up_gbit * GBIT);
                down.push(x.host_down_gbit * GBIT);
            }
        }
        // Malicious hosts: among plain workers.
        let workers: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].info.role == Role::Worker).collect();
        let bad = (workers.len() as f64 * s.malicious.fraction).round() as usize;
        for &i in rng.sample(&workers, bad).iter() {
            nodes[i].malicious = true;
        }
        // Churn: among honest plain workers.
        let honest: Vec<usize> = workers.iter().copied().filter(|&i| !nodes[i].malicious).collect();
        let leavers = rng.sample(&honest, (honest.len() as f64 * s.churn.leave_fraction).round() as usize);
        let wan = |x: &crate::scenario::Site| x.wan_gbit.map_or(f64::INFINITY, |g| g * GBIT);
        let cap = Capacities {
            up,
            down,
            wan_out: s.sites.iter().map(wan).collect(),
            wan_in: s.sites.iter().map(wan).collect(),
        };
        let mut flows = Flows::new(cap, opt.sharing);
        for (i, n) in nodes.iter().enumerate() {
            if n.info.role == Role::Master {
                flows.mark_seed(i as u32);
            }
        }
        let mut sim = Self {
            s,
            t: 0.0,
            chunk,
            size,
            flows,
            events: BinaryHeap::new(),
            seq: 0,
            lan: VecDeque::new(),
            wan: VecDeque::new(),
            lan_s: s.latency.lan_ms / 1000.0,
            wan_s: s.latency.wan_ms / 1000.0,
            dirty: Vec::new(),
            master_bytes: 0.0,
            wan_bytes: vec![vec![0.0; s.sites.len()]; s.sites.len()],
            wan_in_tenths: vec![Vec::new(); s.sites.len()],
            bans: 0,
            corrupt: BTreeMap::new(),
            processed: 0,
            honest_left: 0,
            delivered: Vec::new(),
            seeded: Vec::new(),
            bound,
            opt,
            presence: nodes.iter().map(|n| Presence { alive: true, epoch: 0, site: n.info.site }).collect(),
            nodes,
        };
        sim.honest_left = sim.nodes.iter().filter(|n| n.info.role != Role::Master && !n.malicious).count();
        sim.link_topology(&mut rng);
        for i in leavers {
            let at = rng.unit() * s.churn.leave_within_s;
            sim.nodes[i].down_for = s.churn.down_s;
            sim.schedule(at, Kind::Leave { node: i as u32 });
        }
        Ok(sim)
    }

    fn link_topology(&mut self, rng: &mut Rng) {
        let n = self.nodes.len();
        let by_site = |site: u32, role: Option<Role>, nodes: &[Node]| -> Vec<usize> {
            (0..nodes.len())
                .filter(|&i| nodes[i].info.role != Role::Master && (site == u32::MAX || nodes[i].info.site == site))
                .filter(|&i| role.is_none_or(|r| nodes[i].info.role == r))
                .collect()
        };
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for i in 0..n {
            let info = self.nodes[i].info;
            let site = if self.opt.locality { info.site } else { u32::MAX };
            match info.role {
                Role::Master => {
                    let pool = by_site(site, None, &self.nodes);
                    for j in rng.sample(&pool, self.s.swarm.master_peers as usize) {
                        pairs.push((i as u32, j as u32));
                    }
                }
                Role::Worker | Role::Gateway => {
                    let pool = by_site(site, None, &self.nodes);
                    for j in rng.sample(&pool, self.s.swarm.degree as usize + 1) {
                        if j != i {
                            pairs.push((i as u32, j as u32));
                        }
                    }
                }
            }
            if info.role == Role::Gateway && self.opt.locality {
                for (m, node) in self.nodes.iter().enumerate() {
                    if node.info.role == Role::Master {
                        pairs.push((i as u32, m as u32));
                    }
                }
                let others: Vec<usize> = by_site(u32::MAX, Some(Role::Gateway), &self.nodes)
                    .into_iter()
                    .filter(|&j| self.nodes[j].info.site != info.site)
                    .collect();
                for j in rng.sample(&others, self.s.swarm.gateway_peers as usize) {
                    pairs.push((i as u32, j as u32));
                }
            }
        }
        for (a, b) in pairs {
            let (a, b) = (a.min(b), a.max(b));
            if a != b && !self.nodes[a as usize].links.contains(&b) {
                self.nodes[a as usize].links.push(b);
                self.nodes[b as usize].links.push(a);
            }
        }
        for i in 0..n {
            let links = self.nodes[i].links.clone();
            for j in links {
                if (i as u32) < j {
                    self.connect(i as u32, j);
                }
            }
        }
        self.settle();
    }

    fn now_us(&self) -> u64 {
        // Rounded, so that a deadline `at` scheduled at `at / 1e6` seconds
        // reads back as `at`, not `at - 1`.
        (self.t * 1e6).round() as u64
    }

    fn schedule(&mut self, at: f64, kind: Kind) {
        self.seq += 1;
        self.events.push(Reverse((At(at), self.seq, kind)));
    }

    fn connect(&mut self, a: u32, b: u32) {
        let now = self.now_us();
        let (ia, ib) = (self.nodes[a as usize].info, self.nodes[b as usize].info);
        self.nodes[a as usize].swarm.handle_connected(now, b as u64, ib);
        self.nodes[b as usize].swarm.handle_connected(now, a as u64, ia);
        self.dirty.push(a);
        self.dirty.push(b);
    }

    fn run(&mut self) {
        let limit = self.bound * self.opt.time_limit;
        let mut last_report = Instant::now();
        while self.honest_left > 0 {
            if self.processed % PROGRESS_EVERY == 0 && last_report.elapsed() >= PROGRESS_INTERVAL {
                last_report = Instant::now();
                let total = self.nodes.iter().filter(|n| n.info.role != Role::Master && !n.malicious).count();
                info!(
                    "{}: simulated {:.3} s ({:.2}x the bound): {} of {total} hosts done, {} events",
                    self.opt.name,
                    self.t,
                    self.t / self.bound,
                    total - self.honest_left,
                    self.processed
                );
            }
            let flow = self.flows.next_due().map(|(t, _)| t);
            let ev = self.events.peek().map(|Reverse((At(t), _, _))| *t);
            let lan = self.lan.front().map(|m| m.at);
            let wan = self.wan.front().map(|m| m.at);
            let next = [flow, ev, lan, wan].into_iter().flatten().min_by(f64::total_cmp);
            let Some(next) = next else { break };
            if next > limit {
                break;
            }
            self.advance(next.max(self.t));
            self.processed += 1;
            if flow == Some(next) {
                if let Some((_, id)) = self.flows.next_due() {
                    self.flow_done(id);
                }
            } else if ev == Some(next) {
                if let Some(Reverse((_, _, kind))) = self.events.pop() {
                    self.event(kind);
                }
            } else if lan == Some(next) {
                if let Some(m) = self.lan.pop_front() {
                    self.deliver(m);
                }
            } else if let Some(m) = self.wan.pop_front() {
                self.deliver(m);
            }
            self.settle();
        }
    }

    /// A tenth of the bound: the span `download_use` reports on.
    fn tenth(&self) -> f64 {
        self.bound / 10.0
    }

    /// Which tenth of the bound the clock is in.
    fn tenth_now(&self) -> usize {
        (self.t / self.tenth()) as usize
    }

    /// Moves the clock to `t`, crediting the bytes the flows carried meanwhile
    /// to the tenths of the bound they fall in.
    fn advance(&mut self, t: f64) {
        let (rate, seed_rate) = (self.flows.total_rate(), self.flows.seed_rate());
        while self.t < t {
            let tenth = self.tenth_now();
            let until = t.min((tenth + 1) as f64 * self.tenth()).max(self.t);
            credit(&mut self.delivered, tenth, rate * (until - self.t));
            credit(&mut self.seeded, tenth, seed_rate * (until - self.t));
            // Guards against a step that rounding would leave at zero length.
            self.t = if until > self.t { until } else { t };
        }
    }

    fn deliver(&mut self, m: Msg) {
        let (from, to) = (self.presence[m.from as usize], self.presence[m.to as usize]);
        if !from.alive || !to.alive || (from.epoch, to.epoch) != m.epochs {
            return;
        }
        let now = self.now_us();
        self.nodes[m.to as usize].swarm.handle_message(now, m.from as u64, m.msg);
        self.dirty.push(m.to);
    }

    fn event(&mut self, kind: Kind) {
        let now = self.now_us();
        match kind {
            Kind::Timer { node, at } => {
                let n = &mut self.nodes[node as usize];
                if self.presence[node as usize].alive && n.timer == Some(at) {
                    n.timer = None;
                    n.swarm.handle_timeout(now.max(at));
                    self.dirty.push(node);
                }
            }
            Kind::Leave { node } => self.leave(node),
            Kind::Join { node } => self.join(node),
        }
    }

    fn flow_done(&mut self, id: FlowId) {
        let Some(f) = self.flows.remove(self.t, id) else {
            return;
        };
        self.account(&f, f.bytes as f64);
        let now = self.now_us();
        let verified = !self.nodes[f.from as usize].malicious;
        if !verified {
            *self.corrupt.entry((f.to, f.from)).or_default() += 1;
        }
        self.nodes[f.to as usize].swarm.handle_chunk(now, f.from as u64, f.chunk, verified);
        self.nodes[f.from as usize].swarm.handle_upload_done(now, f.to as u64, f.chunk);
        self.dirty.push(f.to);
        self.dirty.push(f.from);
    }

    fn account(&mut self, f: &crate::flows::Flow, bytes: f64) {
        if self.nodes[f.from as usize].info.role == Role::Master {
            self.master_bytes += bytes;
        }
        if let Some((from, into)) = f.cross {
            self.wan_bytes[from as usize][into as usize] += bytes;
            let tenth = self.tenth_now();
            credit(&mut self.wan_in_tenths[into as usize], tenth, bytes);
        }
    }

    /// Drains the actions of every node touched, until none are left.
    fn settle(&mut self) {
        while let Some(n) = self.dirty.pop() {
            self.drain(n);
        }
    }

    fn drain(&mut self, n: u32) {
        let now = self.now_us();
        while let Some(action) = self.nodes[n as usize].swarm.poll_action() {
            match action {
                Action::Send { to, msg } => self.send(n, to as u32, msg),
                Action::Upload { to, chunk } => {
                    let to = to as u32;
                    let ok = self.presence[to as usize].alive && self.nodes[n as usize].links.contains(&to);
                    if ok {
                        let bytes = (self.size - u64::from(chunk) * self.chunk).min(self.chunk);
                        let cross = self.crossing(n, to);
                        self.flows.start(self.t, n, to, chunk, bytes, cross);
                    } else {
                        self.nodes[n as usize].swarm.handle_upload_done(now, to as u64, chunk);
                    }
                }
                Action::Ban { peer, .. } => {
                    self.bans += 1;
                    self.unlink(n, peer as u32, true);
                }
                Action::Completed => {
                    let node = &mut self.nodes[n as usize];
                    if node.completed.is_none() {
                        node.completed = Some(self.t);
                        if node.info.role != Role::Master && !node.malicious {
                            self.honest_left -= 1;
                        }
                    }
                }
            }
        }
        let node = &mut self.nodes[n as usize];
        if let Some(at) = node.swarm.poll_timeout()
            && node.timer.is_none_or(|t| at < t)
        {
            node.timer = Some(at);
            self.schedule(at as f64 / 1e6, Kind::Timer { node: n, at });
        }
    }

    /// `(from's site, to's site)` when traffic between them crosses sites.
    fn crossing(&self, from: u32, to: u32) -> Option<(u32, u32)> {
        let (a, b) = (self.presence[from as usize].site, self.presence[to as usize].site);
        (a != b).then_some((a, b))
    }

    fn send(&mut self, from: u32, to: u32, msg: Message) {
        let (a, b) = (self.presence[from as usize], self.presence[to as usize]);
        if !b.alive {
            return;
        }
        let cross = self.crossing(from, to).is_some();
        let m =
            Msg { at: self.t + if cross { self.wan_s } else { self.lan_s }, from, to, epochs: (a.epoch, b.epoch), msg };
        if cross {
            self.wan.push_back(m);
        } else {
            self.lan.push_back(m);
        }
    }

    /// Drops the link between `a` and `b`; `a`'s swarm already knows when
    /// `a` banned `b`.
    fn unlink(&mut self, a: u32, b: u32, banned: bool) {
        let now = self.now_us();
        self.nodes[a as usize].links.retain(|&x| x != b);
        self.nodes[b as usize].links.retain(|&x| x != a);
        self.abort_flows_between(a, b);
        if !banned {
            self.nodes[a as usize].swarm.handle_disconnected(now, b as u64);
        }
        self.nodes[b as usize].swarm.handle_disconnected(now, a as u64);
        self.dirty.push(a);
        self.dirty.push(b);
    }

    fn abort_flows_between(&mut self, a: u32, b: u32) {
        let ids: Vec<FlowId> = self
            .flows
            .of_node(a)
            .into_iter()
            .filter(|&id| self.flows.get(id).is_some_and(|f| f.from == b || f.to == b))
            .collect();
        for id in ids {
            self.abort(id);
        }
    }

    fn abort(&mut self, id: FlowId) {
        let sent = self.flows.get(id).map(|f| f.sent(self.t)).unwrap_or(0.0);
        let Some(f) = self.flows.remove(self.t, id) else {
            return;
        };
        self.account(&f, sent);
        let now = self.now_us();
        if self.presence[f.from as usize].alive {
            self.nodes[f.from as usize].swarm.handle_upload_done(now, f.to as u64, f.chunk);
            self.dirty.push(f.from);
        }
    }

    fn leave(&mut self, n: u32) {
        let now = self.now_us();
        for id in self.flows.of_node(n) {
            self.abort(id);
        }
        let links = self.nodes[n as usize].links.clone();
        for &p in &links {
            self.nodes[p as usize].swarm.handle_disconnected(now, n as u64);
            self.dirty.push(p);
        }
        self.presence[n as usize].alive = false;
        let node = &mut self.nodes[n as usize];
        node.timer = None;
        let down = node.down_for;
        self.schedule(self.t + down, Kind::Join { node: n });
    }

    fn join(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        // A restart keeps the verified chunks and nothing else.
        let have = node.swarm.have().clone();
        let cfg = node.swarm.config().clone();
        node.swarm = Swarm::new(cfg, have);
        let links: Vec<u32> = node.links.clone();
        let me = &mut self.presence[n as usize];
        me.alive = true;
        me.epoch += 1;
        for p in links {
            if self.presence[p as usize].alive {
                self.connect(n, p);
            }
        }
        if self.nodes[n as usize].swarm.is_complete() {
            self.dirty.push(n);
        }
    }

    fn outcome(&self) -> Outcome {
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
                .map(|i| {
                    let capacity = self.flows.capacity_wan_in(i as u32) * self.tenth();
                    self.wan_in_tenths[i].iter().map(|b| b / capacity).collect()
                })
                .collect(),
            bans: self.bans,
            max_corrupt_per_pair: self.corrupt.values().copied().max().unwrap_or(0),
            events: self.processed,
            end: self.t,
            download_use: {
                let capacity: f64 = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].info.role != Role::Master)
                    .map(|i| self.flows.capacity_down(i as u32))
                    .sum();
                self.delivered.iter().map(|b| b / (capacity * self.tenth())).collect()
            },
            master_use: {
                let capacity: f64 = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].info.role == Role::Master)
                    .map(|i| self.flows.capacity_up(i as u32))
                    .sum();
                self.seeded.iter().map(|b| b / (capacity * self.tenth())).collect()
            },
        }
    }
}

/// Adds `bytes` to `tenths[tenth]`, growing `tenths` as the run goes on.
fn credit(tenths: &mut Vec<f64>, tenth: usize, bytes: f64) {
    if tenths.len() <= tenth {
        tenths.resize(tenth + 1, 0.0);
    }
    tenths[tenth] += bytes;
}

#[allow(clippy::too_many_arguments)]
fn new_node(
    s: &Scenario,
    opt: &Options,
    site: u32,
    role: Role,
    malicious: bool,
    upload: UploadPolicy,
    have: Bitfield,
    index: usize,
) -> Node {
    let cfg = Config {
        site,
        role,
        pipeline: s.swarm.pipeline,
        cross_site_pipeline: s.swarm.cross_site_pipeline,
        max_inflight: s.swarm.max_inflight,
        random_first: s.swarm.random_first,
        picker: opt.picker,
        locality: opt.locality,
        request_timeout: s.swarm.request_timeout_ms * 1000,
        refusal_backoff: (s.swarm.refusal_backoff_ms * 1000.0) as u64,
        refusal_pause: (s.swarm.refusal_pause_ms * 1000.0) as u64,
        late_factor: s.swarm.late_factor,
        upload,
        seed: s.seed.wrapping_mul(0x100_0000_01b3).wrapping_add(index as u64),
        ..Config::default()
    };
    let completed = (role == Role::Master).then_some(0.0);
    Node {
        info: PeerInfo { site, role },
        malicious,
        swarm: Swarm::new(cfg, have),
        links: Vec::new(),
        timer: None,
        completed,
        down_for: 0.0,
    }
}
