//! Who announced which image, and which of them to hand out.
//!
//! # Contract
//! * [`Registry::announce`] records (or refreshes) one peer for one image for
//!   [`Registry::ttl`] and answers with at most `want` (and at most
//!   [`MAX_PEERS`]) other peers that announced the image and have not
//!   expired, best first:
//!   1. peers of the announcer's site before peers of other sites;
//!   2. among those, complete peers before partial ones;
//!   3. masters last, and only while fewer than [`MASTER_THRESHOLD`]
//!      complete non-master peers of the site are known, so the masters'
//!      servers stay out of a swarm that can feed itself.
//! * A worker is never given peers of another site; a gateway or master is
//!   given other sites' gateways and masters only, and up to half of its
//!   answer is kept for them (its own site's peers fill what they leave).
//!   It is given its own site's gateways first: a site's gateways split
//!   their work by the gateways they are connected to
//!   ([`FetchStripe`](crate::swarm::FetchStripe)).
//! * Within a group, the answer is a sample of its peers that changes at
//!   every announcement (a seeded uniform draw), so that announcers are
//!   handed different peers and the site's peers form a well-mixed graph,
//!   also while they join one by one, as at a site's start.
//! * Cost: an announcement costs O(`want`²) and O(sites) for gateways,
//!   whatever the number of peers: peers are indexed by image, site, role
//!   and completeness. Expiry runs once per second of `now` and takes
//!   O(images) plus the entries that expire.
//! * Memory is bounded ([`Limits`]): images, peers per image and entries
//!   in all; when one is full, the entry closest to expiry (or the image
//!   announced least recently) makes room. At most [`MAX_ADDRS`] addresses
//!   of at most [`MAX_ADDR_BYTES`] are kept per peer. Site names are
//!   bounded by the wire's message limit, and in a closed site are the
//!   credentials'.
//! * Pure and deterministic: time is an argument (seconds on a monotonic
//!   clock; an earlier time than one seen before counts as that one), and
//!   the draws are seeded.

mod roster;

use std::collections::BTreeMap;

use roster::{Group, Roster, sample};
use uuid::Uuid;

use crate::swarm::Role;
use crate::swarm::rng::Rng;
use crate::wire::{Announce, MAX_PEERS, PeerHint, Peers};

/// While fewer complete non-master peers than this are known, masters are
/// handed out too.
pub const MASTER_THRESHOLD: usize = 4;

/// The most addresses kept per announcement.
pub const MAX_ADDRS: usize = 8;

/// The longest address kept (multiaddr bytes; an IPv6 QUIC address with
/// its peer id takes about 60).
pub const MAX_ADDR_BYTES: usize = 128;

/// What a [`Registry`] holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Images tracked.
    pub images: usize,
    /// Peers per image.
    pub peers_per_image: usize,
    /// Announcements in all, over every image.
    pub entries: usize,
}

impl Default for Limits {
    /// Room for a 20,000-host site with a dozen images each, at about a
    /// kilobyte per entry with every address filled.
    fn default() -> Self {
        Self { images: 4096, peers_per_image: 20_000, entries: 250_000 }
    }
}

/// Announcements per image.
#[derive(Debug)]
pub struct Registry {
    ttl: u64,
    limits: Limits,
    images: BTreeMap<Uuid, Roster>,
    /// Announcements over every image.
    entries: usize,
    /// The latest time seen.
    now: u64,
    /// The time expired entries were last dropped at.
    swept: Option<u64>,
    /// Draws each answer's sample.
    rng: Rng,
}

impl Registry {
    /// A registry whose announcements last `ttl_secs`, with the default
    /// [`Limits`].
    pub fn new(ttl_secs: u64) -> Self {
        Self::with_limits(ttl_secs, Limits::default())
    }

    /// A registry whose announcements last `ttl_secs` and that holds at
    /// most `limits` (each at least one).
    pub fn with_limits(ttl_secs: u64, limits: Limits) -> Self {
        let limits = Limits {
            images: limits.images.max(1),
            peers_per_image: limits.peers_per_image.max(1),
            entries: limits.entries.max(1),
        };
        Self {
            ttl: ttl_secs.max(1),
            limits,
            images: BTreeMap::new(),
            entries: 0,
            now: 0,
            swept: None,
            rng: Rng::new(0),
        }
    }

    /// How long an announcement lasts, in seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// Records `a` from `peer` at `now` and answers it.
    pub fn announce(&mut self, now: u64, peer: Vec<u8>, a: Announce) -> Peers {
        self.expire(now);
        let now = self.now;
        self.make_room(a.image, &peer);
        let mut addrs = a.addrs;
        addrs.retain(|x| x.len() <= MAX_ADDR_BYTES);
        addrs.truncate(MAX_ADDRS);
        let hint = PeerHint { peer: peer.clone(), addrs, site: a.site.clone(), role: a.role, complete: a.complete };
        let roster = self.images.entry(a.image).or_default();
        if roster.upsert(hint, now + self.ttl) {
            self.entries += 1;
        }
        let want = usize::from(a.want).min(MAX_PEERS);
        let picked = answer(roster, &peer, &a.site, a.role, want, &mut self.rng);
        Peers { peers: picked, ttl_secs: u32::try_from(self.ttl).unwrap_or(u32::MAX) }
    }

