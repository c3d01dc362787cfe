//! One image's transfer on one node: its manifest, its [`Swarm`], and the
//! gating of received chunks between verification and installation.
//!
//! # Contract
//! These are [`Transfer`]'s own states; [`super::Host`] drives them and
//! turns what they decide into effects. Every method leaves these holding:
//! * the swarm exists only once a manifest whose root is the list's is
//!   known; until then peers wait in `early`, with what they hold;
//! * one manifest request is open, or two once the first has gone
//!   [`MANIFEST_HEDGE`] unanswered and another peer may be asked; a peer
//!   that failed to hand the manifest over is asked again only after every
//!   other peer was, and not before [`MANIFEST_RETRY`] has passed, unless it
//!   announces chunks since (a peer that holds chunks holds the manifest);
//! * a verified chunk is written once: `writing` holds the chunks whose
//!   write is under way, and a second copy that arrives meanwhile is
//!   dropped;
//! * the swarm hears of a chunk only once it is written; the chunk's record
//!   follows in a group commit, one commit at a time (`unsynced`, then
//!   `committing`), and one per [`COMMIT_EVERY`] at most until every chunk
//!   is written;
//! * the image is installed only once every chunk is committed, and once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::Error;
use crate::bitfield::Bitfield;
use crate::manifest::{ChunkHash, ChunkSize, Manifest, ManifestRoot, VerifiedManifest};
use crate::swarm::{self, ChunkIndex, Micros, PeerId, PeerInfo, Swarm};
use crate::wire::MAX_CHUNK_BYTES;

/// How long a manifest request may stay unanswered before it counts as
/// failed.
pub const MANIFEST_TIMEOUT: Micros = 10_000_000;

/// How long a manifest request may stay unanswered before a second peer is
/// asked beside it. A peer that holds the manifest sends it within a round
/// trip and the manifest's own transfer; one that stays silent (stuck,
/// overloaded or lying) would otherwise hold the image's start for
/// [`MANIFEST_TIMEOUT`], which a large manifest over a busy link needs.
pub const MANIFEST_HEDGE: Micros = 1_000_000;

/// Manifest requests open at once at most.
const MANIFEST_ASKS: usize = 2;

/// How long to wait before asking peers again once each has failed to hand
/// the manifest over.
pub const MANIFEST_RETRY: Micros = 200_000;

/// The least time between the starts of two commits of one image while
/// chunks still come. A commit syncs the image's file and the store; taken
/// as soon as the last one ended, it would sync every chunk or two of a
/// fast download, and those syncs cost the host CPU its swarm needs. A
/// crash loses at most this long's chunks, which are fetched again. The
/// commit that makes the image complete is not held back.
pub const COMMIT_EVERY: Micros = 250_000;

/// What a node knows of an image when it takes it up.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Tells this take-up's disk work apart from an earlier one's: effects
    /// carry it, and results that come back with another are ignored.
    pub epoch: u64,
    /// The manifest root the signed list vouches for.
    pub root: ManifestRoot,
    /// The chunk size.
    pub chunk_size: ChunkSize,
    /// The image's size in bytes.
    pub size: u64,
    /// The chunks already durable here.
    pub have: Bitfield,
    /// The stored manifest, when every chunk's hash is known here.
    pub hashes: Option<Arc<[ChunkHash]>>,
    /// Whether the image is complete and installed here.
    pub available: bool,
    /// How its swarm decides.
    pub swarm: swarm::Config,
}

/// Where a manifest request stands.
#[derive(Debug, Default)]
struct ManifestAsk {
    /// The peers asked, and when, oldest first.
    open: Vec<(PeerId, Micros)>,
    /// Peers that failed to hand it over, in the order asked.
    tried: Vec<PeerId>,
    /// Once every peer was tried: not before this again.
    retry_at: Micros,
}

/// One image's transfer state.
#[derive(Debug)]
pub struct Transfer {
    pub(super) epoch: u64,
    root: ManifestRoot,
    chunk_size: ChunkSize,
    size: u64,
    chunks: u32,
    pub(super) manifest: Option<Arc<VerifiedManifest>>,
    swarm_cfg: swarm::Config,
    pub(super) swarm: Option<Swarm>,
    /// Durable chunks known before the swarm exists.
    have: Bitfield,
    /// Peers (and their have-maps) met before the manifest was known, in a
    /// fixed order so that runs replay.
    early: BTreeMap<PeerId, (PeerInfo, Bitfield)>,
    ask: ManifestAsk,
    /// Verified chunks being written, with the peer each came from and its
    /// hash.
    pub(super) writing: HashMap<ChunkIndex, (PeerId, ChunkHash)>,
    /// Written and known to the swarm, not yet durable: the next commit's.
    pub(super) unsynced: Vec<(ChunkIndex, ChunkHash)>,
    pub(super) committing: bool,
    /// When the next commit may start, unless every chunk is written.
    pub(super) next_commit: Micros,
    pub(super) installing: bool,
    pub(super) available: bool,
}

