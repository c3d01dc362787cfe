//! Unit tests of the swarm state machine, driven by hand.

use super::*;
use crate::manifest::ChunkError;

mod gateways;

const N: u32 = 64;

fn worker(seed: u64) -> Swarm {
    Swarm::new(Config { seed, ..Config::default() }, Bitfield::new(N))
}

fn master() -> Swarm {
    Swarm::new(Config { role: Role::Master, ..Config::default() }, Bitfield::full(N))
}

fn info(site: u32, role: Role) -> PeerInfo {
    PeerInfo { site, role, key: 0 }
}

fn drain(s: &mut Swarm) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn requests(actions: &[Action], to: PeerId) -> Vec<ChunkIndex> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to: t, msg: Message::Request(c) } if *t == to => Some(*c),
            _ => None,
        })
        .collect()
}

#[test]
fn connecting_sends_the_bitfield_and_a_seed_gets_pipelined_requests() {
    let mut w = worker(1);
    w.handle_connected(0, 7, info(0, Role::Worker));
    assert_eq!(drain(&mut w), vec![Action::Send { to: 7, msg: Message::Bitfield(Bitfield::new(N)) }]);
    w.handle_message(0, 7, Message::Bitfield(Bitfield::full(N)));
    let reqs = requests(&drain(&mut w), 7);
    assert_eq!(reqs.len(), Config::default().pipeline as usize);
    assert_ne!(reqs[0], reqs[1]);
}

#[test]
fn rarest_chunk_is_requested_first() {
    let mut w = Swarm::new(Config { random_first: 0, pipeline: 1, ..Config::default() }, Bitfield::new(N));
    // Three peers have chunks 0..32; only peer 3 has chunk 40 as well.
    let mut common = Bitfield::new(N);
    (0..32).for_each(|c| {
        common.set(c);
    });
    for p in 1..=3 {
        w.handle_connected(0, p, info(0, Role::Worker));
    }
    w.handle_message(0, 1, Message::Bitfield(common.clone()));
    w.handle_message(0, 2, Message::Bitfield(common.clone()));
    drain(&mut w);
    let mut rare = common.clone();
    rare.set(40);
    w.handle_message(0, 3, Message::Bitfield(rare));
    assert_eq!(requests(&drain(&mut w), 3), vec![40]);
}

#[test]
fn a_verified_chunk_is_announced_and_a_bad_one_bans_its_sender() {
    let mut w = worker(2);
    w.handle_connected(0, 1, info(0, Role::Worker));
    w.handle_connected(0, 2, info(0, Role::Worker));
    w.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    let c = requests(&drain(&mut w), 1)[0];
    w.handle_reply(10, 1, c, Reply::Verified);
    let acts = drain(&mut w);
    assert!(acts.contains(&Action::Send { to: 2, msg: Message::Have(c) }));
    assert!(w.have().get(c));

    let bad = requests(&acts, 1).first().copied().unwrap_or_else(|| requests(&drain(&mut w), 1)[0]);
    w.handle_reply(20, 1, bad, Reply::Corrupt(ChunkError::WrongHash { index: bad }));
    let acts = drain(&mut w);
    assert!(acts.contains(&Action::Ban { peer: 1, error: ChunkError::WrongHash { index: bad } }));
    assert_eq!(w.peer_count(), 1);
    assert!(!w.have().get(bad));
    assert_eq!(w.stats().bans, 1);
    // A second bad chunk that was in flight when the peer was dropped does
    // not ban it again.
    w.handle_reply(
        21,
        1,
        bad.wrapping_add(1) % N,
        Reply::Corrupt(ChunkError::WrongHash { index: bad.wrapping_add(1) % N }),
    );
    assert!(!drain(&mut w).iter().any(|a| matches!(a, Action::Ban { .. })));
    assert_eq!((w.stats().bans, w.stats().chunks_failed), (1, 2));
    // The chunk goes back to the pool and is fetched from another peer.
    w.handle_message(30, 2, Message::Bitfield(Bitfield::full(N)));
    let again: Vec<ChunkIndex> = (0..40).flat_map(|_| requests(&drain(&mut w), 2)).collect();
    assert!(!again.is_empty());
}

