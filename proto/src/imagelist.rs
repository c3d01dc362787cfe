//! The HEPiX image list: model, JSON codec and version order.
//!
//! # Contract
//! * [`ImageList::from_json`] accepts the documented format (reference §2):
//!   the `hv:imagelist` wrapper, `hv:endorser` as an object or an array of
//!   objects, `hv:size` as a number or a decimal string, dates exactly
//!   `YYYY-MM-DDTHH:MM:SSZ`, UUIDs in hyphenated form. Any object that repeats
//!   a key is rejected.
//! * Like vmitrustlib, an image entry that lacks one of the twelve required
//!   keys is left out of [`ImageList::images`] and reported in
//!   [`ImageList::skipped`]; an entry whose keys are present but malformed
//!   rejects the whole list.
//! * Unknown fields, at every level, are kept and re-emitted by
//!   [`ImageList::to_json`]. The encoding sorts keys and indents by four
//!   spaces, like the hepixvmitrust producers. Decoding then encoding keeps
//!   every field; it normalises UUID and hash case and hv:size to a number.
//! * imageswarm's own per-image fields use the `imageswarm:` prefix (see
//!   [`CHUNK_SIZE_KEY`], [`MANIFEST_ROOT_KEY`]); other consumers ignore them.
//!
//! Parsing a list here says nothing about trust: only [`crate::trust`] turns
//! signed bytes into a [`crate::trust::VerifiedList`].

mod json;
pub mod version;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use uuid::Uuid;

use crate::manifest::{ChunkSize, ManifestRoot};
use crate::{Error, Timestamp};
use json::Fields;

/// The per-image key holding the manifest's chunk size in bytes.
pub const CHUNK_SIZE_KEY: &str = "imageswarm:chunk_size";
/// The per-image key holding the BLAKE3 manifest root, as 64 hex digits.
pub const MANIFEST_ROOT_KEY: &str = "imageswarm:manifest_root";

/// Keys every `hv:image` must carry (vmitrustlib's required set).
pub const REQUIRED_IMAGE_KEYS: [&str; 12] = [
    "dc:identifier",
    "dc:title",
    "dc:description",
    "hv:uri",
    "hv:size",
    "sl:checksum:sha512",
    "hv:version",
    "sl:arch",
    "sl:os",
    "sl:osversion",
    "sl:comments",
    "hv:hypervisor",
];

/// A decoded image list. Fields are public: this is plain data, and building
/// or editing one confers no trust.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageList {
    /// `dc:identifier`: the list's UUID, pinned to a subscription.
    pub identifier: Uuid,
    /// `dc:date:created`.
    pub created: Timestamp,
    /// `dc:date:expires`: the list is invalid after this instant.
    pub expires: Timestamp,
    /// `dc:title`.
    pub title: String,
    /// `dc:description`.
    pub description: String,
    /// `dc:source`.
    pub source: String,
    /// `hv:version`, ordered by [`version::compare`].
    pub version: String,
    /// `hv:uri`: the list's canonical URL.
    pub uri: String,
    /// `hv:endorser`: normally one entry.
    pub endorsers: Vec<Endorser>,
    /// The usable entries of `hv:images`.
    pub images: Vec<Image>,
    /// Entries of `hv:images` that lack a required key, kept verbatim.
    pub skipped: Vec<SkippedImage>,
    /// Every other list-level field, verbatim.
    pub extra: BTreeMap<String, Value>,
}

/// One `hv:endorser/hv:x509` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endorser {
    /// `hv:dn`: the signer's subject in OpenSSL one-line form.
    pub dn: String,
    /// `hv:ca`: the signer's issuer in the same form.
    pub ca: String,
    /// `hv:email`.
    pub email: String,
    /// `dc:creator`: a human-readable name.
    pub creator: String,
    /// Every other field, verbatim.
    pub extra: BTreeMap<String, Value>,
}

/// One `hv:image` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// `dc:identifier`: the image UUID.
    pub identifier: Uuid,
    /// `dc:title`.
    pub title: String,
    /// `dc:description` (may be empty).
    pub description: String,
    /// `hv:uri`: where the master fetches the image from.
    pub uri: String,
    /// `hv:size`: the exact byte count.
    pub size: u64,
    /// `sl:checksum:sha512`.
    pub sha512: Sha512Digest,
    /// `hv:version`: the image's own version.
    pub version: String,
    /// `sl:arch`.
    pub arch: String,
    /// `sl:os`.
    pub os: String,
    /// `sl:osversion`.
    pub osversion: String,
    /// `sl:comments` (often empty).
    pub comments: String,
    /// `hv:hypervisor`.
    pub hypervisor: String,
    /// `hv:format`, if given.
    pub format: Option<String>,
    /// Per-image `dc:date:expires`, if given.
    pub expires: Option<Timestamp>,
    /// imageswarm's chunking extension, when the list was made with our tools.
    pub chunking: Option<Chunking>,
    /// Every other field, verbatim.
    pub extra: BTreeMap<String, Value>,
}

