//! Who writes an image's partial file, `images/<uuid>.partial`.
//!
//! # Contract
//! A partial file has one writer at a time, within the one process that
//! opens the store:
//! * **A download from the source fills the file alone.** The bytes it
//!   writes are checked only once the image is complete, so while it runs,
//!   chunks received from peers are neither written into the file nor
//!   recorded: a peer's verified chunk recorded beside the source's bytes
//!   for it would vouch for whichever was written last.
//! * **Peers' chunks are written under a [`Claim`].** [`Cache::open_partial`]
//!   hands one out for the content it opens the file for. Discarding the
//!   data, installing it, or opening the file for other content ends it,
//!   and every write and record of peers' chunks is checked against it under
//!   the same lock. So a chunk written or committed by an earlier user of
//!   the file (an image swarmed on again after its data was discarded, or
//!   for a new list version with other bytes) never lands in the new data,
//!   nor counts for it: not even when the new data is for the same bytes,
//!   whose file was deleted and created anew in between. Nor does a chunk
//!   land in an installed image.
//! * The store, too, records only chunks of the content the data is for
//!   ([`ImageRecord::data_for`]; see
//!   [`Store::record_chunks`](crate::store::Store::record_chunks)), which is
//!   what guards a download's commits.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use proto::bitfield::Bitfield;
use proto::manifest::VerifiedChunk;
use uuid::Uuid;

use super::{Cache, check_space};
use crate::store::{ImageRecord, ImageState};
use crate::{Error, Result};

/// The writers of partial files within one process (see the module docs).
#[derive(Debug, Default)]
pub struct Writers {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Images a download from the source is filling.
    sourcing: HashSet<Uuid>,
    /// The claim in force on each image's partial data.
    claims: HashMap<Uuid, Claim>,
    /// Claims handed out so far.
    issued: u64,
}

impl Writers {
    /// For writes and records of peers' chunks, which may run side by side.
    fn shared(&self) -> RwLockReadGuard<'_, State> {
        // The state stays consistent whatever a holder did before it panicked.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// For claims, and for changes of what the partial data is for.
    fn exclusive(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Refuses peers' chunks of `uuid` written under `claim`, unless that
    /// claim is in force and no download from the source fills the file.
    fn check(&self, uuid: Uuid, claim: Claim) -> Result<()> {
        self.not_sourcing(uuid)?;
        if self.claims.get(&uuid) != Some(&claim) {
            return Err(Error::Superseded(format!(
                "image {uuid}: its partial data was discarded or claimed anew since this chunk was received"
            )));
        }
        Ok(())
    }

    /// Refuses a peers' writer of `uuid` while a download from the source
    /// fills it.
    fn not_sourcing(&self, uuid: Uuid) -> Result<()> {
        if self.sourcing.contains(&uuid) {
            return Err(Error::Superseded(format!("image {uuid}: being downloaded from its source")));
        }
        Ok(())
    }
}

/// The right to write peers' chunks into an image's partial data, from
/// [`Cache::open_partial`], until the data is discarded or opened for other
/// content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim(u64);

/// A partial file opened for writing.
#[derive(Debug)]
pub struct PartialFile {
    /// The file.
    pub file: File,
    /// The chunks already durable in it.
    pub have: Bitfield,
    /// Under which peers' chunks are written into it.
    pub claim: Claim,
}

/// Who wrote the chunks being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A download from the source, which holds its [`SourceClaim`].
    Source,
    /// Peers, under this claim.
    Peer(Claim),
}

/// An image claimed for a download from the source, until dropped.
pub(super) struct SourceClaim<'a> {
    writers: &'a Writers,
    uuid: Uuid,
}

impl Drop for SourceClaim<'_> {
    fn drop(&mut self) {
        self.writers.exclusive().sourcing.remove(&self.uuid);
    }
}

