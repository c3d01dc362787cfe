//! The node's event loop: owns the libp2p swarm and the transfer machine
//! ([`proto::transfer::Host`]), and translates between them.
//!
//! # Contract
//! * Every decision about an image's transfer (hellos, manifests, which
//!   chunk from whom, whom to serve, what to write, commit and install,
//!   whom to ban) is the machine's. The loop turns libp2p events into the
//!   machine's inputs, with the time, and carries out its effects; it keeps
//!   only what those need: answer channels, handles for peers, each image's
//!   store record, claim, epoch, byte counters and last tracker answer, and
//!   the count of commits under way (for shutdown).
//! * Disk work runs on blocking threads, at most [`jobs::DISK_THREADS`] at once,
//!   as jobs the loop owns ([`jobs`]), and reports back into the loop;
//!   the loop's own thread reads the store and writes nothing to disk.
//! * A chunk request is answered at most once: with the data when the
//!   machine serves it, or with a refusal.
//! * At start the node swarms on what its store holds once a local re-check
//!   (each list's signature, trust and dates, at the current time) has
//!   passed, before its first update cycle asks the network: a list source
//!   that is slow or hangs does not hold a restarted node's swarm up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, gossipsub, identify, kad};
use p2p::transport::KAD_PROTOCOL;
use proto::swarm::{self, FetchStripe, Role, SiteShare};
use proto::transfer::{Effect, Host, Offence};
use proto::wire::{Request, Response};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use self::bucket::Bucket;
use super::behaviour::{Behaviour, BehaviourEvent, build_swarm, lists_topic};
use super::metrics::Metrics;
use super::notices::{Inbound, Notices};
use super::rate::Rate;
use super::{Command, ImageStatus, NodeConfig, Status, peer_of};
use crate::cache::partial::Claim;
use crate::site::Site;
use crate::store::{ImageRecord, ImageState};
use crate::{Error, Result};

mod admission;
mod attest;
mod bucket;
mod discovery;
mod disk;
mod jobs;
mod lists;
mod peers;
mod sync;
mod trackers;
mod update;
mod uploads;
mod verify;

pub(super) use update::Answer as UpdateAnswer;

use jobs::Jobs;

/// The most received chunks from other sites awaiting their write that the
/// loop remembers (to charge them to the WAN cap).
const MAX_FROM_OTHER_SITES: usize = 4096;

/// How often the loop refreshes its status and looks after timers of its own.
const TICK: Duration = Duration::from_millis(200);

/// What an outbound request was for.
#[derive(Debug, Clone, Copy)]
enum Outbound {
    Hello,
    Chunk { image: Uuid, peer: u64, index: u32 },
    Manifest { image: Uuid, peer: u64 },
    Attestation { image: Uuid },
    List { identifier: Uuid },
}

/// What the loop keeps of an image beside the machine's state.
#[derive(Debug)]
struct Local {
    rec: ImageRecord,
    /// The image's name on the wire ([`proto::wire::content_id`]).
    wire: Uuid,
    /// Under which received chunks are written into the partial file
    /// (`None` for an image complete here).
    claim: Option<Claim>,
    /// The machine's epoch for this take-up of the image.
    epoch: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// The rates of `bytes_in` and `bytes_out`.
    rates: (Rate, Rate),
    /// When a tracker last answered for this image.
    tracker_ok: Option<swarm::Micros>,
    /// Peers banned for bad data of this image.
    banned: u32,
}

