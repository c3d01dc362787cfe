//! The swarm's decisions for one image on one node, as a sans-I/O state
//! machine.
//!
//! # Contract
//! A [`Swarm`] never performs I/O, reads no clock and draws randomness only
//! from the seed in its [`Config`]; the same inputs at the same times give the
//! same outputs. The real node and `netsim` drive the same code.
//!
//! Methods come in three groups, as in quinn-proto:
//! * **inputs** (`handle_*`, each with the current time in microseconds):
//!   peers connecting and leaving, messages from peers, a chunk that arrived
//!   and passed or failed verification, an upload that ended, a timer;
//! * **outputs**: [`Swarm::poll_action`] drains [`Action`]s (messages to send,
//!   uploads to start, peers to ban, completion) and [`Swarm::poll_timeout`]
//!   gives the next deadline at which [`Swarm::handle_timeout`] must run;
//! * **getters**: what the node has and has done.
//!
//! # Decisions
//! * **Downloading** (see `download`): up to `pipeline` requests in flight
//!   per peer, chunks chosen by `picker` (random first chunks, then rarest
//!   first; at the end, a second copy of a request that is late, see
//!   [`Config::late_factor`]; slow requests time out and go elsewhere).
//!   Same-site peers are asked first (at a gateway, other sites' peers:
//!   its site waits on what it brings across; but its own site's where the
//!   cross-site rules give way, see `picker`); among peers of one rank,
//!   each fill starts one peer further on, so that every node does not ask
//!   the same first-connected peers: their slots and queues would fill and
//!   refuse, while the uplinks of the peers later in every node's order
//!   would idle.
//!   Masters are asked last, but requests to the site's own masters do not
//!   count against [`Config::max_inflight`]: the masters' uplinks bring
//!   every chunk into the site once and are the swarm's scarcest, and a node
//!   whose pipeline is full of requests to peers must still keep them busy.
//!   In a shared budget, requests to masters would wait behind requests to
//!   peers, and the masters' uplinks would idle between them.
//! * **Locality**: a worker exchanges chunks only with peers of its own site;
//!   only gateways and masters fetch across sites, and only from each other.
//!   Gateways split that work by [`FetchStripe`], among a site's gateways
//!   and among the sites that fetch from the masters' site.
//! * **Serving**: see `upload`: `upload_slots` concurrent uploads, a
//!   bounded FIFO queue with other sites' requests first, and masters that
//!   stand back once the asker's site holds a copy.
//! * **Penalties**: a chunk that fails verification bans its sender at once
//!   and goes back to the pool; a peer that lacks a chunk or refuses it is
//!   merely skipped for a while.

mod arrange;
mod config;
mod download;
mod message;
mod picker;
pub(crate) mod rng;
mod upload;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

pub use arrange::{FetchStripe, SiteShare};
pub use config::Config;
pub use download::{MAX_PAUSE_DOUBLINGS, REFUSALS_BEFORE_DOUBLING};
pub use message::{Action, ChunkIndex, Message, Micros, PeerId, PeerInfo, Reply, Role};
pub use picker::PickerMode;
use rng::Rng;
use upload::{Asker, Queued};
pub use upload::{Stripe, UNSENT_BYTES, UploadPolicy};

use crate::bitfield::Bitfield;

/// A request this node sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) chunk: ChunkIndex,
    pub(crate) sent_at: Micros,
}

/// What this node knows about one peer.
#[derive(Debug, Clone)]
pub(crate) struct PeerState {
    pub(crate) info: PeerInfo,
    pub(crate) have: Bitfield,
    pub(crate) inflight: Vec<Request>,
    /// Chunks the peer refused, until when not to ask again (a master's
    /// entries stay a while after that, as a record that it refused).
    pub(crate) refused: Vec<(ChunkIndex, Micros)>,
    /// The last scan found no candidate here, and nothing has since made one
    /// possible except the peer's own announcements (handled one by one).
    pub(crate) exhausted: bool,
    /// No requests to this peer before this time.
    pub(crate) paused_until: Micros,
    /// Requests it missed since it last delivered a chunk
    /// ([`Swarm::pause_after_miss`]).
    pub(crate) refused_in_row: u32,
    /// When a pause or refusal of this peer ends next, as queued in
    /// [`Swarm`]'s wake-ups (a queued entry with another time is stale).
    pub(crate) wake: Option<Micros>,
}

impl PeerState {
    pub(crate) fn refused_until(&self, c: ChunkIndex) -> Micros {
        self.refused.iter().find(|(x, _)| *x == c).map_or(0, |(_, t)| *t)
    }

