//! The transfer machine: everything one node decides about moving images
//! between its peers and its disk, as a sans-I/O state machine.
//!
//! # Contract
//! A [`Host`] never performs I/O, reads no clock and draws no randomness
//! but its swarms' seeds; the same inputs at the same times give the same
//! effects. The node's event loop and `netsim` drive the same code.
//!
//! Methods come in the groups of [`crate::swarm`]:
//! * **inputs** (`handle_*`, each with the time): peers connecting,
//!   saying hello and leaving; notices; requests from peers; replies to
//!   this node's requests; the end of disk work this node asked for; timers;
//! * **commands**: [`Host::add_images`] and [`Host::remove_image`], when the
//!   store's view of what may be served changes;
//! * **outputs**: [`Host::poll_effect`] drains [`Effect`]s, and
//!   [`Host::poll_timeout`] gives the next time [`Host::handle_timeout`]
//!   must run;
//! * **getters**: what a peer asking for a hello or a manifest is told, and
//!   each image's state.
//!
//! # What it decides
//! * **Meeting peers.** Each side of a connection sends a hello (its site,
//!   role and the bitfield of every image it swarms on). A peer's notices
//!   mean nothing without its site and role: until its hello is here they
//!   wait, up to [`FRAMES_BEFORE_HELLO`] frames and [`WAITING_BYTES_PER_PEER`]
//!   bytes per peer, and [`WAITING_BYTES`] for all peers. Images taken up while peers
//!   are connected are followed by a hello to each of them that names those
//!   images, [`MAX_HELLO_IMAGES`] at a time; a hello's answer names the
//!   images it named first.
//! * **Manifests.** A node that lacks an image's manifest asks one peer at a
//!   time, most complete first, and a second beside the first once that
//!   one has gone [`MANIFEST_HEDGE`] unanswered, and starts the image's
//!   swarm only with a manifest whose root is the list's ([`Transfer`]). A peer whose
//!   manifest does not match is banned.
//! * **Requests from peers.** A chunk request is answered exactly once:
//!   [`Effect::Serve`] when the swarm starts the upload, or
//!   [`Effect::Refuse`]: `NotEndorsed` for an image not served here,
//!   `NotHeld` before the manifest or the peer's hello, `Busy` when the
//!   swarm refuses, the peer cancels, or asks again while a request for the
//!   same chunk waits.
//! * **Replies to this node's requests.** Three outcomes stay apart to the
//!   ban decision: the peer lacks the chunk or is busy (ask elsewhere), the
//!   transport failed (ask elsewhere, no penalty), the peer sent bytes that
//!   are not the chunk ([`crate::manifest::ChunkError`], which bans it).
//!   Received bytes reach [`Effect::Write`] only as a
//!   [`VerifiedChunk`](crate::manifest::VerifiedChunk), checked against the verified manifest.
//! * **Disk.** A verified chunk is written once; the swarm hears of it once
//!   written, and may serve it; written chunks are made durable in group
//!   commits, one at a time per image and one per [`COMMIT_EVERY`] at most
//!   until the last chunk is written; the image is installed once every
//!   chunk is committed. Results that come back for an earlier take-up of
//!   the image (another epoch) are ignored. A failed write, commit or
//!   install drops the image ([`Effect::StartOver`]).
//! * **Bans.** A banned peer is ignored from then on; the I/O layer cuts the
//!   connection and reports it gone.

mod effect;
mod image;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

pub use effect::{ChunkReply, DiskFailed, Effect, ManifestReply, Notice, Offence};
pub use image::{COMMIT_EVERY, ImageSpec, MANIFEST_HEDGE, MANIFEST_RETRY, MANIFEST_TIMEOUT, Transfer};
use uuid::Uuid;

use crate::Error;
use crate::bitfield::Bitfield;
use crate::manifest::{ChunkBody, ChunkHash};
use crate::swarm::{self, Action, ChunkIndex, IdHasher, Micros, PeerId, PeerInfo, Reply};
use crate::wire::{MAX_HELLO_IMAGES, Refusal};

/// An image, by its list's identifier.
pub type ImageId = Uuid;