/// The chunk size and manifest root that a list vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Bytes per chunk (the last chunk may be shorter).
    pub chunk_size: ChunkSize,
    /// The BLAKE3 root over all chunk hashes.
    pub root: ManifestRoot,
}

/// An `hv:image` entry left out because it lacks a required key.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedImage {
    /// Its position in `hv:images`.
    pub position: usize,
    /// The first required key it lacks.
    pub missing: &'static str,
    /// The whole `hv:image` object, verbatim.
    pub raw: Value,
}

/// A SHA-512 digest, written as 128 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha512Digest(pub [u8; 64]);

impl Sha512Digest {
    /// Parses 128 hex digits (either case).
    pub fn parse_hex(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 64];
        hex::decode_to_slice(s, &mut out).map_err(|_| format!("`{s}` is not 128 hex digits"))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Sha512Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha512Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha512Digest({self})")
    }
}

impl ImageList {
    /// Decodes a list from JSON bytes (for a signed list: the verified
    /// content, never the raw MIME part).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let root = json::parse_strict(bytes)?;
        let mut top = Fields::new("", root)?;
        if !top.has("hv:imagelist") {
            return Err(top.error("hv:imagelist", "required field is missing (not an image list)"));
        }
        let body = top.value("hv:imagelist")?;
        let extra_top = top.rest();
        if let Some(key) = extra_top.keys().next() {
            return Err(Error::Field { at: format!("/{key}"), reason: "unexpected field beside hv:imagelist".into() });
        }
        Self::from_fields(Fields::new("hv:imagelist", body)?)
    }

    fn from_fields(mut f: Fields) -> Result<Self, Error> {
        let identifier = f.parsed("dc:identifier", parse_uuid)?;
        let created = f.parsed("dc:date:created", parse_date)?;
        let expires = f.parsed("dc:date:expires", parse_date)?;
        let title = f.string("dc:title")?;
        let description = f.string("dc:description")?;
        let source = f.string("dc:source")?;
        let version = f.string("hv:version")?;
        let uri = f.string("hv:uri")?;
        let endorser_at = f.path("hv:endorser");
        let endorsers = match f.value("hv:endorser")? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| Endorser::from_wrapper(&format!("{endorser_at}[{i}]"), v))
                .collect::<Result<Vec<_>, _>>()?,
            single => vec![Endorser::from_wrapper(&endorser_at, single)?],
        };
        if endorsers.is_empty() {
            return Err(f.error("hv:endorser", "no endorser given"));
        }
        let images_at = f.path("hv:images");
        let Value::Array(entries) = f.value("hv:images")? else {
            return Err(f.error("hv:images", "expected an array"));
        };
        let mut images = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for (position, entry) in entries.into_iter().enumerate() {
            let mut wrapper = Fields::new(format!("{images_at}[{position}]"), entry)?;
            let raw = wrapper.value("hv:image")?;
            if let Some(key) = wrapper.rest().keys().next() {
                return Err(Error::Field {
                    at: format!("{images_at}[{position}]/{key}"),
                    reason: "unexpected field beside hv:image".into(),
                });
            }
            let missing = match &raw {
                Value::Object(map) => REQUIRED_IMAGE_KEYS.iter().find(|k| !map.contains_key(**k)),
                _ => None,
            };
            match missing {
                Some(missing) => {
                    tracing::warn!(position, missing, "image entry lacks a required key; leaving it out");
                    skipped.push(SkippedImage { position, missing, raw });
                }
                None => {
                    images.push(Image::from_fields(Fields::new(format!("{images_at}[{position}]/hv:image"), raw)?)?)
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = images.iter().find(|i| !seen.insert(i.identifier)) {
            return Err(Error::Field { at: images_at, reason: format!("image {} appears twice", dup.identifier) });
        }
        Ok(Self {
            identifier,
            created,
            expires,
            title,
            description,
            source,
            version,
            uri,
            endorsers,
            images,
            skipped,
            extra: f.rest(),
        })
    }

    /// Encodes the list (keys sorted, indent 4, final newline).
    pub fn to_json(&self) -> Vec<u8> {
        json::encode_pretty(&self.to_value())
    }

    /// The list as a JSON value.
    pub fn to_value(&self) -> Value {
        let mut m = self.extra.clone();
        put(&mut m, "dc:identifier", self.identifier.hyphenated().to_string());
        put(&mut m, "dc:date:created", self.created.to_string());
        put(&mut m, "dc:date:expires", self.expires.to_string());
        put(&mut m, "dc:title", &self.title);
        put(&mut m, "dc:description", &self.description);
        put(&mut m, "dc:source", &self.source);
        put(&mut m, "hv:version", &self.version);
        put(&mut m, "hv:uri", &self.uri);
        let endorsers: Vec<Value> = self.endorsers.iter().map(Endorser::to_wrapper).collect();
        let endorser = match <[Value; 1]>::try_from(endorsers) {
            Ok([one]) => one,
            Err(many) => Value::Array(many),
        };
        m.insert("hv:endorser".into(), endorser);
        let mut entries: Vec<Value> = self.images.iter().map(|i| wrap("hv:image", i.to_value())).collect();
        for s in &self.skipped {
            entries.insert(s.position.min(entries.len()), wrap("hv:image", s.raw.clone()));
        }
        m.insert("hv:images".into(), Value::Array(entries));
        json::object(BTreeMap::from([("hv:imagelist".to_owned(), json::object(m))]))
    }

    /// The image with this UUID, if the list names it.
    pub fn image(&self, id: Uuid) -> Option<&Image> {
        self.images.iter().find(|i| i.identifier == id)
    }

    /// `ad:vo`: the VO of an AppDB VO-wide list (exported to hooks).
    pub fn vo(&self) -> Option<&str> {
        optional_str(&self.extra, "ad:vo")
    }

    /// `ad:swid`: the AppDB software id.
    pub fn swid(&self) -> Option<&str> {
        optional_str(&self.extra, "ad:swid")
    }
}

impl Endorser {
    fn from_wrapper(at: &str, v: Value) -> Result<Self, Error> {
        let mut w = Fields::new(at, v)?;
        let x509 = w.value("hv:x509")?;
        let mut f = Fields::new(format!("{at}/hv:x509"), x509)?;
        Ok(Self {
            dn: f.string("hv:dn")?,
            ca: f.string("hv:ca")?,
            email: f.string("hv:email")?,
            creator: f.string("dc:creator")?,
            extra: f.rest(),
        })
    }

    fn to_wrapper(&self) -> Value {
        let mut m = self.extra.clone();
        put(&mut m, "hv:dn", &self.dn);
        put(&mut m, "hv:ca", &self.ca);
        put(&mut m, "hv:email", &self.email);
        put(&mut m, "dc:creator", &self.creator);
        wrap("hv:x509", json::object(m))
    }
}

impl Image {
    /// An optional field seen in published lists (reference §2.4), if present
    /// as a string. These stay in [`Image::extra`] so that they re-encode
    /// exactly as received; the named accessors below read them.
    pub fn optional(&self, key: &str) -> Option<&str> {
        optional_str(&self.extra, key)
    }

    /// `ad:mpuri`: the AppDB marketplace URI (exported to hooks).
    pub fn mpuri(&self) -> Option<&str> {
        self.optional("ad:mpuri")
    }

    /// `ad:base_mpuri`: the AppDB virtual-appliance URI.
    pub fn base_mpuri(&self) -> Option<&str> {
        self.optional("ad:base_mpuri")
    }

    /// `ad:appid`: the AppDB application id.
    pub fn appid(&self) -> Option<&str> {
        self.optional("ad:appid")
    }

    /// `ad:group`.
    pub fn group(&self) -> Option<&str> {
        self.optional("ad:group")
    }

    /// `hv:ram_minimum` (MiB, as a string).
    pub fn ram_minimum(&self) -> Option<&str> {
        self.optional("hv:ram_minimum")
    }

    /// `hv:core_minimum`.
    pub fn core_minimum(&self) -> Option<&str> {
        self.optional("hv:core_minimum")
    }

    /// `ad:ram_recommended`.
    pub fn ram_recommended(&self) -> Option<&str> {
        self.optional("ad:ram_recommended")
    }

    /// `ad:core_recommended`.
    pub fn core_recommended(&self) -> Option<&str> {
        self.optional("ad:core_recommended")
    }

    /// `sl:osname`, e.g. `CentOS`.
    pub fn osname(&self) -> Option<&str> {
        self.optional("sl:osname")
    }

    /// `sl:checksum:md5` (informational only; never used for verification).
    pub fn md5(&self) -> Option<&str> {
        self.optional("sl:checksum:md5")
    }

    /// The uploader: `ad:user:fullname`, `ad:user:guid`, `ad:user:uri`.
    pub fn appdb_user(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        (self.optional("ad:user:fullname"), self.optional("ad:user:guid"), self.optional("ad:user:uri"))
    }

    fn from_fields(mut f: Fields) -> Result<Self, Error> {
        let identifier = f.parsed("dc:identifier", parse_uuid)?;
        let chunk_size = if f.has(CHUNK_SIZE_KEY) {
            let raw = f.integer(CHUNK_SIZE_KEY)?;
            Some(ChunkSize::new(raw).map_err(|e| f.error(CHUNK_SIZE_KEY, e.to_string()))?)
        } else {
            None
        };
        let root = f.opt_parsed(MANIFEST_ROOT_KEY, ManifestRoot::parse_hex)?;
        let chunking = match (chunk_size, root) {
            (Some(chunk_size), Some(root)) => Some(Chunking { chunk_size, root }),
            (None, None) => None,
            _ => {
                return Err(f.error(
                    CHUNK_SIZE_KEY,
                    format!("{CHUNK_SIZE_KEY} and {MANIFEST_ROOT_KEY} must be given together"),
                ));
            }
        };
        Ok(Self {
            identifier,
            title: f.string("dc:title")?,
            description: f.string("dc:description")?,
            uri: f.string("hv:uri")?,
            size: f.integer("hv:size")?,
            sha512: f.parsed("sl:checksum:sha512", Sha512Digest::parse_hex)?,
            version: f.string("hv:version")?,
            arch: f.string("sl:arch")?,
            os: f.string("sl:os")?,
            osversion: f.string("sl:osversion")?,
            comments: f.string("sl:comments")?,
            hypervisor: f.string("hv:hypervisor")?,
            format: f.opt_string("hv:format")?,
            expires: f.opt_parsed("dc:date:expires", parse_date)?,
            chunking,
            extra: f.rest(),
        })
    }

    /// The entry as a JSON object (the inside of `hv:image`).
    pub fn to_value(&self) -> Value {
        let mut m = self.extra.clone();
        put(&mut m, "dc:identifier", self.identifier.hyphenated().to_string());
        put(&mut m, "dc:title", &self.title);
        put(&mut m, "dc:description", &self.description);
        put(&mut m, "hv:uri", &self.uri);
        m.insert("hv:size".into(), Value::from(self.size));
        put(&mut m, "sl:checksum:sha512", self.sha512.to_string());
        put(&mut m, "hv:version", &self.version);
        put(&mut m, "sl:arch", &self.arch);
        put(&mut m, "sl:os", &self.os);
        put(&mut m, "sl:osversion", &self.osversion);
        put(&mut m, "sl:comments", &self.comments);
        put(&mut m, "hv:hypervisor", &self.hypervisor);
        if let Some(format) = &self.format {
            put(&mut m, "hv:format", format);
        }
        if let Some(expires) = self.expires {
            put(&mut m, "dc:date:expires", expires.to_string());
        }
        if let Some(c) = self.chunking {
            m.insert(CHUNK_SIZE_KEY.into(), Value::from(c.chunk_size.get()));
            put(&mut m, MANIFEST_ROOT_KEY, c.root.to_string());
        }
        json::object(m)
    }
}

fn optional_str<'a>(extra: &'a BTreeMap<String, Value>, key: &str) -> Option<&'a str> {
    extra.get(key).and_then(Value::as_str)
}

fn put(m: &mut BTreeMap<String, Value>, key: &str, value: impl Into<String>) {
    m.insert(key.to_owned(), Value::String(value.into()));
}

fn wrap(key: &str, inner: Value) -> Value {
    json::object(BTreeMap::from([(key.to_owned(), inner)]))
}

/// UUIDs only in the 36-character hyphenated form: an identifier becomes a
/// file name, so nothing else (paths, `urn:` prefixes, braces) gets through.
fn parse_uuid(s: &str) -> Result<Uuid, String> {
    if s.len() != 36 {
        return Err(format!("`{s}` is not a UUID of the form 8-4-4-4-12"));
    }
    Uuid::try_parse(s).map_err(|_| format!("`{s}` is not a UUID of the form 8-4-4-4-12"))
}

fn parse_date(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
