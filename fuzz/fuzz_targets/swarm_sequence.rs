//! Drives the transfer machine (`proto::transfer::Host`, which holds each
//! image's `proto::swarm`) with an arbitrary sequence of peer messages,
//! replies, disk results and clock steps. Honest peers send the image's
//! true bytes and manifest; the sequence also makes peers send forged
//! chunks, wrong manifests and refusals, and makes disk work fail.
//!
//! Checked after every step:
//! * nothing reaches the disk but the image's true bytes, for the current
//!   take-up, and each chunk is written at most once per take-up;
//! * a chunk is served only while held and only in answer to a request
//!   that is still open, and each request is answered at most once;
//! * the image is installed only once every chunk is committed;
//! * only a peer that sent bad data is banned, and a banned peer is never
//!   asked for anything again.
#![no_main]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proto::bitfield::Bitfield;
use proto::manifest::{ChunkHash, ChunkSize, ManifestBuilder, ManifestRoot};
use proto::swarm::{self, PeerInfo, Role};
use proto::transfer::{ChunkReply, DiskFailed, Effect, Host, ImageId, ImageSpec, ManifestReply, Notice};
use proto::wire::Refusal;
use uuid::Uuid;

const CHUNK: u64 = 1024;
const CHUNKS: u32 = 12;
const IMAGE: ImageId = Uuid::from_u128(0x1111);
const PEERS: u8 = 4;

/// The image every honest peer holds.
struct Image {
    data: Vec<u8>,
    hashes: Arc<[ChunkHash]>,
    root: ManifestRoot,
}

impl Image {
    fn new() -> Self {
        let data: Vec<u8> = (0..CHUNK * u64::from(CHUNKS) - 300).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = ManifestBuilder::new(ChunkSize::new(CHUNK).expect("chunk size"));
        b.update(&data);
        let m = b.finish();
        Self { root: m.root(), hashes: m.shared_hashes(), data }
    }

    fn chunk(&self, i: u32) -> Vec<u8> {
        let start = (u64::from(i) * CHUNK).min(self.data.len() as u64) as usize;
        let end = (start + CHUNK as usize).min(self.data.len());
        self.data[start..end].to_vec()
    }

