//! Disk work for the event loop: chunks read to be served, received chunks
//! written and made durable in group commits, and a complete image's
//! install. The work runs on blocking threads and reports back as [`Disk`].
//!
//! # Contract
//! * Received chunk bytes are written only after [`Image::check`] passed.
//!   The state machine hears of a chunk once it is written, and may then
//!   serve it (the bytes are read back from the page cache).
//! * A chunk becomes durable and recorded in a group commit: one sync of the
//!   partial file, then one store transaction for every chunk written since
//!   the last commit ([`Cache::commit_received`]), so a record never precedes
//!   its data on disk. One commit runs at a time per image. A crash loses at
//!   most the chunks not yet committed, which are fetched again.
//! * Chunks are written and committed under the image's claim on its
//!   partial file ([`crate::cache::partial`]); work done under an earlier
//!   claim (the image dropped and taken up again meanwhile) is not counted.
//! * If a write, a commit or the install fails, the image leaves the swarm
//!   and comes back from what the store records (chunks announced but not
//!   durable are fetched again), unless a download from the source now
//!   fills it.
//! * The image is installed only once every chunk is committed.
//! * A stopping node waits (up to [`SHUTDOWN_COMMITS`]) for the commits under
//!   way and commits what is still waiting before it exits.
//!
//! [`Image::check`]: crate::net::images::Image::check
//! [`Cache::commit_received`]: crate::cache::Cache::commit_received

use std::time::Duration;

use bytes::Bytes;
use libp2p::PeerId;
use libp2p::request_response::{InboundRequestId, ResponseChannel};
use proto::wire::{Refusal, Response};
use uuid::Uuid;

use super::{Bucket, EventLoop, IoDone, blocking};
use crate::cache::partial::Claim;
use crate::net::metrics::Metrics;
use crate::site::Site;
use crate::store::ImageRecord;
use crate::{Error, Result};

/// How long a stopping node waits for the commits under way.
const SHUTDOWN_COMMITS: Duration = Duration::from_secs(10);

/// Chunks written but not committed, per image, with the claim they were
/// written under.
pub(super) type Pending = Vec<(ImageRecord, Claim, Vec<(u32, [u8; 32])>)>;

/// Disk work done.
pub(super) enum Disk {
    /// A chunk to serve was read.
    Read {
        image: Uuid,
        to: PeerId,
        index: u32,
        request: InboundRequestId,
        channel: ResponseChannel<Response>,
        data: Result<Vec<u8>>,
    },
    /// A received chunk, verified, was written under `claim`.
    Wrote { image: Uuid, claim: Claim, from: u64, index: u32, hash: [u8; 32], result: Result<()> },
    /// Chunks written under `claim` were made durable and recorded.
    Committed { image: Uuid, claim: Claim, result: Result<()> },
    /// The complete image was checked and installed.
    Installed { image: Uuid, result: Result<ImageRecord> },
}

impl EventLoop {
    /// Reads chunk `index` of `image` to serve it to `to`.
    pub(super) fn upload(&mut self, image: Uuid, to: u64, index: u32) {
        let (Some((request, channel)), Some(&peer), Some(img)) =
            (self.inbound.remove(&(image, to, index)), self.ids.get(&to), self.images.get(&image))
        else {
            // The requester is gone; free the slot.
            self.upload_done(image, to, index);
            return;
        };
        let paths = self.site.store().paths();
        let path = if img.is_available() { paths.image(image) } else { paths.partial(image) };
        // While this partial image is being installed, it may be renamed to
        // its final name before the read; only then is that file these bytes.
        let renamed = if img.installing { paths.image(image) } else { path.clone() };
        let offset = u64::from(index) * img.rec.chunk_size;
        let len = img.rec.chunk_size.min(img.rec.size.saturating_sub(offset));
        let (tx, up, egress) = (self.io_tx.clone(), self.up.clone(), self.egress.clone());
        tokio::spawn(async move {
            let data = blocking(move || crate::fsutil::read_at(&path, &renamed, offset, len)).await;
            if let Ok(d) = &data {
                Bucket::take(up.as_deref(), d.len()).await;
                Bucket::take(egress.as_deref(), d.len()).await;
            }
            let _ = tx.send(IoDone::Disk(Disk::Read { image, to: peer, index, request, channel, data })).await;
        });
    }

