//! The machine's disk effects, carried out: chunks read to be served,
//! verified chunks written, group commits, and a complete image's install;
//! and their results, fed back to the machine.
//!
//! # Contract
//! * What is written, when it is committed and when the image is installed
//!   is the machine's decision ([`proto::transfer`]); this module runs each
//!   as a disk job ([`super::jobs`]) and reports its end.
//! * [`Cache::write_received`] takes only a [`VerifiedChunk`]: received
//!   bytes reach the partial file only once they matched the manifest.
//! * Chunks are written and committed under the image's claim on its
//!   partial file ([`crate::cache::partial`]), and a commit syncs the file
//!   before it records the chunks ([`Cache::commit_received`]), so a record
//!   never precedes its data on disk. A crash loses at most the chunks not
//!   yet committed, which are fetched again.
//! * A stopping node waits (up to [`SHUTDOWN_COMMITS`]) for the commits under
//!   way and commits what is still waiting before it exits.
//!
//! [`Cache::write_received`]: crate::cache::Cache::write_received
//! [`Cache::commit_received`]: crate::cache::Cache::commit_received

use std::time::Duration;

use bytes::Bytes;
use libp2p::PeerId;
use libp2p::request_response::{InboundRequestId, ResponseChannel};
use proto::manifest::{ChunkHash, VerifiedChunk};
use proto::transfer::{DiskFailed, Effect};
use proto::wire::{Refusal, Response};
use uuid::Uuid;

use super::jobs::{IoDone, on_disk};
use super::{Bucket, EventLoop};
use crate::cache::partial::Claim;
use crate::net::metrics::Metrics;
use crate::site::Site;
use crate::store::{ImageRecord, ImageState};
use crate::{Error, Result};

/// How long a stopping node waits for the commits under way.
const SHUTDOWN_COMMITS: Duration = Duration::from_secs(10);

/// Chunks written but not committed, per image, with the claim they were
/// written under.
pub(super) type Pending = Vec<(ImageRecord, Claim, Vec<(u32, ChunkHash)>)>;

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
    /// A verified chunk was written.
    Wrote { image: Uuid, epoch: u64, index: u32, result: Result<()> },
    /// Written chunks were made durable and recorded.
    Committed { image: Uuid, epoch: u64, result: Result<()> },
    /// The complete image was checked and installed.
    Installed { image: Uuid, epoch: u64, result: Result<ImageRecord> },
}

impl EventLoop {
    /// Reads chunk `index` of `image` to serve it to `to`.
    pub(super) fn serve(&mut self, image: Uuid, to: u64, index: u32) {
        let now = self.now();
        let (Some((request, channel)), Some(&peer), Some(l), Some(t)) = (
            self.inbound.remove(&(image, to, index)),
            self.ids.get(&to),
            self.images.get(&image),
            self.host.image(image),
        ) else {
            // The requester is gone; free the slot.
            return self.host.handle_upload_done(now, to, image, index);
        };
        let paths = self.site.store().paths();
        let path = if l.rec.state == ImageState::Available { paths.image(image) } else { paths.partial(image) };
        // While this partial image is being installed, it may be renamed to
        // its final name before the read; only then is that file these bytes.
        let renamed = if t.is_installing() { paths.image(image) } else { path.clone() };
        let offset = u64::from(index) * l.rec.chunk_size;
        let len = l.rec.chunk_size.min(l.rec.size.saturating_sub(offset));
        let (up, egress) = (self.up.clone(), self.egress.clone());
        let wan = self.other_site(to).and_then(|_| self.wan.clone());
        let started = self.jobs.disk(|disk| async move {
            let data = on_disk(disk, move || crate::fsutil::read_at(&path, &renamed, offset, len)).await;
            if let Ok(d) = &data {
                Bucket::take(up.as_deref(), d.len()).await;
                Bucket::take(egress.as_deref(), d.len()).await;
                Bucket::take(wan.as_deref(), d.len()).await;
            }
            IoDone::Disk(Disk::Read { image, to: peer, index, request, channel, data })
        });
        if started.is_err() {
            tracing::warn!(%image, index, "too many disk jobs pending: not served");
            self.host.handle_upload_done(now, to, image, index);
        }
    }