impl Transfer {
    /// The state for `spec`. A stored manifest that no longer matches the
    /// root is ignored: the manifest is then asked of peers.
    pub(super) fn new(spec: ImageSpec) -> Result<Self, Error> {
        if spec.chunk_size.get() > MAX_CHUNK_BYTES as u64 {
            return Err(Error::ChunkSize(spec.chunk_size.get()));
        }
        let chunks = u32::try_from(spec.chunk_size.chunk_count(spec.size))
            .map_err(|_| Error::Field { at: "image".into(), reason: "more than 2^32 chunks".into() })?;
        if spec.have.len() != chunks {
            return Err(Error::Field {
                at: "image".into(),
                reason: format!("{} chunks held of {} in a bitfield for {chunks}", spec.have.count(), spec.have.len()),
            });
        }
        let mut t = Self {
            epoch: spec.epoch,
            root: spec.root,
            chunk_size: spec.chunk_size,
            size: spec.size,
            chunks,
            manifest: None,
            swarm_cfg: spec.swarm,
            swarm: None,
            have: if spec.available { Bitfield::full(chunks) } else { spec.have },
            early: BTreeMap::new(),
            ask: ManifestAsk::default(),
            writing: HashMap::new(),
            unsynced: Vec::new(),
            committing: false,
            next_commit: 0,
            installing: false,
            available: spec.available,
        };
        if let Some(hashes) = spec.hashes
            && let Err(e) = t.set_manifest(0, hashes)
        {
            tracing::warn!(error = %e, "the stored manifest does not match the list; asking peers");
        }
        Ok(t)
    }

    // ---- getters ----

    /// The chunks held (written, durable or not).
    pub fn have(&self) -> &Bitfield {
        self.swarm.as_ref().map_or(&self.have, Swarm::have)
    }

    /// How many chunks the image has.
    pub fn chunk_count(&self) -> u32 {
        self.chunks
    }

    /// The verified manifest, once known.
    pub fn manifest(&self) -> Option<&Arc<VerifiedManifest>> {
        self.manifest.as_ref()
    }

    /// Peers swarming on the image (or met, before the manifest is known).
    pub fn peer_count(&self) -> usize {
        self.swarm.as_ref().map_or(self.early.len(), Swarm::peer_count)
    }

    /// Whether the image is complete and installed here.
    pub fn is_available(&self) -> bool {
        self.available
    }

    /// Whether the complete image is being installed (its partial file may
    /// be renamed to its final name at any moment).
    pub fn is_installing(&self) -> bool {
        self.installing
    }

    /// The swarm's counters (zero before the manifest is known).
    pub fn stats(&self) -> swarm::Stats {
        self.swarm.as_ref().map(Swarm::stats).unwrap_or_default()
    }

    // ---- manifest ----

    /// Accepts `hashes` as the manifest if their root is the list's, and
    /// starts the swarm with every peer met so far.
    pub(super) fn set_manifest(&mut self, now: Micros, hashes: Arc<[ChunkHash]>) -> Result<(), Error> {
        let m = Manifest::from_hashes(self.chunk_size, self.size, hashes)?.verify_root(self.root)?;
        self.manifest = Some(Arc::new(m));
        self.ask = ManifestAsk::default();
        let mut s = Swarm::new(self.swarm_cfg.clone(), self.have.clone());
        for (peer, (info, bits)) in std::mem::take(&mut self.early) {
            s.handle_connected(now, peer, info);
            s.handle_message(now, peer, swarm::Message::Bitfield(bits));
        }
        self.swarm = Some(s);
        Ok(())
    }

    /// The peer to ask for the manifest at `now`, if one should be asked:
    /// the most complete peer neither tried nor asked, or once all were
    /// tried, every peer again after [`MANIFEST_RETRY`]; none while a
    /// request younger than [`MANIFEST_HEDGE`] is open, or
    /// [`MANIFEST_ASKS`] are. A request open for [`MANIFEST_TIMEOUT`]
    /// counts as failed.
    pub(super) fn next_manifest_source(&mut self, now: Micros) -> Option<PeerId> {
        if self.manifest.is_some() {
            return None;
        }
        let ask = &mut self.ask;
        while let Some(i) = ask.open.iter().position(|&(_, t)| now >= t + MANIFEST_TIMEOUT) {
            let (p, _) = ask.open.remove(i);
            ask.tried.push(p);
        }
        if ask.open.len() >= MANIFEST_ASKS || ask.open.first().is_some_and(|&(_, t)| now < t + MANIFEST_HEDGE) {
            return None;
        }
        let next = match self.untried() {
            Some(p) => p,
            None if self.ask.open.is_empty() && now >= self.ask.retry_at => {
                self.ask.tried.clear();
                self.ask.retry_at = now + MANIFEST_RETRY;
                self.untried()?
            }
            None => return None,
        };
        self.ask.open.push((next, now));
        Some(next)
    }

