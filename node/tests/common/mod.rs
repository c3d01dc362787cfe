//! Shared set-up for the node's integration tests: a data directory trusting
//! the test PKI, and an endorser who publishes signed lists to a file.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

use node::endorse::{self, FileDigest, ImageMeta, NewList};
use node::fetch::Timeouts;
use node::site::Site;
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
        let sources =
            TrustSources { ca_file: Some(pki().path("ca.pem")), ca_dir: None, crls: vec![pki().path("crl.pem")] };
        Site::init(&data, &sources, true, edit).unwrap();
        let lab = Self { dir, data, list, now: pki().generated_at() };
        lab.site().add_endorser(ENDORSER_DN, CA_DN, ts(lab.now)).unwrap();
        lab
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
