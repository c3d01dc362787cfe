//! The node's event loop: owns the libp2p swarm and every image's state
//! machine, and translates between them.
//!
//! # Contract
//! * One task owns all state; disk reads and writes, the opening of images
//!   to swarm on ([`sync`]) and update cycles run on blocking threads and
//!   report back through one bounded channel ([`IO_QUEUE`]).
//! * A chunk request is answered at most once: with the data when the
//!   image's state machine starts the upload, or with a refusal.
//! * Received chunks are written, made durable and installed as [`disk`]
//!   says: the state machine hears of a chunk once it is written, and its
//!   record follows its data to disk in group commits.
//! * Requests for images that are not served here are refused with
//!   [`Refusal::NotEndorsed`].
//! * Peers are met with hellos, and swarm notices go out and come in on
//!   notice streams, as [`peers`] says.
//! * At start the node swarms on what its store holds once a local re-check
//!   (each list's signature, trust and dates, at the current time) has
//!   passed, before its first update cycle asks the network: a list source
//!   that is slow or hangs does not hold a restarted node's swarm up.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, gossipsub, identify, kad};
use proto::swarm::{self, Action, FetchStripe, Message, PeerInfo, Role, SiteShare};
use proto::wire::{Notice, NoticeFrame, Refusal, Request, Response, WireBitfield};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use tracker::transport::KAD_PROTOCOL;

use super::behaviour::{Behaviour, BehaviourEvent, build_swarm, lists_topic};
use super::images::Image;
use super::metrics::{self, Metrics};
use super::notices::{Inbound, Notices};
use super::{Command, ImageStatus, NodeConfig, Status, peer_of};
use crate::site::{ListOutcome, Site};
use crate::{Error, Result};

mod discovery;
mod disk;
mod peers;
mod sync;

/// Completed disk work waiting for the loop.
const IO_QUEUE: usize = 256;

/// How often the loop refreshes its status and looks after timers of its own.
const TICK: Duration = Duration::from_millis(200);

/// How long to wait for a manifest before asking another peer.
const MANIFEST_TIMEOUT: swarm::Micros = 10_000_000;

/// Disk work done on a blocking thread.
enum IoDone {
    Disk(disk::Disk),
    /// The store was re-checked locally, before the first update cycle.
    Settled(Result<()>),
    Updated(Result<()>),
    Offered {
        id: gossipsub::MessageId,
        from: PeerId,
        result: Result<ListOutcome>,
    },
    /// Images to swarm on were opened (see [`sync`]).
    Opened(Result<Vec<sync::Opened>>),
}

/// What an outbound request was for.
#[derive(Debug, Clone, Copy)]
enum Outbound {
    Hello,
    Chunk { image: Uuid, peer: u64, index: u32 },
    Manifest { image: Uuid, peer: u64 },
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
    images: HashMap<Uuid, Image>,
    /// Images being opened to be swarmed on.
    opening: sync::Opening,
    handles: HashMap<PeerId, u64>,
    next_handle: u64,
    ids: HashMap<u64, PeerId>,
    /// What each connected peer said of itself in its hello.
    met: HashMap<u64, PeerInfo>,
    trackers: Vec<(PeerId, Multiaddr)>,
    outbound: HashMap<OutboundRequestId, Outbound>,
    notices: Notices,
    notices_in: mpsc::Receiver<Inbound>,
    /// Notices that arrived before their sender's hello (the two travel on
    /// different streams), applied once it is here.
    before_hello: HashMap<u64, Vec<NoticeFrame>>,
    /// Chunk requests waiting for the state machine's decision.
    inbound: HashMap<(Uuid, u64, u32), (InboundRequestId, ResponseChannel<Response>)>,
    /// Uploads whose response is on its way; the slot frees when it is sent.
    uploads: HashMap<InboundRequestId, (Uuid, u64, u32)>,
    io_tx: mpsc::Sender<IoDone>,
    io_rx: mpsc::Receiver<IoDone>,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    metrics: Metrics,
    up: Option<Arc<Bucket>>,
    down: Option<Arc<Bucket>>,
    egress: Option<Arc<Bucket>>,
    bans: Vec<(Instant, PeerId)>,
    ban_count: u64,
    failed_chunks: u64,
    updating: bool,
    /// The first update cycle has started (it re-checks the store locally
    /// before it fetches anything).
    started_updates: bool,
    next_update: Instant,
    next_announce: Instant,
    last_error: Option<String>,
    /// The list version (sequence number) last published, per list.
    published: HashMap<Uuid, u64>,
    recent_lists: discovery::RecentLists,
    /// When a list in force (or an image entry) next expires.
    next_expiry: Option<proto::Timestamp>,
}

