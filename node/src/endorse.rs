//! The endorser's side: building, extending and signing image lists.
//!
//! # Contract
//! * [`new_list`] takes `hv:dn`, `hv:ca`, `dc:creator` (the last CN) and
//!   `hv:email` (subject emailAddress, else the first rfc822 subject
//!   alternative name) from the endorser's certificate; the caller may
//!   override the last two.
//! * [`digest_file`] reads an image once, in 4 MiB blocks through a bounded
//!   queue (at most three blocks in memory), and computes its size, SHA-512
//!   and BLAKE3 manifest on two cores at once.
//! * [`add_image`] inserts an image, or replaces the entry with the same UUID
//!   (how an endorser publishes a new version of an image).
//! * [`prepare_signing`] refuses a certificate that is not the list's
//!   endorser or is not valid now, and a list with empty required fields or
//!   with entries consumers would drop; it then bumps `hv:version` and sets
//!   `dc:date:created` and `dc:date:expires`.
//! * [`sign`] signs and checks that the output parses and verifies against
//!   the signing certificate before it is returned.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::sync_channel;

use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509Ref};
use proto::imagelist::{Chunking, Endorser, Image, ImageList, Sha512Digest, version};
use proto::manifest::{ChunkSize, Manifest, ManifestBuilder};
use proto::trust::Signer;
use proto::{Timestamp, smime, trust};
use serde_json::Value;
use sha2::{Digest, Sha512};
use uuid::Uuid;

use crate::{Error, Result, fsutil};

const DAY: i64 = 86_400;
const BLOCK: usize = 4 << 20;

/// Loads a PEM certificate.
pub fn load_certificate(path: &Path) -> Result<X509> {
    X509::from_pem(&fsutil::read(path)?)
        .map_err(|e| Error::Credential { path: path.into(), reason: format!("not a PEM certificate: {e}") })
}

/// Loads a PEM private key (unencrypted).
pub fn load_key(path: &Path) -> Result<PKey<Private>> {
    PKey::private_key_from_pem(&fsutil::read(path)?).map_err(|e| Error::Credential {
        path: path.into(),
        reason: format!("not an unencrypted PEM private key: {e}"),
    })
}

/// What `list new` needs beyond the certificate.
#[derive(Debug, Clone)]
pub struct NewList {
    /// `dc:title`.
    pub title: String,
    /// `dc:description`.
    pub description: String,
    /// `dc:source`.
    pub source: String,
    /// `hv:uri`: where the signed list will be published.
    pub uri: String,
    /// `dc:identifier`; a random UUID when `None`.
    pub identifier: Option<Uuid>,
    /// Days between creation and expiry.
    pub lifetime_days: u32,
    /// Overrides `dc:creator`.
    pub creator: Option<String>,
    /// Overrides `hv:email`.
    pub email: Option<String>,
    /// Further list fields, e.g. `ad:vo` (see [`set_fields`]).
    pub fields: Vec<(String, String)>,
}

/// A new, empty list endorsed by the holder of `cert`, at version `0.0.0`
/// (the first signature makes it `0.0.1`).
pub fn new_list(cert: &X509Ref, opts: NewList, now: Timestamp) -> Result<ImageList> {
    let who = Signer::of(cert);
    let creator = opts.creator.or_else(|| last_entry(cert, Nid::COMMONNAME)).unwrap_or_default();
    let email = opts.email.or_else(|| certificate_email(cert)).unwrap_or_default();
    let mut list = ImageList {
        identifier: opts.identifier.unwrap_or_else(Uuid::new_v4),
        created: now,
        expires: now.add_seconds(i64::from(opts.lifetime_days) * DAY),
        title: opts.title,
        description: opts.description,
        source: opts.source,
        version: "0.0.0".into(),
        uri: opts.uri,
        endorsers: vec![Endorser { dn: who.dn, ca: who.ca, email, creator, extra: Default::default() }],
        images: Vec::new(),
        skipped: Vec::new(),
        extra: Default::default(),
    };
    let written = list.to_value()["hv:imagelist"].clone();
    set_fields(&mut list.extra, &opts.fields, &written)?;
    Ok(list)
}

