//! One image's announcements, indexed for the tracker's hot paths: an
//! answer samples a few groups of peers (by site, role and completeness),
//! and expiry and eviction take the entries closest to expiry, each
//! without a pass over the image's peers.
//!
//! # Contract
//! * Each peer has at most one entry. Its group is
//!   ([`PeerHint::site`], [`PeerHint::role`], [`PeerHint::complete`]), and
//!   a re-announcement moves it between groups in O(1).
//! * Entries leave in expiry order: the caller's times never go back and
//!   every entry lasts the same ttl, so announcement order is expiry order,
//!   kept in a queue in which an entry refreshed or removed since leaves a
//!   stale item that is skipped. The queue holds at most about twice the
//!   entries (it is rebuilt past that).
//! * Iteration orders are fixed (no hash-seeded order reaches an answer),
//!   so the same announcements give the same answers.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::swarm::Role;
use crate::swarm::rng::Rng;
use crate::wire::PeerHint;

/// Peers that share a site, a role and completeness.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Group {
    pub(super) site: String,
    pub(super) role: Role,
    pub(super) complete: bool,
}

impl Group {
    fn of(hint: &PeerHint) -> Self {
        Self { site: hint.site.clone(), role: hint.role, complete: hint.complete }
    }
}

#[derive(Debug)]
struct Entry {
    hint: PeerHint,
    expires: u64,
    /// Its place in its group's list.
    slot: usize,
}

/// One image's live announcements.
#[derive(Debug, Default)]
pub(super) struct Roster {
    entries: HashMap<Vec<u8>, Entry>,
    groups: BTreeMap<Group, Vec<Vec<u8>>>,
    /// `(expires, peer)` in announcement order; see the module docs.
    queue: VecDeque<(u64, Vec<u8>)>,
}

impl Roster {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn contains(&self, peer: &[u8]) -> bool {
        self.entries.contains_key(peer)
    }

    /// When the latest announcement made here expires (or would have, if
    /// its peer was removed since).
    pub(super) fn latest(&self) -> u64 {
        self.queue.back().map_or(0, |(t, _)| *t)
    }

    /// Records `hint` until `expires`; whether the peer is new here.
    pub(super) fn upsert(&mut self, hint: PeerHint, expires: u64) -> bool {
        let key = hint.peer.clone();
        let new = self.remove(&key).is_none();
        let list = self.groups.entry(Group::of(&hint)).or_default();
        list.push(key.clone());
        let slot = list.len() - 1;
        self.queue.push_back((expires, key.clone()));
        self.entries.insert(key, Entry { hint, expires, slot });
        if self.queue.len() > 2 * self.entries.len() + 64 {
            self.rebuild_queue();
        }
        new
    }

    /// Drops `peer`'s entry, if any.
    pub(super) fn remove(&mut self, peer: &[u8]) -> Option<PeerHint> {
        let e = self.entries.remove(peer)?;
        let group = Group::of(&e.hint);
        if let Some(list) = self.groups.get_mut(&group) {
            list.swap_remove(e.slot);
            if let Some(moved) = list.get(e.slot)
                && let Some(m) = self.entries.get_mut(moved)
            {
                m.slot = e.slot;
            }
            if list.is_empty() {
                self.groups.remove(&group);
            }
        }
        Some(e.hint)
    }

    /// Drops the entries that expire at or before `now`; how many.
    pub(super) fn expire(&mut self, now: u64) -> usize {
        let mut dropped = 0;
        while self.queue.front().is_some_and(|(t, _)| *t <= now) {
            if self.pop_front_live().is_some() {
                dropped += 1;
            }
        }
        dropped
    }

    /// Drops the entry closest to expiry; whether there was one.
    pub(super) fn evict_soonest(&mut self) -> bool {
        while !self.queue.is_empty() {
            if self.pop_front_live().is_some() {
                return true;
            }
        }
        false
    }

    /// When the entry closest to expiry expires (stale items dropped on
    /// the way).
    pub(super) fn soonest(&mut self) -> Option<u64> {
        while let Some((t, peer)) = self.queue.front() {
            if self.entries.get(peer).is_some_and(|e| e.expires == *t) {
                return Some(*t);
            }
            self.queue.pop_front();
        }
        None
    }

    /// The peers of `group`.
    pub(super) fn group(&self, group: &Group) -> &[Vec<u8>] {
        self.groups.get(group).map_or(&[], Vec::as_slice)
    }

    /// The peers of every group that `keep` admits, in the groups' order.
    pub(super) fn groups_where(&self, keep: impl Fn(&Group) -> bool) -> Vec<&[Vec<u8>]> {
        self.groups.iter().filter(|(g, _)| keep(g)).map(|(_, l)| l.as_slice()).collect()
    }

    pub(super) fn hint(&self, peer: &[u8]) -> Option<&PeerHint> {
        self.entries.get(peer).map(|e| &e.hint)
    }

    /// Pops the queue's front, and drops its entry if the item is live.
    fn pop_front_live(&mut self) -> Option<PeerHint> {
        let (t, peer) = self.queue.pop_front()?;
        if self.entries.get(&peer).is_some_and(|e| e.expires == t) { self.remove(&peer) } else { None }
    }

