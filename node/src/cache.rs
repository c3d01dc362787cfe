//! The image cache: back-to-source download, verification, installation,
//! expiry and garbage collection.
//!
//! # Contract
//! * [`Cache::download`] fetches an image from its `hv:uri` into
//!   `images/<uuid>.partial`, one chunk at a time, and commits what it wrote
//!   every [`COMMIT_EVERY`] or [`COMMIT_BYTES`], at the end, and before it
//!   gives up: the file synced, then the chunks' have-bits and hashes
//!   recorded (see [`crate::store`]). A crash loses at most what was not
//!   committed. It resumes after the last run's committed chunks, reads at
//!   most `hv:size` bytes (one more is an error), refuses to start without
//!   room for what is missing, and trips on stalled or trickling sources.
//!   Every open of a partial file (for the source or the swarm) reserves
//!   the whole image's blocks, so a full disk is one clear error at the
//!   open, never a write that fails halfway.
//! * The image is installed as `images/<uuid>` only after its size, its
//!   SHA-512 and, when the list carries one, its manifest root match the
//!   list. On a mismatch the partial data is deleted, so nothing unverified is
//!   ever kept or exposed.
//! * [`Cache::expire`] moves a complete image to
//!   `expired/<uuid>.<YYYY-mm-dd_HH-MM-SS>` (UTC) and deletes partial data.
//! * [`Cache::gc`] deletes expired images by age and, oldest first, while
//!   they take more than the cap on their bytes or free space is under the
//!   watermark. It touches only names of that form.
//! * Chunks received from peers are written and committed through
//!   [`Cache::write_received`] and [`Cache::commit_received`], under the
//!   rules of [`partial`]: one writer per partial file.
//! * [`Cache::restore_expired`] brings an image wanted again back from
//!   `expired/` when a file there holds its bytes ([`restore`]).
//! * [`Cache::reverify`] takes an installed image whose file changed on
//!   disk out of service ([`verify`]).
//! * [`Cache::reconcile`] repairs what a crash can leave: a complete file the
//!   record does not know about yet is re-verified, a missing one re-fetched.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use proto::Timestamp;
use proto::bitfield::Bitfield;
use proto::manifest::{ChunkSize, Manifest, ManifestRoot, hash_chunk};
use sha2::{Digest, Sha512};
use uuid::Uuid;

use crate::fetch::{Fetcher, RateGuard};
use crate::hooks::{Event, Hooks, Subject};
use crate::store::{ImageRecord, ImageState, SiteConfig, Store};
use crate::{Error, Result};

pub mod partial;
mod restore;
mod verify;

pub(crate) use restore::Misses;
pub use verify::Checked;

use partial::{Origin, PartialFile, Writers};

/// How often a download from the source commits what it wrote, at most: as
/// often as a download from peers ([`proto::transfer::COMMIT_EVERY`]).
pub const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_micros(proto::transfer::COMMIT_EVERY);
/// How many bytes a download from the source writes between commits, at
/// most.
pub const COMMIT_BYTES: u64 = 64 << 20;

/// The cache of one store.
#[derive(Debug)]
pub struct Cache<'a> {
    /// The store.
    pub store: &'a Store,
    /// Event hooks.
    pub hooks: &'a Hooks,
    /// The fetcher for back-to-source downloads.
    pub fetcher: &'a Fetcher,
    /// The site's settings.
    pub config: &'a SiteConfig,
    /// The site's turn to apply lists and settle images (see
    /// [`crate::site`]); [`Cache::install`] takes it to make an image
    /// available.
    pub(crate) turn: &'a Mutex<()>,
    /// Who writes which partial file (see [`Writers`]).
    pub(crate) writers: &'a Writers,
    /// Expired files known not to hold some bytes (see [`restore`]).
    pub(crate) misses: &'a Misses,
}

/// Waits for `turn`. The mutex guards no data of its own (the store's
/// writes are atomic), so a holder that panicked does not stop the others.
pub(crate) fn take_turn(turn: &Mutex<()>) -> MutexGuard<'_, ()> {
    turn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Files deleted.
    pub removed: Vec<PathBuf>,
    /// Bytes freed.
    pub bytes: u64,
}

