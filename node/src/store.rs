//! The node's persistent state, behind an interface of our own.
//!
//! # Layout
//! Under the data directory:
//! * `meta/`: a sled database with the trees `config`, `endorsers`,
//!   `subscriptions`, `lists` (the last [`KEPT_VERSIONS`] accepted versions
//!   of each signed list, verbatim, keyed by list UUID and sequence number),
//!   `list_index` (those versions' [`ListRef`] and acceptance time, same
//!   keys), `images` (one record per
//!   image UUID),
//!   `have` (a [`Bitfield`] per partial image) and `chunks` (the BLAKE3 hash of
//!   each chunk written, keyed by image UUID and chunk index).
//! * `images/<uuid>.partial`: image data being written, at chunk offsets;
//!   `images/<uuid>`: a complete, verified image.
//! * `expired/<uuid>.<YYYY-mm-dd_HH-MM-SS>`: images no longer endorsed.
//!
//! Records are JSON, so the database never depends on our types' layout.
//!
//! # Write order
//! A chunk is written to `<uuid>.partial` and the file is synced *before*
//! [`Store::record_chunks`] sets its have-bit and hash in one transaction
//! (with those of the other chunks synced by the same call), and the
//! database is flushed before the chunks count as durable. A crash
//! therefore never leaves a bit set for data that is not on disk; at worst
//! a chunk is on disk without its bit and is fetched again. A list version
//! is accepted in one transaction with the subscription and image records
//! it changes ([`Store::accept_list`]), so a crash leaves either the old
//! list in force or the new one, never a mix.
//! Only one process opens a store at a time (sled's lock).

use std::path::{Path, PathBuf};

use proto::Timestamp;
use proto::bitfield::Bitfield;
use proto::trust::ApprovedEndorser;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use uuid::Uuid;

use crate::{Error, Result};

mod records;

pub use records::{
    AcceptedList, Decision, ImageRecord, ImageState, KEPT_VERSIONS, ListRef, NewImages, SiteConfig, Subscription,
};

/// Where a store keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data directory.
    pub root: PathBuf,
    /// `images/`: partial and complete images.
    pub images: PathBuf,
    /// `expired/`: images no longer endorsed.
    pub expired: PathBuf,
    /// `meta/`: the database.
    pub meta: PathBuf,
}

impl Paths {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            images: root.join("images"),
            expired: root.join("expired"),
            meta: root.join("meta"),
        }
    }

    /// Where a complete image lives.
    pub fn image(&self, uuid: Uuid) -> PathBuf {
        self.images.join(uuid.hyphenated().to_string())
    }

    /// Where a partial image is written.
    pub fn partial(&self, uuid: Uuid) -> PathBuf {
        self.images.join(format!("{}.partial", uuid.hyphenated()))
    }
}

/// The node's metadata store.
#[derive(Debug)]
pub struct Store {
    paths: Paths,
    db: sled::Db,
    config: sled::Tree,
    endorsers: sled::Tree,
    subscriptions: sled::Tree,
    lists: sled::Tree,
    list_index: sled::Tree,
    images: sled::Tree,
    have: sled::Tree,
    chunks: sled::Tree,
}

const SITE_KEY: &[u8] = b"site";
const CLOCK_KEY: &[u8] = b"last-seen-time";
const POLICY_KEY: &[u8] = b"policy";

