//! Unit tests of the transfer machine, driven by hand on a virtual clock.

use super::*;
use crate::manifest::{ChunkError, ChunkSize, ManifestBuilder, ManifestRoot};
use crate::swarm::Role;

const CHUNK: u64 = 1024;
const CHUNKS: u32 = 8;
const IMAGE: ImageId = Uuid::from_u128(0x1111);
const OTHER: ImageId = Uuid::from_u128(0x2222);

/// An image's bytes, its manifest hashes and root.
struct Fixture {
    data: Vec<u8>,
    hashes: Arc<[ChunkHash]>,
    root: ManifestRoot,
}

fn fixture() -> Fixture {
    let data: Vec<u8> = (0..CHUNK * u64::from(CHUNKS) - 100).map(|i| (i * 7 % 251) as u8).collect();
    let mut b = ManifestBuilder::new(ChunkSize::new(CHUNK).unwrap());
    b.update(&data);
    let m = b.finish();
    Fixture { root: m.root(), hashes: m.shared_hashes(), data }
}

impl Fixture {
    fn chunk(&self, i: u32) -> Vec<u8> {
        let start = (u64::from(i) * CHUNK) as usize;
        self.data[start..(start + CHUNK as usize).min(self.data.len())].to_vec()
    }

    fn spec(&self, epoch: u64, have: Bitfield, hashes: bool) -> ImageSpec {
        ImageSpec {
            epoch,
            root: self.root,
            chunk_size: ChunkSize::new(CHUNK).unwrap(),
            size: self.data.len() as u64,
            available: have.is_full(),
            have,
            hashes: hashes.then(|| self.hashes.clone()),
            swarm: swarm::Config { random_first: 0, ..swarm::Config::default() },
        }
    }
}

fn worker() -> PeerInfo {
    PeerInfo { site: 0, role: Role::Worker, key: 0 }
}

fn host() -> Host<Vec<u8>> {
    Host::new()
}

/// A worker with the image taken up (no chunks, manifest `known` or not).
fn with_image(f: &Fixture, known: bool) -> Host<Vec<u8>> {
    let mut h = host();
    assert!(h.add_images(0, vec![(IMAGE, f.spec(1, Bitfield::new(CHUNKS), known))]).is_empty());
    h
}

fn effects(h: &mut Host<Vec<u8>>) -> Vec<Effect<Vec<u8>>> {
    std::iter::from_fn(|| h.poll_effect()).collect()
}

fn chunk_requests(e: &[Effect<Vec<u8>>], peer: PeerId) -> Vec<ChunkIndex> {
    e.iter()
        .filter_map(|e| match e {
            Effect::RequestChunk { to, index, .. } if *to == peer => Some(*index),
            _ => None,
        })
        .collect()
}

/// `peer` connected and said hello holding `have` of the image.
fn meet(h: &mut Host<Vec<u8>>, peer: PeerId, have: Bitfield) -> Vec<Effect<Vec<u8>>> {
    h.handle_connected(0, peer);
    h.handle_hello(0, peer, worker(), vec![(IMAGE, have)]);
    effects(h)
}

#[test]
fn a_connection_gets_a_hello_and_notices_before_the_peers_hello_wait_for_it() {
    let f = fixture();
    let mut h = with_image(&f, true);
    h.handle_connected(0, 1);
    assert_eq!(effects(&mut h), vec![Effect::Hello { to: 1, images: vec![(IMAGE, Bitfield::new(CHUNKS))] }]);
    // A Have before the hello changes nothing yet...
    assert!(h.handle_notices(0, 1, vec![(IMAGE, Notice::Have(3))]));
    assert!(effects(&mut h).is_empty());
    assert_eq!(h.image(IMAGE).unwrap().peer_count(), 0);
    // ...and counts once the hello says who the peer is.
    h.handle_hello(0, 1, worker(), vec![(IMAGE, Bitfield::new(CHUNKS))]);
    assert_eq!(chunk_requests(&effects(&mut h), 1), vec![3]);
}

#[test]
fn notice_frames_before_the_hello_are_bounded() {
    let f = fixture();
    let mut h = with_image(&f, true);
    h.handle_connected(0, 1);
    for _ in 0..FRAMES_BEFORE_HELLO {
        assert!(h.handle_notices(0, 1, vec![(IMAGE, Notice::Have(0))]));
    }
    assert!(!h.handle_notices(0, 1, vec![(IMAGE, Notice::Have(1))]), "one frame too many is dropped");
}

