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
//!   every announcement (the peers with the lowest scores, a hash of the
//!   peer id and a counter of announcements), so that announcers are handed
//!   different peers and the site's peers form a well-mixed graph, also
//!   while they join one by one, as at a site's start. Two passes over the
//!   image's peers make the answer: one counts the site's complete peers,
//!   one samples.
//! * Memory is bounded: at most [`MAX_IMAGES`] images,
//!   [`MAX_PEERS_PER_IMAGE`] peers per image (when full, the entry closest
//!   to expiry makes room) and [`MAX_ADDRS`] addresses of at most
//!   [`MAX_ADDR_BYTES`] per peer. Site names are bounded by the wire's
//!   message limit, and in a closed site are the credentials'.
//! * Pure: time is an argument (seconds on any monotonic clock).

use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::swarm::{Role, rng};
use crate::wire::{Announce, MAX_PEERS, PeerHint, Peers};
use uuid::Uuid;

/// While fewer complete non-master peers than this are known, masters are
/// handed out too.
pub const MASTER_THRESHOLD: usize = 4;

/// The most images the registry tracks.
pub const MAX_IMAGES: usize = 4096;

/// The most peers the registry keeps per image.
pub const MAX_PEERS_PER_IMAGE: usize = 20_000;

/// The most addresses kept per announcement.
pub const MAX_ADDRS: usize = 8;

/// The longest address kept (multiaddr bytes; an IPv6 QUIC address with
/// its peer id takes about 60).
pub const MAX_ADDR_BYTES: usize = 128;

#[derive(Debug, Clone)]
struct Entry {
    hint: PeerHint,
    expires: u64,
}

/// Announcements per image.
#[derive(Debug)]
pub struct Registry {
    ttl: u64,
    images: HashMap<Uuid, BTreeMap<Vec<u8>, Entry>>,
    /// Announcements so far: each answer's sample is drawn with it.
    turn: usize,
}

impl Registry {
    /// A registry whose announcements last `ttl_secs`.
    pub fn new(ttl_secs: u64) -> Self {
        Self { ttl: ttl_secs.max(1), images: HashMap::new(), turn: 0 }
    }

    /// How long an announcement lasts, in seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// Records `a` from `peer` at `now` and answers it.
    pub fn announce(&mut self, now: u64, peer: Vec<u8>, a: Announce) -> Peers {
        self.expire(now);
        if !self.images.contains_key(&a.image) && self.images.len() >= MAX_IMAGES {
            let victim = self
                .images
                .iter()
                .min_by_key(|(_, peers)| peers.values().map(|e| e.expires).max().unwrap_or(0))
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                self.images.remove(&v);
            }
        }
        let peers = self.images.entry(a.image).or_default();
        if !peers.contains_key(&peer) && peers.len() >= MAX_PEERS_PER_IMAGE {
            let victim = peers.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone());
            if let Some(v) = victim {
                peers.remove(&v);
            }
        }
        let mut addrs = a.addrs;
        addrs.retain(|x| x.len() <= MAX_ADDR_BYTES);
        addrs.truncate(MAX_ADDRS);
        let hint = PeerHint { peer: peer.clone(), addrs, site: a.site.clone(), role: a.role, complete: a.complete };
        peers.insert(peer.clone(), Entry { hint, expires: now + self.ttl });
        let want = usize::from(a.want).min(MAX_PEERS);
        self.turn = self.turn.wrapping_add(1);
        let picked = select(peers, &peer, &a.site, a.role, want, self.turn);
        Peers { peers: picked, ttl_secs: u32::try_from(self.ttl).unwrap_or(u32::MAX) }
    }

    /// How many live announcements the registry holds for `image`.
    pub fn count(&self, image: Uuid) -> usize {
        self.images.get(&image).map_or(0, BTreeMap::len)
    }

    /// How many live announcements each image has at `now` (expired ones
    /// are dropped first).
    pub fn counts(&mut self, now: u64) -> Vec<(Uuid, usize)> {
        self.expire(now);
        self.images.iter().map(|(u, peers)| (*u, peers.len())).collect()
    }

    /// Drops every announcement of `peer` (one cut off from the site).
    pub fn forget(&mut self, peer: &[u8]) {
        for peers in self.images.values_mut() {
            peers.remove(peer);
        }
        self.images.retain(|_, peers| !peers.is_empty());
    }

    fn expire(&mut self, now: u64) {
        for peers in self.images.values_mut() {
            peers.retain(|_, e| e.expires > now);
        }
        self.images.retain(|_, peers| !peers.is_empty());
    }
}