/// A token bucket counting KiB, which lets at most 20 ms worth through at
/// once, so that a cap holds over short intervals too.
#[derive(Debug)]
struct Bucket {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl Bucket {
    fn new(bytes_per_sec: Option<u64>) -> Option<Arc<Self>> {
        let kib = NonZeroU32::new(u32::try_from(bytes_per_sec? / 1024).unwrap_or(u32::MAX).max(1))?;
        let burst = NonZeroU32::new((kib.get() / 50).max(16))?;
        Some(Arc::new(Self { limiter: RateLimiter::direct(Quota::per_second(kib).allow_burst(burst)), burst }))
    }

    /// Waits until `bytes` may pass.
    async fn take(bucket: Option<&Self>, bytes: usize) {
        let Some(b) = bucket else { return };
        let mut kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        while let Some(n) = NonZeroU32::new(kib.min(b.burst.get())) {
            // `n` never exceeds the burst, so this cannot fail.
            let _ = b.limiter.until_n_ready(n).await;
            kib -= n.get();
        }
    }
}

/// A site name as the state machine's site number.
fn site_number(name: &str) -> u32 {
    let h = blake3::hash(name.as_bytes());
    u32::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1], h.as_bytes()[2], h.as_bytes()[3]])
}

impl EventLoop {
    pub(super) fn new(
        cfg: NodeConfig,
        site: Arc<Site>,
        key: Keypair,
        commands: mpsc::Receiver<Command>,
        status: watch::Sender<Status>,
    ) -> Result<Self> {
        let mut swarm = build_swarm(key, cfg.quic, cfg.limits)?;
        for addr in &cfg.listen {
            swarm.listen_on(addr.clone()).map_err(|e| Error::Net(format!("listening on {addr}: {e}")))?;
        }
        let trackers = cfg
            .trackers
            .iter()
            .map(|a| {
                peer_of(a)
                    .map(|p| (p, a.clone()))
                    .ok_or_else(|| Error::Invalid(format!("tracker address {a} lacks /p2p/<peer id>")))
            })
            .collect::<Result<Vec<_>>>()?;
        for (p, a) in &trackers {
            swarm.add_peer_address(*p, a.clone());
            swarm.behaviour_mut().kad.add_address(p, a.clone());
        }
        for a in &cfg.bootstrap {
            let p = peer_of(a).ok_or_else(|| Error::Invalid(format!("bootstrap address {a} lacks /p2p/<peer id>")))?;
            swarm.behaviour_mut().kad.add_address(&p, a.clone());
            let _ = swarm.dial(a.clone());
        }
        swarm
            .behaviour_mut()
            .gossip
            .subscribe(&lists_topic())
            .map_err(|e| Error::Net(format!("subscribing to list gossip: {e}")))?;
        let metrics = Metrics::default();
        if let Some(addr) = cfg.metrics {
            metrics::serve(addr, metrics.registry())?;
        }
        let (io_tx, io_rx) = mpsc::channel(IO_QUEUE);
        let (notices, notices_in) = Notices::start(swarm.behaviour().notices.new_control());
        let role = if cfg.master {
            Role::Master
        } else if cfg.gateway {
            Role::Gateway
        } else {
            Role::Worker
        };
        let fetch_stripe = (role == Role::Gateway).then(|| FetchStripe {
            gateway: cfg.gateway_stripe.unwrap_or((0, 1)),
            share: cfg.site_share.as_ref().map(|s| SiteShare {
                source: site_number(&s.source),
                sites: s.sites.iter().map(|x| site_number(x)).collect(),
            }),
        });
        let now = Instant::now();
        Ok(Self {
            site_id: site_number(&cfg.site),
            fetch_stripe,
            role,
            up: Bucket::new(cfg.upload_limit),
            down: Bucket::new(cfg.download_limit),
            egress: Bucket::new(if cfg.master { cfg.master_egress_limit } else { None }),
            cfg,
            site,
            swarm,
            started: now,
            images: HashMap::new(),
            opening: sync::Opening::default(),
            handles: HashMap::new(),
            next_handle: 0,
            ids: HashMap::new(),
            met: HashMap::new(),
            trackers,
            outbound: HashMap::new(),
            notices,
            notices_in,
            before_hello: HashMap::new(),
            inbound: HashMap::new(),
            uploads: HashMap::new(),
            io_tx,
            io_rx,
            commands,
            status,
            metrics,
            bans: Vec::new(),
            ban_count: 0,
            failed_chunks: 0,
            updating: false,
            started_updates: false,
            next_update: now,
            next_announce: now,
            last_error: None,
            published: HashMap::new(),
            recent_lists: discovery::RecentLists::default(),
            next_expiry: None,
        })
    }