#[test]
fn what_notices_before_the_hello_take_is_bounded_per_peer_and_in_all() {
    let f = fixture();
    let mut h = with_image(&f, true);
    // A bitfield of 2^20 chunks takes 128 KiB.
    let big = || vec![(IMAGE, Notice::Bitfield(Bitfield::new(1 << 20)))];
    let per_peer = WAITING_BYTES_PER_PEER / waiting_bytes(&big());
    h.handle_connected(0, 1);
    for _ in 0..per_peer {
        assert!(h.handle_notices(0, 1, big()));
    }
    assert!(!h.handle_notices(0, 1, big()), "over the peer's share");
    // Its hello frees its share; a peer that leaves frees its own.
    h.handle_hello(0, 1, worker(), vec![]);
    let peers = WAITING_BYTES / (per_peer * waiting_bytes(&big()));
    for p in 2..2 + peers as u64 {
        h.handle_connected(0, p);
        for _ in 0..per_peer {
            assert!(h.handle_notices(0, p, big()), "peer {p}");
        }
    }
    let last = 2 + peers as u64;
    h.handle_connected(0, last);
    assert!(!h.handle_notices(0, last, big()), "over what all peers may take");
    h.handle_disconnected(0, 2);
    assert!(h.handle_notices(0, last, big()), "a peer that left freed its share");
}

#[test]
fn images_taken_up_are_named_in_a_hello_to_every_peer_met() {
    let f = fixture();
    let mut h = with_image(&f, true);
    meet(&mut h, 1, Bitfield::new(CHUNKS));
    h.handle_connected(0, 2); // no hello from 2 yet
    effects(&mut h);
    assert!(h.add_images(0, vec![(OTHER, f.spec(1, Bitfield::new(CHUNKS), true))]).is_empty());
    let hellos: Vec<_> = effects(&mut h)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Hello { to, images } => Some((to, images.first().map(|(id, _)| *id))),
            _ => None,
        })
        .collect();
    assert_eq!(hellos, vec![(1, Some(OTHER))]);
}

#[test]
fn the_manifest_is_asked_of_the_most_complete_peer_and_a_wrong_one_bans_its_sender() {
    let f = fixture();
    let mut h = with_image(&f, false);
    meet(&mut h, 1, Bitfield::new(CHUNKS));
    let e = meet(&mut h, 2, Bitfield::full(CHUNKS));
    // Peer 1 was asked first (it was alone); the open request stands.
    assert!(!e.iter().any(|e| matches!(e, Effect::RequestManifest { .. })), "{e:?}");
    h.handle_manifest_reply(1, 1, IMAGE, ManifestReply::Refused(Refusal::NotHeld));
    assert_eq!(effects(&mut h), vec![Effect::RequestManifest { to: 2, image: IMAGE }]);
    // Peer 2 sends hashes whose root is not the list's: banned, and nothing
    // it says counts any more.
    let mut wrong = f.hashes.to_vec();
    wrong[0][0] ^= 1;
    h.handle_manifest_reply(2, 2, IMAGE, ManifestReply::Hashes(wrong.into()));
    let e = effects(&mut h);
    assert!(e.contains(&Effect::Ban { peer: 2, offence: Offence::Manifest { image: IMAGE } }), "{e:?}");
    assert!(h.image(IMAGE).unwrap().manifest().is_none());
    h.handle_manifest_reply(3, 2, IMAGE, ManifestReply::Hashes(f.hashes.clone()));
    assert!(h.image(IMAGE).unwrap().manifest().is_none(), "a banned peer's later answer is ignored");
    // Every peer tried: asked again once the retry interval has passed.
    assert_eq!(h.poll_timeout(), Some(2 + MANIFEST_RETRY));
    h.handle_timeout(2 + MANIFEST_RETRY - 1);
    assert!(!effects(&mut h).iter().any(|e| matches!(e, Effect::RequestManifest { .. })));
    h.handle_timeout(2 + MANIFEST_RETRY);
    assert_eq!(effects(&mut h), vec![Effect::RequestManifest { to: 1, image: IMAGE }]);
    // The right manifest starts the swarm with the peers met so far.
    h.handle_manifest_reply(3 + MANIFEST_RETRY, 1, IMAGE, ManifestReply::Hashes(f.hashes.clone()));
    assert!(h.image(IMAGE).unwrap().manifest().is_some());
    assert_eq!(h.manifest_for(IMAGE), Ok(f.hashes.clone()));
}