    /// Writes a received chunk that passed its check (`hash` is its BLAKE3
    /// hash), within the download cap.
    pub(super) fn write(&mut self, image: Uuid, from: u64, index: u32, hash: [u8; 32], data: Bytes) {
        let Some((img, Some(claim))) = self.images.get(&image).map(|i| (i, i.claim)) else { return };
        let (site, tx, down, rec) = (self.site.clone(), self.io_tx.clone(), self.down.clone(), img.rec.clone());
        tokio::spawn(async move {
            Bucket::take(down.as_deref(), data.len()).await;
            let result = blocking(move || site.cache().write_received(&rec, claim, index, &data)).await;
            let _ = tx.send(IoDone::Disk(Disk::Wrote { image, claim, from, index, hash, result })).await;
        });
    }

    /// Makes the chunks of `uuid` written so far durable and recorded, in
    /// one commit, unless one is under way (chunks written meanwhile wait
    /// for the next).
    fn commit(&mut self, uuid: Uuid) {
        let Some(img) = self.images.get_mut(&uuid) else { return };
        let Some(claim) = img.claim else { return };
        if img.committing || img.unsynced.is_empty() {
            return;
        }
        img.committing = true;
        let (site, tx, rec, written) =
            (self.site.clone(), self.io_tx.clone(), img.rec.clone(), std::mem::take(&mut img.unsynced));
        tokio::spawn(async move {
            let result = blocking(move || site.cache().commit_received(&rec, claim, &written)).await;
            let _ = tx.send(IoDone::Disk(Disk::Committed { image: uuid, claim, result })).await;
        });
    }

    /// Checks and installs a complete image, once every chunk is committed.
    pub(super) fn install(&mut self, uuid: Uuid) {
        let Some(img) = self.images.get_mut(&uuid) else { return };
        if img.installing || img.is_available() {
            return;
        }
        if img.committing || !img.unsynced.is_empty() {
            // The end of the last commit starts it.
            return;
        }
        img.installing = true;
        let (site, tx, mut rec) = (self.site.clone(), self.io_tx.clone(), img.rec.clone());
        tokio::spawn(async move {
            let result = blocking(move || {
                if site.cache().is_sourcing(rec.uuid) {
                    return Err(Error::Superseded(format!(
                        "image {}: being downloaded from its source, which installs it",
                        rec.uuid
                    )));
                }
                // The record may have changed since the image started.
                if let Some(fresh) = site.store().image(rec.uuid)? {
                    rec = fresh;
                }
                site.cache().install(&mut rec, None).map(|()| rec)
            })
            .await;
            let _ = tx.send(IoDone::Disk(Disk::Installed { image: uuid, result })).await;
        });
    }