    fn now(&self) -> swarm::Micros {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
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
            let deadline = self.next_deadline();
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                Some(done) = self.io_rx.recv() => self.on_io(done),
                Some(inbound) = self.notices_in.recv() => match inbound {
                    Inbound::Frame(peer, frame) => self.on_notices(peer, frame),
                    Inbound::Broken(h) => self.on_notice_stream_broken(h),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break Ok(());
                    }
                    Some(Command::Sync) => {
                        if let Err(e) = self.sync_images() {
                            tracing::error!(error = %e, "reading the store failed");
                        }
                    }
                    None => break Ok(()),
                },
                _ = tick.tick() => self.on_tick(),
                () = sleep_until(deadline) => self.on_timers(),
            }
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

    fn next_deadline(&self) -> Option<Instant> {
        let t = self.images.values().filter_map(|i| i.swarm.as_ref()?.poll_timeout()).min()?;
        Some(self.started + Duration::from_micros(t))
    }

    fn on_timers(&mut self) {
        let now = self.now();
        let due: Vec<Uuid> = self
            .images
            .iter()
            .filter(|(_, i)| i.swarm.as_ref().and_then(|s| s.poll_timeout()).is_some_and(|t| t <= now))
            .map(|(u, _)| *u)
            .collect();
        for u in due {
            if let Some(s) = self.images.get_mut(&u).and_then(|i| i.swarm.as_mut()) {
                s.handle_timeout(now);
            }
            self.drain(u);
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired = self.next_expiry.is_some_and(|t| crate::now() > t);
        if !self.updating && (now >= self.next_update || expired) {
            // An expiry settles at once: the update cycle re-checks every
            // list in force, and what it no longer endorses stops here.
            self.start_update();
        }
        if now >= self.next_announce {
            self.next_announce = now + self.cfg.announce_interval;
            self.announce_all();
        }
        let expired: Vec<PeerId> = self.bans.iter().filter(|(t, _)| *t <= now).map(|(_, p)| *p).collect();
        self.bans.retain(|(t, _)| *t > now);
        for p in expired {
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
        self.ask_manifests();
        self.publish_status();
    }

    fn start_update(&mut self) {
        self.updating = true;
        let settle_first = !std::mem::replace(&mut self.started_updates, true);
        let site = self.site.clone();
        let back_to_source = self.cfg.master || self.cfg.back_to_source;
        let tx = self.io_tx.clone();
        let settled_tx = tx.clone();
        tokio::spawn(async move {
            let r = blocking(move || {
                if settle_first {
                    // In the same task as the update, so that the two never
                    // write the store at once.
                    let settled = site.settle(crate::now()).map(drop);
                    let _ = settled_tx.blocking_send(IoDone::Settled(settled));
                }
                let report = site.update_with(crate::now(), back_to_source, &mut |_, _| {})?;
                for (id, url, outcome) in &report.lists {
                    tracing::debug!(list = %id, url, ?outcome, "list update");
                }
                match report.lists.iter().find_map(|(_, url, o)| match o {
                    ListOutcome::Failed(e) => Some(format!("{url}: {e}")),
                    _ => None,
                }) {
                    Some(e) => Err(Error::Refused(e)),
                    None => Ok(()),
                }
            })
            .await;
            let _ = tx.send(IoDone::Updated(r)).await;
        });
    }

    // ---- images ----

    /// Carries out what image `uuid`'s state machine asks for.
    fn drain(&mut self, uuid: Uuid) {
        loop {
            let Some(action) = self.images.get_mut(&uuid).and_then(|i| i.swarm.as_mut()?.poll_action()) else {
                return;
            };
            match action {
                Action::Send { to, msg } => self.send(uuid, to, msg),
                Action::Upload { to, chunk } => self.upload(uuid, to, chunk),
                Action::Ban { peer, chunk } => self.ban(uuid, peer, &format!("chunk {chunk}")),
                Action::Completed => self.install(uuid),
            }
        }
    }

    fn send(&mut self, image: Uuid, to: u64, msg: Message) {
        let Some(&peer) = self.ids.get(&to) else { return };
        match msg {
            Message::Request(index) | Message::Insist(index) => {
                let insist = matches!(msg, Message::Insist(_));
                tracing::trace!(%image, index, %peer, insist, "chunk requested");
                let id = self.swarm.behaviour_mut().peer.send_request(&peer, Request::Chunk { image, index, insist });
                self.outbound.insert(id, Outbound::Chunk { image, peer: to, index });
            }
            Message::Reject(index) => {
                if let Some((_, ch)) = self.inbound.remove(&(image, to, index)) {
                    tracing::trace!(%image, index, %peer, "request refused");
                    let _ = self.swarm.behaviour_mut().peer.send_response(ch, Response::Refused(Refusal::Busy));
                }
            }
            Message::Bitfield(b) => self.send_notice(to, image, Notice::Bitfield(WireBitfield::new(&b))),
            Message::Have(i) => self.send_notice(to, image, Notice::Have(i)),
            Message::Cancel(i) => self.send_notice(to, image, Notice::Cancel(i)),
        }
    }

    fn upload_done(&mut self, image: Uuid, to: u64, index: u32) {
        let now = self.now();
        if let Some(s) = self.images.get_mut(&image).and_then(|i| i.swarm.as_mut()) {
            s.handle_upload_done(now, to, index);
        }
        self.drain(image);
    }

    /// Disconnects and bans a peer that sent `what` of `image` and it failed
    /// verification.
    fn ban(&mut self, image: Uuid, peer: u64, what: &str) {
        let Some(&p) = self.ids.get(&peer) else { return };
        if self.bans.iter().any(|(_, b)| *b == p) {
            return;
        }
        tracing::warn!(%image, peer = %p, what, ban_secs = self.cfg.ban.as_secs(), "peer sent data that failed verification: banned");
        self.swarm.behaviour_mut().blocked.block_peer(p);
        self.bans.push((Instant::now() + self.cfg.ban, p));
        self.ban_count += 1;
        self.metrics.bans.inc();
    }

    // ---- disk results ----

    fn on_io(&mut self, done: IoDone) {
        match done {
            IoDone::Disk(d) => self.on_disk(d),
            IoDone::Opened(opened) => self.on_opened(opened),
            IoDone::Offered { id, from, result } => {
                use gossipsub::MessageAcceptance as A;
                let verdict = match &result {
                    Ok(_) => A::Accept,
                    // Valid but stale or not ours: not forwarded, no penalty.
                    Err(Error::Proto(e)) if matches!(e.check(), "version" | "identifier") => A::Ignore,
                    Err(Error::Proto(_)) => A::Reject,
                    Err(_) => A::Ignore,
                };
                match &result {
                    Ok(o) => tracing::info!(peer = %from, outcome = ?o, "list received through the swarm"),
                    Err(e) => tracing::info!(peer = %from, error = %e, "list from the swarm not taken"),
                }
                self.swarm.behaviour_mut().gossip.report_message_validation_result(&id, &from, verdict);
                if matches!(result, Ok(ListOutcome::Accepted(_))) {
                    let _ = self.sync_images();
                    self.publish_lists();
                }
            }
            IoDone::Settled(r) => match r.and_then(|()| self.sync_images()) {
                Ok(()) => self.publish_lists(),
                Err(e) => {
                    tracing::warn!(error = %e, "re-checking the store at start failed; waiting for the update");
                    self.last_error = Some(e.to_string());
                }
            },
            IoDone::Updated(r) => {
                self.updating = false;
                self.next_update = Instant::now() + self.cfg.update_interval;
                self.last_error = r.err().map(|e| e.to_string());
                if let Err(e) = self.sync_images() {
                    tracing::error!(error = %e, "reading the store failed");
                    self.last_error = Some(e.to_string());
                }
                self.publish_lists();
            }
        }
    }

    // ---- network ----

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.publish_status();
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } => {
                self.metrics.peers.set(self.swarm.connected_peers().count() as i64);
                if num_established.get() == 1 && !self.trackers.iter().any(|(p, _)| *p == peer_id) {
                    self.send_hello(peer_id, &[]);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.metrics.peers.set(self.swarm.connected_peers().count() as i64);
                let Some(&h) = self.handles.get(&peer_id) else { return };
                self.met.remove(&h);
                self.before_hello.remove(&h);
                self.notices.forget(h);
                self.inbound.retain(|k, _| k.1 != h);
                let now = self.now();
                let uuids: Vec<Uuid> = self.images.keys().copied().collect();
                for u in uuids {
                    if let Some(img) = self.images.get_mut(&u) {
                        img.disconnected(now, h);
                    }
                    self.drain(u);
                }
                // A peer that comes back gets a new handle, so the maps hold
                // connected peers only.
                self.handles.remove(&peer_id);
                self.ids.remove(&h);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(ev)) => self.on_peer_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.recent_lists.saw(message_id.clone(), true);
                self.offer_list(propagation_source, message_id, message.data);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { peer_id, .. })) => {
                // Gossip does not replay old messages: a newcomer gets the
                // lists in force published again (the duplicate cache keeps
                // peers that saw them lately from seeing them twice).
                tracing::debug!(peer = %peer_id, "peer joined list gossip");
                self.published.clear();
                self.publish_lists();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Tracker(ev)) => self.on_tracker_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                for a in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
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

    fn on_peer_event(&mut self, ev: request_response::Event<Request, Response>) {
        use request_response::{Event, Message as M};
        match ev {
            Event::Message { peer, message: M::Request { request, channel, request_id }, .. } => {
                self.on_request(peer, request, channel, request_id);
            }
            Event::Message { peer, message: M::Response { request_id, response }, .. } => {
                if let Some(o) = self.outbound.remove(&request_id) {
                    self.on_response(peer, o, response);
                }
            }
            Event::OutboundFailure { peer, request_id, error, .. } => {
                if let Some(o) = self.outbound.remove(&request_id) {
                    tracing::debug!(%peer, ?o, %error, "request failed");
                    self.on_response(peer, o, Response::Refused(Refusal::Busy));
                }
            }
            Event::ResponseSent { peer, request_id, .. } | Event::InboundFailure { peer, request_id, .. } => {
                if let Some((image, h, index)) = self.uploads.remove(&request_id) {
                    tracing::trace!(%image, index, %peer, "upload ended");
                    self.upload_done(image, h, index);
                }
            }
        }
    }

    fn on_request(&mut self, peer: PeerId, req: Request, channel: ResponseChannel<Response>, id: InboundRequestId) {
        let h = self.handle(peer);
        let now = self.now();
        let respond = |s: &mut Self, ch, r| {
            let _ = s.swarm.behaviour_mut().peer.send_response(ch, r);
        };
        match req {
            Request::Hello(hello) => {
                tracing::trace!(%peer, "hello asked");
                let asked: Vec<Uuid> = hello.images.iter().map(|(u, _)| *u).collect();
                let mine = self.hello(&asked);
                respond(self, channel, Response::Hello(mine));
                self.on_hello(peer, hello);
            }
            Request::Manifest { image } => {
                tracing::trace!(%peer, %image, "manifest requested");
                let r = match self.images.get(&image) {
                    None => Response::Refused(Refusal::NotEndorsed),
                    Some(i) => {
                        i.hashes().map_or(Response::Refused(Refusal::NotHeld), |h| Response::Manifest(h.to_vec()))
                    }
                };
                respond(self, channel, r);
            }
            Request::Chunk { image, index, insist } => {
                let Some(img) = self.images.get_mut(&image) else {
                    tracing::debug!(%peer, %image, "refused a chunk of an image not endorsed here");
                    return respond(self, channel, Response::Refused(Refusal::NotEndorsed));
                };
                let Some(s) = img.swarm.as_mut().filter(|s| s.has_peer(h)) else {
                    return respond(self, channel, Response::Refused(Refusal::NotHeld));
                };
                if self.inbound.contains_key(&(image, h, index)) {
                    return respond(self, channel, Response::Refused(Refusal::Busy));
                }
                // The state machine either queues the request (an Upload
                // follows, now or later) or refuses it (a Reject follows now).
                self.inbound.insert((image, h, index), (id, channel));
                s.handle_message(now, h, if insist { Message::Insist(index) } else { Message::Request(index) });
                self.drain(image);
            }
        }
    }

    fn on_response(&mut self, peer: PeerId, o: Outbound, resp: Response) {
        if self.bans.iter().any(|(_, b)| *b == peer) {
            return;
        }
        let now = self.now();
        match (o, resp) {
            (Outbound::Hello, Response::Hello(hello)) => self.on_hello(peer, hello),
            (Outbound::Chunk { image, peer: h, index }, Response::Chunk(data)) => {
                let Some(img) = self.images.get_mut(&image) else { return };
                let n = data.len() as u64;
                tracing::trace!(%image, index, %peer, bytes = n, "chunk received");
                img.bytes_in += n;
                self.metrics.bytes_in.get_or_create(&Metrics::image(image)).inc_by(n);
                let Some(s) = img.swarm.as_mut() else { return };
                if s.have().get(index) {
                    s.handle_chunk(now, h, index, true);
                    return self.drain(image);
                }
                if img.writing.contains(&index) {
                    // The first copy's write will settle this request too
                    // (the state machine cancels the duplicates it knows of).
                    tracing::debug!(%image, index, "duplicate of a chunk being stored: dropped");
                    return;
                }
                let Some(hash) = img.check(index, &data) else {
                    self.failed_chunks += 1;
                    self.metrics.chunks_failed.get_or_create(&Metrics::image(image)).inc();
                    if let Some(s) = img.swarm.as_mut() {
                        s.handle_chunk(now, h, index, false);
                    }
                    return self.drain(image);
                };
                img.writing.insert(index);
                self.write(image, h, index, hash, data);
            }
            (Outbound::Chunk { image, peer: h, index }, _) => {
                tracing::trace!(%image, index, %peer, "chunk refused");
                if let Some(s) = self.images.get_mut(&image).and_then(|i| i.swarm.as_mut()) {
                    s.handle_message(now, h, Message::Reject(index));
                }
                self.drain(image);
            }
            (Outbound::Manifest { image, peer: h }, resp) => {
                let Some(img) = self.images.get_mut(&image) else { return };
                let Response::Manifest(hashes) = resp else { return img.manifest_failed(h) };
                match img.set_manifest(now, hashes) {
                    Ok(()) => tracing::info!(%image, "manifest received and matches the list"),
                    Err(e) => {
                        // A manifest that does not match the signed root is bad data.
                        img.manifest_failed(h);
                        tracing::warn!(%image, %peer, error = %e, "peer sent a manifest that does not match the list");
                        self.ban(image, h, "a manifest");
                    }
                }
                self.drain(image);
            }
            _ => {}
        }
    }

    fn ask_manifests(&mut self) {
        let now = self.now();
        let asks: Vec<(Uuid, u64)> = self
            .images
            .iter_mut()
            .filter_map(|(u, img)| Some((*u, img.next_manifest_source(now, MANIFEST_TIMEOUT)?)))
            .collect();
        for (image, h) in asks {
            if let Some(&peer) = self.ids.get(&h) {
                tracing::trace!(%image, %peer, "manifest asked");
                let id = self.swarm.behaviour_mut().peer.send_request(&peer, Request::Manifest { image });
                self.outbound.insert(id, Outbound::Manifest { image, peer: h });
            }
        }
    }

    // ---- status ----

    fn publish_status(&mut self) {
        let images = self
            .images
            .values()
            .map(|i| ImageStatus {
                uuid: i.rec.uuid,
                title: i.rec.title.clone(),
                size: i.rec.size,
                have: i.have().count(),
                chunks: i.rec.chunk_count(),
                available: i.is_available(),
                peers: i.peer_count(),
                bytes_in: i.bytes_in,
                bytes_out: i.bytes_out,
                fetched: i.swarm.as_ref().map_or(0, |s| s.stats().chunks_verified),
            })
            .collect();
        let s = Status {
            peer_id: Some(*self.swarm.local_peer_id()),
            listen: self.swarm.listeners().cloned().collect(),
            connected: self.swarm.connected_peers().count(),
            bans: self.ban_count,
            chunks_failed: self.failed_chunks,
            images,
            last_error: self.last_error.clone(),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }
}

/// Runs `f` on a blocking thread; a panic there comes back as an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(Error::Net(e.to_string())))
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