#[test]
fn an_unanswered_manifest_request_is_hedged_then_times_out() {
    let f = fixture();
    let mut h = with_image(&f, false);
    let e = meet(&mut h, 1, Bitfield::full(CHUNKS));
    assert!(e.contains(&Effect::RequestManifest { to: 1, image: IMAGE }));
    // Alone, the request waits its whole time.
    assert_eq!(h.poll_timeout(), Some(MANIFEST_TIMEOUT));
    // With another peer to ask, a second request goes out beside the
    // first once that one is MANIFEST_HEDGE old, and no third.
    assert!(!meet(&mut h, 2, Bitfield::full(CHUNKS)).contains(&Effect::RequestManifest { to: 2, image: IMAGE }));
    assert_eq!(h.poll_timeout(), Some(MANIFEST_HEDGE));
    h.handle_timeout(MANIFEST_HEDGE);
    assert_eq!(effects(&mut h), vec![Effect::RequestManifest { to: 2, image: IMAGE }]);
    assert!(!meet(&mut h, 3, Bitfield::full(CHUNKS)).contains(&Effect::RequestManifest { to: 3, image: IMAGE }));
    // The first request counts as failed at its timeout: the third peer is
    // asked then.
    assert_eq!(h.poll_timeout(), Some(MANIFEST_TIMEOUT));
    h.handle_timeout(MANIFEST_TIMEOUT);
    assert_eq!(effects(&mut h), vec![Effect::RequestManifest { to: 3, image: IMAGE }]);
    // The second peer's answer, late as it is, starts the swarm; the
    // others' later answers change nothing.
    h.handle_manifest_reply(MANIFEST_TIMEOUT + 1, 2, IMAGE, ManifestReply::Hashes(f.hashes.clone()));
    assert!(h.image(IMAGE).unwrap().manifest().is_some());
    h.handle_manifest_reply(MANIFEST_TIMEOUT + 2, 3, IMAGE, ManifestReply::Failed);
    assert!(h.image(IMAGE).unwrap().manifest().is_some());
}

#[test]
fn chunk_requests_are_answered_once_each() {
    let f = fixture();
    let mut h = host();
    let refused =
        |h: &mut Host<Vec<u8>>, r| effects(h).contains(&Effect::Refuse { to: 1, image: IMAGE, index: 2, refusal: r });
    h.handle_connected(0, 1);
    h.handle_hello(0, 1, worker(), vec![]);
    effects(&mut h);
    h.handle_chunk_request(0, 1, IMAGE, 2, false);
    assert!(refused(&mut h, Refusal::NotEndorsed), "not served here");
    h.add_images(0, vec![(IMAGE, f.spec(1, Bitfield::full(CHUNKS), false))]);
    effects(&mut h);
    h.handle_chunk_request(0, 1, IMAGE, 2, false);
    assert!(refused(&mut h, Refusal::NotHeld), "no manifest yet");

    let mut h = host();
    h.add_images(0, vec![(IMAGE, f.spec(1, Bitfield::full(CHUNKS), true))]);
    h.handle_connected(0, 1);
    h.handle_hello(0, 1, worker(), vec![(IMAGE, Bitfield::new(CHUNKS))]);
    effects(&mut h);
    h.handle_chunk_request(0, 1, IMAGE, 2, false);
    assert_eq!(effects(&mut h), vec![Effect::Serve { to: 1, image: IMAGE, index: 2 }]);
    // One upload per peer at a time: the next request waits; asking for it
    // twice gets the second refused at once.
    h.handle_chunk_request(0, 1, IMAGE, 3, false);
    assert!(effects(&mut h).is_empty());
    h.handle_chunk_request(0, 1, IMAGE, 3, false);
    assert_eq!(effects(&mut h), vec![Effect::Refuse { to: 1, image: IMAGE, index: 3, refusal: Refusal::Busy }]);
    // A cancelled request is answered with a refusal, and never served.
    h.handle_notices(0, 1, vec![(IMAGE, Notice::Cancel(3))]);
    assert_eq!(effects(&mut h), vec![Effect::Refuse { to: 1, image: IMAGE, index: 3, refusal: Refusal::Busy }]);
    h.handle_upload_done(1, 1, IMAGE, 2);
    assert!(effects(&mut h).is_empty());
    // Requests waiting when the image stops being served are refused.
    h.handle_chunk_request(2, 1, IMAGE, 4, false);
    h.handle_chunk_request(2, 1, IMAGE, 5, false);
    assert_eq!(effects(&mut h), vec![Effect::Serve { to: 1, image: IMAGE, index: 4 }]);
    h.remove_image(IMAGE);
    assert_eq!(effects(&mut h), vec![Effect::Refuse { to: 1, image: IMAGE, index: 5, refusal: Refusal::NotEndorsed }]);
}