    /// How many live announcements the registry holds for `image`.
    pub fn count(&self, image: Uuid) -> usize {
        self.images.get(&image).map_or(0, Roster::len)
    }

    /// How many live announcements it holds in all.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// How many live announcements each image has at `now` (expired ones
    /// are dropped first).
    pub fn counts(&mut self, now: u64) -> Vec<(Uuid, usize)> {
        self.expire(now);
        self.images.iter().map(|(u, r)| (*u, r.len())).collect()
    }

    /// Drops every announcement of `peer` (one cut off from the site).
    pub fn forget(&mut self, peer: &[u8]) {
        for r in self.images.values_mut() {
            if r.remove(peer).is_some() {
                self.entries -= 1;
            }
        }
        self.images.retain(|_, r| r.len() > 0);
    }

    /// Drops what expired by `now`, once per second of it.
    fn expire(&mut self, now: u64) {
        self.now = self.now.max(now);
        if self.swept == Some(self.now) {
            return;
        }
        self.swept = Some(self.now);
        for r in self.images.values_mut() {
            self.entries -= r.expire(self.now);
        }
        self.images.retain(|_, r| r.len() > 0);
    }

    /// Makes room for `peer`'s announcement of `image` within the limits.
    fn make_room(&mut self, image: Uuid, peer: &[u8]) {
        if self.images.get(&image).is_some_and(|r| r.contains(peer)) {
            return;
        }
        if !self.images.contains_key(&image) && self.images.len() >= self.limits.images {
            let victim = self.images.iter().min_by_key(|(_, r)| r.latest()).map(|(k, _)| *k);
            if let Some(r) = victim.and_then(|v| self.images.remove(&v)) {
                self.entries -= r.len();
            }
        }
        let full_here = self.images.get(&image).is_some_and(|r| r.len() >= self.limits.peers_per_image);
        let room_from = if full_here {
            Some(image)
        } else if self.entries >= self.limits.entries {
            self.images.iter_mut().filter_map(|(k, r)| Some((r.soonest()?, *k))).min().map(|(_, k)| k)
        } else {
            None
        };
        // Only the roster that made room can have emptied.
        let Some(k) = room_from else { return };
        let Some(r) = self.images.get_mut(&k) else { return };
        if r.evict_soonest() {
            self.entries -= 1;
        }
        if r.len() == 0 {
            self.images.remove(&k);
        }
    }
}

/// The answer for an announcer of `site` and `role`: see the module docs.
fn answer(roster: &Roster, me: &[u8], site: &str, role: Role, want: usize, rng: &mut Rng) -> Vec<PeerHint> {
    let group = |role, complete| roster.group(&Group { site: site.to_owned(), role, complete });
    let crosses = role.crosses_sites();
    // A gateway or master takes its site's gateways first; anyone else
    // takes them as the workers they also are.
    let (gateways, gw_complete, gw_partial): (&[&[Vec<u8>]], _, _) = if crosses {
        (&[group(Role::Gateway, true), group(Role::Gateway, false)], &[][..], &[][..])
    } else {
        (&[], group(Role::Gateway, true), group(Role::Gateway, false))
    };
    let complete_workers = group(Role::Worker, true).len() + group(Role::Gateway, true).len();
    let mut same = sample(gateways, want, me, rng);
    same.extend(sample(&[group(Role::Worker, true), gw_complete], want, me, rng));
    same.extend(sample(&[group(Role::Worker, false), gw_partial], want, me, rng));
    if complete_workers < MASTER_THRESHOLD {
        same.extend(sample(&[group(Role::Master, true), group(Role::Master, false)], want, me, rng));
    }
    let mut cross = Vec::new();
    if crosses {
        for r in [Role::Gateway, Role::Master] {
            let lists = roster.groups_where(|g| g.site != site && g.role == r);
            cross.extend(sample(&lists, want, me, rng));
        }
    }
    // A gateway or master needs its own site and the others: half the
    // answer is kept for other sites while they have peers to fill it.
    let cross_n = cross.len().min(want.saturating_sub(same.len()).max(want / 2));
    let same_n = same.len().min(want - cross_n);
    same.into_iter()
        .take(same_n)
        .chain(cross.into_iter().take(cross_n))
        .filter_map(|p| roster.hint(p).cloned())
        .collect()
}

#[cfg(test)]
mod tests;