#[test]
fn a_refusal_is_not_a_penalty_and_the_chunk_is_asked_elsewhere() {
    let mut w = Swarm::new(Config { pipeline: 1, ..Config::default() }, Bitfield::new(N));
    w.handle_connected(0, 1, info(0, Role::Worker));
    w.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    let c = requests(&drain(&mut w), 1)[0];
    w.handle_reply(5, 1, c, Reply::Refused);
    assert!(requests(&drain(&mut w), 1).is_empty(), "a refusing peer gets a short pause");
    let resume = 5 + Config::default().refusal_pause;
    assert_eq!(w.poll_timeout(), Some(resume));
    w.handle_timeout(resume);
    let next = requests(&drain(&mut w), 1);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0], c, "the refused chunk is not asked of the same peer during the backoff");
    assert_eq!(w.peer_count(), 1);
    assert_eq!(w.stats().bans, 0);
}

#[test]
fn a_masters_refusal_is_remembered_for_insisting_and_a_workers_ends_with_its_backoff() {
    let backoff = Config::default().refusal_backoff;
    let c = 3;
    for role in [Role::Master, Role::Worker] {
        let mut w = worker(1);
        w.handle_connected(0, 1, info(0, role));
        let mut only_c = Bitfield::new(N);
        only_c.set(c);
        w.handle_message(0, 1, Message::Bitfield(only_c));
        assert_eq!(requests(&drain(&mut w), 1), vec![c]);
        w.handle_reply(5, 1, c, Reply::Refused);
        drain(&mut w);
        // Wake-ups at the end of the pause and of the backoff.
        while let Some(t) = w.poll_timeout().filter(|&t| t <= 5 + backoff) {
            w.handle_timeout(t);
        }
        let asked = drain(&mut w);
        let record = w.peers[&1].refused.len();
        if role == Role::Master {
            // Nothing else in flight, refused before, no other holder.
            assert_eq!(asked, vec![Action::Send { to: 1, msg: Message::Insist(c) }]);
            assert_eq!(record, 1, "a master's refusal outlives its backoff");
        } else {
            assert_eq!(asked, vec![Action::Send { to: 1, msg: Message::Request(c) }]);
            assert_eq!(record, 0, "a worker's ended refusal is dropped");
        }
    }
}

/// A worker asking one chunk at a time, with a 1 ms request timeout, of
/// `peers`, workers holding every chunk; and what it asked of each.
fn one_at_a_time(peers: &[PeerId]) -> (Swarm, Vec<Vec<ChunkIndex>>) {
    let cfg = Config { pipeline: 1, request_timeout: 1000, ..Config::default() };
    let mut w = Swarm::new(cfg, Bitfield::new(N));
    for &p in peers {
        w.handle_connected(0, p, info(0, Role::Worker));
        w.handle_message(0, p, Message::Bitfield(Bitfield::full(N)));
    }
    let acts = drain(&mut w);
    let asked = peers.iter().map(|&p| requests(&acts, p)).collect();
    (w, asked)
}

#[test]
fn requests_time_out_and_move_on() {
    let (mut w, asked) = one_at_a_time(&[1]);
    let c = asked[0][0];
    assert_eq!(w.poll_timeout(), Some(1000));
    w.handle_timeout(1000);
    let acts = drain(&mut w);
    assert!(acts.contains(&Action::Send { to: 1, msg: Message::Cancel(c) }));
    assert_eq!(w.stats().timeouts, 1);
    assert!(requests(&acts, 1).is_empty(), "a peer that timed out is paused");
    let resume = w.poll_timeout().unwrap();
    assert_eq!(resume, 1000 + 2 * w.config().refusal_pause, "twice the pause after a refusal");
    w.handle_timeout(resume);
    assert_eq!(requests(&drain(&mut w), 1).len(), 1, "then asked again");
}

/// D4: a peer that never finishes sending a chunk (a trickler) loses the
/// request at the timeout, and the chunk is asked of another peer that has
/// it, not of the slow one again.
#[test]
fn a_timed_out_chunk_goes_to_another_peer() {
    let (mut w, asked) = one_at_a_time(&[1, 2]);
    let (slow, first) = (asked[0][0], asked[1][0]);
    w.handle_reply(20, 2, first, Reply::Verified);
    let mut asked_of_2 = requests(&drain(&mut w), 2);
    w.handle_timeout(1000);
    let acts = drain(&mut w);
    assert!(acts.contains(&Action::Send { to: 1, msg: Message::Cancel(slow) }));
    assert!(!requests(&acts, 1).contains(&slow), "not asked of the slow peer again");
    // Peer 2, answering, gets it before the slow peer's next timeout.
    asked_of_2.extend(requests(&acts, 2));
    let mut rounds = 0;
    while !asked_of_2.contains(&slow) && rounds < N {
        let c = asked_of_2.pop().expect("peer 2 has a request open");
        w.handle_reply(1010, 2, c, Reply::Verified);
        asked_of_2.extend(requests(&drain(&mut w), 2));
        rounds += 1;
    }
    assert!(asked_of_2.contains(&slow), "after {rounds} chunks from peer 2");
}