#[test]
fn bad_bytes_ban_their_sender_while_refusals_and_failures_only_go_elsewhere() {
    let f = fixture();
    let mut h = with_image(&f, true);
    let asked = chunk_requests(&meet(&mut h, 1, Bitfield::full(CHUNKS)), 1);
    let (a, b) = (asked[0], asked[1]);
    h.handle_chunk_reply(1, 1, IMAGE, a, ChunkReply::Refused(Refusal::Busy));
    h.handle_chunk_reply(1, 1, IMAGE, b, ChunkReply::Failed);
    assert!(!effects(&mut h).iter().any(|e| matches!(e, Effect::Ban { .. })));
    assert_eq!(h.image(IMAGE).unwrap().stats().failures, 1);

    h.handle_timeout(1_000_000);
    let c = chunk_requests(&effects(&mut h), 1)[0];
    let mut bad = f.chunk(c);
    bad[0] ^= 1;
    h.handle_chunk_reply(1_000_001, 1, IMAGE, c, ChunkReply::Data(bad));
    let e = effects(&mut h);
    let offence = Offence::Chunk { image: IMAGE, error: ChunkError::WrongHash { index: c } };
    assert!(e.contains(&Effect::Ban { peer: 1, offence }), "{e:?}");
    assert!(!e.iter().any(|e| matches!(e, Effect::Write { .. })), "nothing unverified is written");
    // From now on the peer is ignored, even with good bytes.
    h.handle_chunk_reply(1_000_002, 1, IMAGE, c, ChunkReply::Data(f.chunk(c)));
    h.handle_chunk_request(1_000_002, 1, IMAGE, 0, false);
    assert_eq!(effects(&mut h), vec![Effect::Refuse { to: 1, image: IMAGE, index: 0, refusal: Refusal::NotHeld }]);
}

#[test]
fn short_bytes_are_corrupt_too() {
    let f = fixture();
    let mut h = with_image(&f, true);
    let c = chunk_requests(&meet(&mut h, 1, Bitfield::full(CHUNKS)), 1)[0];
    h.handle_chunk_reply(1, 1, IMAGE, c, ChunkReply::Data(f.chunk(c)[1..].to_vec()));
    let e = effects(&mut h);
    assert!(e.iter().any(|e| matches!(
        e,
        Effect::Ban { peer: 1, offence: Offence::Chunk { error: ChunkError::WrongLength { .. }, .. } }
    )));
}

/// The chunks of each commit in `e`, in order.
fn commits(e: &[Effect<Vec<u8>>]) -> Vec<Vec<ChunkIndex>> {
    e.iter()
        .filter_map(|e| match e {
            Effect::Commit { chunks, .. } => Some(chunks.iter().map(|c| c.0).collect()),
            _ => None,
        })
        .collect()
}

/// Feeds every chunk request of `e` from peer 1 with the right bytes, and
/// carries out writes and commits as they come, a microsecond apart from
/// `from` on; returns the effects seen.
fn serve_all(h: &mut Host<Vec<u8>>, f: &Fixture, mut e: Vec<Effect<Vec<u8>>>, from: Micros) -> Vec<Effect<Vec<u8>>> {
    let mut seen = Vec::new();
    let mut t = from;
    while !e.is_empty() {
        for effect in std::mem::take(&mut e) {
            t += 1;
            match &effect {
                Effect::RequestChunk { to: 1, index, .. } => {
                    h.handle_chunk_reply(t, 1, IMAGE, *index, ChunkReply::Data(f.chunk(*index)))
                }
                Effect::Write { image, epoch, chunk } => h.handle_written(t, *image, *epoch, chunk.index(), Ok(())),
                Effect::Commit { image, epoch, .. } => h.handle_committed(t, *image, *epoch, Ok(())),
                _ => {}
            }
            seen.push(effect);
            e.extend(effects(h));
        }
    }
    seen
}