    /// Drops refusals of chunks now held, and those that ended: a master's
    /// are remembered for `16 × backoff` after they stop blocking requests
    /// (the insistence rule reads them), any other peer's end with their
    /// backoff.
    fn forget_refusals(&mut self, have: &Bitfield, now: Micros, backoff: Micros) {
        let memory = if self.info.role == Role::Master { 16 * backoff } else { 0 };
        self.refused.retain(|&(c, until)| !have.get(c) && until + memory > now);
    }

    /// The next moment after `now` that a pause or a refusal ends.
    fn next_end(&self, now: Micros) -> Option<Micros> {
        let refusals = self.refused.iter().map(|&(_, until)| until);
        refusals.chain([self.paused_until]).filter(|&t| t > now).min()
    }
}

/// Counters for reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunks received and verified.
    pub chunks_verified: u64,
    /// Chunks received that failed verification.
    pub chunks_failed: u64,
    /// Chunks received that were no longer needed (endgame duplicates).
    pub chunks_wasted: u64,
    /// Uploads started.
    pub uploads: u64,
    /// Requests refused.
    pub rejects_sent: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests whose transport failed.
    pub failures: u64,
    /// Peers banned.
    pub bans: u64,
}

/// One node's swarm state for one image.
#[derive(Debug)]
pub struct Swarm {
    cfg: Config,
    have: Bitfield,
    missing: Vec<ChunkIndex>,
    missing_pos: Vec<u32>,
    requested: Vec<u8>,
    requested_distinct: u32,
    /// Requests in flight to peers other than this site's masters.
    inflight: u32,
    /// Requests in flight to this site's masters.
    to_masters: u32,
    requested_mask: Bitfield,
    availability: Vec<u16>,
    peers: HashMap<PeerId, PeerState, BuildHasherDefault<IdHasher>>,
    /// Peer ids with their [`Swarm::rank`], in the order requests are
    /// filled: same site, other sites (the other way round at a gateway),
    /// masters; within a rank by connection order. Kept on connect and
    /// disconnect, so filling never sorts.
    order: Vec<(u8, PeerId)>,
    /// Advances on every fill, to rotate where it starts.
    fill_turn: u32,
    uploads: upload::Uploads,
    actions: VecDeque<Action>,
    rng: Rng,
    stats: Stats,
    completed: bool,
    /// Peers whose pause or refusal ends at a time: the peer may have
    /// candidates again then. One live entry per peer (see
    /// [`PeerState::wake`]), plus stale ones until their time comes.
    wakes: BinaryHeap<Reverse<(Micros, PeerId)>>,
    /// The earliest time in `wakes`, kept beside it: [`Swarm::poll_timeout`]
    /// runs after every input, and the queue's own memory is a cache miss.
    next_wake: Option<Micros>,
    /// No request times out before this (it may be early, never late).
    request_deadline: Option<Micros>,
    /// When each chunk's oldest open request was sent.
    requested_at: Vec<Micros>,
    /// How long a request took, on average (each answer weighs 1/8).
    latency: Option<Micros>,
    /// In endgame, when the next open request becomes late.
    late_wake: Option<Micros>,
    /// A gateway's rules for fetching across sites, as the peers now in the
    /// swarm arrange them.
    arranged: Option<arrange::Arranged>,
}

const NOT_MISSING: u32 = u32::MAX;

/// The [`Swarm::rank`] of masters: last.
const MASTERS: u8 = 2;

/// The earlier of a deadline, if any, and `t`.
fn earliest(deadline: Option<Micros>, t: Micros) -> Micros {
    deadline.map_or(t, |d| d.min(t))
}

