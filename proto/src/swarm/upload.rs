//! Serving requests: upload slots, a bounded queue, and the masters' policy.
//!
//! # Why this policy
//! A site swarm is cooperative: every host runs our code and nobody free-
//! rides, so BitTorrent's tit-for-tat choking buys nothing and costs ramp-up
//! time. What matters is keeping every uplink busy with useful data and
//! keeping the masters' egress near one copy. Hence:
//!
//! * **Slots, not choking.** A node serves at most `slots` chunks at once
//!   (enough to fill its uplink when a peer's downlink is shared, few enough
//!   that each transfer gets a meaningful share) and queues at most
//!   `max_queue` more in arrival order. A request beyond that is refused at
//!   once, so the requester asks another peer instead of waiting. The queue
//!   is short (as long as the slots): a request that waits behind a busy
//!   uplink leaves the requester's downlink idle while other peers may have
//!   room, and a refusal, though it costs a message, sends the requester to
//!   them at once. A much shorter queue refuses so often that requesters
//!   idle between refusals.
//! * **One upload per peer at a time.** A peer's second request waits in
//!   the queue until its first upload ends, and requests from other peers
//!   behind it go first. Two chunks to one peer share one path, so each
//!   arrives at half the rate and neither can be passed on until it is
//!   whole; and a worker asking 2 chunks of each of 7 peers takes 14 flows,
//!   against which a master's flow to it gets a fifteenth of its downlink,
//!   so the master's uplink, the swarm's scarcest, idles. Queued, the second
//!   request starts the moment the first ends, so the requester's pipeline
//!   still hides the round trip. Requests from other sites are exempt: over
//!   a WAN a new stream starts with a small receive window that grows per
//!   round trip, so one chunk at a time would hold a long path to a
//!   fraction of its rate.
//! * **FIFO, other sites first.** In a cooperative swarm a first-come queue
//!   is fair, cheap and predictable; the requester's rarest-first picking
//!   already steers the swarm toward what is scarce. Requests from other
//!   sites go ahead of those from this site: a remote site has only its
//!   gateways to fetch from, this site has every host that holds a chunk.
//!   At a gateway, such a request also takes the place of the last queued
//!   request from this site when the queue is full (that one is refused, and
//!   its asker turns to another host of its site). Otherwise a gateway busy
//!   feeding its own site would refuse the other sites' gateways, and their
//!   WAN links would idle while this site's hosts, which have other peers
//!   to ask, kept its queue full. This matters most when sites split the
//!   image per [`super::SiteShare`]: each remote site then depends on the
//!   others' gateways for much of the image. Masters do not do this: they feed
//!   their own site's first copy, which every host there waits on, so
//!   putting other sites first would hold back the masters' whole site.
//!   For the same reason uploads to other sites hold at most a quarter of a
//!   master's slots: a flow over a WAN holds its slot far longer than one
//!   within the site, so otherwise they would gather in the slots, and the
//!   master's uplink would run at the WAN's rate while its site waits.
//! * **Masters stand back.** A master refuses a chunk once `master_copies`
//!   copies exist at the requester's site: held by peers there, or on their
//!   way from this master. Its egress so stays close to `master_copies`
//!   copies of the image per site however many hosts ask. A remote site's
//!   gateways so get a site's first copy from the masters, not only from
//!   gateways of other sites whose uplinks also serve their own site. The
//!   price is master egress above one copy in all; in exchange no remote
//!   site waits for gateways that are busy with their own site
//!   (docs/BENCHMARKS.md has the measurements).
//!   With several masters, each first serves its own stripe of chunks
//!   (`chunk % count == index`) and takes another stripe's chunk only when
//!   it is still unavailable `grace` after it was first asked for, so that
//!   masters do not send the same chunk twice while a master that died does
//!   not stall the swarm.
//! * **Masters hold more slots and a longer queue** ([`UploadPolicy::master`]).
//!   A flow gets what the recipient's downlink leaves it beside the
//!   recipient's other flows, and a worker's downlink carries many; so a
//!   master with a host's slots leaves part of its uplink, the swarm's
//!   scarcest, idle, and a master's flows are the ones the whole site waits
//!   on. Its queue holds requests for chunks nobody else has, which must
//!   wait for it anyway: refused, their askers would only ask again.
//! * **A sent chunk counts until it is announced.** For a master, a chunk
//!   is on its way from the moment a request for it is queued until the
//!   recipient announces it (or asks for it again, leaves, or
//!   `delivery_grace` passes), not only until the upload ends: an upload the
//!   I/O layer reports done may still sit in socket buffers and be verified
//!   and stored before the recipient's Have goes out. A request that comes
//!   in that window would otherwise find no copy at the requester's site,
//!   and the master would send the chunk twice, spending egress at the
//!   swarm's bottleneck.

use std::collections::VecDeque;

use super::{ChunkIndex, Config, Micros, PeerId, Role};

