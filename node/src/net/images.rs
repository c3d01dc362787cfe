//! One image's swarm state on a node: its manifest, its `proto::swarm`
//! state machine, and the peers met before the manifest was known.
//!
//! # Contract
//! * An [`Image`] exists only while the image may be served (see the parent
//!   module); dropping it stops every upload and request for it.
//! * Chunks are requested only once a manifest is known whose root matches
//!   the list's; until then peers are remembered in `early` and handed to the
//!   state machine as soon as the manifest arrives.
//! * [`Image::check`] is the one place that decides whether received bytes
//!   are the chunk the list vouches for.

use std::collections::{HashMap, HashSet};

use proto::bitfield::Bitfield;
use proto::manifest::{ChunkSize, Manifest, ManifestRoot, hash_chunk};
use proto::swarm::{self, Micros, PeerInfo, Swarm};
use proto::wire::{MAX_CHUNK_BYTES, Notice};

use crate::cache::partial::Claim;
use crate::store::{ImageRecord, ImageState};
use crate::{Error, Result};

/// A node's state for one image.
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) rec: ImageRecord,
    /// Under which received chunks are written into the partial file
    /// (`None` once the image is complete here). It also tells the disk
    /// work done for this image apart from that done for an earlier one
    /// under the same UUID.
    pub(crate) claim: Option<Claim>,
    root: ManifestRoot,
    manifest: Option<Manifest>,
    swarm_cfg: swarm::Config,
    /// Present once the manifest is known.
    pub(crate) swarm: Option<Swarm>,
    /// Durable chunks known before the state machine exists.
    have: Bitfield,
    /// Peers (and their have-maps) met before the manifest was known.
    early: HashMap<swarm::PeerId, (PeerInfo, Bitfield)>,
    /// The peer asked for the manifest, and when.
    pub(crate) manifest_asked: Option<(swarm::PeerId, Micros)>,
    /// Peers that did not hand over the manifest, in the order asked.
    manifest_tried: Vec<swarm::PeerId>,
    /// Installation is under way.
    pub(crate) installing: bool,
    /// Verified chunks being written: the state machine learns of a chunk
    /// only once it is written, so a second copy (an endgame duplicate) that
    /// arrives meanwhile is dropped here.
    pub(crate) writing: HashSet<u32>,
    /// Chunks written (and known to the state machine) but not durable yet,
    /// with their hashes: the next commit's.
    pub(crate) unsynced: Vec<(u32, [u8; 32])>,
    /// A commit of earlier chunks is under way.
    pub(crate) committing: bool,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// When a tracker last answered for this image.
    pub(crate) tracker_ok: Option<Micros>,
}

impl Image {
    /// The state for `rec`, holding the chunks in `have`, writing under
    /// `claim`; `hashes` is the stored manifest when every chunk's hash is
    /// known.
    pub(crate) fn new(
        rec: ImageRecord,
        have: Bitfield,
        claim: Option<Claim>,
        hashes: Option<Vec<[u8; 32]>>,
        swarm_cfg: swarm::Config,
    ) -> Result<Self> {
        let root = rec
            .root
            .as_deref()
            .ok_or_else(|| Error::Refused(format!("image {}: the list carries no manifest root", rec.uuid)))?;
        let root = ManifestRoot::parse_hex(root).map_err(Error::Invalid)?;
        if rec.chunk_size as usize > MAX_CHUNK_BYTES {
            return Err(Error::Refused(format!(
                "image {}: chunks of {} bytes exceed the wire limit of {MAX_CHUNK_BYTES}",
                rec.uuid, rec.chunk_size
            )));
        }
        let mut img = Self {
            rec,
            claim,
            root,
            manifest: None,
            swarm_cfg,
            swarm: None,
            have,
            early: HashMap::new(),
            manifest_asked: None,
            manifest_tried: Vec::new(),
            installing: false,
            writing: HashSet::new(),
            unsynced: Vec::new(),
            committing: false,
            bytes_in: 0,
            bytes_out: 0,
            tracker_ok: None,
        };
        if let Some(h) = hashes {
            // A stored manifest that no longer matches is ignored, not fatal:
            // the image is then fetched again from peers.
            if let Err(e) = img.set_manifest(0, h) {
                tracing::warn!(image = %img.rec.uuid, error = %e, "stored manifest does not match the list");
            }
        }
        Ok(img)
    }

    /// Whether the image is complete here.
    pub(crate) fn is_available(&self) -> bool {
        self.rec.state == ImageState::Available
    }

