//! Shared set-up for the node's integration tests: a data directory trusting
//! the test PKI, and an endorser who publishes signed lists to a file.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test binary uses part of it

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use node::endorse::{self, FileDigest, ImageMeta, NewList};
use node::fetch::Timeouts;
use node::site::Site;
use node::store::{ImageState, Store};
use node::trustfiles::TrustSources;
use proto::Timestamp;
use proto::imagelist::{ImageList, Sha512Digest};
use proto::manifest::{ChunkSize, ManifestBuilder};
use sha2::{Digest, Sha512};
use testkit::{CA_DN, ENDORSER_DN, Pki};
use uuid::Uuid;

pub const LIST_ID: Uuid = Uuid::from_u128(0x4e186b44_2c64_40ea_97d5_e9e5c0bce059);
pub const DAY: i64 = 86_400;

pub fn pki() -> &'static Pki {
    Pki::shared(env!("CARGO_TARGET_TMPDIR"))
}

pub fn ts(unix: i64) -> Timestamp {
    Timestamp::from_unix(unix).unwrap()
}

/// An image to publish.
#[derive(Debug, Clone)]
pub struct Img {
    pub id: Uuid,
    pub uri: String,
    pub bytes: Vec<u8>,
    pub chunk_size: u64,
}

impl Img {
    pub fn new(n: u128, uri: &str, bytes: Vec<u8>) -> Self {
        Self {
            id: Uuid::from_u128(0x488dcdc4_9ab1_4fc8_a7ba_000000000000 + n),
            uri: uri.into(),
            bytes,
            chunk_size: 64 << 10,
        }
    }
}

/// Deterministic image bytes.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed).collect()
}

/// A test site: its data directory and where the endorser publishes.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub list: PathBuf,
    pub now: i64,
}

impl Lab {
    /// A data directory that trusts the test CA (with its CRL) and approves
    /// the test endorser.
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(edit: impl FnOnce(&mut node::store::SiteConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let list = dir.path().join("list.smime");
        let lab = Self { dir, data, list, now: pki().generated_at() };
        lab.init_host(&lab.data, edit);
        lab
    }

    /// A data directory trusting the test CA (with its CRL) and approving the
    /// test endorser.
    fn init_host(&self, data: &Path, edit: impl FnOnce(&mut node::store::SiteConfig)) {
        let sources =
            TrustSources { ca_file: Some(pki().path("ca.pem")), ca_dir: None, crls: vec![pki().path("crl.pem")] };
        Site::init(data, &sources, true, edit).unwrap();
        Site::open(data, fast_timeouts()).unwrap().add_endorser(ENDORSER_DN, CA_DN, ts(self.now)).unwrap();
    }

    /// Another host of the lab, in `name` beside the lab's data directory:
    /// set up as [`Lab::new`] sets up the lab's own, and subscribed to the
    /// lab's list with new images cached. The list must be published.
    pub fn another_host(&self, name: &str) -> PathBuf {
        let data = self.dir.path().join(name);
        self.init_host(&data, |_| {});
        let site = Site::open(&data, fast_timeouts()).unwrap();
        site.subscribe(&self.url(), node::store::NewImages::Cache, ts(self.now)).unwrap();
        data
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.list.display())
    }

    pub fn file_url(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        format!("file://{}", p.display())
    }

    /// Opens the site with timeouts short enough for tests.
    pub fn site(&self) -> Site {
        Site::open(&self.data, fast_timeouts()).unwrap()
    }

    /// Publishes version `version` of the list with `images`, signed by
    /// `signer` (named as endorser), valid from a minute ago for a week.
    pub fn publish_as(&self, signer: &str, version: &str, images: &[Img]) -> ImageList {
        self.publish_list(signer, LIST_ID, version, images)
    }