/// A peer that claims every chunk and refuses every request (a liar) is
/// asked less and less often, and once it is paused the starving node
/// insists at the master that stood back, so the liar cannot stall it.
#[test]
fn a_peer_that_claims_everything_and_refuses_all_cannot_stall_a_node() {
    const MASTER: PeerId = 1;
    const LIAR: PeerId = 2;
    let mut w = worker(1);
    w.handle_connected(0, MASTER, info(0, Role::Master));
    w.handle_message(0, MASTER, Message::Bitfield(Bitfield::full(N)));
    w.handle_connected(0, LIAR, info(0, Role::Worker));
    w.handle_message(0, LIAR, Message::Bitfield(Bitfield::full(N)));
    let (mut asked_liar, mut insisted) = (0, None);
    let mut now = 0;
    while now < 10_000_000 && insisted.is_none() {
        for a in drain(&mut w) {
            match a {
                Action::Send { to: LIAR, msg: Message::Request(c) } => {
                    asked_liar += 1;
                    w.handle_reply(now, LIAR, c, Reply::Refused);
                }
                Action::Send { to: MASTER, msg: Message::Insist(c) } => insisted = Some((now, c)),
                // The master stands back: the liar claims a copy.
                Action::Send { to: MASTER, msg: Message::Request(c) } => w.handle_reply(now, MASTER, c, Reply::Refused),
                _ => {}
            }
        }
        now += 5_000;
        if w.poll_timeout().is_some_and(|t| t <= now) {
            w.handle_timeout(now);
        }
    }
    let (at, _) = insisted.expect("the node insisted at the master");
    assert!(at < 2_000_000, "it took {at} µs");
    // A flat 20 ms pause would have let it ask the liar about 100 times.
    assert!(asked_liar < 40, "the liar was asked {asked_liar} times");
}

#[test]
fn workers_never_trade_across_sites_but_gateways_and_masters_do() {
    let mut w = worker(3);
    w.handle_connected(0, 1, info(1, Role::Worker));
    w.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    assert!(requests(&drain(&mut w), 1).is_empty());
    w.handle_connected(0, 2, info(1, Role::Master));
    w.handle_message(0, 2, Message::Bitfield(Bitfield::full(N)));
    assert!(requests(&drain(&mut w), 2).is_empty(), "a worker does not fetch from another site's master");

    let mut g = Swarm::new(Config { role: Role::Gateway, ..Config::default() }, Bitfield::new(N));
    g.handle_connected(0, 2, info(1, Role::Master));
    g.handle_message(0, 2, Message::Bitfield(Bitfield::full(N)));
    assert!(!requests(&drain(&mut g), 2).is_empty());

    // Serving side: a master refuses another site's worker.
    let mut m = master();
    m.handle_connected(0, 9, info(1, Role::Worker));
    drain(&mut m);
    m.handle_message(0, 9, Message::Request(3));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 9, chunk: 3 }]);
}

/// `askers` workers of this site connect to `s` (which holds every chunk)
/// and each asks for a chunk of its own, peer `k` for chunk `k - 1`: how
/// many uploads `s` starts, queues and refuses.
fn ask_once_each(s: &mut Swarm, askers: u32) -> (usize, usize, usize) {
    for p in 1..=askers {
        s.handle_connected(0, u64::from(p), info(0, Role::Worker));
    }
    drain(s);
    for c in 0..askers {
        s.handle_message(0, u64::from(c) + 1, Message::Request(c));
    }
    let acts = drain(s);
    let uploads = acts.iter().filter(|a| matches!(a, Action::Upload { .. })).count();
    let refused = acts.iter().filter(|a| matches!(a, Action::Refuse { .. })).count();
    (uploads, askers as usize - uploads - refused, refused)
}

