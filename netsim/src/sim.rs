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
//!   Each pair of nodes has one connection, which carries its uploads one
//!   after another, and a node counts an upload sent, freeing its slot,
//!   once all but the socket's unsent bytes have left ([`transport`]).
//! * A malicious host downloads like any other and serves only corrupt
//!   chunks: each arrives in full and fails verification at the receiver.
//!   A liar claims every chunk and answers every request with `Busy`.
//! * Commits take `faults.commit_ms`; what a node committed is its durable
//!   state, which is all a crashed node keeps. Partitions, lost and late
//!   requests, clogs and crashes are [`faults`]'s, and so are the
//!   invariants checked at every step.
//! * Who connects to whom is [`peering`]'s: start-up, the tracker's answers
//!   and the node's connection limits.

mod build;
mod faults;
mod outcome;
mod peering;
mod transport;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::bitfield::Bitfield;
use proto::manifest::{ChunkBody, ChunkHash, Manifest};
use proto::swarm::{Config, PeerInfo, Role};
use proto::transfer::{ChunkReply, Effect, Host, ImageId, ImageSpec, ManifestReply, Notice};
use proto::wire::Refusal;
use tracing::info;

pub use outcome::{FaultStats, NodeOutcome, Options, Outcome};

use crate::flows::{FlowId, Flows};
use crate::scenario::Scenario;
use crate::{At, Error};

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
    /// Claims every chunk, serves none.
    liar: bool,
    /// Crashed: it comes back with `durable` only.
    crashed: bool,
    /// The chunks committed, as its store would record them.
    durable: Bitfield,
    /// The chunks of the commit under way, and its take-up.
    committing: Option<(u64, Vec<u32>)>,
    host: Host<SimChunk>,
    /// How its swarm decides (kept for restarts).
    swarm: Config,
    /// Connected peers.
    links: Vec<u32>,
    /// Uploads waiting for the connection to their peer ([`transport`]).
    waiting: Vec<transport::Waiting>,
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
    Request {
        index: u32,
        insist: bool,
    },
    Refused {
        index: u32,
        refusal: Refusal,
    },
    AskManifest,
    Manifest(Result<Arc<[ChunkHash]>, Refusal>),
    /// The stream of a chunk request failed in transit.
    Failed {
        index: u32,
    },
    /// The stream of a manifest request failed in transit.
    ManifestFailed,
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
    Cut { partition: u32 },
    Crash { node: u32 },
    Committed { node: u32, epoch: u64, start: u32 },
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
    /// Messages that jitter or a clog hold back.
    late: BinaryHeap<Reverse<faults::Late>>,
    plan: faults::Plan,
    violations: Vec<String>,
    trace: u64,
    lan_s: f64,
    wan_s: f64,
    dirty: Vec<u32>,
    master_bytes: f64,
    wan_bytes: Vec<Vec<f64>>,
    /// Per site, per tenth of the bound: bytes in over the WAN (all flows,
    /// complete or not).
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

/// Progress is logged at most this often, checked every `PROGRESS_EVERY` events.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: u64 = 1 << 16;