#[test]
fn chunks_are_written_once_committed_in_groups_and_installed_last() {
    let f = fixture();
    let mut h = with_image(&f, true);
    let first = meet(&mut h, 1, Bitfield::full(CHUNKS));
    let c = chunk_requests(&first, 1)[0];
    h.handle_chunk_reply(1, 1, IMAGE, c, ChunkReply::Data(f.chunk(c)));
    let e = effects(&mut h);
    assert!(matches!(&e[..], [Effect::Write { epoch: 1, chunk, .. }] if chunk.index() == c), "{e:?}");
    // A second copy while the first is written is dropped; the swarm hears
    // of the chunk only once it is written.
    h.handle_chunk_reply(2, 1, IMAGE, c, ChunkReply::Data(f.chunk(c)));
    assert!(effects(&mut h).is_empty());
    assert!(!h.image(IMAGE).unwrap().have().get(c));
    h.handle_written(3, IMAGE, 1, c, Ok(()));
    let e = effects(&mut h);
    assert!(h.image(IMAGE).unwrap().have().get(c));
    let commits: Vec<_> = e.iter().filter(|e| matches!(e, Effect::Commit { .. })).collect();
    assert_eq!(commits, vec![&Effect::Commit { image: IMAGE, epoch: 1, chunks: vec![(c, f.hashes[c as usize])] }]);

    // Everything else arrives while that commit runs: no second commit, and
    // no install, until it ends.
    let seen =
        serve_all(&mut h, &f, first.into_iter().chain(e).filter(|e| !matches!(e, Effect::Commit { .. })).collect(), 10);
    assert!(!seen.iter().any(|e| matches!(e, Effect::Commit { .. } | Effect::Install { .. })), "{seen:?}");
    assert!(h.image(IMAGE).unwrap().have().is_full());
    h.handle_committed(100, IMAGE, 1, Ok(()));
    let e = effects(&mut h);
    assert!(matches!(&e[..], [Effect::Commit { chunks, .. }] if chunks.len() == CHUNKS as usize - 1), "{e:?}");
    h.handle_committed(101, IMAGE, 1, Ok(()));
    assert_eq!(effects(&mut h), vec![Effect::Install { image: IMAGE, epoch: 1 }]);
    h.handle_installed(102, IMAGE, 1, Ok(()));
    assert!(h.image(IMAGE).unwrap().is_available());
}

#[test]
fn commits_are_spaced_while_chunks_come_and_the_last_is_not_held_back() {
    let f = fixture();
    let mut h = with_image(&f, true);
    let mut asked = meet(&mut h, 1, Bitfield::full(CHUNKS));
    let [a, b] = chunk_requests(&asked, 1)[..2] else { panic!("{asked:?}") };
    asked.retain(|e| !matches!(e, Effect::RequestChunk { index, .. } if [a, b].contains(index)));
    // Writes and commits are carried out by hand here: `step` keeps the
    // chunk requests for later and gives the commits' chunks.
    fn step(h: &mut Host<Vec<u8>>, asked: &mut Vec<Effect<Vec<u8>>>) -> Vec<Vec<ChunkIndex>> {
        let e = effects(h);
        asked.extend(e.iter().filter(|e| matches!(e, Effect::RequestChunk { .. })).cloned());
        commits(&e)
    }
    h.handle_chunk_reply(1, 1, IMAGE, a, ChunkReply::Data(f.chunk(a)));
    step(&mut h, &mut asked);
    h.handle_written(2, IMAGE, 1, a, Ok(()));
    assert_eq!(step(&mut h, &mut asked), vec![vec![a]], "the first commit starts at once");
    h.handle_committed(3, IMAGE, 1, Ok(()));
    h.handle_chunk_reply(4, 1, IMAGE, b, ChunkReply::Data(f.chunk(b)));
    step(&mut h, &mut asked);
    h.handle_written(5, IMAGE, 1, b, Ok(()));
    assert!(step(&mut h, &mut asked).is_empty(), "the next waits for its turn");
    let due = 2 + COMMIT_EVERY;
    assert!(h.poll_timeout().is_some_and(|t| t <= due), "{:?}", h.poll_timeout());
    h.handle_timeout(due - 1);
    assert!(step(&mut h, &mut asked).is_empty());
    h.handle_timeout(due);
    assert_eq!(step(&mut h, &mut asked), vec![vec![b]]);
    h.handle_committed(due + 1, IMAGE, 1, Ok(()));
    assert!(step(&mut h, &mut asked).is_empty());

    // The rest arrive well within one interval: the commit that makes the
    // image whole starts when the last chunk is written, and the install
    // once it ends.
    let seen = serve_all(&mut h, &f, asked, due + 2);
    let rest = commits(&seen);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].len(), CHUNKS as usize - 2);
    assert!(seen.iter().any(|e| matches!(e, Effect::Install { .. })), "{seen:?}");
}