impl Cache<'_> {
    /// Downloads `rec` from its source and installs it. `progress` is told the
    /// offset reached. On return `rec` is saved with its new state.
    pub fn download(&self, rec: &mut ImageRecord, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let source = self.claim_for_source(rec.uuid)?;
        let PartialFile { file, mut have, .. } = self.open_for_source(rec, &source)?;
        let first_missing = have.missing().next();
        let streamed = match first_missing {
            Some(first) => self.fetch_chunks(rec, &file, &mut have, first, progress)?,
            None => None,
        };
        drop(file);
        self.install(rec, streamed)
    }

    /// Streams chunks `first..` from the source into `file`. Returns the
    /// SHA-512 of the whole image when the stream covered all of it.
    fn fetch_chunks(
        &self,
        rec: &ImageRecord,
        file: &File,
        have: &mut Bitfield,
        first: u32,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<[u8; 64]>> {
        let (size, cs) = (rec.size, rec.chunk_size);
        let chunks = have.len();
        let url = crate::fetch::redact(&rec.uri);
        let bad = |reason: String| Error::BadData(format!("{url}: {reason}"));
        let offset = u64::from(first) * cs;
        let source = self.fetcher.open(&rec.uri, offset)?;
        let mut reader = source.reader;
        let mut guard = RateGuard::new(&self.fetcher.timeouts());
        if source.start < offset {
            let skip = offset - source.start;
            let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink())
                .map_err(|e| Error::Fetch { url: url.clone(), reason: e.to_string() })?;
            if skipped < skip {
                return Err(bad(format!("the source ended after {} of {size} bytes", source.start + skipped)));
            }
        }
        let mut sha = (offset == 0).then(Sha512::new);
        let mut buf = vec![0u8; cs as usize];
        let mut pos = offset;
        let mut batch = Batch::default();
        let partial = self.store.paths().partial(rec.uuid);
        // Where the download starts: what comes after it is new.
        progress(offset);
        for index in first..chunks {
            let want = (size - pos).min(cs) as usize;
            let read = match read_full(&mut reader, &mut buf[..want], &mut guard) {
                Ok(got) if got < want => {
                    Err(bad(format!("the source ended after {} of {size} bytes", pos + got as u64)))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(Error::Fetch { url: url.clone(), reason: e }),
            };
            if let Err(e) = read {
                // What was written is kept for the next attempt.
                self.commit_chunks(rec, file, &batch.written, Origin::Source)?;
                return Err(e);
            }
            let data = &buf[..want];
            if let Some(s) = sha.as_mut() {
                s.update(data);
            }
            if !have.get(index) {
                file.write_all_at(data, pos).map_err(Error::io("writing", &partial))?;
                have.set(index);
                batch.add(index, hash_chunk(data), want as u64);
                if batch.due() {
                    self.commit_chunks(rec, file, &batch.take(), Origin::Source)?;
                }
            }
            pos += want as u64;
            progress(pos);
        }
        self.commit_chunks(rec, file, &batch.take(), Origin::Source)?;
        let mut extra = [0u8; 1];
        if matches!(reader.read(&mut extra), Ok(n) if n > 0) {
            return Err(bad(format!("the source sent more than the {size} bytes the list names")));
        }
        Ok(sha.map(|s| s.finalize().into()))
    }

    /// Checks a complete partial file against the list (size, manifest root,
    /// and SHA-512, computed unless `streamed_sha` already is) and moves it
    /// into place. On a mismatch the partial data is deleted.
    ///
    /// `rec` may be stale: a download runs outside the turn, and a list or a
    /// policy change may have withdrawn the image, or changed its bytes,
    /// meanwhile. So the image is made available in the turn, and only if
    /// the record then still endorses, approves and caches these bytes;
    /// otherwise the data is dropped (when the record no longer wants it)
    /// and the call fails. On success `rec` is the record as saved. Never
    /// call this with the turn held.
    pub fn install(&self, rec: &mut ImageRecord, streamed_sha: Option<[u8; 64]>) -> Result<()> {
        let paths = self.store.paths();
        let partial = paths.partial(rec.uuid);
        if let Err(e) = self.verify_partial(rec, &partial, streamed_sha) {
            self.discard(rec)?;
            return Err(e);
        }
        let turn = take_turn(self.turn);
        let fresh = match self.store.image(rec.uuid)? {
            Some(f) if f.wants_data() && f.sha512 == rec.sha512 && f.root == rec.root => f,
            other => {
                if !other.as_ref().is_some_and(ImageRecord::wants_data) {
                    self.discard(rec)?;
                }
                // Else other bytes are wanted now: whoever fetches them
                // starts the partial file over.
                return Err(Error::Refused(format!(
                    "image {}: withdrawn or changed while it was fetched; not installed",
                    rec.uuid
                )));
            }
        };
        let name = format!("{}.partial", rec.uuid);
        self.fire(Event::AvailablePrefix, &fresh, Some(&name));
        let target = paths.image(rec.uuid);
        self.move_partial(rec.uuid, &target)?;
        sync_dir(&paths.images)?;
        self.record_available(fresh, turn, rec)?;
        tracing::info!(image = %rec.uuid, "image available");
        Ok(())
    }

    /// Records `fresh`, whose bytes now stand installed, as available, then
    /// leaves the turn and tells the hooks; `rec` becomes the record.
    fn record_available(&self, mut fresh: ImageRecord, turn: MutexGuard<'_, ()>, rec: &mut ImageRecord) -> Result<()> {
        self.store.clear_have(fresh.uuid)?;
        fresh.state = ImageState::Available;
        fresh.last_error = None;
        fresh.data_for = Some(fresh.sha512.clone());
        self.store.put_image(&fresh)?;
        drop(turn);
        *rec = fresh;
        self.fire(Event::AvailablePostfix, rec, Some(&rec.uuid.to_string()));
        Ok(())
    }

    fn verify_partial(&self, rec: &ImageRecord, partial: &Path, streamed_sha: Option<[u8; 64]>) -> Result<()> {
        let chunks = rec.chunk_count();
        let hashes: Option<Vec<[u8; 32]>> = self.store.chunk_hashes(rec.uuid, chunks)?.into_iter().collect();
        let hashes = hashes.ok_or_else(|| Error::BadData("some chunks are missing".into()))?;
        if let Some(root) = &rec.root {
            let root = ManifestRoot::parse_hex(root).map_err(Error::Invalid)?;
            let manifest = Manifest::from_hashes(ChunkSize::new(rec.chunk_size)?, rec.size, hashes)?;
            manifest.check_root(root).map_err(|e| Error::BadData(format!("image {}: {e}", rec.uuid)))?;
        }
        let len = fs::metadata(partial).map_err(Error::io("reading", partial))?.len();
        if len != rec.size {
            return Err(Error::BadData(format!("image {}: {len} bytes, the list says {}", rec.uuid, rec.size)));
        }
        let sha = match streamed_sha {
            Some(s) => s,
            // The root matched: every chunk's BLAKE3 hash, taken when it was
            // written, is bound to the signed list. SHA-512 adds nothing but
            // a check of the disk, which strict mode asks for. A root that a
            // master attested binds the chunks to the site's word only: the
            // endorser's SHA-512 has the last word.
            None if rec.root.is_some() && rec.attestation.is_none() && !self.config.strict_sha512 => return Ok(()),
            None => sha512_file(partial)?,
        };
        if hex::encode(sha) != rec.sha512 {
            return Err(Error::BadData(format!(
                "image {}: SHA-512 {} does not match the list's {}",
                rec.uuid,
                hex::encode(sha),
                rec.sha512
            )));
        }
        Ok(())
    }

    /// Takes an image out of the cache: a complete one moves to `expired/`,
    /// partial data is deleted. `rec` is saved with its new state.
    pub fn expire(&self, rec: &mut ImageRecord, now: Timestamp) -> Result<()> {
        let paths = self.store.paths();
        let image = paths.image(rec.uuid);
        if image.exists() {
            self.fire(Event::ExpirePrefix, rec, Some(&rec.uuid.to_string()));
            let (name, target) = expired_target(&paths.expired, rec.uuid, now);
            fs::rename(&image, &target).map_err(Error::io("expiring", &image))?;
            sync_dir(&paths.images)?;
            sync_dir(&paths.expired)?;
            self.fire(Event::ExpirePostfix, rec, Some(&name));
            tracing::info!(image = %rec.uuid, to = %target.display(), "image expired");
        }
        self.discard(rec)?;
        rec.state = rec.derived_state(false);
        self.store.put_image(rec)
    }

    /// Brings `rec` in line with the files on disk after a crash or outside
    /// interference.
    pub fn reconcile(&self, rec: &mut ImageRecord) -> Result<()> {
        let image = self.store.paths().image(rec.uuid);
        let complete = image.exists();
        match (rec.state, complete) {
            (ImageState::Available, false) => {
                tracing::warn!(image = %rec.uuid, "cached image file is missing; it will be fetched again");
                rec.state = rec.derived_state(false);
                rec.data_for = None;
                self.store.put_image(rec)?;
            }
            (state, true) if state != ImageState::Available => {
                // Installed, but the record was not saved before a crash.
                let ok = rec.data_for.as_deref() == Some(rec.sha512.as_str()) && holds_bytes(&image, rec)?;
                if ok {
                    rec.state = rec.derived_state(true);
                    self.store.clear_have(rec.uuid)?;
                    self.store.put_image(rec)?;
                } else {
                    tracing::warn!(image = %rec.uuid, "an unverifiable file stood in the cache; deleting it");
                    fs::remove_file(&image).map_err(Error::io("deleting", &image))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Deletes expired images older than the configured age and, oldest
    /// first, while free space is under the watermark.
    pub fn gc(&self, now: Timestamp) -> Result<GcReport> {
        let dir = &self.store.paths().expired;
        let mut entries: Vec<(Timestamp, PathBuf, u64)> = Vec::new();
        for e in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
            let e = e.map_err(Error::io("listing", dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let (Some(when), Ok(meta)) = (parse_expired_name(&name), e.metadata()) else {
                continue;
            };
            if meta.is_file() {
                entries.push((when, e.path(), meta.len()));
            }
        }
        entries.sort();
        let mut report = GcReport::default();
        let max_age = i64::from(self.config.expired_max_age_days) * 86_400;
        let mut keep = Vec::new();
        for (when, path, len) in entries {
            if now.unix() - when.unix() > max_age {
                remove(&path, len, &mut report)?;
            } else {
                keep.push((path, len));
            }
        }
        if let Some(max) = self.config.expired_max_bytes {
            // The oldest go first, until the rest fit.
            let mut total: u64 = keep.iter().map(|(_, len)| len).sum();
            let mut over = 0;
            while total > max && over < keep.len() {
                total -= keep[over].1;
                over += 1;
            }
            for (path, len) in keep.drain(..over) {
                remove(&path, len, &mut report)?;
            }
        }
        for (path, len) in keep {
            if free_percent(dir)? >= f64::from(self.config.min_free_percent) {
                break;
            }
            remove(&path, len, &mut report)?;
        }
        Ok(report)
    }

    fn fire(&self, event: Event, rec: &ImageRecord, filename: Option<&str>) {
        let subject = Subject { entry: &rec.entry, list: rec.list, vo: rec.vo.as_deref(), filename };
        self.hooks.fire(event, Some(subject));
    }
}

fn remove(path: &Path, len: u64, report: &mut GcReport) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        // Restored meanwhile (approved again): nothing to collect.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("deleting", path)(e)),
    }
    tracing::info!(file = %path.display(), "expired image deleted");
    report.removed.push(path.to_path_buf());
    report.bytes += len;
    Ok(())
}

/// A free name in `expired/`: `<uuid>.<stamp>`, or `<uuid>.<stamp>.<n>` when
/// the image expired more than once within a second.
fn expired_target(dir: &Path, uuid: Uuid, now: Timestamp) -> (String, PathBuf) {
    let base = format!("{uuid}.{}", expired_stamp(now));
    let mut name = base.clone();
    let mut n = 0;
    while dir.join(&name).exists() {
        n += 1;
        name = format!("{base}.{n}");
    }
    let path = dir.join(&name);
    (name, path)
}

/// `YYYY-mm-dd_HH-MM-SS`, the expired-file suffix.
fn expired_stamp(t: Timestamp) -> String {
    t.to_string().replace('T', "_").replace(':', "-").trim_end_matches('Z').to_owned()
}

/// The time in an expired file's name `<uuid>.<YYYY-mm-dd_HH-MM-SS>[.<n>]`;
/// `None` for any other name, which GC then leaves alone.
fn parse_expired_name(name: &str) -> Option<Timestamp> {
    let (id, rest) = name.split_once('.')?;
    let stamp = match rest.split_once('.') {
        Some((stamp, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => stamp,
        Some(_) => return None,
        None => rest,
    };
    Uuid::try_parse(id).ok().filter(|_| id.len() == 36)?;
    let (date, time) = stamp.split_once('_')?;
    Timestamp::parse(&format!("{date}T{}Z", time.replace('-', ":"))).ok()
}

fn free_percent(dir: &Path) -> Result<f64> {
    let free = fs4::available_space(dir).map_err(Error::io("measuring free space of", dir))?;
    let total = fs4::total_space(dir).map_err(Error::io("measuring free space of", dir))?;
    Ok(if total == 0 { 100.0 } else { free as f64 * 100.0 / total as f64 })
}

fn check_space(dir: &Path, needed: u64) -> Result<()> {
    let free = fs4::available_space(dir).map_err(Error::io("measuring free space of", dir))?;
    if free < needed {
        return Err(Error::Refused(format!(
            "not enough space in {}: {} needed, {} free",
            dir.display(),
            crate::units::format_size(needed),
            crate::units::format_size(free)
        )));
    }
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8], guard: &mut RateGuard) -> Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                guard.progress(k as u64)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(n)
}

/// SHA-512 of a whole file.
/// Whether the file at `path` holds `rec`'s bytes: the list's size, then
/// its SHA-512, read in full. A missing file holds nothing; a file that
/// cannot be read is an error, not a verdict.
fn holds_bytes(path: &Path, rec: &ImageRecord) -> Result<bool> {
    match fs::metadata(path) {
        Ok(m) if m.len() != rec.size => Ok(false),
        Ok(_) => Ok(hex::encode(sha512_file(path)?) == rec.sha512),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("checking", path)(e)),
    }
}

pub fn sha512_file(path: &Path) -> Result<[u8; 64]> {
    let mut f = File::open(path).map_err(Error::io("opening", path))?;
    let mut sha = Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            return Ok(sha.finalize().into());
        }
        sha.update(&buf[..n]);
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("syncing", dir))
}

