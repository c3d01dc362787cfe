//! The event loop: nodes running the node's transfer machine
//! ([`proto::transfer::Host`]), messages with per-link latency, chunk
//! transfers as [`Flows`], start-up, churn and malicious peers.
//!
//! # Model
//! * Every node runs one unchanged [`Host`], as the real node's event loop
//!   does: hellos, notices, chunk and manifest requests and refusals are
//!   messages (delivered after the link's latency), chunk data travels as
//!   flows (sharing capacity per [`crate::flows`]), and the machine's disk
//!   effects complete at once (an install after `install_s`). A host is done
//!   when its image is installed, as `imageswarm wait` sees it.
//! * Chunk bytes are stand-ins ([`SimChunk`]): their length and the hash
//!   their sender put in, checked by the same code that checks real bytes
//!   against the same kind of verified manifest. Workers start without the
//!   manifest and ask their peers for it.
//! * Messages are delivered in send order per latency class: every message
//!   of a class has the same latency, so a FIFO per class is an exact
//!   priority queue, at O(1) per message.
//! * Data starts flowing when the request arrives; a flow's own first-byte
//!   latency is not modelled (it is small against a chunk's transfer time).
//! * A malicious host downloads like any other and serves only corrupt
//!   chunks: each arrives in full and fails verification at the receiver.
//! * Who connects to whom is [`peering`]'s: start-up, the tracker's answers
//!   and the node's connection limits.

mod outcome;
mod peering;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::bitfield::Bitfield;
use proto::manifest::{ChunkBody, ChunkHash, ChunkSize, Manifest};
use proto::swarm::{Config, FetchStripe, PeerInfo, Role, Stripe, UploadPolicy};
use proto::transfer::{ChunkReply, Effect, Host, ImageId, ImageSpec, ManifestReply, Notice};
use proto::wire::Refusal;
use tracing::info;

pub use outcome::{NodeOutcome, Options, Outcome};

use crate::flows::{Capacities, FlowId, Flows};
use crate::scenario::Scenario;
use crate::{At, Error, Rng};

/// The one image every scenario moves.
const IMAGE: ImageId = uuid::Uuid::from_u128(0x1e5e_0000_0000_4000_8000_0000_0000_0001);

/// A chunk's bytes as the simulator carries them: their length and their
/// hash (the manifest's from an honest sender, another from a malicious
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimChunk {
    len: u64,
    hash: ChunkHash,
}

impl ChunkBody for SimChunk {
    fn byte_len(&self) -> u64 {
        self.len
    }

    fn blake3(&self) -> ChunkHash {
        self.hash
    }
}

struct Node {
    info: PeerInfo,
    malicious: bool,
    host: Host<SimChunk>,
    /// How its swarm decides (kept for restarts).
    swarm: Config,
    /// Connected peers.
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
    /// Started and not away.
    alive: bool,
    /// Counts starts: a message sent before one is dropped.
    epoch: u32,
    info: PeerInfo,
}

/// What travels between nodes, for the one image.
#[derive(Debug)]
enum Wire {
    Hello(Vec<(ImageId, Bitfield)>),
    Notice(Notice),
    Request { index: u32, insist: bool },
    Refused { index: u32, refusal: Refusal },
    AskManifest,
    Manifest(Result<Arc<[ChunkHash]>, Refusal>),
}

struct Msg {
    at: f64,
    from: u32,
    to: u32,
    epochs: (u32, u32),
    wire: Wire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Timer { node: u32, at: u64 },
    Start { node: u32 },
    Announce { node: u32, epoch: u32 },
    Connect { from: u32, to: u32 },
    Installed { node: u32, epoch: u64 },
    Leave { node: u32 },
    Join { node: u32 },
}

struct Sim<'a> {
    s: &'a Scenario,
    opt: Options,
    t: f64,
    /// The image: stand-in hashes, their root, chunk size and length.
    manifest: Manifest,
    nodes: Vec<Node>,
    /// Per node, as in `nodes`.
    presence: Vec<Presence>,
    peering: peering::Peering,
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

/// The scenario's image: a manifest of stand-in hashes.
fn manifest(chunks: u32, chunk: u64, size: u64, seed: u64) -> Result<Manifest, Error> {
    let hashes: Arc<[ChunkHash]> = (0..chunks)
        .map(|i| *blake3::hash(&[seed.to_le_bytes(), u64::from(i).to_le_bytes()].concat()).as_bytes())
        .collect();
    let cs = ChunkSize::new(chunk).map_err(|e| Error::Scenario(e.to_string()))?;
    Manifest::from_hashes(cs, size, hashes).map_err(|e| Error::Scenario(e.to_string()))
}

/// Progress is logged at most this often, checked every `PROGRESS_EVERY` events.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: u64 = 1 << 16;