    /// The chunks held.
    pub(crate) fn have(&self) -> &Bitfield {
        self.swarm.as_ref().map_or(&self.have, Swarm::have)
    }

    /// The manifest's hashes, when known.
    pub(crate) fn hashes(&self) -> Option<&[[u8; 32]]> {
        self.manifest.as_ref().map(Manifest::hashes)
    }

    /// The peer to ask for the manifest next, if one should be asked at
    /// `now`: the most complete peer not yet tried (every peer again once
    /// all were), and none while an earlier request is pending.
    pub(crate) fn next_manifest_source(&mut self, now: Micros, timeout: Micros) -> Option<swarm::PeerId> {
        if self.manifest.is_some() || self.manifest_asked.is_some_and(|(_, t)| now < t + timeout) {
            return None;
        }
        if let Some((p, _)) = self.manifest_asked.take() {
            self.manifest_tried.push(p);
        }
        let mut v: Vec<_> = self.early.iter().map(|(p, (_, b))| (b.count(), *p)).collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        let untried = v.iter().map(|(_, p)| *p).find(|p| !self.manifest_tried.contains(p));
        let next = untried.or_else(|| {
            self.manifest_tried.clear();
            v.first().map(|(_, p)| *p)
        })?;
        self.manifest_asked = Some((next, now));
        Some(next)
    }

    /// The manifest request to `peer` ended without a manifest.
    pub(crate) fn manifest_failed(&mut self, peer: swarm::PeerId) {
        if self.manifest_asked.is_some_and(|(p, _)| p == peer) {
            self.manifest_asked = None;
        }
        self.manifest_tried.push(peer);
    }

    /// Accepts `hashes` as the manifest if their root is the list's, and
    /// starts the state machine with every peer met so far.
    pub(crate) fn set_manifest(&mut self, now: Micros, hashes: Vec<[u8; 32]>) -> Result<()> {
        let m = Manifest::from_hashes(ChunkSize::new(self.rec.chunk_size)?, self.rec.size, hashes)?;
        m.check_root(self.root)?;
        self.manifest = Some(m);
        let mut s = Swarm::new(self.swarm_cfg.clone(), self.have.clone());
        for (peer, (info, bits)) in self.early.drain() {
            s.handle_connected(now, peer, info);
            s.handle_message(now, peer, swarm::Message::Bitfield(bits));
        }
        self.swarm = Some(s);
        Ok(())
    }

    /// The chunk's hash if `data` is chunk `index` as the manifest says.
    pub(crate) fn check(&self, index: u32, data: &[u8]) -> Option<[u8; 32]> {
        let m = self.manifest.as_ref()?;
        let want_len = m.chunk_size().chunk_len(m.size(), u64::from(index))?;
        let want_hash = *m.hashes().get(index as usize)?;
        (data.len() as u64 == want_len && hash_chunk(data) == want_hash).then_some(want_hash)
    }

    /// A peer told us what it has of this image (in a hello or a bitfield).
    pub(crate) fn peer_bitfield(&mut self, now: Micros, peer: swarm::PeerId, info: PeerInfo, bits: Bitfield) {
        if bits.len() != self.rec.chunk_count() {
            tracing::debug!(image = %self.rec.uuid, peer, "bitfield of the wrong length ignored");
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
                self.early.insert(peer, (info, bits));
            }
        }
    }

    /// A notice from a peer that is already known to this image.
    pub(crate) fn notice(&mut self, now: Micros, peer: swarm::PeerId, notice: Notice) {
        let msg = match notice {
            Notice::Have(i) => swarm::Message::Have(i),
            Notice::Cancel(i) => swarm::Message::Cancel(i),
            Notice::Bitfield(_) => return,
        };
        match &mut self.swarm {
            Some(s) if s.has_peer(peer) => s.handle_message(now, peer, msg),
            Some(_) => {}
            None => {
                if let (Some((_, bits)), swarm::Message::Have(i)) = (self.early.get_mut(&peer), msg)
                    && i < bits.len()
                {
                    bits.set(i);
                }
            }
        }
    }

    /// A peer left.
    pub(crate) fn disconnected(&mut self, now: Micros, peer: swarm::PeerId) {
        self.early.remove(&peer);
        if self.manifest_asked.is_some_and(|(p, _)| p == peer) {
            self.manifest_asked = None;
        }
        if let Some(s) = &mut self.swarm
            && s.has_peer(peer)
        {
            s.handle_disconnected(now, peer);
        }
    }

    /// Peers swarming on this image.
    pub(crate) fn peer_count(&self) -> usize {
        self.swarm.as_ref().map_or(self.early.len(), Swarm::peer_count)
    }
}