/// The most bytes of an upload its node's transport may still hold, not
/// yet sent, when it reports the upload done: a TCP socket takes this many
/// beyond what is on the wire (`p2p::transport` sets `TCP_NOTSENT_LOWAT` to
/// it), so a chunk's slot frees once all but this much of it has left, and a
/// chunk no larger frees its slot as it starts. netsim frees slots at the
/// same point.
pub const UNSENT_BYTES: u32 = 128 << 10;

/// How a node serves requests.
#[derive(Debug, Clone)]
pub struct UploadPolicy {
    /// Chunks uploaded at once.
    pub slots: u32,
    /// Chunks uploaded at once to one peer of this site; its further
    /// requests wait in the queue, and requests behind them from other
    /// peers go first. Other sites' requests are not held to it.
    pub per_peer: u32,
    /// Requests queued beyond the slots.
    pub max_queue: usize,
    /// For masters: refuse a chunk once this many peers hold it.
    pub master_copies: u16,
    /// For masters: this master's share of the chunks.
    pub stripe: Option<Stripe>,
    /// For masters: how long a sent chunk counts as a copy at the
    /// recipient's site before the recipient announces it.
    pub delivery_grace: Micros,
}

/// A host's policy.
impl Default for UploadPolicy {
    fn default() -> Self {
        Self { slots: 8, per_peer: 1, max_queue: 8, master_copies: 1, stripe: None, delivery_grace: 2_000_000 }
    }
}

impl UploadPolicy {
    /// A master's policy: twice a host's slots and four times its queue
    /// (see the module docs).
    pub fn master() -> Self {
        let host = Self::default();
        Self { slots: 2 * host.slots, max_queue: 4 * host.max_queue, ..host }
    }

    /// The policy of a node in `role`.
    pub fn of(role: Role) -> Self {
        if role == Role::Master { Self::master() } else { Self::default() }
    }
}

/// One master's share of the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    /// This master's position among the masters.
    pub index: u32,
    /// How many masters share the work.
    pub count: u32,
    /// How long another stripe's chunk must have been wanted before this
    /// master serves it.
    pub grace: Micros,
}

impl UploadPolicy {
    /// Whether a request for `chunk` may be queued now; `copies` counts the
    /// copies the requester could fetch elsewhere (masters only).
    pub(crate) fn admits(
        &self,
        cfg: &Config,
        chunk: ChunkIndex,
        copies: impl FnOnce(&Uploads) -> u32,
        now: Micros,
        uploads: &mut Uploads,
    ) -> bool {
        if cfg.role != Role::Master {
            return true;
        }
        if copies(uploads) >= u32::from(self.master_copies) {
            return false;
        }
        let Some(s) = self.stripe else {
            return true;
        };
        if s.count <= 1 || chunk % s.count == s.index {
            return true;
        }
        let first = uploads.first_asked(chunk, now);
        now >= first + s.grace
    }
}

/// Who asked, for the queue's order (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asker {
    /// A peer of this site: to the back of the queue.
    ThisSite,
    /// A peer of another site: ahead of this site's requests.
    OtherSite,
    /// As `OtherSite`, and into a full queue, in place of the last request
    /// from this site.
    OtherSiteFirst,
}

/// What became of a request offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Queued.
    Yes,
    /// Queued in place of this request, which must now be refused.
    InPlaceOf(PeerId, ChunkIndex),
    /// Not queued: refuse it.
    No,
}

/// A running upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Active {
    peer: PeerId,
    chunk: ChunkIndex,
    /// To another site.
    cross: bool,
}

/// Queued and running uploads.
#[derive(Debug, Clone)]
pub(crate) struct Uploads {
    queue: VecDeque<(PeerId, ChunkIndex)>,
    /// The first `urgent` entries of `queue` came from other sites.
    urgent: usize,
    active: Vec<Active>,
    /// A master's: uploads to other sites take at most a quarter of the slots.
    master: bool,
    /// Per chunk, uploads of it that ended (to whom, when) and that the
    /// recipient has not announced yet; at most one entry per peer and
    /// chunk. Masters only (empty otherwise).
    delivered: Vec<Vec<(PeerId, Micros)>>,
    /// When each chunk was first asked for (stripe grace). Masters only.
    first_asked: Vec<Micros>,
}

const NEVER: Micros = Micros::MAX;

impl Uploads {
    /// Queues for an image of `chunks` chunks. A master's also keep, per
    /// chunk, ended uploads among the [`Uploads::recipients`] until
    /// announced, and when it was first asked for. Other nodes need neither,
    /// and a simulation holds thousands of them: for 10,000 nodes of 2,560
    /// chunks (netsim's site-10k) the first-asked times alone would take
    /// 195 MiB.
    pub(crate) fn new(chunks: u32, master: bool) -> Self {
        let per_chunk = if master { chunks as usize } else { 0 };
        Self {
            queue: VecDeque::new(),
            urgent: 0,
            active: Vec::new(),
            master,
            delivered: vec![Vec::new(); per_chunk],
            first_asked: vec![NEVER; per_chunk],
        }
    }