#[test]
fn upload_slots_and_queue_are_bounded() {
    let cfg =
        Config { upload: UploadPolicy { slots: 2, max_queue: 1, ..UploadPolicy::default() }, ..Config::default() };
    let mut s = Swarm::new(cfg, Bitfield::full(N));
    assert_eq!(ask_once_each(&mut s, 4), (2, 1, 1));
    s.handle_upload_done(1, 1, 0);
    assert!(matches!(drain(&mut s)[..], [Action::Upload { to: 3, chunk: 2 }]));
}

#[test]
fn a_master_serves_twice_a_hosts_uploads_and_queues_four_times_its_requests() {
    let served = |role: Role| {
        let cfg = Config { role, upload: UploadPolicy::of(role), ..Config::default() };
        ask_once_each(&mut Swarm::new(cfg, Bitfield::full(N)), 64)
    };
    assert_eq!(served(Role::Worker), (8, 8, 48));
    assert_eq!(served(Role::Master), (16, 32, 16));
}

#[test]
fn a_masters_uploads_to_other_sites_keep_to_a_quarter_of_its_slots() {
    let upload = UploadPolicy { slots: 8, max_queue: 16, ..UploadPolicy::default() };
    let mut m = Swarm::new(Config { role: Role::Master, upload, ..Config::default() }, Bitfield::full(N));
    m.handle_connected(0, 1, info(1, Role::Gateway));
    m.handle_connected(0, 2, info(0, Role::Worker));
    drain(&mut m);
    for c in 0..8 {
        m.handle_message(0, 1, Message::Request(c));
    }
    let remote = drain(&mut m).iter().filter(|a| matches!(a, Action::Upload { to: 1, .. })).count();
    assert_eq!(remote, 2, "two of eight slots to the other site; the rest wait in the queue");
    m.handle_message(1, 2, Message::Request(20));
    assert_eq!(drain(&mut m), vec![Action::Upload { to: 2, chunk: 20 }], "a slot stays free for the master's own site");
    m.handle_upload_done(2, 1, 0);
    assert_eq!(drain(&mut m), vec![Action::Upload { to: 1, chunk: 2 }], "the next remote request takes the freed one");
}

#[test]
fn a_peer_of_this_site_gets_one_upload_at_a_time_and_later_askers_go_ahead_of_its_second() {
    let mut s = Swarm::new(Config { role: Role::Gateway, ..Config::default() }, Bitfield::full(N));
    for p in [1, 2] {
        s.handle_connected(0, p, info(0, Role::Worker));
    }
    s.handle_connected(0, 3, info(1, Role::Gateway));
    drain(&mut s);
    s.handle_message(0, 1, Message::Request(0));
    s.handle_message(0, 1, Message::Request(1));
    s.handle_message(0, 2, Message::Request(2));
    assert_eq!(
        drain(&mut s),
        vec![Action::Upload { to: 1, chunk: 0 }, Action::Upload { to: 2, chunk: 2 }],
        "1's second request waits, 2's goes ahead of it"
    );
    s.handle_upload_done(1, 1, 0);
    assert_eq!(drain(&mut s), vec![Action::Upload { to: 1, chunk: 1 }]);
    // Another site's gateway, across a WAN, is not held to one at a time.
    s.handle_message(2, 3, Message::Request(3));
    s.handle_message(2, 3, Message::Request(4));
    assert_eq!(drain(&mut s), vec![Action::Upload { to: 3, chunk: 3 }, Action::Upload { to: 3, chunk: 4 }]);
}

#[test]
fn a_master_stands_back_once_a_peer_holds_the_chunk() {
    let mut m = master();
    m.handle_connected(0, 1, info(0, Role::Worker));
    m.handle_connected(0, 2, info(0, Role::Worker));
    drain(&mut m);
    m.handle_message(0, 1, Message::Request(5));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 1, chunk: 5 }]));
    m.handle_upload_done(1, 1, 5);
    m.handle_message(2, 1, Message::Have(5));
    m.handle_message(3, 2, Message::Request(5));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 2, chunk: 5 }]);
    // A copy in flight counts too: no duplicate while it travels.
    m.handle_message(4, 2, Message::Request(6));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 2, chunk: 6 }]));
    m.handle_message(5, 1, Message::Request(6));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 1, chunk: 6 }]);
    // A gateway of another site cannot fetch from site 0's worker: served.
    m.handle_connected(6, 3, info(1, Role::Gateway));
    drain(&mut m);
    m.handle_message(6, 3, Message::Request(5));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 3, chunk: 5 }]));
    // Copies count per site: site 1's other gateway waits for the copy on
    // its way there, while site 2's gateway gets the chunk from the master.
    m.handle_connected(7, 4, info(1, Role::Gateway));
    m.handle_connected(7, 5, info(2, Role::Gateway));
    drain(&mut m);
    m.handle_message(7, 4, Message::Request(5));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 4, chunk: 5 }]);
    m.handle_message(8, 5, Message::Request(5));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 5, chunk: 5 }]));
}

