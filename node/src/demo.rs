//! A whole site on loopback, for `imageswarm demo` and the loopback tests.
//!
//! # Contract
//! [`Demo::prepare`] builds, under one directory: a throw-away CA and
//! endorser certificate (made with openssl here, valid for a week; the CA
//! publishes no CRL, so the demo's hosts run with the CRL check off), a
//! random image, a signed list naming it, one data directory per node
//! that trusts the CA, approves the endorser and subscribes to the list,
//! and the site's authority ([`crate::authority`], site [`SITE`]), which
//! issues each node a credential ([`Demo::membership`]): the demo site is
//! closed.
//! [`Demo::serve_source`] serves the list and the image over HTTP on
//! loopback: the list to every node, the image to the master (workers never
//! go back to source). Nothing here leaves 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use proto::credential::SiteCas;
use proto::manifest::ChunkSize;
use proto::swarm::Role;
use uuid::Uuid;

use crate::authority::{self, SiteDir};
use crate::endorse::{self, ImageMeta, NewList};
use crate::fetch::Timeouts;
use crate::net::Membership;
use crate::site::Site;
use crate::store::NewImages;
use crate::trustfiles::TrustSources;
use crate::{Error, Result};

/// The endorser's subject in the demo.
pub const ENDORSER_DN: &str = "/DC=org/DC=imageswarm-demo/CN=Demo Endorser";
/// The CA's subject in the demo.
pub const CA_DN: &str = "/DC=org/DC=imageswarm-demo/CN=Demo CA";

/// The demo site's name.
pub const SITE: &str = "demo";

/// A prepared demo site.
#[derive(Debug)]
pub struct Demo {
    /// Everything lives here.
    pub root: PathBuf,
    /// The image's UUID.
    pub image: Uuid,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-512, hex.
    pub sha512: String,
    /// Its manifest root.
    pub manifest_root: proto::manifest::ManifestRoot,
    /// The directory the HTTP source serves (list.smime, image.img).
    pub www: PathBuf,
    /// Data directories: the master's first, then one per worker.
    pub data_dirs: Vec<PathBuf>,
    /// How many times the HTTP source was asked for the image.
    pub image_downloads: Arc<AtomicUsize>,
}

fn ossl(e: openssl::error::ErrorStack) -> Error {
    Error::Invalid(format!("openssl: {e}"))
}

fn name(dn: &str) -> Result<openssl::x509::X509Name> {
    let mut b = X509NameBuilder::new().map_err(ossl)?;
    for part in dn.split('/').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| Error::Invalid(format!("bad DN part {part}")))?;
        b.append_entry_by_text(k, v).map_err(ossl)?;
    }
    Ok(b.build())
}

fn certificate(subject: &str, issuer: Option<(&X509, &PKey<Private>)>, key: &PKey<Private>, ca: bool) -> Result<X509> {
    let mut b = X509Builder::new().map_err(ossl)?;
    b.set_version(2).map_err(ossl)?;
    let mut serial = BigNum::new().map_err(ossl)?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false).map_err(ossl)?;
    let serial = serial.to_asn1_integer().map_err(ossl)?;
    b.set_serial_number(&serial).map_err(ossl)?;
    let subject_name = name(subject)?;
    b.set_subject_name(&subject_name).map_err(ossl)?;
    b.set_pubkey(key).map_err(ossl)?;
    let (from, until) = (Asn1Time::days_from_now(0).map_err(ossl)?, Asn1Time::days_from_now(7).map_err(ossl)?);
    b.set_not_before(&from).map_err(ossl)?;
    b.set_not_after(&until).map_err(ossl)?;
    let (issuer_name, signer) = match issuer {
        Some((c, k)) => (c.subject_name().to_owned().map_err(ossl)?, k),
        None => (name(subject)?, key),
    };
    b.set_issuer_name(&issuer_name).map_err(ossl)?;
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().map_err(ossl)?).map_err(ossl)?;
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().map_err(ossl)?)
            .map_err(ossl)?;
    } else {
        b.append_extension(BasicConstraints::new().critical().build().map_err(ossl)?).map_err(ossl)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build().map_err(ossl)?).map_err(ossl)?;
        b.append_extension(ExtendedKeyUsage::new().email_protection().build().map_err(ossl)?).map_err(ossl)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).map_err(ossl)?;
    b.append_extension(ski).map_err(ossl)?;
    b.sign(signer, MessageDigest::sha256()).map_err(ossl)?;
    Ok(b.build())
}

fn rsa_key() -> Result<PKey<Private>> {
    PKey::from_rsa(Rsa::generate(2048).map_err(ossl)?).map_err(ossl)
}

/// Writes `size` pseudo-random bytes to `path` (a fast generator seeded
/// from the OS; the demo needs incompressible data, not secrets).
fn random_file(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut seed = [0u8; 32];
    openssl::rand::rand_bytes(&mut seed).map_err(ossl)?;
    let mut xof = blake3::Hasher::new_keyed(&seed).finalize_xof();
    let f = std::fs::File::create(path).map_err(Error::io("creating", path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).map_err(Error::io("writing", path))?;
        left -= n as u64;
    }
    w.flush().map_err(Error::io("writing", path))
}