    /// When `chunk` was first asked for, `now` if never before (masters).
    fn first_asked(&mut self, chunk: ChunkIndex, now: Micros) -> Micros {
        match self.first_asked.get_mut(chunk as usize) {
            Some(t) if *t == NEVER => {
                *t = now;
                now
            }
            Some(t) => *t,
            None => now,
        }
    }

    /// Queues a request, unless it is a duplicate or the queue is full of
    /// requests that go before it.
    pub(crate) fn enqueue(&mut self, peer: PeerId, chunk: ChunkIndex, max_queue: usize, from: Asker) -> Queued {
        if self.queue.contains(&(peer, chunk)) || self.active.iter().any(|a| (a.peer, a.chunk) == (peer, chunk)) {
            return Queued::No;
        }
        let mut queued = Queued::Yes;
        if self.queue.len() >= max_queue {
            match self.queue.back() {
                Some(&(p, c)) if from == Asker::OtherSiteFirst && self.urgent < self.queue.len() => {
                    self.queue.pop_back();
                    queued = Queued::InPlaceOf(p, c);
                }
                _ => return Queued::No,
            }
        }
        if from != Asker::ThisSite {
            self.queue.insert(self.urgent, (peer, chunk));
            self.urgent += 1;
        } else {
            self.queue.push_back((peer, chunk));
        }
        queued
    }

    /// The next upload to start, if one of the policy's slots is free: the
    /// first queued request that came from another site or whose peer has
    /// fewer than `per_peer` uploads running. At a master, requests from
    /// other sites wait while uploads to other sites hold a quarter of the
    /// slots (see the module docs).
    pub(crate) fn next(&mut self, policy: &UploadPolicy) -> Option<(PeerId, ChunkIndex)> {
        if self.active.len() as u32 >= policy.slots {
            return None;
        }
        let cross_full =
            self.master && self.active.iter().filter(|a| a.cross).count() as u32 >= policy.slots.div_ceil(4);
        let running = |peer: PeerId| self.active.iter().filter(|a| a.peer == peer).count();
        let pos = self.queue.iter().enumerate().position(|(i, &(p, _))| {
            if i < self.urgent { !cross_full } else { running(p) < policy.per_peer as usize }
        })?;
        let (peer, chunk) = self.queue.remove(pos)?;
        let cross = pos < self.urgent;
        if cross {
            self.urgent -= 1;
        }
        self.active.push(Active { peer, chunk, cross });
        Some((peer, chunk))
    }

    /// An upload ended at `now`.
    pub(crate) fn finish(&mut self, peer: PeerId, chunk: ChunkIndex, now: Micros) {
        if let Some(pos) = self.active.iter().position(|a| (a.peer, a.chunk) == (peer, chunk)) {
            self.active.swap_remove(pos);
            self.settle(peer, chunk);
            if let Some(sent) = self.delivered.get_mut(chunk as usize) {
                sent.push((peer, now));
            }
        }
    }

    /// `peer` announced `chunk`, or asked for it again: an upload of it to
    /// `peer` is no longer on its way.
    pub(crate) fn settle(&mut self, peer: PeerId, chunk: ChunkIndex) {
        if let Some(sent) = self.delivered.get_mut(chunk as usize) {
            sent.retain(|&(p, _)| p != peer);
        }
    }

    pub(crate) fn cancel(&mut self, peer: PeerId, chunk: ChunkIndex) {
        self.remove_queued(|u| u == (peer, chunk));
    }

    pub(crate) fn drop_peer(&mut self, peer: PeerId) {
        self.remove_queued(|(p, _)| p == peer);
        self.active.retain(|a| a.peer != peer);
        for sent in &mut self.delivered {
            sent.retain(|&(p, _)| p != peer);
        }
    }

    fn remove_queued(&mut self, gone: impl Fn((PeerId, ChunkIndex)) -> bool) {
        let urgent_gone = self.queue.iter().take(self.urgent).filter(|&&u| gone(u)).count();
        self.urgent -= urgent_gone;
        self.queue.retain(|&u| !gone(u));
    }

    pub(crate) fn active(&self) -> usize {
        self.active.len()
    }

    /// The peers `chunk` is queued for, being sent to, or was sent to at
    /// `since` or later and not yet announced by.
    pub(crate) fn recipients(&self, chunk: ChunkIndex, since: Micros) -> impl Iterator<Item = PeerId> + '_ {
        let queued = self.queue.iter().filter(move |&&(_, c)| c == chunk).map(|&(p, _)| p);
        let pending = queued.chain(self.active.iter().filter(move |a| a.chunk == chunk).map(|a| a.peer));
        let sent = self.delivered.get(chunk as usize).into_iter().flatten();
        pending.chain(sent.filter(move |&&(_, t)| t >= since).map(|&(p, _)| p))
    }
}