    /// Writes a verified chunk, within the download cap (and the WAN cap,
    /// when it came from another site).
    pub(super) fn write(&mut self, image: Uuid, epoch: u64, chunk: VerifiedChunk<Bytes>) {
        let index = chunk.index();
        let Some((rec, Some(claim))) = self.images.get(&image).map(|l| (l.rec.clone(), l.claim)) else {
            return self.wrote(image, epoch, index, Err(Error::Superseded(format!("image {image}: no partial data"))));
        };
        let (site, down) = (self.site.clone(), self.down.clone());
        let wan = self.from_other_sites.remove(&(image, index)).then(|| self.wan.clone()).flatten();
        let started = self.jobs.disk(|disk| async move {
            Bucket::take(down.as_deref(), chunk.body().len()).await;
            Bucket::take(wan.as_deref(), chunk.body().len()).await;
            let result = on_disk(disk, move || site.cache().write_received(&rec, claim, &chunk)).await;
            IoDone::Disk(Disk::Wrote { image, epoch, index, result })
        });
        if started.is_err() {
            self.wrote(image, epoch, index, Err(Error::Net("too many disk jobs pending".into())));
        }
    }

    /// Makes written chunks durable and records them, in one commit.
    pub(super) fn commit(&mut self, image: Uuid, epoch: u64, written: Vec<(u32, ChunkHash)>) {
        let Some((rec, Some(claim))) = self.images.get(&image).map(|l| (l.rec.clone(), l.claim)) else {
            self.commits_running += 1;
            return self.committed(image, epoch, Err(Error::Superseded(format!("image {image}: no partial data"))));
        };
        let site = self.site.clone();
        let started = self.jobs.disk(|disk| async move {
            let result = on_disk(disk, move || site.cache().commit_received(&rec, claim, &written)).await;
            IoDone::Disk(Disk::Committed { image, epoch, result })
        });
        self.commits_running += 1;
        if started.is_err() {
            self.committed(image, epoch, Err(Error::Net("too many disk jobs pending".into())));
        }
    }