/// Notice frames kept, per peer, until its hello arrives.
pub const FRAMES_BEFORE_HELLO: usize = 64;

/// What notices kept until a peer's hello may take, per peer
/// ([`waiting_bytes`]): a full-size bitfield of each of eight images.
pub const WAITING_BYTES_PER_PEER: usize = 1 << 20;

/// What notices kept until their peers' hellos may take, for all peers.
pub const WAITING_BYTES: usize = 64 << 20;

/// About what a frame of notices takes in memory: its bitfields' bytes and
/// a little for each notice.
pub fn waiting_bytes(frame: &[(ImageId, Notice)]) -> usize {
    frame.iter().map(|(_, n)| 32 + if let Notice::Bitfield(b) = n { b.as_bytes().len() } else { 0 }).sum()
}

/// How many peers a node asks a tracker for, per image. Every chunk a node
/// receives costs a Have to each of its peers, so its connections multiply
/// its notice traffic; with the peers that dial in, a node ends up with
/// about twice this many, enough for rarest-first to see its swarm.
pub const TRACKER_WANT: u16 = 16;

/// A node dials peers while it has fewer connections than this.
pub const MAX_PEERS: usize = 64;

/// A node accepts connections while it has fewer than this.
pub const MAX_CONNECTIONS: u32 = 256;

/// Chunks of an image written but not committed: the image, the epoch
/// they were written for, and each chunk with its hash.
pub type Unsynced = (ImageId, u64, Vec<(ChunkIndex, ChunkHash)>);

/// What this node knows of a connected peer.
#[derive(Debug, Default)]
struct Peer {
    /// Its site and role, from its hello.
    info: Option<PeerInfo>,
    /// Notice frames that came before the hello.
    waiting: Vec<Vec<(ImageId, Notice)>>,
    /// What they take ([`waiting_bytes`]).
    waiting_bytes: usize,
    banned: bool,
}

/// One node's transfers of every image it swarms on.
#[derive(Debug)]
pub struct Host<B> {
    peers: HashMap<PeerId, Peer, BuildHasherDefault<IdHasher>>,
    /// What every peer's notices waiting for its hello take.
    waiting_bytes: usize,
    /// In a fixed order, so that runs replay.
    images: BTreeMap<ImageId, Transfer>,
    /// Chunk requests from peers waiting for the swarm's decision.
    inbound: HashSet<(ImageId, PeerId, ChunkIndex)>,
    effects: VecDeque<Effect<B>>,
}

impl<B: ChunkBody> Default for Host<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: ChunkBody> Host<B> {
    /// A node with no images and no peers.
    pub fn new() -> Self {
        Self {
            peers: HashMap::default(),
            waiting_bytes: 0,
            images: BTreeMap::new(),
            inbound: HashSet::new(),
            effects: VecDeque::new(),
        }
    }

    // ---- commands ----

    /// Takes up images to swarm on (replacing any state for the same
    /// images), and tells every peer already met about them. Returns the
    /// images that could not be taken up, with why.
    pub fn add_images(&mut self, now: Micros, specs: Vec<(ImageId, ImageSpec)>) -> Vec<(ImageId, Error)> {
        let mut added = Vec::new();
        let mut failed = Vec::new();
        for (image, spec) in specs {
            self.remove_image(image);
            match Transfer::new(spec) {
                Ok(t) => {
                    self.images.insert(image, t);
                    added.push(image);
                }
                Err(e) => failed.push((image, e)),
            }
        }
        // A peer that knew this node for an earlier state of an image would
        // not answer a bare bitfield: a hello that names the images asks
        // for its own.
        let mut met: Vec<PeerId> = self.peers.iter().filter(|(_, p)| p.info.is_some()).map(|(&id, _)| id).collect();
        met.sort_unstable();
        for peer in met {
            for names in added.chunks(MAX_HELLO_IMAGES) {
                let images = self.hello_images(names);
                self.effects.push_back(Effect::Hello { to: peer, images });
            }
        }
        for image in added {
            self.drain(now, image);
        }
        failed
    }