impl<'a> Sim<'a> {
    fn build(s: &'a Scenario, opt: Options, bound: f64) -> Result<Self, Error> {
        let size = s.image_bytes()?;
        let chunk = s.chunk_bytes()?;
        let chunks = u32::try_from(size.div_ceil(chunk)).map_err(|_| Error::Scenario("too many chunks".into()))?;
        let manifest = manifest(chunks, chunk, size, s.seed)?;
        let mut rng = Rng::new(s.seed);
        let masters: u32 = s.sites.iter().map(|x| x.masters).sum();
        let mut nodes = Vec::new();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let mut master_index = 0;
        let sw = &s.swarm;
        // Every site reads the same federation file: the scenario's sites,
        // in order.
        let federation: Vec<u32> = if sw.site_shares { (0..s.sites.len() as u32).collect() } else { Vec::new() };
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
                nodes.push(new_node(s, &opt, site, Role::Master, upload, nodes.len()));
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
                let mut node = new_node(s, &opt, site, role, upload, nodes.len());
                if role == Role::Gateway && opt.locality {
                    node.swarm.fetch_stripe = Some(FetchStripe {
                        key: node.info.key,
                        federation: federation.clone(),
                        ..FetchStripe::default()
                    });
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
            manifest,
            flows,
            peering: peering::Peering::new(s, &opt),
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
            presence: nodes.iter().map(|n| Presence { alive: false, epoch: 0, info: n.info }).collect(),
            nodes,
        };
        sim.honest_left = sim.nodes.iter().filter(|n| n.info.role != Role::Master && !n.malicious).count();
        sim.schedule_starts(&mut rng);
        for i in leavers {
            let at = sim.peering.start_of(i as u32) + rng.unit() * s.churn.leave_within_s;
            sim.nodes[i].down_for = s.churn.down_s;
            sim.schedule(at, Kind::Leave { node: i as u32 });
        }
        Ok(sim)
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

    /// The machine's view of node `n`'s image when it starts: masters hold
    /// it installed, with the manifest; a host what it kept, and the
    /// manifest only if it is complete.
    fn spec(&self, n: usize, have: Bitfield) -> ImageSpec {
        let complete = have.is_full();
        ImageSpec {
            epoch: u64::from(self.presence[n].epoch),
            root: self.manifest.root(),
            // `build` checked the chunk size.
            chunk_size: self.manifest.chunk_size(),
            size: self.manifest.size(),
            available: complete,
            have,
            hashes: complete.then(|| self.manifest.shared_hashes()),
            swarm: self.nodes[n].swarm.clone(),
        }
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
        let peer = u64::from(m.from);
        let host = &mut self.nodes[m.to as usize].host;
        match m.wire {
            Wire::Hello(images) => host.handle_hello(now, peer, from.info, images),
            Wire::Notice(n) => {
                host.handle_notices(now, peer, vec![(IMAGE, n)]);
            }
            Wire::Request { index, insist } => host.handle_chunk_request(now, peer, IMAGE, index, insist),
            Wire::Refused { index, refusal } => {
                host.handle_chunk_reply(now, peer, IMAGE, index, ChunkReply::Refused(refusal));
            }
            Wire::AskManifest => {
                let answer = host.manifest_for(IMAGE);
                self.send(m.to, m.from, Wire::Manifest(answer));
            }
            Wire::Manifest(Ok(hashes)) => host.handle_manifest_reply(now, peer, IMAGE, ManifestReply::Hashes(hashes)),
            Wire::Manifest(Err(r)) => host.handle_manifest_reply(now, peer, IMAGE, ManifestReply::Refused(r)),
        }
        self.dirty.push(m.to);
    }

    fn event(&mut self, kind: Kind) {
        let now = self.now_us();
        match kind {
            Kind::Timer { node, at } => {
                let n = &mut self.nodes[node as usize];
                if self.presence[node as usize].alive && n.timer == Some(at) {
                    n.timer = None;
                    n.host.handle_timeout(now.max(at));
                    self.dirty.push(node);
                }
            }
            Kind::Installed { node, epoch } => {
                if self.presence[node as usize].alive {
                    self.nodes[node as usize].host.handle_installed(now, IMAGE, epoch, Ok(()));
                    self.completed(node);
                }
            }
            Kind::Start { node } => self.start(node),
            // An announcement chain ends with the run of the node that
            // started it: a node that rejoins starts a chain of its own.
            Kind::Announce { node, epoch } => {
                if self.presence[node as usize].epoch == epoch {
                    self.announce(node);
                }
            }
            Kind::Connect { from, to } => self.connect(from, to),
            Kind::Leave { node } => self.leave(node),
            Kind::Join { node } => self.join(node),
        }
    }

    fn completed(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if node.completed.is_none() && node.host.image(IMAGE).is_some_and(|t| t.is_available()) {
            node.completed = Some(self.t);
            if node.info.role != Role::Master && !node.malicious {
                self.honest_left -= 1;
            }
        }
    }

    fn flow_done(&mut self, id: FlowId) {
        let Some(f) = self.flows.remove(self.t, id) else {
            return;
        };
        self.account(&f, f.bytes as f64);
        let now = self.now_us();
        let mut body = SimChunk { len: f.bytes, hash: self.manifest.hashes()[f.chunk as usize] };
        if self.nodes[f.from as usize].malicious {
            *self.corrupt.entry((f.to, f.from)).or_default() += 1;
            body.hash = [0xff; 32];
        }
        let (from, to) = (u64::from(f.from), u64::from(f.to));
        self.nodes[f.to as usize].host.handle_chunk_reply(now, from, IMAGE, f.chunk, ChunkReply::Data(body));
        self.nodes[f.from as usize].host.handle_upload_done(now, to, IMAGE, f.chunk);
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

    /// Carries out the effects of every node touched, until none are left.
    fn settle(&mut self) {
        while let Some(n) = self.dirty.pop() {
            self.drain(n);
        }
    }

    fn drain(&mut self, n: u32) {
        let now = self.now_us();
        while let Some(effect) = self.nodes[n as usize].host.poll_effect() {
            match effect {
                Effect::Hello { to, images } => self.send(n, to as u32, Wire::Hello(images)),
                Effect::Notice { to, notice, .. } => self.send(n, to as u32, Wire::Notice(notice)),
                Effect::RequestChunk { to, index, insist, .. } => {
                    self.send(n, to as u32, Wire::Request { index, insist });
                }
                Effect::RequestManifest { to, .. } => self.send(n, to as u32, Wire::AskManifest),
                Effect::Refuse { to, index, refusal, .. } => self.send(n, to as u32, Wire::Refused { index, refusal }),
                Effect::Serve { to, index, .. } => {
                    let to = to as u32;
                    let m = &self.manifest;
                    let bytes = m.chunk_size().chunk_len(m.size(), u64::from(index));
                    if let Some(bytes) = bytes
                        && self.presence[to as usize].alive
                        && self.nodes[n as usize].links.contains(&to)
                    {
                        let cross = self.crossing(n, to);
                        self.flows.start(self.t, n, to, index, bytes, cross);
                    } else {
                        self.nodes[n as usize].host.handle_upload_done(now, u64::from(to), IMAGE, index);
                    }
                }
                // The disk is not modelled: writes and commits end at once.
                Effect::Write { epoch, chunk, .. } => {
                    self.nodes[n as usize].host.handle_written(now, IMAGE, epoch, chunk.index(), Ok(()));
                }
                Effect::Commit { epoch, .. } => self.nodes[n as usize].host.handle_committed(now, IMAGE, epoch, Ok(())),
                Effect::Install { epoch, .. } => {
                    self.schedule(self.t + self.s.startup.install_s, Kind::Installed { node: n, epoch });
                }
                Effect::Ban { peer, .. } => {
                    self.bans += 1;
                    self.unlink(n, peer as u32);
                }
                // Disk work never fails here.
                Effect::StartOver { .. } => {}
            }
        }
        let node = &mut self.nodes[n as usize];
        if let Some(at) = node.host.poll_timeout()
            && node.timer.is_none_or(|t| at < t)
        {
            node.timer = Some(at);
            self.schedule(at as f64 / 1e6, Kind::Timer { node: n, at });
        }
    }

    /// `(from's site, to's site)` when traffic between them crosses sites.
    fn crossing(&self, from: u32, to: u32) -> Option<(u32, u32)> {
        let (a, b) = (self.presence[from as usize].info.site, self.presence[to as usize].info.site);
        (a != b).then_some((a, b))
    }

    fn send(&mut self, from: u32, to: u32, wire: Wire) {
        let (a, b) = (self.presence[from as usize], self.presence[to as usize]);
        if !b.alive {
            return;
        }
        let cross = self.crossing(from, to).is_some();
        let at = self.t + if cross { self.wan_s } else { self.lan_s };
        let m = Msg { at, from, to, epochs: (a.epoch, b.epoch), wire };
        if cross {
            self.wan.push_back(m);
        } else {
            self.lan.push_back(m);
        }
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
            self.nodes[f.from as usize].host.handle_upload_done(now, u64::from(f.to), IMAGE, f.chunk);
            self.dirty.push(f.from);
        }
    }

    fn outcome(&self) -> Outcome {
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

fn new_node(s: &Scenario, opt: &Options, site: u32, role: Role, upload: UploadPolicy, index: usize) -> Node {
    let swarm = Config {
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
    let info = PeerInfo { site, role, key: index as u64 };
    Node {
        info,
        malicious: false,
        host: Host::new(),
        swarm,
        links: Vec::new(),
        timer: None,
        completed: None,
        down_for: 0.0,
    }
}