    /// Checks and installs a complete image.
    pub(super) fn install(&mut self, image: Uuid, epoch: u64) {
        let Some(mut rec) = self.images.get(&image).map(|l| l.rec.clone()) else { return };
        let site = self.site.clone();
        let started = self.jobs.disk(|disk| async move {
            let result = on_disk(disk, move || {
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
            IoDone::Disk(Disk::Installed { image, epoch, result })
        });
        if started.is_err() {
            self.installed(image, epoch, Err(Error::Net("too many disk jobs pending".into())));
        }
    }

    pub(super) fn on_disk(&mut self, done: Disk) {
        match done {
            Disk::Read { image, to, index, request, channel, data } => {
                // The requester left while the chunk was read: its slot is
                // already free, and there is no one to answer.
                let Some(&h) = self.handles.get(&to) else { return };
                let now = self.now();
                match data {
                    Ok(d) if self.host.image(image).is_some() => {
                        let n = d.len() as u64;
                        tracing::trace!(%image, index, peer = %to, "upload started");
                        if self.swarm.behaviour_mut().peer.send_response(channel, Response::Chunk(d.into())).is_ok() {
                            if let Some(l) = self.images.get_mut(&image) {
                                l.bytes_out += n;
                            }
                            self.metrics.bytes_out.get_or_create(&Metrics::image(image)).inc_by(n);
                            Metrics::count_site(&self.metrics.site_bytes_out, self.other_site(h), n);
                            self.uploads.start(request, (image, h, index), n, std::time::Instant::now());
                        } else {
                            self.host.handle_upload_done(now, h, image, index);
                        }
                    }
                    // Withdrawn while the chunk was read: not served.
                    Ok(_) => self.respond(channel, Response::Refused(Refusal::NotEndorsed)),
                    Err(e) => {
                        tracing::warn!(%image, index, error = %e, "reading a chunk to serve failed");
                        self.respond(channel, Response::Refused(Refusal::NotHeld));
                        self.host.handle_upload_done(now, h, image, index);
                    }
                }
            }
            Disk::Wrote { image, epoch, index, result } => self.wrote(image, epoch, index, result),
            Disk::Committed { image, epoch, result } => self.committed(image, epoch, result),
            Disk::Installed { image, epoch, result } => self.installed(image, epoch, result),
        }
    }

    fn wrote(&mut self, image: Uuid, epoch: u64, index: u32, result: Result<()>) {
        // A write for an earlier take-up of the image is ignored, not counted.
        if result.is_ok() && self.images.get(&image).is_some_and(|l| l.epoch == epoch) {
            tracing::trace!(%image, index, "chunk written");
            self.metrics.chunks_verified.get_or_create(&Metrics::image(image)).inc();
        }
        let result = self.disk_result(image, "storing a verified chunk", result);
        let now = self.now();
        self.host.handle_written(now, image, epoch, index, result);
    }

    fn committed(&mut self, image: Uuid, epoch: u64, result: Result<()>) {
        self.commits_running -= 1;
        let result = self.disk_result(image, "making written chunks durable", result);
        let now = self.now();
        self.host.handle_committed(now, image, epoch, result);
    }

    fn installed(&mut self, image: Uuid, epoch: u64, result: Result<ImageRecord>) {
        let now = self.now();
        let result = match result {
            Ok(rec) => {
                self.metrics.set_state(image, rec.state.name());
                if let Some(l) = self.images.get_mut(&image).filter(|l| l.epoch == epoch) {
                    l.rec = rec;
                }
                Ok(())
            }
            Err(e) => self.disk_result(image, "installing the complete image", Err::<(), _>(e)),
        };
        let ok = result.is_ok();
        self.host.handle_installed(now, image, epoch, result);
        if ok {
            self.announce(image);
        }
    }

    /// Logs a failed disk job (`what`) for `image`: work another writer
    /// took over at debug, anything else as an error kept for the status.
    fn disk_result(&mut self, image: Uuid, what: &str, result: Result<impl Sized>) -> Result<(), DiskFailed> {
        match result {
            Ok(_) => Ok(()),
            Err(e @ Error::Superseded(_)) => {
                tracing::debug!(%image, reason = %e, "{what}: superseded");
                Err(DiskFailed)
            }
            Err(e) => {
                tracing::error!(%image, error = %e, "{what} failed; the image starts over from what the store records");
                self.last_error = Some(e.to_string());
                Err(DiskFailed)
            }
        }
    }

    /// At shutdown: waits (within [`SHUTDOWN_COMMITS`]) for the commits under
    /// way, and hands back the chunks written but not committed, for
    /// [`commit_pending`]. Chunks still being written are fetched again
    /// after a restart.
    pub(super) async fn finish_commits(&mut self) -> Pending {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_COMMITS;
        let mut pending = Vec::new();
        while self.commits_running > 0 {
            match tokio::time::timeout_at(deadline, self.jobs.next()).await {
                Ok(IoDone::Disk(Disk::Committed { image, epoch, result })) => {
                    self.committed(image, epoch, result);
                    // What the machine would commit next is committed below.
                    while let Some(e) = self.host.poll_effect() {
                        if let Effect::Commit { image, epoch, chunks } = e {
                            pending.push((image, epoch, chunks));
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        pending.extend(self.host.take_unsynced());
        pending
            .into_iter()
            .filter_map(|(image, epoch, written)| {
                let l = self.images.get(&image).filter(|l| l.epoch == epoch)?;
                Some((l.rec.clone(), l.claim?, written))
            })
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