    /// Stops swarming on `image`: requests waiting for it are refused, and
    /// disk results for it are ignored from now on.
    pub fn remove_image(&mut self, image: ImageId) {
        if self.images.remove(&image).is_none() {
            return;
        }
        let mut waiting: Vec<_> = self.inbound.iter().filter(|k| k.0 == image).copied().collect();
        waiting.sort_unstable();
        for (image, to, index) in waiting {
            self.inbound.remove(&(image, to, index));
            self.effects.push_back(Effect::Refuse { to, image, index, refusal: Refusal::NotEndorsed });
        }
    }

    // ---- inputs: peers ----

    /// A connection to `peer` is up: it gets this node's hello.
    pub fn handle_connected(&mut self, _now: Micros, peer: PeerId) {
        self.peers.entry(peer).or_default();
        let images = self.hello_images(&[]);
        self.effects.push_back(Effect::Hello { to: peer, images });
    }

    /// `peer`'s hello (asked or answered): its site, role and images.
    pub fn handle_hello(&mut self, now: Micros, peer: PeerId, info: PeerInfo, images: Vec<(ImageId, Bitfield)>) {
        let p = self.peers.entry(peer).or_default();
        if p.banned {
            return;
        }
        p.info = Some(info);
        let waiting = std::mem::take(&mut p.waiting);
        self.waiting_bytes -= std::mem::take(&mut p.waiting_bytes);
        for (image, bits) in images {
            if let Some(t) = self.images.get_mut(&image) {
                t.peer_bitfield(now, peer, info, bits);
                self.drain(now, image);
            }
        }
        for frame in waiting {
            self.apply_notices(now, peer, info, frame);
        }
        self.ask_manifests(now);
    }

    /// A frame of notices from `peer`, applied in order once its hello is
    /// here. Returns `false` if the frame was dropped: it came before the
    /// hello, beyond [`FRAMES_BEFORE_HELLO`], [`WAITING_BYTES_PER_PEER`] or,
    /// for all peers, [`WAITING_BYTES`].
    pub fn handle_notices(&mut self, now: Micros, peer: PeerId, frame: Vec<(ImageId, Notice)>) -> bool {
        let p = self.peers.entry(peer).or_default();
        if p.banned {
            return true;
        }
        let Some(info) = p.info else {
            let bytes = waiting_bytes(&frame);
            if p.waiting.len() >= FRAMES_BEFORE_HELLO
                || p.waiting_bytes + bytes > WAITING_BYTES_PER_PEER
                || self.waiting_bytes + bytes > WAITING_BYTES
            {
                return false;
            }
            p.waiting.push(frame);
            p.waiting_bytes += bytes;
            self.waiting_bytes += bytes;
            return true;
        };
        self.apply_notices(now, peer, info, frame);
        self.ask_manifests(now);
        true
    }

    fn apply_notices(&mut self, now: Micros, peer: PeerId, info: PeerInfo, frame: Vec<(ImageId, Notice)>) {
        let mut touched: Vec<ImageId> = Vec::new();
        for (image, notice) in frame {
            if let Notice::Cancel(index) = notice
                && self.inbound.remove(&(image, peer, index))
            {
                self.effects.push_back(Effect::Refuse { to: peer, image, index, refusal: Refusal::Busy });
            }
            let Some(t) = self.images.get_mut(&image) else { continue };
            match notice {
                Notice::Bitfield(bits) => t.peer_bitfield(now, peer, info, bits),
                Notice::Have(i) => t.peer_message(now, peer, swarm::Message::Have(i)),
                Notice::Cancel(i) => t.peer_message(now, peer, swarm::Message::Cancel(i)),
            }
            if !touched.contains(&image) {
                touched.push(image);
            }
        }
        for image in touched {
            self.drain(now, image);
        }
    }