impl Cache<'_> {
    /// Opens (creating and sizing it when needed) `images/<uuid>.partial` for
    /// writing peers' chunks of `rec`, and returns it with the chunks already
    /// durable there and the [`Claim`] in force on it. Data written for
    /// other bytes than `rec`'s SHA-512 is forgotten first, and the file is
    /// for these bytes from then on, under a new claim. Refused
    /// ([`Error::Superseded`]) when `rec` is out of date (the store no longer
    /// holds the image partial with these bytes) and while a download from
    /// the source fills the file; refused without room for what is missing.
    pub fn open_partial(&self, rec: &mut ImageRecord) -> Result<PartialFile> {
        self.open(rec, false)
    }

    /// [`Cache::open_partial`] for the download from the source that holds
    /// `_source`: the download's own claim does not refuse it.
    pub(super) fn open_for_source(&self, rec: &mut ImageRecord, _source: &SourceClaim<'_>) -> Result<PartialFile> {
        self.open(rec, true)
    }

    fn open(&self, rec: &mut ImageRecord, for_source: bool) -> Result<PartialFile> {
        let paths = self.store.paths();
        let (uuid, size, cs) = (rec.uuid, rec.size, rec.chunk_size);
        let chunks = rec.chunk_count();
        let partial = paths.partial(uuid);
        let (claim, have) = {
            let mut w = self.writers.exclusive();
            if !for_source {
                w.not_sourcing(uuid)?;
            }
            // `rec` may be stale (it was read outside the site's turn): the
            // store says what the image and its data are now, and only
            // `data_for` is written.
            let stored = self.store.image(uuid)?;
            let Some(data_for) =
                stored.filter(|r| r.state == ImageState::Partial && r.sha512 == rec.sha512).map(|r| r.data_for)
            else {
                return Err(Error::Superseded(format!("image {uuid}: no longer partial with these bytes")));
            };
            if data_for.as_deref() != Some(rec.sha512.as_str()) {
                // The chunks first: a crash in between leaves no chunk
                // recorded for either content.
                self.store.clear_chunks(uuid)?;
                let sha = rec.sha512.clone();
                self.store.update_image(uuid, |r| r.data_for = Some(sha.clone()))?;
                w.claims.remove(&uuid);
            }
            rec.data_for = Some(rec.sha512.clone());
            let mut have = self.store.have(uuid, chunks)?;
            if have.count() > 0 && !partial.exists() {
                // Bits without their data: start over, under a new claim.
                self.store.clear_chunks(uuid)?;
                w.claims.remove(&uuid);
                have = Bitfield::new(chunks);
            }
            let State { claims, issued, .. } = &mut *w;
            let claim = *claims.entry(uuid).or_insert_with(|| {
                *issued += 1;
                Claim(*issued)
            });
            (claim, have)
        };
        let missing_bytes = size.saturating_sub(u64::from(have.count()) * cs);
        check_space(&paths.images, missing_bytes)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(Error::io("opening", &partial))?;
        file.set_len(size).map_err(Error::io("sizing", &partial))?;
        // The whole image's blocks are reserved now: a full disk is one
        // clear error here, not a write that fails mid-image (a sparse file
        // would meet ENOSPC chunk by chunk, and every concurrent open would
        // pass the check above).
        match fs4::FileExt::allocate(&file, size) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                return Err(Error::io("reserving the image's space in", &partial)(e));
            }
            // A file system that cannot reserve (no fallocate) keeps the
            // file sparse: the check above is then all there is.
            Err(e) => tracing::debug!(file = %partial.display(), error = %e, "space not reserved"),
        }
        Ok(PartialFile { file, have, claim })
    }

    /// Whether `claim` is still in force on `uuid`'s partial data, and no
    /// download from the source fills it.
    pub fn claim_in_force(&self, uuid: Uuid, claim: Claim) -> bool {
        self.writers.shared().check(uuid, claim).is_ok()
    }

    /// Whether some writer (the swarm, or a download from the source) works
    /// on `uuid`'s partial data now.
    pub(super) fn is_written(&self, uuid: Uuid) -> bool {
        let w = self.writers.shared();
        w.sourcing.contains(&uuid) || w.claims.contains_key(&uuid)
    }

    /// Whether a download from the source is filling `uuid`'s partial file
    /// in this process (chunks from peers are then refused).
    pub fn is_sourcing(&self, uuid: Uuid) -> bool {
        self.writers.shared().sourcing.contains(&uuid)
    }

    /// Writes a chunk of `rec` received from a peer, which only a check
    /// against the verified manifest makes, at its offset in the partial
    /// file that [`Cache::open_partial`] opened under `claim`. Refused once
    /// the claim has ended, and while a download from the source fills the
    /// file. The bytes can then be read back, but are neither durable nor
    /// recorded until [`Cache::commit_received`].
    pub fn write_received<B: AsRef<[u8]>>(
        &self,
        rec: &ImageRecord,
        claim: Claim,
        chunk: &VerifiedChunk<B>,
    ) -> Result<()> {
        let path = self.store.paths().partial(rec.uuid);
        let w = self.writers.shared();
        w.check(rec.uuid, claim)?;
        let file = File::options().write(true).open(&path).map_err(Error::io("opening", &path))?;
        let offset = u64::from(chunk.index()) * rec.chunk_size;
        file.write_all_at(chunk.body().as_ref(), offset).map_err(Error::io("writing", &path))
    }

    /// Syncs the partial file, and only then records the received chunks in
    /// `written`, each with its BLAKE3 hash, as present: one sync and one
    /// store transaction for all of them. Every chunk in `written` must have
    /// been written by [`Cache::write_received`] under `claim`. Refused,
    /// recording nothing, on the same grounds as that.
    pub fn commit_received(&self, rec: &ImageRecord, claim: Claim, written: &[(u32, [u8; 32])]) -> Result<()> {
        let path = self.store.paths().partial(rec.uuid);
        let file = File::options().write(true).open(&path).map_err(Error::io("opening", &path))?;
        self.commit_chunks(rec, &file, written, Origin::Peer(claim))
    }

    /// Syncs `file` (the partial file), and only then records the chunks in
    /// `written`. Peers' chunks are checked as [`Cache::write_received`]
    /// checks them, under the same lock as the record; the store checks
    /// that the data is still for `rec`'s content.
    pub(super) fn commit_chunks(
        &self,
        rec: &ImageRecord,
        file: &File,
        written: &[(u32, [u8; 32])],
        origin: Origin,
    ) -> Result<()> {
        if written.is_empty() {
            return Ok(());
        }
        let p = self.store.paths().partial(rec.uuid);
        file.sync_data().map_err(Error::io("syncing", &p))?;
        {
            let w = self.writers.shared();
            if let Origin::Peer(claim) = origin {
                w.check(rec.uuid, claim)?;
            }
            self.store.record_chunks(rec.uuid, &rec.sha512, rec.chunk_count(), written)?;
        }
        // Outside the lock: writes go on while the database is made durable.
        self.store.flush()
    }

    /// Claims `uuid`'s partial file for a download from the source.
    pub(super) fn claim_for_source(&self, uuid: Uuid) -> Result<SourceClaim<'_>> {
        if !self.writers.exclusive().sourcing.insert(uuid) {
            return Err(Error::Superseded(format!("image {uuid}: already being downloaded from its source")));
        }
        Ok(SourceClaim { writers: self.writers, uuid })
    }

    /// Moves `uuid`'s complete partial file to `target`, read-only, ending
    /// the claim on it, so that no peer's chunk is written into the installed
    /// image, and no tool of the host's by mistake.
    pub(super) fn move_partial(&self, uuid: Uuid, target: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut w = self.writers.exclusive();
        w.claims.remove(&uuid);
        let partial = self.store.paths().partial(uuid);
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o444))
            .map_err(Error::io("making read-only", &partial))?;
        fs::rename(&partial, target).map_err(Error::io("installing", target))
    }

    /// Deletes partial data and its have-bits, ending the claim on it.
    pub(super) fn discard(&self, rec: &mut ImageRecord) -> Result<()> {
        let mut w = self.writers.exclusive();
        w.claims.remove(&rec.uuid);
        self.store.clear_chunks(rec.uuid)?;
        self.store.update_image(rec.uuid, |r| r.data_for = None)?;
        rec.data_for = None;
        let partial = self.store.paths().partial(rec.uuid);
        match fs::remove_file(&partial) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting", &partial)(e)),
        }
    }
}