#[test]
fn results_for_an_earlier_take_up_are_ignored_and_a_failed_write_starts_over() {
    let f = fixture();
    let mut h = with_image(&f, true);
    let c = chunk_requests(&meet(&mut h, 1, Bitfield::full(CHUNKS)), 1)[0];
    h.handle_chunk_reply(1, 1, IMAGE, c, ChunkReply::Data(f.chunk(c)));
    effects(&mut h);
    // Taken up again (epoch 2) while the write for epoch 1 runs.
    h.add_images(2, vec![(IMAGE, f.spec(2, Bitfield::new(CHUNKS), true))]);
    effects(&mut h);
    h.handle_written(3, IMAGE, 1, c, Ok(()));
    assert!(effects(&mut h).is_empty());
    assert!(!h.image(IMAGE).unwrap().have().get(c), "a write for the earlier take-up never counts");

    let e = meet(&mut h, 2, Bitfield::full(CHUNKS));
    let c = chunk_requests(&e, 2)[0];
    h.handle_chunk_reply(4, 2, IMAGE, c, ChunkReply::Data(f.chunk(c)));
    effects(&mut h);
    h.handle_written(5, IMAGE, 2, c, Err(DiskFailed));
    assert!(effects(&mut h).contains(&Effect::StartOver { image: IMAGE }));
    assert!(h.image(IMAGE).is_none());
}

#[test]
fn a_complete_image_is_served_and_never_installed_again() {
    let f = fixture();
    let mut h = host();
    h.add_images(0, vec![(IMAGE, f.spec(1, Bitfield::full(CHUNKS), true))]);
    let e = meet(&mut h, 1, Bitfield::new(CHUNKS));
    assert!(!e.iter().any(|e| matches!(e, Effect::Install { .. } | Effect::RequestChunk { .. })), "{e:?}");
    assert!(h.image(IMAGE).unwrap().is_available());
    assert_eq!(h.hello_images(&[]), vec![(IMAGE, Bitfield::full(CHUNKS))]);
}

#[test]
fn a_hello_names_the_asked_images_first_each_once_within_the_limit() {
    let map: BTreeMap<ImageId, ()> = (0..20).map(|k| (Uuid::from_u128(k), ())).collect();
    let id = Uuid::from_u128;
    let keys = |v: Vec<(&ImageId, &())>| v.into_iter().map(|(k, _)| *k).collect::<Vec<_>>();
    let got = keys(named_first(&map, &[id(19), id(3), id(99), id(19)], 16));
    assert_eq!(got[..2], [id(19), id(3)]);
    assert_eq!(got.len(), 16);
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 16, "{got:?}");
    assert_eq!(keys(named_first(&map, &[id(5), id(6), id(7)], 2)), [id(5), id(6)]);
    assert_eq!(named_first(&map, &[], 16).len(), 16);
    assert_eq!(named_first(&map, &[], 30).len(), 20);
}

#[test]
fn a_peer_that_refused_the_manifest_is_asked_again_once_it_announces_chunks() {
    let f = fixture();
    let mut h = with_image(&f, false);
    let e = meet(&mut h, 1, Bitfield::new(CHUNKS));
    assert!(e.contains(&Effect::RequestManifest { to: 1, image: IMAGE }));
    h.handle_manifest_reply(1, 1, IMAGE, ManifestReply::Refused(Refusal::NotHeld));
    assert!(effects(&mut h).is_empty(), "every peer tried: no request before the retry interval");
    // A chunk held means the manifest is held: asked at once.
    h.handle_notices(2, 1, vec![(IMAGE, Notice::Have(5))]);
    assert_eq!(effects(&mut h), vec![Effect::RequestManifest { to: 1, image: IMAGE }]);
}