/// The site policy this host follows, as a master signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// The policy.
    pub policy: proto::policy::Policy,
    /// Its signed bytes, hex, to show peers.
    pub signed: String,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let paths = Paths::new(data_dir);
        for dir in [&paths.root, &paths.images, &paths.expired] {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        }
        let db = open_db(&paths.meta)?;
        let tree = |name: &str| db.open_tree(name).map_err(store_err);
        Ok(Self {
            config: tree("config")?,
            endorsers: tree("endorsers")?,
            subscriptions: tree("subscriptions")?,
            lists: tree("lists")?,
            list_index: tree("list_index")?,
            images: tree("images")?,
            have: tree("have")?,
            chunks: tree("chunks")?,
            db,
            paths,
        })
    }

    /// Where this store keeps its files.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(store_err)
    }

    /// The site configuration, if `init` ran.
    pub fn site_config(&self) -> Result<Option<SiteConfig>> {
        get(&self.config, SITE_KEY)
    }

    /// Replaces the site configuration.
    pub fn set_site_config(&self, c: &SiteConfig) -> Result<()> {
        put(&self.config, SITE_KEY, c)?;
        self.flush()
    }

    /// The site policy this host follows, if a master sent one.
    pub fn policy(&self) -> Result<Option<StoredPolicy>> {
        get(&self.config, POLICY_KEY)
    }

    /// Records the site policy this host follows.
    pub fn set_policy(&self, p: &StoredPolicy) -> Result<()> {
        put(&self.config, POLICY_KEY, p)?;
        self.flush()
    }

    /// The latest time any command ran at, to detect the clock stepping back.
    pub fn last_seen_time(&self) -> Result<Option<Timestamp>> {
        get(&self.config, CLOCK_KEY)
    }

    /// Records `t` as the latest time seen, if it is later.
    pub fn note_time(&self, t: Timestamp) -> Result<()> {
        if self.last_seen_time()?.is_none_or(|last| t > last) {
            put(&self.config, CLOCK_KEY, &t)?;
        }
        Ok(())
    }

    /// The approved endorsers.
    pub fn endorsers(&self) -> Result<Vec<ApprovedEndorser>> {
        let mut out = Vec::new();
        for item in self.endorsers.iter() {
            let (_, v) = item.map_err(store_err)?;
            let (dn, ca): (String, String) = decode(&v)?;
            out.push(ApprovedEndorser { dn, ca: Some(ca) });
        }
        Ok(out)
    }

    /// Approves an endorser; returns whether it was new.
    pub fn add_endorser(&self, dn: &str, ca: &str) -> Result<bool> {
        let key = endorser_key(dn, ca);
        let new = !self.endorsers.contains_key(&key).map_err(store_err)?;
        put(&self.endorsers, &key, &(dn, ca))?;
        self.flush()?;
        Ok(new)
    }

    /// Removes an endorser; returns whether it was approved.
    pub fn remove_endorser(&self, dn: &str, ca: &str) -> Result<bool> {
        let old = self.endorsers.remove(endorser_key(dn, ca)).map_err(store_err)?;
        self.flush()?;
        Ok(old.is_some())
    }

    /// Every subscription.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>> {
        values(&self.subscriptions)
    }

    /// One subscription by list identifier.
    pub fn subscription(&self, id: Uuid) -> Result<Option<Subscription>> {
        get(&self.subscriptions, id.as_bytes())
    }

    /// Creates or replaces a subscription.
    pub fn put_subscription(&self, s: &Subscription) -> Result<()> {
        put(&self.subscriptions, s.identifier.as_bytes(), s)?;
        self.flush()
    }

    /// A stored list message.
    pub fn list_message(&self, id: Uuid, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.lists.get(list_key(id, seq)).map_err(store_err)?.map(|v| v.to_vec()))
    }

    /// The history of accepted versions of list `id`, oldest first.
    pub fn list_history(&self, id: Uuid) -> Result<Vec<AcceptedList>> {
        self.list_index.scan_prefix(id.as_bytes()).values().map(|v| decode(&v.map_err(store_err)?)).collect()
    }

    /// Accepts a list version: stores the message and its index entry, the
    /// subscription (whose `current` names this version) and the image
    /// records, and drops the versions beyond the last [`KEPT_VERSIONS`], in
    /// one transaction, then flushes.
    pub fn accept_list(
        &self,
        sub: &Subscription,
        accepted_at: Timestamp,
        message: &[u8],
        images: &[ImageRecord],
    ) -> Result<()> {
        let current = sub.current.clone().ok_or_else(|| Error::Store("accepting a list without a version".into()))?;
        let seq = current.seq;
        let index_bytes = encode(&AcceptedList { list: current, accepted_at })?;
        let sub_bytes = encode(sub)?;
        let image_bytes: Vec<(Uuid, Vec<u8>)> =
            images.iter().map(|i| Ok((i.uuid, encode(i)?))).collect::<Result<_>>()?;
        let oldest_kept = list_key(sub.identifier, (seq + 1).saturating_sub(KEPT_VERSIONS));
        let dropped: Vec<sled::IVec> = self
            .list_index
            .range(list_key(sub.identifier, 0)..oldest_kept)
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(store_err)?;
        (&self.subscriptions, &self.lists, &self.list_index, &self.images)
            .transaction(|(subs, lists, index, imgs)| {
                for key in &dropped {
                    lists.remove(key)?;
                    index.remove(key)?;
                }
                lists.insert(list_key(sub.identifier, seq).to_vec(), message)?;
                index.insert(list_key(sub.identifier, seq).to_vec(), index_bytes.as_slice())?;
                subs.insert(sub.identifier.as_bytes(), sub_bytes.as_slice())?;
                for (uuid, bytes) in &image_bytes {
                    imgs.insert(uuid.as_bytes(), bytes.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// Every image record.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        values(&self.images)
    }

    /// One image record.
    pub fn image(&self, uuid: Uuid) -> Result<Option<ImageRecord>> {
        get(&self.images, uuid.as_bytes())
    }

    /// Creates or replaces an image record (durably).
    pub fn put_image(&self, r: &ImageRecord) -> Result<()> {
        put(&self.images, r.uuid.as_bytes(), r)?;
        self.flush()
    }

    /// Changes the record of `uuid` with `change`, atomically with respect to
    /// every other write of it (durably), and returns the new record; `None`
    /// when there is no record. For writers that own a few fields and must
    /// not store a stale copy of the others (see [`crate::site`]).
    /// `change` may run more than once.
    pub fn update_image(&self, uuid: Uuid, mut change: impl FnMut(&mut ImageRecord)) -> Result<Option<ImageRecord>> {
        let mut failed = None;
        let new = self
            .images
            .update_and_fetch(uuid.as_bytes(), |old| {
                failed = None;
                let mut rec: ImageRecord = match decode(old?) {
                    Ok(r) => r,
                    Err(e) => {
                        // Left as it is; the error is returned below.
                        failed = Some(e);
                        return old.map(<[u8]>::to_vec);
                    }
                };
                change(&mut rec);
                match encode(&rec) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        failed = Some(e);
                        old.map(<[u8]>::to_vec)
                    }
                }
            })
            .map_err(store_err)?;
        if let Some(e) = failed {
            return Err(e);
        }
        self.flush()?;
        new.map(|v| decode(&v)).transpose()
    }

    /// How many of `rec`'s chunks this host holds: all of an available
    /// image's, else those whose data is durable.
    pub fn chunks_held(&self, rec: &ImageRecord) -> Result<u32> {
        let chunks = rec.chunk_count();
        Ok(if rec.state == ImageState::Available { chunks } else { self.have(rec.uuid, chunks)?.count() })
    }

    /// The chunks of `uuid` whose data is durable, over `chunks` chunks.
    /// A stored bitfield of another length (the image changed) counts as empty.
    pub fn have(&self, uuid: Uuid, chunks: u32) -> Result<Bitfield> {
        Ok(match self.have.get(uuid.as_bytes()).map_err(store_err)? {
            Some(bytes) => Bitfield::from_bytes(chunks, &bytes).unwrap_or_else(|_| Bitfield::new(chunks)),
            None => Bitfield::new(chunks),
        })
    }

    /// Records that chunks of `uuid` (of `chunks`) are durable on disk, each
    /// with its BLAKE3 hash, in one transaction. Call only after the data is
    /// synced; the record is durable once [`Store::flush`] returns.
    /// `content` is the SHA-512 (hex) the chunks were written for:
    /// unless the image's partial data is still for it
    /// ([`ImageRecord::data_for`]), nothing is recorded and the call fails,
    /// so chunks of an image's old content never count for its new content.
    pub fn record_chunks(&self, uuid: Uuid, content: &str, chunks: u32, done: &[(u32, [u8; 32])]) -> Result<()> {
        (&self.images, &self.have, &self.chunks)
            .transaction(|(images, have, hashes)| {
                let record = images.get(uuid.as_bytes())?;
                let data_for = record.and_then(|r| decode::<ImageRecord>(&r).ok()).and_then(|r| r.data_for);
                if data_for.as_deref() != Some(content) {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                let mut bits = match have.get(uuid.as_bytes())? {
                    Some(b) => Bitfield::from_bytes(chunks, &b).unwrap_or_else(|_| Bitfield::new(chunks)),
                    None => Bitfield::new(chunks),
                };
                for (index, hash) in done {
                    bits.set(*index);
                    hashes.insert(chunk_key(uuid, *index).to_vec(), &hash[..])?;
                }
                have.insert(uuid.as_bytes(), bits.as_bytes())?;
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(()) => Error::Superseded(format!(
                    "image {uuid}: its partial data is no longer for the content these chunks were written for; \
                     they are not recorded"
                )),
                TransactionError::Storage(e) => store_err(e),
            })
    }

    /// The recorded hash of each chunk of `uuid`, in order.
    pub fn chunk_hashes(&self, uuid: Uuid, chunks: u32) -> Result<Vec<Option<[u8; 32]>>> {
        (0..chunks)
            .map(|i| {
                let v = self.chunks.get(chunk_key(uuid, i)).map_err(store_err)?;
                Ok(v.and_then(|b| <[u8; 32]>::try_from(&b[..]).ok()))
            })
            .collect()
    }

    /// Forgets the have-bitfield of a complete image, keeping its chunk
    /// hashes (the image's manifest).
    pub fn clear_have(&self, uuid: Uuid) -> Result<()> {
        self.have.remove(uuid.as_bytes()).map_err(store_err)?;
        self.flush()
    }

    /// Forgets every chunk of `uuid` (its data is gone or untrusted).
    pub fn clear_chunks(&self, uuid: Uuid) -> Result<()> {
        self.have.remove(uuid.as_bytes()).map_err(store_err)?;
        for k in self.chunks.scan_prefix(uuid.as_bytes()).keys() {
            self.chunks.remove(k.map_err(store_err)?).map_err(store_err)?;
        }
        self.flush()
    }
}

/// How long [`Store::open`] waits for another holder of the lock to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the database, waiting up to [`LOCK_WAIT`] for a previous holder (a
/// command that is just finishing, or sled's own I/O threads winding down)
/// to release its lock.
fn open_db(path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        // Every write path flushes explicitly, so sled's periodic flusher is off.
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
            {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(Error::StoreBusy(path.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(other) => return Err(Error::Store(other.to_string())),
        }
    }
}

fn endorser_key(dn: &str, ca: &str) -> Vec<u8> {
    [dn.as_bytes(), b"\0", ca.as_bytes()].concat()
}

fn list_key(id: Uuid, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(id.as_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn chunk_key(id: Uuid, index: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(id.as_bytes());
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Store(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Store(format!("unreadable record: {e}")))
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>> {
    tree.get(key).map_err(store_err)?.map(|v| decode(&v)).transpose()
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], v: &T) -> Result<()> {
    tree.insert(key, encode(v)?).map(|_| ()).map_err(store_err)
}

fn values<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>> {
    tree.iter().values().map(|v| decode(&v.map_err(store_err)?)).collect()
}

fn store_err(e: sled::Error) -> Error {
    Error::Store(e.to_string())
}

fn tx_err(e: TransactionError<()>) -> Error {
    match e {
        TransactionError::Abort(()) => Error::Store("transaction aborted".into()),
        TransactionError::Storage(e) => store_err(e),
    }
}