#[test]
fn a_master_counts_a_sent_chunk_until_its_recipient_announces_it() {
    let grace = UploadPolicy::default().delivery_grace;
    let mut m = master();
    for id in 1..=3 {
        m.handle_connected(0, id, info(0, Role::Worker));
    }
    drain(&mut m);
    m.handle_message(0, 1, Message::Request(5));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 1, chunk: 5 }]));
    // Sent, but not yet announced: still on its way, so no second copy.
    m.handle_upload_done(10, 1, 5);
    m.handle_message(20, 2, Message::Request(5));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 2, chunk: 5 }]);
    // The recipient asks again: it never got it, so it is served.
    m.handle_message(30, 1, Message::Request(5));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 1, chunk: 5 }]));
    m.handle_upload_done(40, 1, 5);
    // Announced: a held copy, as before.
    m.handle_message(50, 1, Message::Have(5));
    m.handle_message(60, 2, Message::Request(5));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 2, chunk: 5 }]);
    // Never announced: after the grace the chunk counts as absent again.
    m.handle_message(70, 3, Message::Request(6));
    drain(&mut m);
    m.handle_upload_done(80, 3, 6);
    m.handle_message(80 + grace, 2, Message::Request(6));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 2, chunk: 6 }]);
    m.handle_message(81 + grace, 2, Message::Request(6));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 2, chunk: 6 }]));
    // A recipient that leaves takes its pending copy with it.
    m.handle_upload_done(82 + grace, 2, 6);
    m.handle_disconnected(82 + grace, 2);
    m.handle_message(83 + grace, 3, Message::Request(6));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { to: 3, chunk: 6 }]));
}

#[test]
fn requests_from_other_sites_are_served_before_queued_local_ones() {
    let mut g = Swarm::new(
        Config {
            role: Role::Gateway,
            upload: UploadPolicy { slots: 1, ..UploadPolicy::default() },
            ..Config::default()
        },
        Bitfield::full(N),
    );
    for (id, site) in [(1, 0), (2, 0), (3, 1)] {
        g.handle_connected(0, id, info(site, if site == 0 { Role::Worker } else { Role::Gateway }));
    }
    drain(&mut g);
    g.handle_message(1, 1, Message::Request(1));
    g.handle_message(1, 2, Message::Request(2));
    g.handle_message(1, 3, Message::Request(3));
    assert!(matches!(drain(&mut g)[..], [Action::Upload { to: 1, chunk: 1 }]));
    g.handle_upload_done(2, 1, 1);
    assert!(matches!(drain(&mut g)[..], [Action::Upload { to: 3, chunk: 3 }]), "the other site's request goes first");
    g.handle_upload_done(3, 3, 3);
    assert!(matches!(drain(&mut g)[..], [Action::Upload { to: 2, chunk: 2 }]));
}

#[test]
fn striped_masters_serve_their_own_stripe_first() {
    let stripe = Stripe { index: 0, count: 2, grace: 1000 };
    let cfg = Config {
        role: Role::Master,
        upload: UploadPolicy { stripe: Some(stripe), ..UploadPolicy::default() },
        ..Config::default()
    };
    let mut m = Swarm::new(cfg, Bitfield::full(N));
    m.handle_connected(0, 1, info(0, Role::Worker));
    drain(&mut m);
    m.handle_message(0, 1, Message::Request(3));
    assert_eq!(drain(&mut m), vec![Action::Refuse { to: 1, chunk: 3 }]);
    m.handle_message(10, 1, Message::Request(4));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { chunk: 4, .. }]));
    m.handle_upload_done(500, 1, 4);
    // Still unavailable after the grace: served after all.
    m.handle_message(1000, 1, Message::Request(3));
    assert!(matches!(drain(&mut m)[..], [Action::Upload { chunk: 3, .. }]));
}