    /// The connection to `peer` is gone.
    pub fn handle_disconnected(&mut self, now: Micros, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            self.waiting_bytes -= p.waiting_bytes;
        }
        self.forget(now, peer);
        self.ask_manifests(now);
    }

    // ---- inputs: requests from peers ----

    /// `peer` asks for chunk `index` of `image`; answered by a later
    /// [`Effect::Serve`] or [`Effect::Refuse`].
    pub fn handle_chunk_request(&mut self, now: Micros, peer: PeerId, image: ImageId, index: ChunkIndex, insist: bool) {
        let refuse = |refusal| Effect::Refuse { to: peer, image, index, refusal };
        if self.peers.get(&peer).is_none_or(|p| p.banned) {
            return self.effects.push_back(refuse(Refusal::NotHeld));
        }
        let Some(t) = self.images.get_mut(&image) else {
            return self.effects.push_back(refuse(Refusal::NotEndorsed));
        };
        let Some(s) = t.swarm.as_mut().filter(|s| s.has_peer(peer)) else {
            return self.effects.push_back(refuse(Refusal::NotHeld));
        };
        if !self.inbound.insert((image, peer, index)) {
            return self.effects.push_back(refuse(Refusal::Busy));
        }
        s.handle_message(
            now,
            peer,
            if insist { swarm::Message::Insist(index) } else { swarm::Message::Request(index) },
        );
        self.drain(now, image);
    }

    /// An upload started with [`Effect::Serve`] ended (sent, or aborted).
    pub fn handle_upload_done(&mut self, now: Micros, peer: PeerId, image: ImageId, index: ChunkIndex) {
        if let Some(s) = self.images.get_mut(&image).and_then(|t| t.swarm.as_mut()) {
            s.handle_upload_done(now, peer, index);
            self.drain(now, image);
        }
    }

    // ---- inputs: replies ----

    /// What became of a chunk request this node sent.
    pub fn handle_chunk_reply(
        &mut self,
        now: Micros,
        peer: PeerId,
        image: ImageId,
        index: ChunkIndex,
        reply: ChunkReply<B>,
    ) {
        if self.peers.get(&peer).is_some_and(|p| p.banned) {
            return;
        }
        let Some(t) = self.images.get_mut(&image) else { return };
        let (Some(s), Some(m)) = (t.swarm.as_mut(), t.manifest.as_ref()) else { return };
        let outcome = match reply {
            ChunkReply::Refused(_) => Reply::Refused,
            ChunkReply::Failed => Reply::Failed,
            ChunkReply::Data(body) => match m.verify_chunk(index, body) {
                Err(e) => Reply::Corrupt(e),
                Ok(_) if s.have().get(index) => Reply::Verified,
                // The first copy's write settles this request too: the swarm
                // cancels the duplicates it knows of once it is written.
                Ok(_) if t.writing.contains_key(&index) => return,
                Ok(chunk) => {
                    t.writing.insert(index, (peer, chunk.hash()));
                    let epoch = t.epoch;
                    return self.effects.push_back(Effect::Write { image, epoch, chunk });
                }
            },
        };
        s.handle_reply(now, peer, index, outcome);
        self.drain(now, image);
    }

    /// What became of a manifest request this node sent.
    pub fn handle_manifest_reply(&mut self, now: Micros, peer: PeerId, image: ImageId, reply: ManifestReply) {
        if self.peers.get(&peer).is_some_and(|p| p.banned) {
            return;
        }
        let Some(t) = self.images.get_mut(&image) else { return };
        if t.manifest.is_some() {
            return;
        }
        match reply {
            ManifestReply::Hashes(hashes) => match t.set_manifest(now, hashes) {
                Ok(()) => tracing::debug!(%image, peer, "manifest received and matches the list"),
                Err(e) => {
                    tracing::warn!(%image, peer, error = %e, "peer sent a manifest that does not match the list");
                    t.manifest_failed(now, peer);
                    self.ban(now, peer, Offence::Manifest { image });
                }
            },
            ManifestReply::Refused(_) | ManifestReply::Failed => t.manifest_failed(now, peer),
        }
        self.drain(now, image);
        self.ask_manifests(now);
    }

    // ---- inputs: disk ----

    /// The write of chunk `index` asked for by [`Effect::Write`] ended.
    pub fn handle_written(
        &mut self,
        now: Micros,
        image: ImageId,
        epoch: u64,
        index: ChunkIndex,
        result: Result<(), DiskFailed>,
    ) {
        let Some(t) = self.images.get_mut(&image).filter(|t| t.epoch == epoch) else { return };
        let Some((from, hash)) = t.writing.remove(&index) else { return };
        if result.is_err() {
            return self.start_over(image);
        }
        let Some(s) = t.swarm.as_mut() else { return };
        s.handle_reply(now, from, index, Reply::Verified);
        t.unsynced.push((index, hash));
        self.commit(now, image);
        self.drain(now, image);
    }

    /// The commit asked for by [`Effect::Commit`] ended.
    pub fn handle_committed(&mut self, now: Micros, image: ImageId, epoch: u64, result: Result<(), DiskFailed>) {
        let Some(t) = self.images.get_mut(&image).filter(|t| t.epoch == epoch) else { return };
        t.committing = false;
        if result.is_err() {
            // Chunks announced here may not be on disk.
            return self.start_over(image);
        }
        self.commit(now, image);
        self.install(image);
    }

    /// The install asked for by [`Effect::Install`] ended.
    pub fn handle_installed(&mut self, _now: Micros, image: ImageId, epoch: u64, result: Result<(), DiskFailed>) {
        let Some(t) = self.images.get_mut(&image).filter(|t| t.epoch == epoch) else { return };
        t.installing = false;
        match result {
            Ok(()) => t.available = true,
            Err(DiskFailed) => self.start_over(image),
        }
    }

    // ---- inputs: time ----

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Micros) {
        let images: Vec<ImageId> = self.images.keys().copied().collect();
        for image in images {
            let Some(t) = self.images.get_mut(&image) else { continue };
            if let Some(s) = t.swarm.as_mut().filter(|s| s.poll_timeout().is_some_and(|at| at <= now)) {
                s.handle_timeout(now);
                self.drain(now, image);
            }
            self.commit(now, image);
        }
        self.ask_manifests(now);
    }

    // ---- outputs ----

    /// The next thing the I/O layer must do.
    pub fn poll_effect(&mut self) -> Option<Effect<B>> {
        self.effects.pop_front()
    }

    /// When [`Host::handle_timeout`] must run next. It may be earlier than
    /// needed, never later.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.images
            .values()
            .flat_map(|t| {
                [t.swarm.as_ref().and_then(swarm::Swarm::poll_timeout), t.manifest_deadline(), t.commit_due()]
            })
            .flatten()
            .min()
    }

    // ---- getters ----

    /// This node's hello: the bitfields of the images in `first` that it
    /// swarms on (each once, in that order), then of others, up to
    /// [`MAX_HELLO_IMAGES`].
    pub fn hello_images(&self, first: &[ImageId]) -> Vec<(ImageId, Bitfield)> {
        named_first(&self.images, first, MAX_HELLO_IMAGES).into_iter().map(|(id, t)| (*id, t.have().clone())).collect()
    }

    /// The answer to a peer's manifest request.
    pub fn manifest_for(&self, image: ImageId) -> Result<Arc<[ChunkHash]>, Refusal> {
        let t = self.images.get(&image).ok_or(Refusal::NotEndorsed)?;
        t.manifest.as_ref().map(|m| m.shared_hashes()).ok_or(Refusal::NotHeld)
    }

    /// One image's transfer.
    pub fn image(&self, image: ImageId) -> Option<&Transfer> {
        self.images.get(&image)
    }

    /// Every image's transfer.
    pub fn images(&self) -> impl Iterator<Item = (&ImageId, &Transfer)> {
        self.images.iter()
    }

    /// Hands over, for each image, the chunks written but not committed
    /// (for a stopping node to commit).
    pub fn take_unsynced(&mut self) -> Vec<Unsynced> {
        self.images
            .iter_mut()
            .filter(|(_, t)| !t.unsynced.is_empty())
            .map(|(&id, t)| (id, t.epoch, std::mem::take(&mut t.unsynced)))
            .collect()
    }

    // ---- internals ----

    /// Carries out what `image`'s swarm asks for.
    fn drain(&mut self, now: Micros, image: ImageId) {
        loop {
            let Some(action) = self.images.get_mut(&image).and_then(|t| t.swarm.as_mut()?.poll_action()) else {
                return;
            };
            match action {
                Action::Send { to, msg } => {
                    let effect = match msg {
                        swarm::Message::Bitfield(b) => Effect::Notice { to, image, notice: Notice::Bitfield(b) },
                        swarm::Message::Have(i) => Effect::Notice { to, image, notice: Notice::Have(i) },
                        swarm::Message::Cancel(i) => Effect::Notice { to, image, notice: Notice::Cancel(i) },
                        swarm::Message::Request(index) => Effect::RequestChunk { to, image, index, insist: false },
                        swarm::Message::Insist(index) => Effect::RequestChunk { to, image, index, insist: true },
                    };
                    self.effects.push_back(effect);
                }
                Action::Upload { to, chunk } => {
                    if self.inbound.remove(&(image, to, chunk)) {
                        self.effects.push_back(Effect::Serve { to, image, index: chunk });
                    } else if let Some(s) = self.images.get_mut(&image).and_then(|t| t.swarm.as_mut()) {
                        // The request was withdrawn meanwhile: free the slot.
                        s.handle_upload_done(now, to, chunk);
                    }
                }
                Action::Refuse { to, chunk } => {
                    if self.inbound.remove(&(image, to, chunk)) {
                        self.effects.push_back(Effect::Refuse { to, image, index: chunk, refusal: Refusal::Busy });
                    }
                }
                Action::Ban { peer, error } => self.ban(now, peer, Offence::Chunk { image, error }),
                Action::Completed => self.install(image),
            }
        }
    }

    /// Bans `peer`: from now on nothing it says counts, and every image
    /// forgets it at once (its connection closes later).
    fn ban(&mut self, now: Micros, peer: PeerId, offence: Offence) {
        let p = self.peers.entry(peer).or_default();
        if std::mem::replace(&mut p.banned, true) {
            return;
        }
        self.effects.push_back(Effect::Ban { peer, offence });
        self.forget(now, peer);
    }

    /// Drops `peer`'s waiting requests and takes it out of every image.
    fn forget(&mut self, now: Micros, peer: PeerId) {
        self.inbound.retain(|k| k.1 != peer);
        let images: Vec<ImageId> = self.images.keys().copied().collect();
        for image in images {
            if let Some(t) = self.images.get_mut(&image) {
                t.disconnected(now, peer);
            }
            self.drain(now, image);
        }
    }

    /// Asks for the manifests of images that lack one.
    fn ask_manifests(&mut self, now: Micros) {
        for (&image, t) in &mut self.images {
            if let Some(to) = t.next_manifest_source(now) {
                self.effects.push_back(Effect::RequestManifest { to, image });
            }
        }
    }

    /// Commits the chunks of `image` written so far, if one is due
    /// ([`Transfer::commit_due`]); chunks written meanwhile wait for the
    /// next.
    fn commit(&mut self, now: Micros, image: ImageId) {
        let Some(t) = self.images.get_mut(&image) else { return };
        if t.commit_due().is_none_or(|at| at > now) {
            return;
        }
        t.committing = true;
        t.next_commit = now + COMMIT_EVERY;
        let chunks = std::mem::take(&mut t.unsynced);
        self.effects.push_back(Effect::Commit { image, epoch: t.epoch, chunks });
    }

    fn install(&mut self, image: ImageId) {
        let Some(t) = self.images.get_mut(&image) else { return };
        if t.ready_to_install() {
            t.installing = true;
            self.effects.push_back(Effect::Install { image, epoch: t.epoch });
        }
    }

    fn start_over(&mut self, image: ImageId) {
        self.remove_image(image);
        self.effects.push_back(Effect::StartOver { image });
    }
}

/// The entries of `map` whose keys are in `first` (each once, in that
/// order), then the others, `max` in all.
fn named_first<'a, V>(map: &'a BTreeMap<ImageId, V>, first: &[ImageId], max: usize) -> Vec<(&'a ImageId, &'a V)> {
    let mut out: Vec<(&ImageId, &V)> = Vec::with_capacity(max.min(map.len()));
    for k in first {
        if let Some(e) = map.get_key_value(k)
            && !out.iter().any(|(o, _)| *o == e.0)
        {
            out.push(e);
        }
    }
    out.truncate(max);
    out.extend(map.iter().filter(|(k, _)| !first.contains(k)).take(max - out.len()));
    out
}

#[cfg(test)]
mod tests;