    /// Publishes list `id` at the subscribed URL.
    pub fn publish_list(&self, signer: &str, id: Uuid, version: &str, images: &[Img]) -> ImageList {
        let cert = endorse::load_certificate(&pki().path(&format!("{signer}.pem"))).unwrap();
        let key = endorse::load_key(&pki().path(&format!("{signer}.key"))).unwrap();
        let opts = NewList {
            title: "test list".into(),
            description: "node tests".into(),
            source: "tests".into(),
            uri: self.url(),
            identifier: Some(id),
            lifetime_days: 7,
            creator: None,
            email: None,
            fields: Vec::new(),
        };
        let mut list = endorse::new_list(&cert, opts, ts(self.now - 60)).unwrap();
        for img in images {
            let meta = ImageMeta {
                identifier: Some(img.id),
                title: format!("image {}", img.id),
                uri: img.uri.clone(),
                version: "1".into(),
                os: "Linux".into(),
                osversion: "12".into(),
                arch: "x86_64".into(),
                hypervisor: "kvm".into(),
                ..ImageMeta::default()
            };
            endorse::add_image(&mut list, meta, &digest(&img.bytes, img.chunk_size)).unwrap();
        }
        list.version = version.into();
        let message = endorse::sign(&list, &cert, &key).unwrap();
        std::fs::write(&self.list, message).unwrap();
        list
    }

    pub fn publish(&self, version: &str, images: &[Img]) -> ImageList {
        self.publish_as("endorser", version, images)
    }

    pub fn image_path(&self, id: Uuid) -> PathBuf {
        self.data.join("images").join(id.to_string())
    }

    pub fn expired_files(&self) -> Vec<String> {
        list_dir(&self.data.join("expired"))
    }
}

pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Waits (polling, for at most 10 s) until `done` holds; fails the test
/// naming `what` otherwise.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `done` every 50 ms for at most `limit`; whether it came to hold.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn fast_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(5),
        min_rate: 1,
        rate_window: Duration::from_secs(60),
    }
}

pub fn digest(bytes: &[u8], chunk_size: u64) -> FileDigest {
    let mut m = ManifestBuilder::new(ChunkSize::new(chunk_size).unwrap());
    m.update(bytes);
    FileDigest { size: bytes.len() as u64, sha512: Sha512Digest(Sha512::digest(bytes).into()), manifest: m.finish() }
}

/// Every chunk marked present is on disk with the recorded hash, which is
/// the hash of the true image's chunk, and an available image is the
/// true image. Returns how many are present.
pub fn check_consistent(data: &Path, img: &Img) -> u32 {
    let store = Store::open(data).expect("the store opens after a kill");
    let Some(rec) = store.image(img.id).unwrap() else {
        // Killed before the list was accepted: no record, and no data either.
        assert!(list_dir(&data.join("images")).is_empty());
        assert!(store.subscription(LIST_ID).unwrap().unwrap().current.is_none());
        return 0;
    };
    let chunks = rec.chunk_count();
    let have = store.have(img.id, chunks).unwrap();
    let hashes = store.chunk_hashes(img.id, chunks).unwrap();
    if rec.state == ImageState::Available {
        assert_eq!(
            std::fs::read(data.join("images").join(img.id.to_string())).unwrap(),
            img.bytes,
            "an installed image must be the true image"
        );
        return chunks;
    }
    assert!(!data.join("images").join(img.id.to_string()).exists(), "nothing is installed before it is verified");
    let partial = data.join("images").join(format!("{}.partial", img.id));
    let file = std::fs::File::open(&partial).ok();
    for i in 0..chunks {
        if !have.get(i) {
            continue;
        }
        let start = u64::from(i) * img.chunk_size;
        let len = (img.bytes.len() as u64 - start).min(img.chunk_size) as usize;
        let mut buf = vec![0u8; len];
        file.as_ref().expect("bits are set, so the partial file exists").read_exact_at(&mut buf, start).unwrap();
        let truth = *blake3::hash(&img.bytes[start as usize..start as usize + len]).as_bytes();
        assert_eq!(*blake3::hash(&buf).as_bytes(), truth, "chunk {i} is marked present but its data is wrong");
        assert_eq!(hashes[i as usize], Some(truth), "chunk {i}: recorded hash");
    }
    have.count()
}
