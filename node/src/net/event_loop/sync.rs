//! Which images the event loop swarms on, kept in line with the store.
//!
//! # Contract
//! * [`EventLoop::sync_images`] re-reads the store and decides. An image
//!   stops being served at once, within the call, when it is no longer
//!   endorsed, approved and cached here, or when a download from its source
//!   now fills it (see [`crate::cache::partial`]).
//! * Taking an image up needs disk work: a partial image's file is opened
//!   and its durable chunks read (on a content switch that also clears the
//!   old content's records), a complete image's chunk hashes are read. That
//!   work runs on a blocking thread, never on the loop's, in batches, one
//!   batch at a time, each image for the state the store was in when the
//!   sync asked for it. An open whose record is out of date by the time it
//!   runs, or that meets a download from the source, is refused under the
//!   writers' lock ([`Cache::open_partial`]), so it never undoes newer work.
//! * When a batch is done the loop syncs again, and takes up what was opened
//!   only if the store still wants that state of the image and the claim
//!   the open handed out is still in force (the data was not discarded, nor
//!   taken by a download from the source, meanwhile). Anything else is
//!   opened again, or left to a later sync.
//!
//! [`Cache::open_partial`]: crate::cache::Cache::open_partial
//! * Peers already met hear of the images taken up in a new exchange of
//!   hellos that names them.

use std::collections::HashMap;

use libp2p::{PeerId, kad};
use proto::bitfield::Bitfield;
use proto::swarm;
use proto::wire::{MAX_HELLO_IMAGES, Refusal, Response};
use uuid::Uuid;

use super::{EventLoop, IoDone, blocking};
use crate::cache::partial::Claim;
use crate::net::images::Image;
use crate::site::Site;
use crate::store::{Decision, ImageRecord, ImageState};
use crate::{Error, Result};

/// An image's data, opened on a blocking thread for the state of `rec`.
pub(super) struct Opened {
    /// The record the open was for.
    rec: ImageRecord,
    result: Result<OpenedData>,
}

struct OpenedData {
    have: Bitfield,
    hashes: Option<Vec<[u8; 32]>>,
    claim: Option<Claim>,
}

/// Images opened, and whether a batch of opens is under way.
#[derive(Default)]
pub(super) struct Opening {
    /// Opened and not yet taken up, by image.
    done: HashMap<Uuid, Opened>,
    /// A batch runs; the loop syncs again when it ends.
    busy: bool,
}

/// The state of an image that its opened data fits.
fn same_state(a: &ImageRecord, b: &ImageRecord) -> bool {
    a.list_content == b.list_content && (a.state == ImageState::Available) == (b.state == ImageState::Available)
}

/// Opens `rec`'s data (blocking).
fn open(site: &Site, mut rec: ImageRecord) -> Opened {
    let result = if rec.state == ImageState::Available {
        let chunks = rec.chunk_count();
        site.store().chunk_hashes(rec.uuid, chunks).map(|h| OpenedData {
            have: Bitfield::full(chunks),
            hashes: h.into_iter().collect(),
            claim: None,
        })
    } else {
        site.cache().open_partial(&mut rec).map(|p| OpenedData { have: p.have, hashes: None, claim: Some(p.claim) })
    };
    Opened { rec, result }
}

