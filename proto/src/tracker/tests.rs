//! Unit tests of the tracker's registry.

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

fn ann_of(image: u128, want: u16) -> Announce {
    Announce { image: Uuid::from_u128(image), ..ann("a", Role::Worker, true, want) }
}

#[test]
fn a_full_image_makes_room_by_dropping_the_entry_closest_to_expiry() {
    let mut r = Registry::with_limits(10, Limits { images: 8, peers_per_image: 3, entries: 100 });
    for (t, p) in [(0, 1), (1, 2), (2, 3), (3, 1)] {
        r.announce(t, vec![p], ann_of(1, 0));
    }
    r.announce(4, vec![4], ann_of(1, 0));
    let mut left = ids(&r.announce(4, vec![4], ann_of(1, 10)));
    left.sort_unstable();
    assert_eq!(left, [1, 3], "2 expired first (1 announced again), so 2 made room for 4");
    assert_eq!(r.len(), 3);
}

#[test]
fn the_entries_in_all_and_the_images_are_bounded() {
    let mut r = Registry::with_limits(10, Limits { images: 8, peers_per_image: 100, entries: 4 });
    for (t, p, image) in [(0, 1, 1), (1, 2, 1), (2, 3, 2), (3, 4, 2), (4, 5, 3)] {
        r.announce(t, vec![p], ann_of(image, 0));
    }
    assert_eq!((r.len(), r.count(Uuid::from_u128(1)), r.count(Uuid::from_u128(3))), (4, 1, 1));
    let mut r = Registry::with_limits(10, Limits { images: 2, peers_per_image: 100, entries: 100 });
    for (t, image) in [(0, 1), (1, 2), (2, 3)] {
        r.announce(t, vec![9], ann_of(image, 0));
    }
    assert_eq!(r.counts(2).len(), 2);
    assert_eq!(r.count(Uuid::from_u128(1)), 0, "the image announced least recently made room");
    assert_eq!(r.len(), 2);
}

#[test]
fn a_clock_that_goes_back_counts_as_the_latest_time_seen() {
    let mut r = Registry::new(10);
    r.announce(20, vec![1], ann("a", Role::Worker, true, 0));
    r.announce(5, vec![2], ann("a", Role::Worker, true, 0));
    assert_eq!(r.counts(29).len(), 1);
    assert_eq!(r.count(Uuid::nil()), 2, "announced at 20 and at 20, not 5");
    assert_eq!(r.counts(30), vec![], "both expire together");
}

#[test]
fn announcers_are_handed_different_samples_of_a_large_swarm() {
    let mut r = Registry::new(60);
    for p in 0..200u8 {
        r.announce(0, vec![p], ann("a", Role::Worker, true, 0));
    }
    let mut seen = std::collections::HashSet::new();
    for p in 0..60u8 {
        let got = r.announce(1, vec![p], ann("a", Role::Worker, true, 8));
        assert_eq!(got.peers.len(), 8);
        seen.extend(ids(&got));
    }
    // 480 draws of 200 peers: every peer is missed with odds (1 - 8/199)^60 ≈ 9%.
    assert!(seen.len() > 160, "only {} distinct peers handed out", seen.len());
}