    pub(super) fn on_disk(&mut self, done: Disk) {
        match done {
            Disk::Read { image, to, index, request, channel, data } => {
                // The requester left while the chunk was read: its slot is
                // already free, and there is no one to answer.
                let Some(&h) = self.handles.get(&to) else { return };
                match data {
                    Ok(d) if self.images.contains_key(&image) => {
                        let n = d.len() as u64;
                        tracing::trace!(%image, index, peer = %to, "upload started");
                        if self.swarm.behaviour_mut().peer.send_response(channel, Response::Chunk(d.into())).is_ok() {
                            if let Some(img) = self.images.get_mut(&image) {
                                img.bytes_out += n;
                            }
                            self.metrics.bytes_out.get_or_create(&Metrics::image(image)).inc_by(n);
                            self.uploads.insert(request, (image, h, index));
                        } else {
                            self.upload_done(image, h, index);
                        }
                    }
                    Ok(_) => {
                        // Withdrawn while the chunk was read: not served.
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .peer
                            .send_response(channel, Response::Refused(Refusal::NotEndorsed));
                    }
                    Err(e) => {
                        tracing::warn!(%image, index, error = %e, "reading a chunk to serve failed");
                        let _ =
                            self.swarm.behaviour_mut().peer.send_response(channel, Response::Refused(Refusal::NotHeld));
                        self.upload_done(image, h, index);
                    }
                }
            }
            Disk::Wrote { image, claim, from, index, hash, result } => {
                let now = self.now();
                let Some(img) = self.images.get_mut(&image) else { return };
                if img.claim != Some(claim) {
                    // The image was swarmed on again (its data discarded, or
                    // for other content) while this chunk was written.
                    tracing::debug!(%image, index, "a chunk written under an earlier claim is not counted");
                    return;
                }
                img.writing.remove(&index);
                let Some(s) = img.swarm.as_mut() else { return };
                match result {
                    Ok(()) => {
                        tracing::trace!(%image, index, "chunk written");
                        s.handle_chunk(now, from, index, true);
                        img.unsynced.push((index, hash));
                        self.metrics.chunks_verified.get_or_create(&Metrics::image(image)).inc();
                        self.commit(image);
                    }
                    Err(e) => {
                        // Not the peer's fault. The partial file may be gone,
                        // or claimed by a download from the source (which
                        // `sync_images` leaves the image to).
                        self.start_over(image, "storing a verified chunk", &e);
                        return;
                    }
                }
                self.drain(image);
            }
            Disk::Committed { image, claim, result } => {
                let Some(img) = self.images.get_mut(&image).filter(|i| i.claim == Some(claim)) else { return };
                img.committing = false;
                match result {
                    Ok(()) if !img.unsynced.is_empty() => self.commit(image),
                    Ok(()) if img.have().is_full() => self.install(image),
                    Ok(()) => {}
                    // Chunks announced here may not be on disk.
                    Err(e) => self.start_over(image, "making written chunks durable", &e),
                }
            }
            Disk::Installed { image, result } => {
                let Some(img) = self.images.get_mut(&image) else { return };
                img.installing = false;
                match result {
                    Ok(rec) => {
                        self.metrics.set_state(image, rec.state.name());
                        img.rec = rec;
                        self.announce(image);
                    }
                    Err(e) => self.start_over(image, "installing the complete image", &e),
                }
            }
        }
    }

    /// Takes `image` up again from what the store records (if it is still
    /// wanted) after disk work for it (`what`) failed with `e`.
    fn start_over(&mut self, image: Uuid, what: &str, e: &Error) {
        if matches!(e, Error::Superseded(_)) {
            tracing::debug!(%image, reason = %e, "{what}: superseded");
        } else {
            tracing::error!(%image, error = %e, "{what} failed; the image starts over from what the store records");
            self.last_error = Some(e.to_string());
        }
        self.drop_image(image);
        if let Err(e) = self.sync_images() {
            tracing::error!(error = %e, "reading the store failed");
            self.last_error = Some(e.to_string());
        }
    }

    /// At shutdown: waits (within [`SHUTDOWN_COMMITS`]) for the commits under
    /// way, and hands back the chunks written but not committed, for
    /// [`commit_pending`]. Chunks still being written are fetched again
    /// after a restart.
    pub(super) async fn finish_commits(&mut self) -> Pending {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_COMMITS;
        while self.images.values().any(|i| i.committing) {
            match tokio::time::timeout_at(deadline, self.io_rx.recv()).await {
                Ok(Some(IoDone::Disk(Disk::Committed { image, claim, result }))) => {
                    if let Err(e) = result {
                        tracing::error!(%image, error = %e, "making written chunks durable failed");
                    }
                    if let Some(i) = self.images.get_mut(&image).filter(|i| i.claim == Some(claim)) {
                        i.committing = false;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.images
            .values_mut()
            .filter(|i| !i.unsynced.is_empty())
            .filter_map(|i| Some((i.rec.clone(), i.claim?, std::mem::take(&mut i.unsynced))))
            .collect()
    }
}

/// Commits what [`EventLoop::finish_commits`] handed back (blocking).
pub(super) fn commit_pending(site: &Site, pending: Pending) {
    for (rec, claim, written) in pending {
        if let Err(e) = site.cache().commit_received(&rec, claim, &written) {
            tracing::error!(image = %rec.uuid, error = %e, "making written chunks durable at shutdown failed");
        }
    }
}