pub(super) struct EventLoop {
    cfg: NodeConfig,
    site: Arc<Site>,
    swarm: libp2p::Swarm<Behaviour>,
    started: Instant,
    site_id: u32,
    /// For a gateway: which chunks it brings across sites.
    fetch_stripe: Option<FetchStripe>,
    role: Role,
    host: Host<bytes::Bytes>,
    images: HashMap<Uuid, Local>,
    next_epoch: u64,
    /// Images being opened to be swarmed on.
    opening: sync::Opening,
    /// Images waiting for an attested root.
    unrooted: attest::Unrooted,
    handles: HashMap<PeerId, u64>,
    /// The images swarmed on, by their name on the wire.
    by_wire: HashMap<Uuid, Uuid>,
    /// Each peer's site name, from its credential (or its hello in an open
    /// site), for the per-site metrics and the WAN cap.
    peer_sites: HashMap<u64, String>,
    next_handle: u64,
    ids: HashMap<u64, PeerId>,
    trackers: trackers::Trackers,
    /// Who is admitted, in a closed site.
    gate: p2p::admission::Gate,
    /// The node's key, which signs a master's site policy.
    key: Keypair,
    /// Where this node stands with each tracker in a closed site.
    tracker_admission: HashMap<PeerId, admission::TrackerAdmission>,
    /// Per peer, why and when it last refused this node's credential (at
    /// most [`admission::REFUSALS_KEPT`] peers): the node warns only when
    /// that changes, and does not dial the peer again for an announce
    /// interval.
    refusals: HashMap<PeerId, (String, Instant)>,
    /// The CRL file read again when it changes.
    crl_file: Option<admission::CrlFile>,
    outbound: HashMap<OutboundRequestId, Outbound>,
    notices: Notices,
    notices_in: mpsc::Receiver<Inbound>,
    /// Answer channels of chunk requests the machine has not decided on.
    inbound: HashMap<(Uuid, u64, u32), (InboundRequestId, ResponseChannel<Response>)>,
    /// Uploads whose response is on its way.
    uploads: uploads::Uploads,
    jobs: Jobs,
    /// Commit jobs under way.
    commits_running: usize,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    metrics: Metrics,
    up: Option<Arc<Bucket>>,
    down: Option<Arc<Bucket>>,
    egress: Option<Arc<Bucket>>,
    /// The cap on chunk bytes to and from other sites.
    wan: Option<Arc<Bucket>>,
    /// Chunks received from peers of other sites and not yet written: their
    /// write takes from `wan` too. At most the requests in flight.
    from_other_sites: std::collections::HashSet<(Uuid, u32)>,
    bans: Vec<(Instant, PeerId)>,
    ban_count: u64,
    failed_chunks: u64,
    updates: update::Updates,
    /// The CAs' CRL dates the last update cycle found.
    crls: super::CrlDates,
    downloads: update::Downloads,
    /// When installed images are next checked again ([`verify`]).
    verify_next: Option<Instant>,
    verifying: bool,
    next_announce: Instant,
    last_error: Option<String>,
    /// The list version (sequence number) last published on gossip, per
    /// list.
    published: HashMap<Uuid, u64>,
    /// When a list in force (or an image entry) next expires.
    next_expiry: Option<proto::Timestamp>,
    /// Lists asked of a peer and not answered yet: one ask per list at a
    /// time ([`lists`]).
    asking_lists: std::collections::HashSet<Uuid>,
    /// Each peer's requests other than for chunks ([`peers`]).
    request_rates: peers::RequestRates,
}

/// A site name as the state machine's site number.
fn site_number(name: &str) -> u32 {
    let h = blake3::hash(name.as_bytes());
    u32::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1], h.as_bytes()[2], h.as_bytes()[3]])
}

/// A peer's [`swarm::PeerInfo::key`]: every node derives the same from its
/// peer id.
fn peer_key(peer: &PeerId) -> u64 {
    let h = blake3::hash(&peer.to_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or_default())
}