#[test]
fn endgame_asks_a_second_peer_and_cancels_the_loser() {
    let cfg = Config { pipeline: 1, random_first: 0, ..Config::default() };
    let mut have = Bitfield::full(N);
    have.unset(10);
    let mut w = Swarm::new(cfg, have);
    w.handle_connected(0, 1, info(0, Role::Worker));
    w.handle_connected(0, 2, info(0, Role::Worker));
    w.handle_message(0, 1, Message::Bitfield(Bitfield::full(N)));
    w.handle_message(0, 2, Message::Bitfield(Bitfield::full(N)));
    let acts = drain(&mut w);
    assert_eq!(requests(&acts, 1), vec![10]);
    assert_eq!(requests(&acts, 2), vec![10], "endgame duplicate");
    w.handle_reply(5, 2, 10, Reply::Verified);
    let acts = drain(&mut w);
    assert!(acts.contains(&Action::Send { to: 1, msg: Message::Cancel(10) }));
    assert!(acts.contains(&Action::Completed));
    assert!(w.is_complete());
}

#[test]
fn same_seed_same_decisions() {
    let run = |seed| {
        let mut w = worker(seed);
        for p in 1..=4 {
            w.handle_connected(0, p, info(0, Role::Worker));
            w.handle_message(0, p, Message::Bitfield(Bitfield::full(N)));
        }
        drain(&mut w)
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever peers have, a request is only ever for a chunk that the
        /// peer has and this node lacks, and never exceeds the pipeline.
        #[test]
        fn requests_are_always_for_useful_chunks(
            seed in any::<u64>(),
            peers in proptest::collection::vec(proptest::collection::vec(any::<bool>(), N as usize), 1..5),
            pre in proptest::collection::vec(any::<bool>(), N as usize),
        ) {
            let mut have = Bitfield::new(N);
            for (i, h) in pre.iter().enumerate() { if *h { have.set(i as u32); } }
            let mut w = Swarm::new(Config { seed, ..Config::default() }, have.clone());
            let mut maps = Vec::new();
            for (p, bits) in peers.iter().enumerate() {
                let mut b = Bitfield::new(N);
                for (i, h) in bits.iter().enumerate() { if *h { b.set(i as u32); } }
                w.handle_connected(0, p as u64, info(0, Role::Worker));
                w.handle_message(0, p as u64, Message::Bitfield(b.clone()));
                maps.push(b);
            }
            let acts = drain(&mut w);
            for (p, b) in maps.iter().enumerate() {
                let reqs = requests(&acts, p as u64);
                prop_assert!(reqs.len() as u32 <= Config::default().pipeline);
                for c in reqs {
                    prop_assert!(b.get(c) && !have.get(c));
                }
            }
        }

        /// Have-maps: availability counts follow bitfields and departures.
        #[test]
        fn availability_tracks_peers(bits in proptest::collection::vec(proptest::collection::vec(any::<bool>(), N as usize), 1..6)) {
            let mut w = worker(0);
            for (p, v) in bits.iter().enumerate() {
                let mut b = Bitfield::new(N);
                for (i, h) in v.iter().enumerate() { if *h { b.set(i as u32); } }
                w.handle_connected(0, p as u64, info(0, Role::Worker));
                w.handle_message(0, p as u64, Message::Bitfield(b));
            }
            for c in 0..N as usize {
                let expected = bits.iter().filter(|v| v[c]).count() as u16;
                prop_assert_eq!(w.availability[c], expected);
            }
            for p in 0..bits.len() {
                w.handle_disconnected(1, p as u64);
            }
            prop_assert!(w.availability.iter().all(|&a| a == 0));
        }
    }
}

#[test]
fn a_have_that_arrives_while_the_pipeline_is_full_is_not_lost() {
    let two = |chunks: &[u32]| {
        let mut b = Bitfield::new(2);
        chunks.iter().for_each(|&c| {
            b.set(c);
        });
        b
    };
    let mut w = Swarm::new(Config { max_inflight: 1, ..Config::default() }, Bitfield::new(2));
    // Peer 2 has nothing yet: one scan finds nothing there.
    w.handle_connected(0, 2, info(0, Role::Worker));
    w.handle_message(0, 2, Message::Bitfield(two(&[])));
    w.handle_connected(0, 1, info(0, Role::Worker));
    w.handle_message(0, 1, Message::Bitfield(two(&[0])));
    assert_eq!(requests(&drain(&mut w), 1), vec![0]);
    // Chunk 1 appears at peer 2 while the one request allowed is out.
    w.handle_message(1, 2, Message::Have(1));
    assert!(requests(&drain(&mut w), 2).is_empty());
    w.handle_reply(2, 1, 0, Reply::Verified);
    assert_eq!(requests(&drain(&mut w), 2), vec![1], "peer 2 is asked once there is room");
}