/// The answer for an announcer of `site` and `role`: see the module docs.
fn select(
    peers: &BTreeMap<Vec<u8>, Entry>,
    me: &[u8],
    site: &str,
    role: Role,
    want: usize,
    turn: usize,
) -> Vec<PeerHint> {
    let mut groups: [BinaryHeap<(u64, &Vec<u8>)>; 6] = Default::default();
    let complete_workers =
        peers.values().filter(|e| e.hint.site == site && e.hint.complete && e.hint.role != Role::Master).count();
    for (id, e) in peers {
        let h = &e.hint;
        if h.peer == me {
            continue;
        }
        let same_site = h.site == site;
        let group = match (same_site, h.role, h.complete) {
            (true, Role::Gateway, _) if role.crosses_sites() => 0,
            (true, Role::Master, _) if complete_workers >= MASTER_THRESHOLD => continue,
            (true, Role::Master, _) => 3,
            (true, _, true) => 1,
            (true, _, false) => 2,
            (false, r, _) if role.crosses_sites() && r.crosses_sites() => 4 + usize::from(r == Role::Master),
            (false, _, _) => continue,
        };
        // Keeps the `want` lowest scores: the heap's top is the highest.
        let g = &mut groups[group];
        let score = score(turn, id);
        if g.len() < want {
            g.push((score, id));
        } else if g.peek().is_some_and(|&(top, _)| score < top) {
            g.pop();
            g.push((score, id));
        }
    }
    let [g0, g1, g2, g3, g4, g5] = groups.map(BinaryHeap::into_sorted_vec);
    let same: Vec<_> = [g0, g1, g2, g3].into_iter().flatten().collect();
    let cross: Vec<_> = [g4, g5].into_iter().flatten().collect();
    // A gateway or master needs its own site and the others: half the
    // answer is kept for other sites while they have peers to fill it.
    let cross_n = cross.len().min(want.saturating_sub(same.len()).max(want / 2));
    let same_n = same.len().min(want - cross_n);
    same.into_iter()
        .take(same_n)
        .chain(cross.into_iter().take(cross_n))
        .filter_map(|(_, id)| Some(peers.get(id)?.hint.clone()))
        .collect()
}

