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
//! * An image whose data cannot be opened (a full disk, say) is not opened
//!   again at every sync: it waits [`OPEN_RETRY_FIRST`], doubling at each
//!   failure up to [`OPEN_RETRY_MAX`], and a changed error is logged once.
//!   The status names it meanwhile, and the images already taken up go on.
//! * Images taken up go to the transfer machine together, which tells the
//!   peers already met about them.
//!
//! [`Cache::open_partial`]: crate::cache::Cache::open_partial

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::kad;
use proto::bitfield::Bitfield;
use proto::manifest::{ChunkSize, ManifestRoot};
use proto::swarm;
use proto::transfer::ImageSpec;
use uuid::Uuid;

use super::jobs::{IoDone, blocking};
use super::{EventLoop, Local};
use crate::cache::partial::Claim;
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

/// How long an image whose data could not be opened waits first.
const OPEN_RETRY_FIRST: Duration = Duration::from_secs(5);

/// The longest it waits.
const OPEN_RETRY_MAX: Duration = Duration::from_secs(600);

/// An image whose data could not be opened.
struct OpenFailed {
    error: String,
    wait: Duration,
    retry_at: Instant,
}

/// Images opened, and whether a batch of opens is under way.
#[derive(Default)]
pub(super) struct Opening {
    /// Opened and not yet taken up, by image.
    done: HashMap<Uuid, Opened>,
    /// A batch runs; the loop syncs again when it ends.
    busy: bool,
    /// Opens that failed, by image, until they are tried again.
    failed: HashMap<Uuid, OpenFailed>,
}