/// Sets each `(key, value)` of `fields` as a string field in `extra`,
/// refusing a key that is not of the form `prefix:name` and one that
/// `written` (the entry as its own fields write it) already holds: those
/// have flags of their own.
pub fn set_fields(extra: &mut BTreeMap<String, Value>, fields: &[(String, String)], written: &Value) -> Result<()> {
    for (key, value) in fields {
        let Some((prefix, name)) = key.split_once(':') else {
            return Err(Error::Invalid(format!(
                "field `{key}`: expected a key of the form prefix:name, e.g. ad:group"
            )));
        };
        if prefix.is_empty() || name.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(Error::Invalid(format!(
                "field `{key}`: expected a key of the form prefix:name, e.g. ad:group"
            )));
        }
        if written.get(key).is_some() {
            return Err(Error::Invalid(format!("field `{key}` is set by its own flag")));
        }
        extra.insert(key.clone(), Value::String(value.clone()));
    }
    Ok(())
}

fn last_entry(cert: &X509Ref, nid: Nid) -> Option<String> {
    cert.subject_name().entries_by_nid(nid).last().and_then(|e| e.data().to_string().ok())
}

fn certificate_email(cert: &X509Ref) -> Option<String> {
    last_entry(cert, Nid::PKCS9_EMAILADDRESS)
        .or_else(|| cert.subject_alt_names()?.iter().find_map(|n| n.email().map(str::to_owned)))
}

/// Size, SHA-512 and manifest of one file.
#[derive(Debug, Clone)]
pub struct FileDigest {
    /// Bytes read.
    pub size: u64,
    /// SHA-512 of the whole file.
    pub sha512: Sha512Digest,
    /// The BLAKE3 manifest.
    pub manifest: Manifest,
}

/// Reads `path` once and digests it; `progress` is told the bytes done so far.
pub fn digest_file(path: &Path, chunk_size: ChunkSize, progress: &mut dyn FnMut(u64)) -> Result<FileDigest> {
    let mut file = File::open(path).map_err(Error::io("opening", path))?;
    let (full_tx, full_rx) = sync_channel::<io::Result<Vec<u8>>>(2);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        // Cannot fail: the channel has room for three and the receiver lives.
        let _ = free_tx.send(vec![0; BLOCK]);
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Ok(mut buf) = free_rx.recv() {
                buf.resize(BLOCK, 0);
                let read = read_full(&mut file, &mut buf).map(|n| {
                    buf.truncate(n);
                    buf
                });
                let stop = !matches!(&read, Ok(b) if !b.is_empty());
                if full_tx.send(read).is_err() || stop {
                    return;
                }
            }
        });
        let mut sha = Sha512::new();
        let mut manifest = ManifestBuilder::new(chunk_size);
        for block in full_rx {
            let block = block.map_err(Error::io("reading", path))?;
            if block.is_empty() {
                break;
            }
            rayon::join(|| sha.update(&block), || manifest.update(&block));
            progress(manifest.len());
            let _ = free_tx.send(block);
        }
        drop(free_tx);
        let manifest = manifest.finish();
        Ok(FileDigest { size: manifest.size(), sha512: Sha512Digest(sha.finalize().into()), manifest })
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What `list add-image` needs beyond the file's digest.
#[derive(Debug, Clone, Default)]
pub struct ImageMeta {
    /// `dc:identifier`; a random UUID when `None`.
    pub identifier: Option<Uuid>,
    /// `dc:title`.
    pub title: String,
    /// `dc:description`.
    pub description: String,
    /// `hv:uri`: where masters fetch the image.
    pub uri: String,
    /// `hv:version`.
    pub version: String,
    /// `sl:os`.
    pub os: String,
    /// `sl:osversion`.
    pub osversion: String,
    /// `sl:arch`.
    pub arch: String,
    /// `hv:hypervisor`.
    pub hypervisor: String,
    /// `hv:format`.
    pub format: Option<String>,
    /// `sl:comments`.
    pub comments: String,
    /// Further image fields, e.g. the `ad:*` fields EGI's subscribers
    /// require (see [`set_fields`]).
    pub fields: Vec<(String, String)>,
}

/// Whether [`add_image`] inserted a new entry or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new image.
    Inserted(Uuid),
    /// An entry with the same UUID was replaced.
    Replaced(Uuid),
}