impl EventLoop {
    pub(super) fn new(
        cfg: NodeConfig,
        site: Arc<Site>,
        key: Keypair,
        commands: mpsc::Receiver<Command>,
        status: watch::Sender<Status>,
    ) -> Result<Self> {
        let (gate, crl_file, role) = admission::gate(&cfg, &key, &site)?;
        let mut swarm = build_swarm(key.clone(), cfg.quic, cfg.limits, gate.is_closed())?;
        for addr in &cfg.listen {
            swarm.listen_on(addr.clone()).map_err(|e| Error::Net(format!("listening on {addr}: {e}")))?;
        }
        let trackers = trackers::Trackers::new(&cfg.trackers, &cfg.data_dir)?;
        for (p, a) in &trackers.known {
            swarm.add_peer_address(*p, a.clone());
            if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(p, a.clone());
            }
        }
        for a in &cfg.bootstrap {
            let p = peer_of(a).ok_or_else(|| Error::Invalid(format!("bootstrap address {a} lacks /p2p/<peer id>")))?;
            if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(&p, a.clone());
            }
            let _ = swarm.dial(a.clone());
        }
        swarm
            .behaviour_mut()
            .gossip
            .subscribe(&lists_topic())
            .map_err(|e| Error::Net(format!("subscribing to list gossip: {e}")))?;
        let metrics = Metrics::default();
        metrics.set_info(&cfg.site, role);
        for other in cfg.federation.iter().filter(|s| **s != cfg.site) {
            metrics.touch_site(other);
        }
        if let Some(addr) = cfg.metrics {
            p2p::metrics::serve(addr, metrics.registry()).map_err(|e| Error::Net(e.to_string()))?;
        }
        let (notices, notices_in) = Notices::start(swarm.behaviour().notices.new_control());
        let fetch_stripe = (role == Role::Gateway).then(|| FetchStripe {
            key: peer_key(&key.public().to_peer_id()),
            gateway: cfg.gateway_stripe,
            share: cfg.site_share.as_ref().map(|s| SiteShare {
                source: site_number(&s.source),
                sites: s.sites.iter().map(|x| site_number(x)).collect(),
            }),
            federation: cfg.federation.iter().map(|x| site_number(x)).collect(),
        });
        let site_id = site_number(&cfg.site);
        let now = Instant::now();
        Ok(Self {
            site_id,
            fetch_stripe,
            role,
            host: Host::new(),
            images: HashMap::new(),
            next_epoch: 0,
            up: Bucket::new(cfg.upload_limit),
            down: Bucket::new(cfg.download_limit),
            egress: Bucket::new(if cfg.master { cfg.master_egress_limit } else { None }),
            wan: Bucket::new(cfg.wan_limit),
            from_other_sites: std::collections::HashSet::new(),
            cfg,
            site,
            swarm,
            started: now,
            opening: sync::Opening::default(),
            unrooted: attest::Unrooted::default(),
            handles: HashMap::new(),
            by_wire: HashMap::new(),
            peer_sites: HashMap::new(),
            next_handle: 0,
            ids: HashMap::new(),
            trackers,
            gate,
            key,
            tracker_admission: HashMap::new(),
            refusals: HashMap::new(),
            crl_file,
            outbound: HashMap::new(),
            notices,
            notices_in,
            inbound: HashMap::new(),
            uploads: uploads::Uploads::default(),
            jobs: Jobs::default(),
            commits_running: 0,
            commands,
            status,
            metrics,
            bans: Vec::new(),
            ban_count: 0,
            failed_chunks: 0,
            updates: update::Updates::new(now),
            crls: Vec::new(),
            downloads: Default::default(),
            verify_next: None,
            verifying: false,
            asking_lists: Default::default(),
            request_rates: peers::RequestRates::new(),
            next_announce: now,
            last_error: None,
            published: HashMap::new(),
            next_expiry: None,
        })
    }

    fn now(&self) -> swarm::Micros {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Answers a peer's request; a peer that has gone meanwhile needs none.
    fn respond(&mut self, channel: ResponseChannel<Response>, r: Response) {
        let _ = self.swarm.behaviour_mut().peer.send_response(channel, r);
    }

    /// An image's name on the wire, while it is swarmed on.
    fn wire_id(&self, image: Uuid) -> Option<Uuid> {
        self.images.get(&image).map(|l| l.wire)
    }

    /// The image swarmed on here that a name on the wire means, if any.
    fn local_image(&self, wire: Uuid) -> Option<Uuid> {
        self.by_wire.get(&wire).copied()
    }

    /// The site of peer `h`, if it is not this node's own.
    fn other_site(&self, h: u64) -> Option<&str> {
        self.peer_sites.get(&h).map(String::as_str).filter(|s| *s != self.cfg.site)
    }

    fn handle(&mut self, p: PeerId) -> u64 {
        if let Some(h) = self.handles.get(&p) {
            return *h;
        }
        self.next_handle += 1;
        let h = self.next_handle;
        self.handles.insert(p, h);
        self.ids.insert(h, p);
        h
    }

    pub(super) async fn run(mut self) -> Result<()> {
        let mut tick = tokio::time::interval(TICK);
        let result = loop {
            let deadline = self.host.poll_timeout().map(|t| self.started + Duration::from_micros(t));
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                done = self.jobs.next() => self.on_io(done),
                Some(inbound) = self.notices_in.recv() => match inbound {
                    Inbound::Frame(peer, frame) => self.on_notices(peer, frame),
                    Inbound::Broken(h) => self.on_notice_stream_broken(h),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break Ok(());
                    }
                    Some(Command::Sync) => self.sync_or_log(),
                    Some(Command::Update(answer)) => self.ask_update(answer),
                    None => break Ok(()),
                },
                _ = tick.tick() => self.on_tick(),
                () = sleep_until(deadline) => {
                    let now = self.now();
                    self.host.handle_timeout(now);
                }
            }
            self.apply_effects();
        };
        let pending = self.finish_commits().await;
        // The site holds a blocking HTTP client, which must not be dropped
        // on a runtime thread.
        let site = self.site.clone();
        drop(self);
        let _ = tokio::task::spawn_blocking(move || {
            disk::commit_pending(&site, pending);
            drop(site);
        })
        .await;
        result
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // An expiry settles at once: the update cycle re-checks every list
        // in force, and what it no longer endorses stops here.
        self.update_if_due(self.next_expiry.is_some_and(|t| crate::now() > t));
        self.verify_if_due();
        self.request_rates.retain_recent();
        if now >= self.next_announce {
            self.next_announce = now + self.cfg.announce_interval;
            self.dial_unpinned_trackers();
            self.announce_all();
            self.ask_attestations_around();
        }
        for (image, h, index) in self.uploads.overdue(now) {
            tracing::debug!(%image, index, peer = h, "a peer that does not read its chunk lost its upload slot");
            self.host.handle_upload_done(self.now(), h, image, index);
        }
        let expired: Vec<PeerId> = self.bans.iter().filter(|(t, _)| *t <= now).map(|(_, p)| *p).collect();
        self.bans.retain(|(t, _)| *t > now);
        for p in expired {
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
        if self.opening.retry_due(now) {
            self.sync_or_log();
        }
        self.admission_tick();
        self.publish_status();
    }

    /// Recomputes what is served, logging (and keeping for the status) a
    /// store that cannot be read.
    fn sync_or_log(&mut self) {
        if let Err(e) = self.sync_images() {
            tracing::error!(error = %e, "reading the store failed");
            self.last_error = Some(e.to_string());
        }
        self.publish_policy();
    }

    // ---- the machine's effects ----

    /// Carries out everything the machine asks for, until it asks nothing.
    fn apply_effects(&mut self) {
        while let Some(effect) = self.host.poll_effect() {
            match effect {
                Effect::Hello { to, images } => self.send_hello(to, images),
                Effect::Notice { to, image, notice } => self.send_notice(to, image, notice),
                Effect::RequestChunk { to, image, index, insist } => {
                    let (Some(&peer), Some(wire)) = (self.ids.get(&to), self.wire_id(image)) else { continue };
                    tracing::trace!(%image, index, %peer, insist, "chunk requested");
                    let req = Request::Chunk { image: wire, index, insist };
                    let id = self.swarm.behaviour_mut().peer.send_request(&peer, req);
                    self.outbound.insert(id, Outbound::Chunk { image, peer: to, index });
                }
                Effect::RequestManifest { to, image } => {
                    let (Some(&peer), Some(wire)) = (self.ids.get(&to), self.wire_id(image)) else { continue };
                    tracing::trace!(%image, %peer, "manifest asked");
                    let id = self.swarm.behaviour_mut().peer.send_request(&peer, Request::Manifest { image: wire });
                    self.outbound.insert(id, Outbound::Manifest { image, peer: to });
                }
                Effect::Serve { to, image, index } => self.serve(image, to, index),
                Effect::Refuse { to, image, index, refusal } => {
                    if let Some((_, ch)) = self.inbound.remove(&(image, to, index)) {
                        tracing::trace!(%image, index, ?refusal, "request refused");
                        self.respond(ch, Response::Refused(refusal));
                    }
                }
                Effect::Write { image, epoch, chunk } => self.write(image, epoch, chunk),
                Effect::Commit { image, epoch, chunks } => self.commit(image, epoch, chunks),
                Effect::Install { image, epoch } => self.install(image, epoch),
                Effect::Ban { peer, offence } => self.ban(peer, &offence),
                Effect::StartOver { image } => {
                    self.forget_image(image);
                    self.sync_or_log();
                }
            }
        }
    }

    /// Disconnects and bans a peer that sent data that failed verification.
    fn ban(&mut self, peer: u64, offence: &Offence) {
        let Some(&p) = self.ids.get(&peer) else { return };
        if let Offence::Chunk { image, .. } = offence {
            self.failed_chunks += 1;
            self.metrics.chunks_failed.get_or_create(&Metrics::image(*image)).inc();
        }
        if self.bans.iter().any(|(_, b)| *b == p) {
            return;
        }
        if let Some(l) = self.images.get_mut(&offence.image()) {
            l.banned += 1;
        }
        tracing::warn!(peer = %p, ?offence, ban_secs = self.cfg.ban.as_secs(), "peer sent data that failed verification: banned");
        self.swarm.behaviour_mut().blocked.block_peer(p);
        self.bans.push((Instant::now() + self.cfg.ban, p));
        self.ban_count += 1;
        self.metrics.bans.inc();
    }

    // ---- status ----

    /// Connected nodes, trackers left out.
    fn peer_count(&self) -> usize {
        self.swarm.connected_peers().filter(|p| !self.trackers.is_tracker(p)).count()
    }

    fn publish_status(&mut self) {
        if let Ok(free) = fs4::available_space(&self.cfg.data_dir) {
            self.metrics.disk_free.set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        let now = Instant::now();
        for l in self.images.values_mut() {
            l.rates.0.sample(now, l.bytes_in);
            l.rates.1.sample(now, l.bytes_out);
        }
        let images = self
            .host
            .images()
            .filter_map(|(uuid, t)| {
                let l = self.images.get(uuid)?;
                Some(ImageStatus {
                    uuid: *uuid,
                    title: l.rec.title.clone(),
                    size: l.rec.size,
                    have: t.have().count(),
                    chunks: t.chunk_count(),
                    available: l.rec.state == ImageState::Available,
                    peers: t.peer_count(),
                    bytes_in: l.bytes_in,
                    bytes_out: l.bytes_out,
                    fetched: t.stats().chunks_verified,
                    rate_in: l.rates.0.per_sec(),
                    rate_out: l.rates.1.per_sec(),
                    banned: l.banned,
                })
            })
            .collect();
        let peers = self.peer_count();
        let s = Status {
            peer_id: Some(*self.swarm.local_peer_id()),
            listen: self.swarm.listeners().cloned().collect(),
            connected: peers,
            trackers: self.swarm.connected_peers().count() - peers,
            bans: self.ban_count,
            chunks_failed: self.failed_chunks,
            uploads_overdue: self.uploads.overdue_count(),
            images,
            downloads: update::lock(&self.downloads).iter().map(|(u, &(at, size))| (*u, at, size)).collect(),
            crls: self.crls.clone(),
            last_error: self.last_error.clone(),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }

    // ---- network ----

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.publish_status();
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, endpoint, .. } => {
                self.pin_tracker(peer_id, &endpoint);
                self.metrics.peers.set(self.peer_count() as i64);
                if num_established.get() == 1 {
                    self.on_first_connection(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.metrics.peers.set(self.peer_count() as i64);
                self.admission_forget(&peer_id);
                let Some(&h) = self.handles.get(&peer_id) else { return };
                self.notices.forget(h);
                self.inbound.retain(|k, _| k.1 != h);
                self.uploads.forget_peer(h);
                let now = self.now();
                self.host.handle_disconnected(now, h);
                // A peer that comes back gets a new handle, so the maps hold
                // connected peers only.
                self.handles.remove(&peer_id);
                self.ids.remove(&h);
                self.peer_sites.remove(&h);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(ev)) => self.on_peer_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Admit(ev)) => self.on_admit_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.offer_list(propagation_source, lists::Carrier::Gossip(message_id), message.data);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { peer_id, .. })) => {
                // A version not yet published may now reach someone; the
                // newcomer learns of those published before from hellos.
                tracing::debug!(peer = %peer_id, "peer joined list gossip");
                self.publish_lists();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Tracker(ev)) => self.on_tracker_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for a in info.listen_addrs {
                        kad.add_address(&peer_id, a);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. })),
                ..
            })) => {
                for p in providers {
                    self.dial(p, Vec::new());
                }
            }
            _ => {}
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