    /// The most complete peer neither tried nor asked now (of equally
    /// complete ones, the highest id). [`Transfer::manifest_deadline`] asks
    /// this on every poll for a timeout, so it allocates nothing.
    fn untried(&self) -> Option<PeerId> {
        let asked = |p: &PeerId| self.ask.tried.contains(p) || self.ask.open.iter().any(|(o, _)| o == p);
        self.early.iter().filter(|(p, _)| !asked(p)).map(|(p, (_, b))| (b.count(), *p)).max().map(|(_, p)| p)
    }

    /// The manifest request to `peer` ended without a manifest.
    pub(super) fn manifest_failed(&mut self, now: Micros, peer: PeerId) {
        self.ask.open.retain(|&(p, _)| p != peer);
        self.ask.tried.push(peer);
        if self.ask.tried.len() >= self.early.len() {
            self.ask.retry_at = self.ask.retry_at.max(now + MANIFEST_RETRY);
        }
    }

    /// When the manifest asking needs a look again, if ever.
    pub(super) fn manifest_deadline(&self) -> Option<Micros> {
        if self.manifest.is_some() || self.early.is_empty() {
            return None;
        }
        match self.ask.open.as_slice() {
            [] => Some(self.ask.retry_at),
            [(_, t)] if self.untried().is_some() => Some(t + MANIFEST_HEDGE),
            open => open.iter().map(|&(_, t)| t + MANIFEST_TIMEOUT).min(),
        }
    }

    // ---- peers ----

    /// A peer told what it has of this image (in a hello or a bitfield).
    pub(super) fn peer_bitfield(&mut self, now: Micros, peer: PeerId, info: PeerInfo, bits: Bitfield) {
        if bits.len() != self.chunks {
            tracing::debug!(peer, "bitfield of the wrong length ignored");
            return;
        }
        match &mut self.swarm {
            Some(s) => {
                if !s.has_peer(peer) {
                    s.handle_connected(now, peer, info);
                }
                s.handle_message(now, peer, swarm::Message::Bitfield(bits));
            }
            None => {
                if bits.count_hint() > 0 {
                    self.ask.tried.retain(|&p| p != peer);
                }
                // Added to what the peer announced before, as the swarm does.
                let mut bits = bits;
                if let Some((_, known)) = self.early.get(&peer) {
                    bits.union_with(known);
                }
                self.early.insert(peer, (info, bits));
            }
        }
    }

    /// A Have or Cancel from a peer known to this image.
    pub(super) fn peer_message(&mut self, now: Micros, peer: PeerId, msg: swarm::Message) {
        match &mut self.swarm {
            Some(s) if s.has_peer(peer) => s.handle_message(now, peer, msg),
            Some(_) => {}
            None => {
                if let (Some((_, bits)), swarm::Message::Have(i)) = (self.early.get_mut(&peer), msg)
                    && i < bits.len()
                {
                    bits.set(i);
                    self.ask.tried.retain(|&p| p != peer);
                }
            }
        }
    }

    /// A peer left.
    pub(super) fn disconnected(&mut self, now: Micros, peer: PeerId) {
        self.early.remove(&peer);
        self.ask.open.retain(|&(p, _)| p != peer);
        if let Some(s) = &mut self.swarm
            && s.has_peer(peer)
        {
            s.handle_disconnected(now, peer);
        }
    }

    // ---- gating ----

    /// When the written chunks are to be committed: now once every chunk is
    /// written, otherwise not before `next_commit`; `None` while a commit
    /// runs or nothing waits for one.
    pub(super) fn commit_due(&self) -> Option<Micros> {
        if self.committing || self.unsynced.is_empty() {
            return None;
        }
        Some(if self.all_written() { 0 } else { self.next_commit })
    }

    /// Whether every chunk is verified and written.
    fn all_written(&self) -> bool {
        self.writing.is_empty() && self.swarm.as_ref().is_some_and(Swarm::is_complete)
    }

    /// Whether the image may be installed now: every chunk is written and
    /// committed, and no install ran or runs.
    pub(super) fn ready_to_install(&self) -> bool {
        !self.available && !self.installing && !self.committing && self.unsynced.is_empty() && self.all_written()
    }
}