/// Chunks a download wrote since its last commit.
#[derive(Debug)]
struct Batch {
    written: Vec<(u32, [u8; 32])>,
    bytes: u64,
    since: std::time::Instant,
}

impl Default for Batch {
    fn default() -> Self {
        Self { written: Vec::new(), bytes: 0, since: std::time::Instant::now() }
    }
}

impl Batch {
    fn add(&mut self, index: u32, hash: [u8; 32], bytes: u64) {
        self.written.push((index, hash));
        self.bytes += bytes;
    }

    /// Whether the batch is due for a commit.
    fn due(&self) -> bool {
        self.bytes >= COMMIT_BYTES || self.since.elapsed() >= COMMIT_EVERY
    }

    /// The chunks to commit; the batch starts over.
    fn take(&mut self) -> Vec<(u32, [u8; 32])> {
        std::mem::take(self).written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_names_round_trip_and_nothing_else_matches() {
        let t = Timestamp::parse("2026-11-23T05:06:07Z").unwrap();
        assert_eq!(expired_stamp(t), "2026-11-23_05-06-07");
        let name = format!("488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d.{}", expired_stamp(t));
        assert_eq!(parse_expired_name(&name), Some(t));
        assert_eq!(parse_expired_name(&format!("{name}.2")), Some(t));
        assert_eq!(parse_expired_name(&format!("{name}.x")), None);
        for other in ["notes.txt", "488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d", "x.2026-11-23_05-06-07", ".hidden"] {
            assert_eq!(parse_expired_name(other), None, "{other}");
        }
    }
}