impl Sim<'_> {
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
            let late = self.late.peek().map(|Reverse(l)| l.at.0);
            let next = [flow, ev, lan, wan, late].into_iter().flatten().min_by(f64::total_cmp);
            let Some(next) = next else { break };
            if next > limit {
                break;
            }
            self.advance(next.max(self.t));
            self.processed += 1;
            if flow == Some(next) {
                if let Some((_, id)) = self.flows.next_due()
                    && !self.at_mark(id)
                {
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
            } else if late == Some(next) && wan != Some(next) {
                if let Some(Reverse(l)) = self.late.pop() {
                    self.deliver(l.msg);
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
            for (site, &r) in self.flows.wan_in_rates().iter().enumerate() {
                if r > 0.0 {
                    credit(&mut self.wan_in_tenths[site], tenth, r * (until - self.t));
                }
            }
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
        self.trace(u64::from(m.from) << 32 | u64::from(m.to));
        if let Wire::Request { index, .. } = m.wire
            && self.nodes[m.to as usize].liar
        {
            return self.send(m.to, m.from, Wire::Refused { index, refusal: Refusal::Busy });
        }
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
            Wire::Failed { index } => host.handle_chunk_reply(now, peer, IMAGE, index, ChunkReply::Failed),
            Wire::ManifestFailed => host.handle_manifest_reply(now, peer, IMAGE, ManifestReply::Failed),
        }
        self.dirty.push(m.to);
    }

    fn event(&mut self, kind: Kind) {
        let now = self.now_us();
        self.trace(self.seq);
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
            Kind::Cut { partition } => self.cut(partition as usize),
            Kind::Crash { node } => self.crash(node),
            Kind::Committed { node, epoch, start } => self.committed(node, epoch, start),
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
        self.trace(from << 32 | to);
        self.nodes[f.to as usize].host.handle_chunk_reply(now, from, IMAGE, f.chunk, ChunkReply::Data(body));
        self.dirty.push(f.to);
        self.next_upload(f.from, f.to);
    }

    fn account(&mut self, f: &crate::flows::Flow, bytes: f64) {
        if self.nodes[f.from as usize].info.role == Role::Master {
            self.master_bytes += bytes;
        }
        if let Some((from, into)) = f.cross {
            self.wan_bytes[from as usize][into as usize] += bytes;
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
                Effect::Hello { to, mut images } => {
                    if self.nodes[n as usize].liar {
                        images.iter_mut().for_each(|(_, b)| *b = Bitfield::full(b.len()));
                    }
                    self.send(n, to as u32, Wire::Hello(images));
                }
                Effect::Notice { to, notice, .. } => self.send(n, to as u32, Wire::Notice(notice)),
                Effect::RequestChunk { to, index, insist, .. } => {
                    self.send(n, to as u32, Wire::Request { index, insist });
                }
                Effect::RequestManifest { to, .. } => self.send(n, to as u32, Wire::AskManifest),
                Effect::Refuse { to, index, refusal, .. } => self.send(n, to as u32, Wire::Refused { index, refusal }),
                Effect::Serve { to, index, .. } => {
                    let to = to as u32;
                    self.check_serve(n, index);
                    let m = &self.manifest;
                    let bytes = m.chunk_size().chunk_len(m.size(), u64::from(index));
                    if let Some(bytes) = bytes
                        && self.presence[to as usize].alive
                        && self.nodes[n as usize].links.contains(&to)
                        && !self.serve_blocked(n, to)
                    {
                        self.upload(n, to, index, bytes);
                    } else {
                        self.nodes[n as usize].host.handle_upload_done(now, u64::from(to), IMAGE, index);
                    }
                }
                // Writes end at once; commits after `commit_ms`.
                Effect::Write { epoch, chunk, .. } => {
                    self.check_write(n, chunk.index(), chunk.body());
                    self.nodes[n as usize].host.handle_written(now, IMAGE, epoch, chunk.index(), Ok(()));
                }
                Effect::Commit { epoch, chunks, .. } => {
                    let start = self.presence[n as usize].epoch;
                    self.nodes[n as usize].committing = Some((epoch, chunks.iter().map(|(i, _)| *i).collect()));
                    let at = self.t + self.plan.commit_s();
                    if at > self.t {
                        self.schedule(at, Kind::Committed { node: n, epoch, start });
                    } else {
                        self.committed(n, epoch, start);
                    }
                }
                Effect::Install { epoch, .. } => {
                    self.check_install(n);
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
        self.post(Msg { at, from, to, epochs: (a.epoch, b.epoch), wire });
    }

    /// The commit of node `n` (take-up `epoch`, started in its run
    /// `start`) is durable, unless the node crashed meanwhile.
    fn committed(&mut self, n: u32, epoch: u64, start: u32) {
        if !self.presence[n as usize].alive || self.presence[n as usize].epoch != start {
            return;
        }
        let now = self.now_us();
        let node = &mut self.nodes[n as usize];
        if let Some((_, chunks)) = node.committing.take_if(|(e, _)| *e == epoch) {
            chunks.into_iter().for_each(|i| _ = node.durable.set(i));
        }
        node.host.handle_committed(now, IMAGE, epoch, Ok(()));
        self.dirty.push(n);
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
        self.drop_uploads(f.from, f.to, f.before_mark().then_some(f.chunk));
    }
}

/// Adds `bytes` to `tenths[tenth]`, growing `tenths` as the run goes on.
fn credit(tenths: &mut Vec<f64>, tenth: usize, bytes: f64) {
    if tenths.len() <= tenth {
        tenths.resize(tenth + 1, 0.0);
    }
    tenths[tenth] += bytes;
}