    fn rebuild_queue(&mut self) {
        let mut live: Vec<_> = self.entries.iter().map(|(k, e)| (e.expires, k.clone())).collect();
        live.sort_unstable();
        self.queue = live.into();
    }
}

/// Up to `k` distinct peers drawn uniformly from the concatenation of
/// `lists`, never `me`, in a uniformly random order. Takes O(k²),
/// whatever the lists' lengths (Floyd's sampling).
pub(super) fn sample<'a>(lists: &[&'a [Vec<u8>]], k: usize, me: &[u8], rng: &mut Rng) -> Vec<&'a Vec<u8>> {
    let n: usize = lists.iter().map(|l| l.len()).sum();
    let at = |mut i: usize| {
        for l in lists {
            if i < l.len() {
                return &l[i];
            }
            i -= l.len();
        }
        unreachable!("index below the total length");
    };
    // A uniform set of one more than asked, in case `me` is among them.
    let m = (k + 1).min(n);
    let mut picked: Vec<&Vec<u8>> = Vec::with_capacity(m);
    let mut drawn: Vec<usize> = Vec::with_capacity(m);
    for j in n - m..n {
        let t = rng.below(j + 1);
        let i = if drawn.contains(&t) { j } else { t };
        drawn.push(i);
        picked.push(at(i));
    }
    match picked.iter().position(|p| p.as_slice() == me) {
        Some(i) => _ = picked.swap_remove(i),
        None if picked.len() > k => _ = picked.swap_remove(rng.below(picked.len())),
        None => {}
    }
    // Floyd's order favours the last indices: the answer's order is drawn
    // apart, since callers may keep only its head.
    for i in (1..picked.len()).rev() {
        picked.swap(i, rng.below(i + 1));
    }
    picked
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn hint(peer: u8, complete: bool) -> PeerHint {
        PeerHint { peer: vec![peer], addrs: vec![], site: "a".into(), role: Role::Worker, complete }
    }

    #[test]
    fn a_reannouncement_moves_the_peer_between_groups_and_refreshes_its_expiry() {
        let mut r = Roster::default();
        let partial = Group { site: "a".into(), role: Role::Worker, complete: false };
        let complete = Group { complete: true, ..partial.clone() };
        for p in 0..4 {
            assert!(r.upsert(hint(p, false), 10));
        }
        assert!(!r.upsert(hint(1, true), 20), "the same peer again");
        assert_eq!((r.len(), r.group(&partial).len(), r.group(&complete)), (4, 3, &[vec![1]][..]));
        assert_eq!(r.expire(10), 3, "peer 1's first announcement is stale, its second lasts");
        assert_eq!((r.len(), r.soonest()), (1, Some(20)));
        assert!(r.group(&partial).is_empty());
    }

    #[test]
    fn removal_keeps_every_group_slot_right() {
        let mut r = Roster::default();
        let g = Group { site: "a".into(), role: Role::Worker, complete: false };
        for p in 0..6 {
            r.upsert(hint(p, false), u64::from(p));
        }
        for p in [0, 5, 2] {
            assert!(r.remove(&[p]).is_some());
        }
        let mut left: Vec<u8> = r.group(&g).iter().map(|p| p[0]).collect();
        left.sort_unstable();
        assert_eq!(left, [1, 3, 4]);
        assert!(r.evict_soonest());
        assert!(!r.contains(&[1]), "1 was closest to expiry");
        assert_eq!(r.soonest(), Some(3));
    }

    #[test]
    fn the_queue_stays_within_twice_the_entries() {
        let mut r = Roster::default();
        for t in 0..10_000u64 {
            r.upsert(hint((t % 10) as u8, false), t);
        }
        assert_eq!(r.len(), 10);
        assert!(r.queue.len() <= 2 * 10 + 64, "{}", r.queue.len());
        assert_eq!(r.expire(9_989), 0, "the last ten announcements are live");
        assert_eq!(r.expire(9_990), 1);
    }

    #[test]
    fn a_sample_is_distinct_spans_the_lists_and_leaves_out_me() {
        let a: Vec<Vec<u8>> = (0..50u8).map(|p| vec![p]).collect();
        let b: Vec<Vec<u8>> = (50..60u8).map(|p| vec![p]).collect();
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 60];
        for _ in 0..2_000 {
            let got = sample(&[&a, &b], 6, &[3], &mut rng);
            assert_eq!(got.len(), 6);
            let mut ids: Vec<u8> = got.iter().map(|p| p[0]).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 6, "distinct");
            assert!(!ids.contains(&3));
            ids.iter().for_each(|&p| seen[usize::from(p)] += 1);
        }
        // 2,000 draws of 6 of 59 peers: about 203 each.
        for (p, &n) in seen.iter().enumerate().filter(|&(p, _)| p != 3) {
            assert!((120..300).contains(&n), "peer {p} drawn {n} times");
        }
        assert_eq!(sample(&[&a[..2]], 6, &[0], &mut rng).len(), 1, "all there is, but me");
        assert!(sample(&[], 6, &[0], &mut rng).is_empty());
    }
}