/// A peer's place in the sample of announcement `turn` (SplitMix64 of the
/// two).
fn score(turn: usize, peer: &[u8]) -> u64 {
    rng::mix(peer.iter().fold(turn as u64, |a, &b| a.rotate_left(8) ^ u64::from(b)).wrapping_add(rng::GOLDEN))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ann(site: &str, role: Role, complete: bool, want: u16) -> Announce {
        Announce { image: Uuid::nil(), site: site.into(), role, complete, addrs: vec![], want }
    }

    fn ids(p: &Peers) -> Vec<u8> {
        p.peers.iter().map(|h| h.peer[0]).collect()
    }

    #[test]
    fn same_site_complete_first_masters_only_while_scarce() {
        let mut r = Registry::new(60);
        r.announce(0, vec![1], ann("a", Role::Master, true, 0));
        r.announce(0, vec![2], ann("a", Role::Worker, false, 0));
        r.announce(0, vec![3], ann("a", Role::Worker, true, 0));
        r.announce(0, vec![4], ann("b", Role::Worker, true, 0));
        let got = r.announce(0, vec![9], ann("a", Role::Worker, false, 10));
        assert_eq!(ids(&got), vec![3, 2, 1], "complete, partial, then the master; never site b");
        for p in 10..14 {
            r.announce(0, vec![p], ann("a", Role::Worker, true, 0));
        }
        let got = r.announce(0, vec![9], ann("a", Role::Worker, false, 10));
        assert!(!ids(&got).contains(&1), "enough complete workers: the master stands back");
        assert!(!ids(&got).contains(&9), "never the announcer itself");
    }

    #[test]
    fn half_a_gateways_answer_is_kept_for_other_sites() {
        let mut r = Registry::new(60);
        for p in 0..20u8 {
            r.announce(0, vec![p], ann("a", Role::Worker, false, 0));
        }
        for p in 20..30u8 {
            r.announce(0, vec![p], ann("b", Role::Gateway, false, 0));
        }
        let got = r.announce(0, vec![99], ann("a", Role::Gateway, false, 8));
        let other = ids(&got).iter().filter(|&&p| (20..30).contains(&p)).count();
        assert_eq!((got.peers.len(), other), (8, 4), "{:?}", ids(&got));
        assert!(ids(&got)[..4].iter().all(|&p| p < 20), "its own site first");
        let got = r.announce(0, vec![98], ann("b", Role::Gateway, false, 8));
        assert_eq!(ids(&got).len(), 8, "a site with few peers leaves the rest to the others");
    }

    #[test]
    fn a_gateway_is_given_its_own_sites_gateways_first() {
        let mut r = Registry::new(60);
        for p in 0..30u8 {
            r.announce(0, vec![p], ann("a", Role::Worker, true, 0));
        }
        r.announce(0, vec![40], ann("a", Role::Gateway, false, 0));
        r.announce(0, vec![41], ann("a", Role::Gateway, false, 0));
        let got = r.announce(0, vec![42], ann("a", Role::Gateway, false, 4));
        let mut first = ids(&got)[..2].to_vec();
        first.sort_unstable();
        assert_eq!(first, [40, 41], "{:?}", ids(&got));
        let got = r.announce(0, vec![43], ann("a", Role::Worker, false, 4));
        assert!(!ids(&got).contains(&40) && !ids(&got).contains(&41), "a worker gets complete peers first");
    }

    #[test]
    fn an_announcement_keeps_a_bounded_set_of_addresses() {
        let mut r = Registry::new(60);
        let mut a = ann("a", Role::Worker, true, 0);
        a.addrs = (0..20u8).map(|i| vec![i; 10]).chain([vec![0; MAX_ADDR_BYTES + 1]]).collect();
        r.announce(0, vec![1], a);
        let got = r.announce(0, vec![2], ann("a", Role::Worker, true, 10));
        assert_eq!(got.peers[0].addrs.len(), MAX_ADDRS);
        assert!(got.peers[0].addrs.iter().all(|x| x.len() <= MAX_ADDR_BYTES));
    }

    #[test]
    fn gateways_see_other_sites_gateways_and_masters_only() {
        let mut r = Registry::new(60);
        r.announce(0, vec![1], ann("a", Role::Master, true, 0));
        r.announce(0, vec![2], ann("a", Role::Worker, true, 0));
        r.announce(0, vec![3], ann("a", Role::Gateway, false, 0));
        let got = r.announce(0, vec![9], ann("b", Role::Gateway, false, 10));
        assert_eq!(ids(&got), vec![3, 1]);
        let got = r.announce(0, vec![8], ann("b", Role::Worker, false, 10));
        assert_eq!(ids(&got), vec![9], "a worker sees its own site only");
    }

    #[test]
    fn entries_expire_and_answers_are_bounded() {
        let mut r = Registry::new(10);
        for p in 0..50u8 {
            r.announce(0, vec![p], ann("a", Role::Worker, true, 0));
        }
        assert_eq!(r.announce(5, vec![99], ann("a", Role::Worker, false, 7)).peers.len(), 7);
        let got = r.announce(11, vec![98], ann("a", Role::Worker, false, 100));
        assert_eq!(ids(&got), vec![99], "everyone announced at 0 expired");
        let got = r.announce(12, vec![97], ann("a", Role::Worker, false, 100));
        assert_eq!(ids(&got).len(), 2, "98 and 99 (announced at 5 and 11) are still on record");
        assert_eq!(r.count(Uuid::nil()), 3);
    }
}