    fn spec(&self, epoch: u64, have: Bitfield, with_manifest: bool) -> ImageSpec {
        ImageSpec {
            epoch,
            root: self.root,
            chunk_size: ChunkSize::new(CHUNK).expect("chunk size"),
            size: self.data.len() as u64,
            available: have.is_full(),
            have,
            hashes: with_manifest.then(|| self.hashes.clone()),
            swarm: swarm::Config { random_first: 0, ..swarm::Config::default() },
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Data {
    True,
    Flipped(u16),
    Truncated(u16),
    Foreign(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Reply {
    Data(Data),
    Refused,
    Failed,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Advance(u16),
    Connect(u8),
    Disconnect(u8),
    Hello { peer: u8, have: u16, master: bool },
    Have { peer: u8, index: u8 },
    Cancel { peer: u8, index: u8 },
    Bitfield { peer: u8, have: u16 },
    Request { peer: u8, index: u8, insist: bool },
    UploadDone { peer: u8, index: u8 },
    /// Answers the open chunk request picked by `pick`.
    ChunkReply { pick: u8, reply: Reply },
    /// Answers the open manifest request, with the true hashes or not.
    ManifestReply { honest: bool, refuse: bool },
    /// Ends the oldest disk work, well or not.
    Disk { ok: bool },
    TakeUpAgain { manifest: bool },
}

#[derive(Debug, Arbitrary)]
struct Input {
    have: u16,
    manifest: bool,
    ops: Vec<Op>,
}

/// What the driver knows, to check the machine's effects against.
struct World {
    img: Image,
    host: Host<Vec<u8>>,
    now: u64,
    epoch: u64,
    /// Chunks durable here in this take-up (the spec's and the committed).
    committed: Bitfield,
    /// Chunks the machine may serve (written or committed).
    held: Bitfield,
    written: BTreeSet<u32>,
    chunk_asks: Vec<(u64, u32)>,
    manifest_ask: Option<u64>,
    disk: Vec<Effect<Vec<u8>>>,
    /// Requests from peers not yet answered, by peer and chunk (a peer
    /// may ask for a chunk again before the first answer).
    inbound: HashMap<(u64, u32), u32>,
    liars: HashSet<u64>,
    banned: HashSet<u64>,
}

fn peer(p: u8) -> u64 {
    u64::from(p % PEERS) + 1
}

fn index(i: u8) -> u32 {
    // Mostly in range, sometimes past the end.
    u32::from(i % (CHUNKS as u8 + 2))
}

fn mask(b: &Bitfield) -> u16 {
    (0..CHUNKS).filter(|&i| b.get(i)).fold(0, |a, i| a | 1 << i)
}

fn bits(have: u16) -> Bitfield {
    let mut b = Bitfield::new(CHUNKS);
    (0..CHUNKS).filter(|i| have & (1 << i) != 0).for_each(|i| _ = b.set(i));
    b
}

impl World {
    fn new(have: u16, manifest: bool) -> Self {
        let img = Image::new();
        let mut w = Self {
            host: Host::new(),
            now: 0,
            epoch: 0,
            committed: Bitfield::new(CHUNKS),
            held: Bitfield::new(CHUNKS),
            written: BTreeSet::new(),
            chunk_asks: Vec::new(),
            manifest_ask: None,
            disk: Vec::new(),
            inbound: HashMap::new(),
            liars: HashSet::new(),
            banned: HashSet::new(),
            img,
        };
        w.take_up(have, manifest);
        w
    }

    fn take_up(&mut self, have: u16, manifest: bool) {
        self.host.remove_image(IMAGE);
        self.epoch += 1;
        // Without the manifest nothing can be held yet.
        let have = if manifest { bits(have) } else { Bitfield::new(CHUNKS) };
        self.committed = have.clone();
        self.held = have.clone();
        self.written.clear();
        self.disk.clear();
        self.chunk_asks.clear();
        self.manifest_ask = None;
        let spec = self.img.spec(self.epoch, have, manifest);
        assert!(self.host.add_images(self.now, vec![(IMAGE, spec)]).is_empty());
    }

    fn step(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Advance(ms) => {
                self.now += u64::from(ms) * 1000;
                if self.host.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.host.handle_timeout(self.now);
                }
            }
            Op::Connect(p) => self.host.handle_connected(now, peer(p)),
            Op::Disconnect(p) => self.host.handle_disconnected(now, peer(p)),
            Op::Hello { peer: p, have, master } => {
                let role = if master { Role::Master } else { Role::Worker };
                let info = PeerInfo { site: 0, role, key: u64::from(p) };
                self.host.handle_hello(now, peer(p), info, vec![(IMAGE, bits(have))]);
            }
            Op::Have { peer: p, index: i } => _ = self.notice(p, Notice::Have(index(i))),
            Op::Cancel { peer: p, index: i } => _ = self.notice(p, Notice::Cancel(index(i))),
            Op::Bitfield { peer: p, have } => _ = self.notice(p, Notice::Bitfield(bits(have))),
            Op::Request { peer: p, index: i, insist } => {
                *self.inbound.entry((peer(p), index(i))).or_default() += 1;
                self.host.handle_chunk_request(now, peer(p), IMAGE, index(i), insist);
            }
            Op::UploadDone { peer: p, index: i } => self.host.handle_upload_done(now, peer(p), IMAGE, index(i)),
            Op::ChunkReply { pick, reply } => {
                if self.chunk_asks.is_empty() {
                    return;
                }
                let (to, i) = self.chunk_asks.remove(usize::from(pick) % self.chunk_asks.len());
                let reply = match reply {
                    Reply::Refused => ChunkReply::Refused(Refusal::Busy),
                    Reply::Failed => ChunkReply::Failed,
                    Reply::Data(d) => {
                        let mut bytes = self.img.chunk(i);
                        match d {
                            Data::True => {}
                            Data::Flipped(at) if !bytes.is_empty() => {
                                let at = usize::from(at) % bytes.len();
                                bytes[at] ^= 1;
                            }
                            Data::Flipped(_) => bytes.push(0),
                            Data::Truncated(n) => bytes.truncate(usize::from(n) % (bytes.len() + 1)),
                            Data::Foreign(other) => bytes = other,
                        }
                        if bytes != self.img.chunk(i) {
                            self.liars.insert(to);
                        }
                        ChunkReply::Data(bytes)
                    }
                };
                self.host.handle_chunk_reply(now, to, IMAGE, i, reply);
            }
            Op::ManifestReply { honest, refuse } => {
                let Some(to) = self.manifest_ask.take() else { return };
                let reply = if refuse {
                    ManifestReply::Refused(Refusal::NotHeld)
                } else if honest {
                    ManifestReply::Hashes(self.img.hashes.clone())
                } else {
                    self.liars.insert(to);
                    let mut forged = self.img.hashes.to_vec();
                    forged[0] = [0; 32];
                    ManifestReply::Hashes(forged.into())
                };
                self.host.handle_manifest_reply(now, to, IMAGE, reply);
            }
            Op::Disk { ok } => {
                if self.disk.is_empty() {
                    return;
                }
                let result = if ok { Ok(()) } else { Err(DiskFailed) };
                match self.disk.remove(0) {
                    Effect::Write { epoch, chunk, .. } => {
                        if ok && epoch == self.epoch {
                            self.held.set(chunk.index());
                        }
                        self.host.handle_written(now, IMAGE, epoch, chunk.index(), result);
                    }
                    Effect::Commit { epoch, chunks, .. } => {
                        if ok && epoch == self.epoch {
                            chunks.iter().for_each(|(i, _)| _ = self.committed.set(*i));
                        }
                        self.host.handle_committed(now, IMAGE, epoch, result);
                    }
                    Effect::Install { epoch, .. } => self.host.handle_installed(now, IMAGE, epoch, result),
                    other => unreachable!("not disk work: {other:?}"),
                }
            }
            Op::TakeUpAgain { manifest } => self.take_up(mask(&self.committed), manifest),
        }
        self.check_effects();
    }

    /// Whether the peer an operation names may reach the machine: a banned
    /// peer's connection is cut and refused by the I/O layer.
    fn admitted(&self, op: &Op) -> bool {
        let named = match op {
            Op::Connect(p) | Op::Disconnect(p) => *p,
            Op::Hello { peer, .. }
            | Op::Have { peer, .. }
            | Op::Cancel { peer, .. }
            | Op::Bitfield { peer, .. }
            | Op::Request { peer, .. }
            | Op::UploadDone { peer, .. } => *peer,
            _ => return true,
        };
        !self.banned.contains(&peer(named))
    }

    /// Takes one open request of `to` for `index`; whether there was one.
    fn answer(&mut self, to: u64, index: u32) -> bool {
        match self.inbound.get_mut(&(to, index)) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => _ = self.inbound.remove(&(to, index)),
            None => return false,
        }
        true
    }

    fn notice(&mut self, p: u8, n: Notice) -> bool {
        self.host.handle_notices(self.now, peer(p), vec![(IMAGE, n)])
    }

    fn check_effects(&mut self) {
        let mut start_over = false;
        let mut cut = Vec::new();
        while let Some(e) = self.host.poll_effect() {
            match &e {
                Effect::Write { image, epoch, chunk } => {
                    assert_eq!((*image, *epoch), (IMAGE, self.epoch), "a write for another take-up");
                    assert_eq!(chunk.body(), &self.img.chunk(chunk.index()), "unverified bytes reach the disk");
                    assert!(self.written.insert(chunk.index()), "chunk {} written twice", chunk.index());
                    assert!(!self.committed.get(chunk.index()), "a durable chunk written again");
                    self.disk.push(e);
                }
                Effect::Commit { epoch, chunks, .. } => {
                    assert_eq!(*epoch, self.epoch);
                    for (i, h) in chunks {
                        assert!(self.held.get(*i), "chunk {i} committed before its write ended");
                        assert_eq!(h, &self.img.hashes[*i as usize]);
                    }
                    self.disk.push(e);
                }
                Effect::Install { epoch, .. } => {
                    assert_eq!(*epoch, self.epoch);
                    assert!(self.committed.is_full(), "installed before every chunk is durable");
                    self.disk.push(e);
                }
                Effect::Serve { to, image, index } => {
                    assert_eq!(*image, IMAGE);
                    assert!(self.held.get(*index), "chunk {index} served but not held");
                    assert!(self.answer(*to, *index), "served without an open request");
                }
                Effect::Refuse { to, index, .. } => {
                    assert!(self.answer(*to, *index), "refused without an open request");
                }
                Effect::RequestChunk { to, index, .. } => {
                    assert!(!self.banned.contains(to), "a banned peer asked for a chunk");
                    assert!(*index < CHUNKS);
                    self.chunk_asks.push((*to, *index));
                }
                Effect::RequestManifest { to, .. } => {
                    assert!(!self.banned.contains(to), "a banned peer asked for the manifest");
                    self.manifest_ask = Some(*to);
                }
                Effect::Ban { peer, .. } => {
                    assert!(self.liars.contains(peer), "peer {peer} banned but sent nothing bad");
                    self.banned.insert(*peer);
                    self.chunk_asks.retain(|(p, _)| p != peer);
                    if self.manifest_ask == Some(*peer) {
                        self.manifest_ask = None;
                    }
                    cut.push(*peer);
                }
                Effect::StartOver { .. } => start_over = true,
                Effect::Hello { .. } | Effect::Notice { .. } => {}
            }
        }
        // What the I/O layer does about the effects, whose own effects are
        // checked in turn.
        for p in &cut {
            self.host.handle_disconnected(self.now, *p);
        }
        if start_over {
            // The node takes the image up again from what its store records.
            self.take_up(mask(&self.committed), true);
        }
        if start_over || !cut.is_empty() {
            self.check_effects();
        }
    }
}

fuzz_target!(|input: Input| {
    let mut w = World::new(input.have, input.manifest);
    w.check_effects();
    for op in input.ops.into_iter().take(512) {
        if w.admitted(&op) {
            w.step(op);
        }
    }
});
