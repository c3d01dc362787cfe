//! Unit tests of the cross-site rules: gateways, their stripes and shares.

use super::*;

/// A gateway at site 1 of three, the masters at site 0, sites 1 and 2
/// splitting what comes from site 0; its site has one gateway.
fn sharing_gateway() -> Swarm {
    gateway_of_site_1(FetchStripe { share: Some(SiteShare { source: 0, sites: vec![1, 2] }), ..FetchStripe::default() })
}

/// A gateway at site 1 that asks for every chunk it may at once.
fn gateway_of_site_1(stripe: FetchStripe) -> Swarm {
    let cfg = Config {
        site: 1,
        role: Role::Gateway,
        random_first: 0,
        cross_site_pipeline: N,
        max_inflight: N,
        fetch_stripe: Some(stripe),
        ..Config::default()
    };
    Swarm::new(cfg, Bitfield::new(N))
}

#[test]
fn a_sharing_gateway_asks_the_source_only_for_its_share_while_the_partner_site_is_there() {
    let mut g = sharing_gateway();
    g.handle_connected(0, 1, info(0, Role::Master));
    g.handle_connected(0, 2, info(2, Role::Gateway));
    g.handle_connected(0, 4, info(0, Role::Gateway));
    g.handle_message(0, 2, Message::Bitfield(Bitfield::new(N)));
    g.handle_message(0, 4, Message::Bitfield(Bitfield::new(N)));
    g.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    let mine = requests(&drain(&mut g), 1);
    assert!(!mine.is_empty() && mine.len() < N as usize * 3 / 4, "about half the image: {}", mine.len());
    // The partner's share comes from the partner, once it has it.
    let theirs: Vec<ChunkIndex> = (0..N).filter(|c| !mine.contains(c)).collect();
    g.handle_message(1, 2, Message::Have(theirs[0]));
    assert_eq!(requests(&drain(&mut g), 2), vec![theirs[0]]);
    // Another site's Have never brings a request for it to the source.
    for &c in &mine {
        g.handle_reply(2, 1, c, Reply::Verified);
    }
    assert!(requests(&drain(&mut g), 1).is_empty(), "the rest is the partner's share");
    g.handle_message(2, 4, Message::Have(theirs[1]));
    assert!(requests(&drain(&mut g), 4).is_empty(), "nor is it asked of a source-site gateway");

    // Without the partner site, the source serves the rest.
    g.handle_disconnected(3, 2);
    g.handle_message(3, 1, Message::Have(0));
    let rest = requests(&drain(&mut g), 1);
    let mut expected = theirs.clone();
    expected.retain(|c| !g.have().get(*c));
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|c| expected.contains(c)));
}

#[test]
fn a_gateway_of_the_masters_site_does_not_fetch_from_other_sites_until_it_has_nothing_in_flight() {
    let stripe = FetchStripe { share: Some(SiteShare { source: 0, sites: vec![1, 2] }), ..FetchStripe::default() };
    let cfg = Config { role: Role::Gateway, random_first: 0, fetch_stripe: Some(stripe), ..Config::default() };
    let mut g = Swarm::new(cfg, Bitfield::new(N));
    g.handle_connected(0, 1, info(0, Role::Master));
    g.handle_connected(0, 2, info(1, Role::Gateway));
    g.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    let local = requests(&drain(&mut g), 1);
    assert!(!local.is_empty());
    g.handle_message(0, 2, Message::Bitfield(Bitfield::full(N)));
    assert!(requests(&drain(&mut g), 2).is_empty(), "busy with the masters");
    // The master refuses everything: with nothing in flight, the other site is asked.
    for &c in &local {
        g.handle_reply(1, 1, c, Reply::Refused);
    }
    assert!(!requests(&drain(&mut g), 2).is_empty());
}

#[test]
fn at_a_gateway_another_sites_request_takes_the_place_of_a_local_one_in_a_full_queue() {
    let upload = UploadPolicy { slots: 1, max_queue: 1, ..UploadPolicy::default() };
    for role in [Role::Gateway, Role::Master] {
        let mut s = Swarm::new(Config { role, upload: upload.clone(), ..Config::default() }, Bitfield::full(N));
        for (id, site) in [(1, 0), (2, 0), (3, 1)] {
            s.handle_connected(0, id, info(site, if site == 0 { Role::Worker } else { Role::Gateway }));
        }
        drain(&mut s);
        s.handle_message(1, 1, Message::Request(1));
        s.handle_message(1, 2, Message::Request(2));
        assert!(matches!(drain(&mut s)[..], [Action::Upload { to: 1, chunk: 1 }]), "2 waits in the queue");
        s.handle_message(2, 3, Message::Request(3));
        let refused = if role == Role::Gateway { (2, 2) } else { (3, 3) };
        assert_eq!(drain(&mut s), vec![Action::Refuse { to: refused.0, chunk: refused.1 }], "{role:?}");
    }
}