impl Demo {
    /// Prepares a site of one master and `workers` workers under `root`
    /// with an image of `size` bytes; `base_url` is where
    /// [`Demo::serve_source`] will serve `www/` (e.g. `http://127.0.0.1:PORT`).
    pub fn prepare(root: &Path, workers: usize, size: u64, chunk_size: ChunkSize, base_url: &str) -> Result<Self> {
        let pki = root.join("pki");
        let www = root.join("www");
        for d in [&pki, &www] {
            std::fs::create_dir_all(d).map_err(Error::io("creating", d))?;
        }
        let ca_key = rsa_key()?;
        let ca = certificate(CA_DN, None, &ca_key, true)?;
        let endorser_key = rsa_key()?;
        let endorser = certificate(ENDORSER_DN, Some((&ca, &ca_key)), &endorser_key, false)?;
        for (file, pem) in [
            ("ca.pem", ca.to_pem().map_err(ossl)?),
            ("endorser.pem", endorser.to_pem().map_err(ossl)?),
            ("endorser.key", endorser_key.private_key_to_pem_pkcs8().map_err(ossl)?),
        ] {
            let path = pki.join(file);
            std::fs::write(&path, pem).map_err(Error::io("writing", &path))?;
        }

        let image_path = www.join("image.img");
        random_file(&image_path, size)?;
        let now = crate::now();
        let mut list = endorse::new_list(
            &endorser,
            NewList {
                title: "imageswarm demo".into(),
                description: "A random image distributed on loopback".into(),
                source: "imageswarm demo".into(),
                uri: format!("{base_url}/list.smime"),
                identifier: None,
                lifetime_days: 7,
                creator: None,
                email: Some("demo@imageswarm.invalid".into()),
                fields: Vec::new(),
            },
            now,
        )?;
        let digest = endorse::digest_file(&image_path, chunk_size, &mut |_| {})?;
        let manifest_root = digest.manifest.root();
        let meta = ImageMeta {
            title: "Demo disk".into(),
            uri: format!("{base_url}/image.img"),
            version: "1.0".into(),
            os: "Linux".into(),
            osversion: "12".into(),
            arch: "x86_64".into(),
            hypervisor: "KVM".into(),
            format: Some("raw".into()),
            ..ImageMeta::default()
        };
        let image = match endorse::add_image(&mut list, meta, &digest)? {
            endorse::Added::Inserted(u) | endorse::Added::Replaced(u) => u,
        };
        endorse::prepare_signing(&mut list, &endorser, now, Some(7))?;
        let sha512 = list.images.first().map(|i| i.sha512.to_string()).unwrap_or_default();
        publish(&pki, &www, &list, &endorser, &endorser_key)?;

        authority::init(&SiteDir::new(&root.join("site")), SITE, 30, now)?;
        let data_dirs = (0..=workers)
            .map(|i| root.join(if i == 0 { "master".to_string() } else { format!("worker-{i:02}") }))
            .collect();
        let image_downloads = Arc::default();
        Ok(Self { root: root.to_path_buf(), image, size, sha512, manifest_root, www, data_dirs, image_downloads })
    }

    /// The site's authority.
    pub fn site_dir(&self) -> SiteDir {
        SiteDir::new(&self.root.join("site"))
    }

    /// The site's CA and CRL, as the tracker and every node trust them.
    pub fn site_cas(&self) -> Result<SiteCas> {
        let d = self.site_dir();
        let mut cas = SiteCas::new();
        cas.add_ca(&crate::fsutil::read(&d.ca())?)?;
        cas.offer_crl(&crate::fsutil::read(&d.crl())?)?;
        Ok(cas)
    }

    /// Node `i`'s membership of the closed site (0 is the master, which
    /// reads the site's CRL file): its key made if missing and a credential
    /// issued to it.
    pub fn membership(&self, i: usize) -> Result<Membership> {
        let dir = &self.data_dirs[i];
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let key = crate::net::load_or_create_key(&dir.join("node.key"))?;
        let peer = key.public().to_peer_id();
        let raw = p2p::admission::ed25519_key(&peer).ok_or_else(|| Error::Invalid("not an Ed25519 key".into()))?;
        let role = if i == 0 { Role::Master } else { Role::Worker };
        let credential = authority::issue(&self.site_dir(), &peer.to_string(), &raw, role, 7, crate::now())?;
        let crl_file = (i == 0).then(|| self.site_dir().crl());
        Ok(Membership::Closed { credential, cas: self.site_cas()?, crl_file })
    }