#[test]
fn an_endgame_duplicate_that_is_refused_makes_the_chunk_a_candidate_again() {
    let mut w = Swarm::new(Config { max_inflight: 4, pipeline: 1, ..Config::default() }, Bitfield::new(1));
    for p in 1..=3 {
        w.handle_connected(0, p, info(0, Role::Worker));
        w.handle_message(0, p, Message::Bitfield(Bitfield::full(1)));
    }
    // Endgame: the only chunk is asked of two peers; the third is not asked.
    let acts = drain(&mut w);
    let asked: Vec<PeerId> = (1..=3).filter(|&p| !requests(&acts, p).is_empty()).collect();
    assert_eq!(asked.len(), 2, "{acts:?}");
    let idle = (1..=3).find(|p| !asked.contains(p)).unwrap();
    // One of the two refuses: the chunk has one request left, so in
    // endgame it may go to the peer not yet asked.
    w.handle_reply(1, asked[0], 0, Reply::Refused);
    assert_eq!(requests(&drain(&mut w), idle), vec![0]);
}

#[test]
fn in_endgame_only_a_late_request_gets_a_second_copy() {
    for late_factor in [0, 2] {
        let cfg = Config { pipeline: 1, random_first: 0, late_factor, ..Config::default() };
        let mut have = Bitfield::full(N);
        for c in [60, 61, 62] {
            have.unset(c);
        }
        let mut w = Swarm::new(cfg, have);
        for p in [1, 2] {
            w.handle_connected(0, p, info(0, Role::Worker));
            w.handle_message(0, p, Message::Bitfield(Bitfield::full(N)));
        }
        let acts = drain(&mut w);
        let (x, y) = (requests(&acts, 1)[0], requests(&acts, 2)[0]);
        // Peer 1 answers after 100 ms: the average request takes 100 ms.
        w.handle_reply(100_000, 1, x, Reply::Verified);
        let z = requests(&drain(&mut w), 1)[0];
        assert!(w.endgame(), "every missing chunk is asked for");
        // A third peer, with a free slot, arrives in endgame.
        w.handle_connected(100_000, 3, info(0, Role::Worker));
        w.handle_message(100_000, 3, Message::Bitfield(Bitfield::full(N)));
        let now = requests(&drain(&mut w), 3);
        if late_factor == 0 {
            assert_eq!(now.len(), 1, "without lateness a second copy goes out at once");
            continue;
        }
        assert!(now.is_empty(), "no request is late yet: {now:?}");
        // The first requests (sent at 0) are late at twice the average.
        assert_eq!(w.poll_timeout(), Some(200_000));
        w.handle_timeout(200_000);
        let later = requests(&drain(&mut w), 3);
        assert_eq!(later, vec![y], "the late request gets a second copy, not the one sent at 100 ms ({z})");
        // The first request for y is refused: the one left, sent at 200 ms,
        // is not late, so a fourth peer gets nothing yet.
        w.handle_reply(210_000, 2, y, Reply::Refused);
        w.handle_connected(210_000, 4, info(0, Role::Worker));
        w.handle_message(210_000, 4, Message::Bitfield(Bitfield::full(N)));
        assert_eq!(requests(&drain(&mut w), 4), Vec::<ChunkIndex>::new(), "y's request left is 10 ms old");
    }
}

#[test]
fn a_bitfield_older_than_a_have_does_not_take_the_have_back() {
    let cfg = Config { pipeline: 1, random_first: 0, ..Config::default() };
    let mut w = Swarm::new(cfg, Bitfield::new(N));
    w.handle_connected(0, 1, info(0, Role::Worker));
    w.handle_message(0, 1, Message::Have(5));
    w.handle_message(0, 1, Message::Have(6));
    let first = requests(&drain(&mut w), 1);
    assert_eq!(first.len(), 1);
    // The peer's hello, sent before it had either chunk, arrives late.
    w.handle_message(1, 1, Message::Bitfield(Bitfield::new(N)));
    w.handle_reply(2, 1, first[0], Reply::Verified);
    let other = if first[0] == 5 { 6 } else { 5 };
    assert_eq!(requests(&drain(&mut w), 1), vec![other], "the peer still holds the other chunk");
}