impl Opening {
    /// Whether an image that failed to open is due to be tried again (and
    /// no batch runs that could be trying it).
    pub(super) fn retry_due(&self, now: Instant) -> bool {
        !self.busy && self.failed.values().any(|f| f.retry_at <= now)
    }
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
        self.unrooted.images.clear();
        let lists = self.site.lists_in_force()?;
        self.next_expiry = Site::next_expiry(&lists, crate::now());
        self.metrics.set_lists(&lists);
        let recs = self.site.store().images()?;
        let mut keep = Vec::new();
        let mut added = Vec::new();
        let mut to_open = Vec::new();
        let now = self.now();
        for rec in recs {
            self.metrics.set_state(rec.uuid, rec.state.name());
            self.metrics.touch_image(rec.uuid);
            let servable = rec.endorsed
                && rec.decision == Decision::Approved
                && rec.cache
                && matches!(rec.state, ImageState::Available | ImageState::Partial);
            if !servable {
                continue;
            }
            if rec.data_for.as_ref().is_some_and(|d| *d != rec.sha512) {
                // A list just gave the image other bytes, and the data here
                // is still the old one's, until the settle that follows the
                // list moves it out: nothing to take up yet, and what was
                // taken up is of the old content.
                if self.images.contains_key(&rec.uuid) {
                    self.forget_image(rec.uuid);
                }
                continue;
            }
            if crate::site::attest::wants_attestation(&rec) {
                // Swarmed on once a root is attested (`super::attest`).
                self.unrooted(&rec);
                continue;
            }
            keep.push(rec.uuid);
            if rec.state == ImageState::Partial && self.site.cache().is_sourcing(rec.uuid) {
                // Its download from the source fills the partial file alone
                // (see `crate::cache::partial`); the image is taken up again
                // once that ends.
                if self.images.contains_key(&rec.uuid) {
                    tracing::info!(image = %rec.uuid, "leaving the image to the download from its source");
                    self.forget_image(rec.uuid);
                }
                continue;
            }
            // Also renewed when the image became complete behind the loop's
            // back (a master's download from the source, which may finish
            // after an earlier sync saw the image partial), or lost its file.
            if self.images.get(&rec.uuid).is_some_and(|l| same_state(&l.rec, &rec)) {
                continue;
            }
            self.forget_image(rec.uuid);
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
                    self.opening.failed.remove(&uuid);
                    match self.take_up(rec, data) {
                        Ok(spec) => added.push((uuid, spec)),
                        Err(e) => tracing::warn!(image = %uuid, error = %e, "cannot swarm on this image"),
                    }
                }
                // Tried once for this state; the next sync tries again.
                Some(Opened { result: Err(e @ Error::Superseded(_)), .. }) => {
                    tracing::debug!(image = %rec.uuid, reason = %e, "not swarming on this image for now");
                }
                Some(Opened { result: Err(e), .. }) => self.open_failed(rec.uuid, &e),
                None if self.opening.failed.get(&rec.uuid).is_some_and(|f| f.retry_at > Instant::now()) => {}
                None => to_open.push(rec),
            }
        }
        let uuids: Vec<Uuid> = added.iter().map(|(u, _)| *u).collect();
        for (uuid, e) in self.host.add_images(now, added) {
            tracing::warn!(image = %uuid, error = %e, "cannot swarm on this image");
            self.images.remove(&uuid);
        }
        let taken: Vec<Uuid> = uuids.into_iter().filter(|u| self.images.contains_key(u)).collect();
        for uuid in taken {
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                && let Err(e) = kad.start_providing(kad::RecordKey::new(&uuid.as_bytes()))
            {
                tracing::debug!(error = %e, "kademlia provider record");
            }
            self.announce(uuid);
        }
        let gone: Vec<Uuid> = self.images.keys().filter(|u| !keep.contains(u)).copied().collect();
        for u in gone {
            tracing::info!(image = %u, "image no longer endorsed here: serving stops");
            self.forget_image(u);
        }
        self.opening.failed.retain(|u, _| keep.contains(u));
        if !to_open.is_empty() && !self.opening.busy {
            self.open_batch(to_open);
        }
        Ok(())
    }

    /// `uuid`'s data could not be opened: it waits before the next try,
    /// twice as long as the last time, and the status says why.
    fn open_failed(&mut self, uuid: Uuid, e: &Error) {
        let error = e.to_string();
        let last = self.opening.failed.remove(&uuid);
        let wait = last.as_ref().map_or(OPEN_RETRY_FIRST, |f| (f.wait * 2).min(OPEN_RETRY_MAX));
        if last.is_some_and(|f| f.error == error) {
            tracing::debug!(image = %uuid, %error, ?wait, "cannot swarm on this image yet");
        } else {
            tracing::warn!(image = %uuid, %error, "cannot swarm on this image; trying again in {wait:?}");
        }
        self.last_error = Some(format!("image {uuid}: {error}"));
        self.opening.failed.insert(uuid, OpenFailed { error, wait, retry_at: Instant::now() + wait });
    }

    /// Opens the images of `recs` on a blocking thread; the loop syncs
    /// again with what was opened.
    fn open_batch(&mut self, recs: Vec<ImageRecord>) {
        self.opening.busy = true;
        let site = self.site.clone();
        self.jobs.control(async move {
            IoDone::Opened(blocking(move || Ok(recs.into_iter().map(|r| open(&site, r)).collect())).await)
        });
    }

    /// A batch of opens ended.
    pub(super) fn on_opened(&mut self, opened: Result<Vec<Opened>>) {
        self.opening.busy = false;
        match opened {
            Ok(opened) => {
                self.opening.done = opened.into_iter().map(|o| (o.rec.uuid, o)).collect();
                self.sync_or_log();
            }
            // Not at once again: the next sync (the next update cycle at the
            // latest) tries again.
            Err(e) => {
                tracing::error!(error = %e, "opening images to swarm on failed");
                self.last_error = Some(e.to_string());
            }
        }
    }

    /// What the machine takes `rec` up with, whose data was opened as
    /// `data`; the loop keeps the record and the claim.
    fn take_up(&mut self, rec: ImageRecord, data: OpenedData) -> Result<ImageSpec> {
        let uuid = rec.uuid;
        let root = rec
            .root
            .as_deref()
            .ok_or_else(|| Error::Refused(format!("image {uuid}: the list carries no manifest root")))?;
        let root = ManifestRoot::parse_hex(root).map_err(Error::Invalid)?;
        let seed = u64::from_le_bytes(uuid.as_bytes()[..8].try_into().unwrap_or_default())
            ^ self.swarm.local_peer_id().to_bytes().iter().fold(0u64, |a, b| a.rotate_left(8) ^ u64::from(*b));
        self.next_epoch += 1;
        let spec = ImageSpec {
            epoch: self.next_epoch,
            root,
            chunk_size: ChunkSize::new(rec.chunk_size)?,
            size: rec.size,
            available: rec.state == ImageState::Available,
            have: data.have,
            hashes: data.hashes.map(Arc::from),
            swarm: swarm::Config {
                site: self.site_id,
                role: self.role,
                seed,
                pipeline: self.cfg.pipeline,
                fetch_stripe: self.fetch_stripe.clone(),
                upload: swarm::UploadPolicy::of(self.role),
                ..swarm::Config::default()
            },
        };
        tracing::info!(image = %uuid, have = spec.have.count(), chunks = rec.chunk_count(), "swarming on image");
        let wire = proto::wire::content_id(uuid, &root);
        let local = Local {
            rec,
            wire,
            claim: data.claim,
            epoch: spec.epoch,
            bytes_in: 0,
            bytes_out: 0,
            rates: Default::default(),
            tracker_ok: None,
            banned: 0,
        };
        self.images.insert(uuid, local);
        self.by_wire.insert(wire, uuid);
        Ok(spec)
    }

    /// Stops swarming on `uuid`: the machine refuses its waiting requests,
    /// and the node no longer provides it.
    pub(super) fn forget_image(&mut self, uuid: Uuid) {
        self.host.remove_image(uuid);
        let local = self.images.remove(&uuid);
        if let Some(l) = &local {
            self.by_wire.remove(&l.wire);
        }
        self.from_other_sites.retain(|(image, _)| *image != uuid);
        if local.is_some()
            && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
        {
            kad.stop_providing(&kad::RecordKey::new(&uuid.as_bytes()));
        }
    }
}