/// Hashes peer ids (the caller's small integers or random handles) by one
/// multiplication: fast, and with no random seed, so iteration order depends
/// only on the inputs and runs stay reproducible.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Swarm {
    /// A node that already holds the chunks in `have` (all of them for a
    /// master, the verified ones for a restarted worker).
    pub fn new(mut cfg: Config, have: Bitfield) -> Self {
        if cfg.fetch_stripe.is_some() {
            // A gateway keeps several WAN pipelines full besides its own
            // site's.
            cfg.max_inflight = cfg.max_inflight.max(cfg.cross_site_pipeline * 4);
        }
        let n = have.len();
        let missing: Vec<ChunkIndex> = have.missing().collect();
        let mut missing_pos = vec![NOT_MISSING; n as usize];
        for (pos, &c) in missing.iter().enumerate() {
            missing_pos[c as usize] = pos as u32;
        }
        let completed = missing.is_empty();
        Self {
            requested_mask: Bitfield::new(n),
            rng: Rng::new(cfg.seed),
            uploads: upload::Uploads::new(n, cfg.role == Role::Master),
            cfg,
            have,
            missing,
            missing_pos,
            requested: vec![0; n as usize],
            requested_distinct: 0,
            inflight: 0,
            to_masters: 0,
            availability: vec![0; n as usize],
            peers: HashMap::default(),
            order: Vec::new(),
            fill_turn: 0,
            actions: VecDeque::new(),
            stats: Stats::default(),
            completed,
            wakes: BinaryHeap::new(),
            next_wake: None,
            request_deadline: None,
            requested_at: vec![0; n as usize],
            latency: None,
            late_wake: None,
            arranged: None,
        }
    }

    // ---- inputs ----

    /// A connection to `peer` is up.
    pub fn handle_connected(&mut self, _now: Micros, peer: PeerId, info: PeerInfo) {
        let n = self.have.len();
        self.peers.insert(
            peer,
            PeerState {
                info,
                have: Bitfield::new(n),
                inflight: Vec::new(),
                refused: Vec::new(),
                refused_in_row: 0,
                exhausted: false,
                paused_until: 0,
                wake: None,
            },
        );
        self.order.retain(|&(_, id)| id != peer);
        let rank = self.rank(info);
        let at = self.order.iter().position(|&(r, _)| r > rank);
        self.order.insert(at.unwrap_or(self.order.len()), (rank, peer));
        self.rearrange();
        self.send(peer, Message::Bitfield(self.have.clone()));
    }

    /// Where a peer stands in the order requests are filled.
    fn rank(&self, info: PeerInfo) -> u8 {
        let across = self.cfg.locality && info.site != self.cfg.site;
        match (info.role, across) {
            (Role::Master, _) => MASTERS,
            // A gateway's site waits on what it brings across: filled
            // first, its own site's peers would take its whole downlink as
            // soon as they held chunks, and the WAN would carry what is left.
            (_, true) => u8::from(self.cfg.role != Role::Gateway),
            (_, false) => u8::from(self.cfg.role == Role::Gateway),
        }
    }

    /// Derives a gateway's rules again from the peers now in the swarm; a
    /// change may make chunks asked of no peer askable, so every peer is
    /// scanned again.
    fn rearrange(&mut self) {
        let Some(stripe) = &self.cfg.fetch_stripe else { return };
        let rules = stripe.arrange(self.cfg.site, self.peers.values().map(|p| p.info));
        if self.arranged.as_ref() != Some(&rules) {
            tracing::trace!(?rules, "gateway rules arranged");
            self.arranged = Some(rules);
            for p in self.peers.values_mut() {
                p.exhausted = false;
            }
        }
    }

    /// The connection to `peer` is gone (closed, failed, or banned).
    pub fn handle_disconnected(&mut self, now: Micros, peer: PeerId) {
        let Some(state) = self.peers.remove(&peer) else {
            return;
        };
        self.order.retain(|&(_, id)| id != peer);
        self.rearrange();
        for c in 0..state.have.len() {
            if state.have.get(c) {
                self.change_availability(c, -1);
            }
        }
        for r in &state.inflight {
            self.count_request(state.info, false);
            self.unrequest(r.chunk);
        }
        self.uploads.drop_peer(peer);
        self.start_uploads();
        self.fill_all(now);
    }

    /// A message from `from`.
    pub fn handle_message(&mut self, now: Micros, from: PeerId, msg: Message) {
        if !self.peers.contains_key(&from) {
            return;
        }
        match msg {
            Message::Bitfield(b) => self.on_bitfield(now, from, b),
            Message::Have(c) => self.on_have(now, from, c),
            Message::Request(c) => self.on_request(now, from, c, false),
            Message::Insist(c) => self.on_request(now, from, c, true),
            Message::Cancel(c) => {
                self.uploads.cancel(from, c);
            }
        }
    }

    /// What became of the request for `chunk` sent to `from`.
    pub fn handle_reply(&mut self, now: Micros, from: PeerId, chunk: ChunkIndex, reply: Reply) {
        if chunk >= self.have.len() {
            return;
        }
        match reply {
            Reply::Verified if !self.have.get(chunk) => {
                let sent = self.peers.get(&from).and_then(|p| p.inflight.iter().find(|r| r.chunk == chunk));
                if let Some(took) = sent.map(|r| now.saturating_sub(r.sent_at)) {
                    self.latency = Some(self.latency.map_or(took, |l| (7 * l + took) / 8));
                }
                // Recorded before the request bookkeeping, which then knows
                // the chunk is no longer a candidate anywhere.
                self.have.set(chunk);
                self.take_inflight(from, chunk);
                self.delivered(from);
                self.accept_chunk(now, chunk);
            }
            Reply::Verified => {
                self.take_inflight(from, chunk);
                self.delivered(from);
                self.stats.chunks_wasted += 1;
                self.fill_one(now, from);
            }
            Reply::Corrupt(error) => {
                self.take_inflight(from, chunk);
                self.stats.chunks_failed += 1;
                // A peer is banned once: what it had in flight when it was
                // dropped changes nothing.
                if self.peers.contains_key(&from) {
                    self.stats.bans += 1;
                    self.actions.push_back(Action::Ban { peer: from, error });
                    self.handle_disconnected(now, from);
                }
            }
            Reply::Refused => self.on_refused(now, from, chunk),
            Reply::Failed => {
                self.stats.failures += 1;
                self.on_refused(now, from, chunk);
            }
        }
    }

    /// A new, verified chunk: bookkeeping, cancels, announcements.
    fn accept_chunk(&mut self, now: Micros, chunk: ChunkIndex) {
        self.stats.chunks_verified += 1;
        self.remove_missing(chunk);
        if self.requested[chunk as usize] > 0 {
            // Endgame duplicates still in flight elsewhere: cancel them.
            let others: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.inflight.iter().any(|r| r.chunk == chunk))
                .map(|(&id, _)| id)
                .collect();
            for p in others {
                self.take_inflight(p, chunk);
                self.send(p, Message::Cancel(chunk));
            }
            if self.requested[chunk as usize] > 0 {
                self.requested[chunk as usize] = 0;
                self.requested_distinct -= 1;
                self.requested_mask.unset(chunk);
            }
        }
        for &(_, id) in &self.order {
            if self.peers.get(&id).is_some_and(|p| !p.have.get(chunk) || p.info.role == Role::Master) {
                self.actions.push_back(Action::Send { to: id, msg: Message::Have(chunk) });
            }
        }
        if self.missing.is_empty() && !self.completed {
            self.completed = true;
            self.actions.push_back(Action::Completed);
        }
        self.fill_all(now);
    }

    /// An upload ended (sent in full, or aborted by the I/O layer).
    pub fn handle_upload_done(&mut self, now: Micros, to: PeerId, chunk: ChunkIndex) {
        self.uploads.finish(to, chunk, now);
        self.start_uploads();
    }

    /// Timers: a peer whose pause or refusal ended may be asked again, and
    /// requests that waited too long go elsewhere. Costs the peers due, plus
    /// a sweep of every request only when one may have timed out.
    pub fn handle_timeout(&mut self, now: Micros) {
        let backoff = self.cfg.refusal_backoff;
        while let Some(&Reverse((at, id))) = self.wakes.peek() {
            if at > now {
                break;
            }
            self.wakes.pop();
            let Some(p) = self.peers.get_mut(&id).filter(|p| p.wake == Some(at)) else {
                continue;
            };
            p.exhausted = false;
            p.forget_refusals(&self.have, now, backoff);
            p.wake = p.next_end(now);
            if let Some(t) = p.wake {
                self.wakes.push(Reverse((t, id)));
            }
        }
        self.next_wake = self.wakes.peek().map(|Reverse((t, _))| *t);
        if self.request_deadline.is_some_and(|d| d <= now) {
            self.expire_requests(now);
        }
        if self.late_wake.is_some_and(|t| t <= now) {
            // Requests became late: chunks are candidates for a second peer.
            self.late_wake = None;
            self.peers.values_mut().for_each(|p| p.exhausted = false);
        }
        self.fill_all(now);
    }

    // ---- outputs ----

    /// The next thing the I/O layer must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Swarm::handle_timeout`] must run next. It may be earlier than
    /// needed (a wake-up with nothing to do is harmless), never later.
    pub fn poll_timeout(&self) -> Option<Micros> {
        [self.next_wake, self.request_deadline, self.late_wake].into_iter().flatten().min()
    }

    /// Makes sure `peer` is looked at again by `t`.
    fn schedule_wake(&mut self, peer: PeerId, t: Micros) {
        if let Some(p) = self.peers.get_mut(&peer)
            && p.wake.is_none_or(|w| t < w)
        {
            p.wake = Some(t);
            self.wakes.push(Reverse((t, peer)));
        }
        // Stale entries are dropped when their time comes; should they pile
        // up first, the queue is rebuilt from the live ones (one per peer).
        if self.wakes.len() > 2 * self.peers.len() + 64 {
            self.wakes = self.peers.iter().filter_map(|(&id, p)| p.wake.map(|t| Reverse((t, id)))).collect();
        }
        self.next_wake = self.wakes.peek().map(|Reverse((t, _))| *t);
    }

    // ---- getters ----

    /// The chunks this node has.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every chunk is here.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether `peer` is connected.
    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// How many peers are connected.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Uploads in progress.
    pub fn active_uploads(&self) -> usize {
        self.uploads.active()
    }

    // ---- internals ----

    fn send(&mut self, to: PeerId, msg: Message) {
        self.actions.push_back(Action::Send { to, msg });
    }

    fn on_bitfield(&mut self, now: Micros, from: PeerId, b: Bitfield) {
        if b.len() != self.have.len() {
            return;
        }
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.exhausted = false;
        // Added to what is known, never replacing it: a bitfield may be older
        // than Haves already taken from the same peer (a hello travels apart
        // from the notices), and a connected peer loses no chunk.
        let old = std::mem::replace(&mut p.have, b.clone());
        p.have.union_with(&old);
        for (byte, (&new, &was)) in b.as_bytes().iter().zip(old.as_bytes()).enumerate() {
            let mut added = new & !was;
            while added != 0 {
                let bit = added.leading_zeros();
                added &= !(0x80 >> bit);
                self.change_availability(byte as u32 * 8 + bit, 1);
            }
        }
        self.fill_one(now, from);
    }

    fn on_have(&mut self, now: Micros, from: PeerId, c: ChunkIndex) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if c < p.have.len() && p.have.set(c) {
            self.uploads.settle(from, c);
            let exhausted = p.exhausted;
            self.change_availability(c, 1);
            if self.have.get(c) {
                return;
            }
            if !exhausted {
                self.fill_one(now, from);
            } else if self.requested[c as usize] == 0 && self.may_ask(now, from, c) {
                if self.has_room(from, now) {
                    // The peer had nothing new; now it has exactly `c`.
                    self.request(now, from, c);
                } else if let Some(p) = self.peers.get_mut(&from) {
                    // No room now: the next fill must look here again.
                    p.exhausted = false;
                }
            }
        }
    }

    fn on_request(&mut self, now: Micros, from: PeerId, c: ChunkIndex, insist: bool) {
        let Some(p) = self.peers.get(&from) else {
            return;
        };
        let asker = p.info;
        // Asking again: whatever was sent it did not arrive.
        self.uploads.settle(from, c);
        let peers = &self.peers;
        let since = now.saturating_sub(self.cfg.upload.delivery_grace);
        // Copies at the asker's site, held or on their way from here.
        let copies = |uploads: &upload::Uploads| {
            let at_site = |q: &PeerState| q.info.site == asker.site && q.info.role != Role::Master;
            let held = peers.values().filter(|q| q.have.get(c) && at_site(q)).count();
            let coming = uploads.recipients(c, since).filter(|id| peers.get(id).is_some_and(at_site)).count();
            (held + coming) as u32
        };
        let allowed = c < self.have.len()
            && self.have.get(c)
            && self.may_exchange(asker)
            && (insist || self.cfg.upload.admits(&self.cfg, c, copies, now, &mut self.uploads));
        // Other sites first; at a gateway even into a full queue (see `upload`).
        let order = match (asker.site == self.cfg.site, self.cfg.role) {
            (true, _) => Asker::ThisSite,
            (false, Role::Master) => Asker::OtherSite,
            (false, _) => Asker::OtherSiteFirst,
        };
        let queued = if allowed { self.uploads.enqueue(from, c, self.cfg.upload.max_queue, order) } else { Queued::No };
        let refused = match queued {
            Queued::Yes => None,
            Queued::InPlaceOf(p, chunk) => Some((p, chunk)),
            Queued::No => Some((from, c)),
        };
        if let Some((to, chunk)) = refused {
            self.stats.rejects_sent += 1;
            self.actions.push_back(Action::Refuse { to, chunk });
        }
        if queued != Queued::No {
            self.start_uploads();
        }
    }

    fn start_uploads(&mut self) {
        while let Some((to, chunk)) = self.uploads.next(&self.cfg.upload) {
            self.stats.uploads += 1;
            self.actions.push_back(Action::Upload { to, chunk });
        }
    }

    /// Whether chunks may flow between this node and a peer.
    fn may_exchange(&self, other: PeerInfo) -> bool {
        !self.cfg.locality
            || other.site == self.cfg.site
            || (self.cfg.role.crosses_sites() && other.role.crosses_sites())
    }

    fn change_availability(&mut self, c: ChunkIndex, delta: i32) {
        let a = &mut self.availability[c as usize];
        *a = if delta > 0 { a.saturating_add(1) } else { a.saturating_sub(1) };
    }
}

#[cfg(test)]
mod tests;