impl EventLoop {
    /// Brings the set of served images in line with the store.
    pub(super) fn sync_images(&mut self) -> Result<()> {
        // Taken first: what a failed sync leaves is out of date by the next.
        let mut opened = std::mem::take(&mut self.opening.done);
        self.next_expiry = self.site.next_expiry(crate::now())?;
        let recs = self.site.store().images()?;
        let mut keep = Vec::new();
        let mut added = Vec::new();
        let mut to_open = Vec::new();
        for rec in recs {
            self.metrics.set_state(rec.uuid, rec.state.name());
            let servable = rec.endorsed
                && rec.decision == Decision::Approved
                && rec.cache
                && matches!(rec.state, ImageState::Available | ImageState::Partial);
            if !servable {
                continue;
            }
            keep.push(rec.uuid);
            if rec.state == ImageState::Partial && self.site.cache().is_sourcing(rec.uuid) {
                // Its download from the source fills the partial file alone
                // (see `crate::cache::partial`); the image is taken up again
                // once that ends.
                if self.images.contains_key(&rec.uuid) {
                    tracing::info!(image = %rec.uuid, "leaving the image to the download from its source");
                    self.drop_image(rec.uuid);
                }
                continue;
            }
            // Also renewed when the image became complete behind the loop's
            // back (a master's download from the source, which may finish
            // after an earlier sync saw the image partial), or lost its file.
            if self.images.get(&rec.uuid).is_some_and(|i| same_state(&i.rec, &rec)) {
                continue;
            }
            self.drop_image(rec.uuid);
            // Opened for this state, and nothing has ended the claim since
            // (the data discarded, or a download from the source started).
            let cache = self.site.cache();
            let fits = |o: &Opened| {
                same_state(&o.rec, &rec)
                    && o.result.as_ref().map_or(true, |d| d.claim.is_none_or(|c| cache.claim_in_force(o.rec.uuid, c)))
            };
            match opened.remove(&rec.uuid).filter(fits) {
                // With the record just read, which is as new as the open.
                Some(Opened { result: Ok(data), .. }) => {
                    let uuid = rec.uuid;
                    match self.add_image(rec, data) {
                        Ok(()) => added.push(uuid),
                        Err(e) => tracing::warn!(image = %uuid, error = %e, "cannot swarm on this image"),
                    }
                }
                // Tried once for this state; the next sync tries again.
                Some(Opened { result: Err(e @ Error::Superseded(_)), .. }) => {
                    tracing::debug!(image = %rec.uuid, reason = %e, "not swarming on this image for now");
                }
                Some(Opened { result: Err(e), .. }) => {
                    tracing::warn!(image = %rec.uuid, error = %e, "cannot swarm on this image");
                }
                None => to_open.push(rec),
            }
        }
        // Peers already met learn of the images taken up, and tell what they
        // hold of them, in a new exchange of hellos that names them: a peer
        // that knew this node for an earlier state of an image (dropped,
        // then taken up again) would not answer a bare bitfield.
        let met: Vec<PeerId> = self.met.keys().filter_map(|h| self.ids.get(h).copied()).collect();
        for peer in met {
            for images in added.chunks(MAX_HELLO_IMAGES) {
                self.send_hello(peer, images);
            }
        }
        let gone: Vec<Uuid> = self.images.keys().filter(|u| !keep.contains(u)).copied().collect();
        for u in gone {
            tracing::info!(image = %u, "image no longer endorsed here: serving stops");
            self.drop_image(u);
        }
        if !to_open.is_empty() && !self.opening.busy {
            self.open_batch(to_open);
        }
        Ok(())
    }

    /// Opens the images of `recs` on a blocking thread; the loop syncs
    /// again with what was opened.
    fn open_batch(&mut self, recs: Vec<ImageRecord>) {
        self.opening.busy = true;
        let site = self.site.clone();
        let tx = self.io_tx.clone();
        tokio::spawn(async move {
            let opened = blocking(move || Ok(recs.into_iter().map(|r| open(&site, r)).collect())).await;
            let _ = tx.send(IoDone::Opened(opened)).await;
        });
    }

    /// A batch of opens ended.
    pub(super) fn on_opened(&mut self, opened: Result<Vec<Opened>>) {
        self.opening.busy = false;
        match opened {
            Ok(opened) => {
                self.opening.done = opened.into_iter().map(|o| (o.rec.uuid, o)).collect();
                if let Err(e) = self.sync_images() {
                    tracing::error!(error = %e, "reading the store failed");
                    self.last_error = Some(e.to_string());
                }
            }
            // Not at once again: the next sync (the next update cycle at the
            // latest) tries again.
            Err(e) => {
                tracing::error!(error = %e, "opening images to swarm on failed");
                self.last_error = Some(e.to_string());
            }
        }
    }

    /// Swarms on `rec`, whose data was opened as `data`.
    fn add_image(&mut self, rec: ImageRecord, data: OpenedData) -> Result<()> {
        let uuid = rec.uuid;
        let seed = u64::from_le_bytes(uuid.as_bytes()[..8].try_into().unwrap_or_default())
            ^ self.swarm.local_peer_id().to_bytes().iter().fold(0u64, |a, b| a.rotate_left(8) ^ u64::from(*b));
        let cfg = swarm::Config {
            site: self.site_id,
            role: self.role,
            seed,
            pipeline: self.cfg.pipeline,
            fetch_stripe: self.fetch_stripe.clone(),
            ..swarm::Config::default()
        };
        let chunks = rec.chunk_count();
        let img = Image::new(rec, data.have, data.claim, data.hashes, cfg)?;
        tracing::info!(image = %uuid, have = img.have().count(), chunks, "swarming on image");
        self.images.insert(uuid, img);
        let key = kad::RecordKey::new(&uuid.as_bytes());
        if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
            tracing::debug!(error = %e, "kademlia provider record");
        }
        self.announce(uuid);
        self.drain(uuid);
        Ok(())
    }

    /// Stops swarming on `uuid`: its waiting requests are refused.
    pub(super) fn drop_image(&mut self, uuid: Uuid) {
        if self.images.remove(&uuid).is_none() {
            return;
        }
        let keys: Vec<_> = self.inbound.keys().filter(|k| k.0 == uuid).copied().collect();
        for k in keys {
            if let Some((_, ch)) = self.inbound.remove(&k) {
                let _ = self.swarm.behaviour_mut().peer.send_response(ch, Response::Refused(Refusal::NotEndorsed));
            }
        }
        self.swarm.behaviour_mut().kad.stop_providing(&kad::RecordKey::new(&uuid.as_bytes()));
    }
}