    /// Publishes a new version of the list that gives the image other
    /// bytes under the same UUID (new random content of the same size, cut
    /// as before), and serves them; returns their SHA-512, hex.
    pub fn replace_image_bytes(&self) -> Result<String> {
        let path = self.www.join("image.img");
        let tmp = self.www.join("image.img.new");
        random_file(&tmp, self.size)?;
        std::fs::rename(&tmp, &path).map_err(Error::io("renaming", &tmp))?;
        let chunk_size = ChunkSize::for_image(self.size);
        let list = proto::imagelist::ImageList::from_json(&crate::fsutil::read(&self.root.join("pki/list.json"))?)?;
        let chunk_size = list.image(self.image).and_then(|i| i.chunking).map_or(chunk_size, |c| c.chunk_size);
        let digest = endorse::digest_file(&path, chunk_size, &mut |_| {})?;
        let image = self.image;
        self.republish(|list| {
            if let Some(i) = list.images.iter_mut().find(|i| i.identifier == image) {
                i.size = digest.size;
                i.sha512 = digest.sha512;
                i.chunking = Some(proto::imagelist::Chunking {
                    chunk_size: digest.manifest.chunk_size(),
                    root: digest.manifest.root(),
                });
            }
        })?;
        Ok(digest.sha512.to_string())
    }

    /// Publishes a new version of the list without the image: the endorser
    /// withdraws it.
    pub fn withdraw_image(&self) -> Result<()> {
        let image = self.image;
        self.republish(|list| list.images.retain(|i| i.identifier != image))
    }

    /// Publishes a new version of the list that expires at `expires`.
    pub fn republish_expiring(&self, expires: proto::Timestamp) -> Result<()> {
        self.republish(|list| list.expires = expires)
    }

    /// Signs and publishes the next version of the list, as `edit` changes
    /// it after the version bump and the new dates.
    fn republish(&self, edit: impl FnOnce(&mut proto::imagelist::ImageList)) -> Result<()> {
        let pki = self.root.join("pki");
        let mut list = proto::imagelist::ImageList::from_json(&crate::fsutil::read(&pki.join("list.json"))?)?;
        let cert = endorse::load_certificate(&pki.join("endorser.pem"))?;
        let key = endorse::load_key(&pki.join("endorser.key"))?;
        endorse::prepare_signing(&mut list, &cert, crate::now(), Some(7))?;
        edit(&mut list);
        publish(&pki, &self.www, &list, &cert, &key)
    }

    /// Initialises every data directory: trust the demo CA (no CRL), approve
    /// the endorser, subscribe to the list at `list_url` (served by then)
    /// and cache its new images.
    pub fn init_hosts(&self, list_url: &str) -> Result<()> {
        self.init_hosts_with(list_url, false)
    }

    /// [`Demo::init_hosts`]; with `policy_only`, the workers only trust the
    /// CA, and take the rest from the site policy the master signs.
    pub fn init_hosts_with(&self, list_url: &str, policy_only: bool) -> Result<()> {
        let ca_file = self.root.join("pki/ca.pem");
        for (i, dir) in self.data_dirs.iter().enumerate() {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
            let sources = TrustSources { ca_file: Some(ca_file.clone()), ca_dir: None, crls: Vec::new() };
            Site::init(dir, &sources, false, |_| {})?;
            if policy_only && i > 0 {
                continue;
            }
            let site = Site::open(dir, Timeouts::default())?;
            let now = crate::now();
            site.add_endorser(ENDORSER_DN, CA_DN, now)?;
            site.subscribe(list_url, NewImages::Cache, now)?;
        }
        Ok(())
    }

    /// Serves `www/` over HTTP at `server`'s address from a background
    /// thread, until the process exits.
    pub fn serve_source(&self, server: tiny_http::Server) -> Result<()> {
        let www = Arc::new(self.www.clone());
        let downloads = self.image_downloads.clone();
        std::thread::Builder::new()
            .name("demo-source".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let name = req.url().trim_start_matches('/').to_owned();
                    if name == "image.img" {
                        downloads.fetch_add(1, Ordering::Relaxed);
                    }
                    let file = (!name.contains('/') && !name.contains(".."))
                        .then(|| std::fs::File::open(www.join(&name)).ok())
                        .flatten();
                    let r = match file {
                        Some(f) => req.respond(tiny_http::Response::from_file(f)),
                        None => req.respond(tiny_http::Response::empty(404)),
                    };
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "demo source client went away");
                    }
                }
            })
            .map_err(|e| Error::Net(format!("demo source thread: {e}")))?;
        Ok(())
    }
}

/// Signs `list`, keeps its JSON in `pki/list.json` and serves the signed
/// form as `www/list.smime`.
fn publish(pki: &Path, www: &Path, list: &proto::imagelist::ImageList, cert: &X509, key: &PKey<Private>) -> Result<()> {
    let signed = endorse::sign(list, cert, key)?;
    crate::fsutil::write_atomic(&pki.join("list.json"), &list.to_json())?;
    crate::fsutil::write_atomic(&www.join("list.smime"), &signed)
}

/// The Kumar–Ross lower bound on the time for `n` hosts of download rate
/// `down` and upload rate `up` to receive `size` bytes from one seed of
/// upload rate `seed_up` (rates in bytes per second):
/// `max(F/u_s, F/d_min, N·F/(u_s + Σ u_i))`.
pub fn kumar_ross(n: usize, size: u64, seed_up: f64, up: f64, down: f64) -> f64 {
    let f = size as f64;
    let n = n as f64;
    (f / seed_up).max(f / down).max(n * f / (seed_up + n * up))
}