#[test]
fn a_gateway_takes_over_the_stripe_of_a_gateway_of_its_site_that_leaves() {
    let mut g = gateway_of_site_1(FetchStripe { key: 20, federation: vec![0, 1], ..FetchStripe::default() });
    g.handle_connected(0, 1, PeerInfo { site: 0, role: Role::Master, key: 1 });
    g.handle_connected(0, 2, PeerInfo { site: 1, role: Role::Gateway, key: 30 });
    g.handle_message(0, 2, Message::Bitfield(Bitfield::new(N)));
    g.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    let mine = requests(&drain(&mut g), 1);
    assert!(!mine.is_empty() && mine.len() < N as usize * 3 / 4, "its half of the image: {}", mine.len());
    g.handle_disconnected(1, 2);
    let rest = requests(&drain(&mut g), 1);
    assert_eq!(mine.len() + rest.len(), N as usize, "the other half, once its gateway left");
    assert!(rest.iter().all(|c| !mine.contains(c)));
}

#[test]
fn a_sharing_gateway_with_nothing_in_flight_asks_the_source_for_the_rest() {
    let mut g = sharing_gateway();
    g.handle_connected(0, 1, info(0, Role::Master));
    g.handle_connected(0, 2, info(2, Role::Gateway));
    g.handle_message(0, 2, Message::Bitfield(Bitfield::new(N)));
    g.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    let mine = requests(&drain(&mut g), 1);
    for &c in &mine {
        g.handle_reply(1, 1, c, Reply::Verified);
    }
    // The partner has announced nothing: whenever nothing is in flight,
    // the source is asked for a chunk of the partner's share.
    let mut rest = 0;
    for t in 2..2 + u64::from(N) {
        let asked = requests(&drain(&mut g), 1);
        if asked.is_empty() {
            break;
        }
        rest += asked.len();
        for c in asked {
            g.handle_reply(t, 1, c, Reply::Verified);
        }
    }
    assert_eq!(mine.len() + rest, N as usize, "{} then {rest}", mine.len());
    assert!(g.is_complete());
}

#[test]
fn a_gateway_asks_other_sites_before_its_own() {
    let cfg = Config {
        site: 1,
        role: Role::Gateway,
        random_first: 0,
        max_inflight: 2,
        cross_site_pipeline: 1,
        ..Config::default()
    };
    let mut g = Swarm::new(cfg, Bitfield::new(N));
    g.handle_connected(0, 2, info(1, Role::Worker));
    g.handle_connected(0, 3, info(0, Role::Gateway));
    g.handle_message(0, 2, Message::Bitfield(Bitfield::full(N)));
    let local = requests(&drain(&mut g), 2);
    assert_eq!(local.len(), 2, "only its site's worker has chunks yet");
    g.handle_message(0, 3, Message::Bitfield(Bitfield::full(N)));
    assert!(drain(&mut g).is_empty(), "every request is in flight");
    // A place frees up: both peers have room, the other site's goes first.
    g.handle_reply(1, 2, local[0], Reply::Verified);
    let acts = drain(&mut g);
    assert_eq!((requests(&acts, 3).len(), requests(&acts, 2).len()), (1, 0));
    // With the WAN pipeline full, its own site's peer is asked.
    g.handle_reply(2, 2, local[1], Reply::Verified);
    let acts = drain(&mut g);
    assert_eq!((requests(&acts, 3).len(), requests(&acts, 2).len()), (0, 1));
}

#[test]
fn a_gateway_with_nothing_in_flight_asks_its_own_site_first() {
    // One request at a time: every fill starts with nothing in flight,
    // where the cross-site rules give way.
    let cfg = Config { site: 1, role: Role::Gateway, random_first: 0, max_inflight: 1, ..Config::default() };
    let mut g = Swarm::new(cfg, Bitfield::new(N));
    g.handle_connected(0, 2, info(1, Role::Worker));
    g.handle_connected(0, 3, info(0, Role::Gateway));
    g.handle_message(0, 2, Message::Bitfield(Bitfield::full(N)));
    g.handle_message(0, 3, Message::Bitfield(Bitfield::full(N)));
    for t in 1..4 {
        let acts = drain(&mut g);
        let local = requests(&acts, 2);
        assert_eq!((local.len(), requests(&acts, 3).len()), (1, 0), "at {t}");
        g.handle_reply(t, 2, local[0], Reply::Verified);
    }
}