/// Adds the image described by `meta` and `digest` to `list`; fails only
/// on a field [`set_fields`] refuses.
pub fn add_image(list: &mut ImageList, meta: ImageMeta, digest: &FileDigest) -> Result<Added> {
    let identifier = meta.identifier.unwrap_or_else(Uuid::new_v4);
    let mut image = Image {
        identifier,
        title: meta.title,
        description: meta.description,
        uri: meta.uri,
        size: digest.size,
        sha512: digest.sha512,
        version: meta.version,
        arch: meta.arch,
        os: meta.os,
        osversion: meta.osversion,
        comments: meta.comments,
        hypervisor: meta.hypervisor,
        format: meta.format,
        expires: None,
        chunking: Some(Chunking { chunk_size: digest.manifest.chunk_size(), root: digest.manifest.root() }),
        extra: Default::default(),
    };
    let old = list.images.iter_mut().find(|i| i.identifier == identifier);
    // A replaced entry keeps the fields it had, under the new ones.
    image.extra = old.as_ref().map(|o| o.extra.clone()).unwrap_or_default();
    let written = Image { extra: Default::default(), ..image.clone() }.to_value();
    set_fields(&mut image.extra, &meta.fields, &written)?;
    Ok(match old {
        Some(old) => {
            *old = image;
            Added::Replaced(identifier)
        }
        None => {
            list.images.push(image);
            Added::Inserted(identifier)
        }
    })
}

/// Checks `list` and `cert` for signing, then bumps the version and sets the
/// dates. The lifetime is `lifetime_days`, or else the list's current one.
pub fn prepare_signing(list: &mut ImageList, cert: &X509Ref, now: Timestamp, lifetime_days: Option<u32>) -> Result<()> {
    let who = Signer::of(cert);
    if !list.endorsers.iter().any(|e| e.dn == who.dn && e.ca == who.ca) {
        let first = list.endorsers.first();
        return Err(Error::WrongEndorser {
            cert_dn: who.dn,
            cert_ca: who.ca,
            list_dn: first.map(|e| e.dn.clone()).unwrap_or_default(),
            list_ca: first.map(|e| e.ca.clone()).unwrap_or_default(),
        });
    }
    let not_after = asn1_to_timestamp(cert.not_after())?;
    if asn1_to_timestamp(cert.not_before())? > now || not_after <= now {
        return Err(Error::Incomplete(format!("the certificate is not valid now (valid until {not_after})")));
    }
    let problems = incomplete_fields(list);
    if !problems.is_empty() {
        return Err(Error::Incomplete(problems.join("; ")));
    }
    let lifetime = match lifetime_days {
        Some(days) => i64::from(days) * DAY,
        None => (list.expires.unix() - list.created.unix()).max(DAY),
    };
    list.version = version::bump(&list.version);
    list.created = now;
    list.expires = now.add_seconds(lifetime);
    if list.expires > not_after {
        tracing::warn!(%not_after, expires = %list.expires, "the list outlives the signing certificate; it stops verifying when the certificate expires");
    }
    Ok(())
}

/// Fields that must not be empty in a list we sign (vmilisttool's rule,
/// minus the free-text fields other producers leave empty).
fn incomplete_fields(list: &ImageList) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in [("dc:title", &list.title), ("dc:source", &list.source), ("hv:uri", &list.uri)] {
        if value.trim().is_empty() {
            out.push(format!("{key} is empty"));
        }
    }
    for s in &list.skipped {
        out.push(format!("hv:images[{}] lacks {}", s.position, s.missing));
    }
    for i in &list.images {
        for (key, value) in [
            ("dc:title", &i.title),
            ("hv:uri", &i.uri),
            ("hv:version", &i.version),
            ("sl:arch", &i.arch),
            ("sl:os", &i.os),
            ("sl:osversion", &i.osversion),
            ("hv:hypervisor", &i.hypervisor),
        ] {
            if value.trim().is_empty() {
                out.push(format!("image {}: {key} is empty", i.identifier));
            }
        }
    }
    out
}

/// Signs `list` and checks the result before returning it.
pub fn sign(list: &ImageList, cert: &X509Ref, key: &PKey<Private>) -> Result<Vec<u8>> {
    let message = smime::sign(&list.to_json(), cert, key)?;
    let check = trust::check_integrity(&message)?;
    if check.list != *list {
        return Err(Error::Incomplete("the signed message does not read back as the list that was signed".into()));
    }
    Ok(message)
}

fn asn1_to_timestamp(t: &openssl::asn1::Asn1TimeRef) -> Result<Timestamp> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).map_err(|e| Error::Invalid(e.to_string()))?;
    let d = epoch.diff(t).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(Timestamp::from_unix(i64::from(d.days) * DAY + i64::from(d.secs))?)
}
