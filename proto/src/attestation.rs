//! A site's word for an image's manifest root, where the list carries none.
//!
//! Lists made by the tools endorsers use (EGI AppDB, CernVM, vmcaster,
//! vmilisttool) name an image's size and SHA-512 only, and a SHA-512 can be
//! checked only once the whole image is in. A master that downloaded such an
//! image from `hv:uri` and found its size and SHA-512 as the list says
//! builds the BLAKE3 manifest and attests to its root, so that its site's
//! members can check every chunk on arrival as they do for lists that carry
//! a root.
//!
//! # Contract
//! * An [`Attestation`] binds a site, a list's identity (`dc:identifier`)
//!   and version (`hv:version`), the list's expiry, and an image's UUID,
//!   size and SHA-512, to a chunk size and a manifest root.
//! * It travels signed by a master's credential of that site
//!   ([`crate::credential::sign_document`]).
//! * [`verify_attestation`] is the only way to an [`Attested`] root. It
//!   fails with [`Error::Credential`] (check `attestation` unless the
//!   signature or credential failed first) or [`Error::Wire`] unless: the
//!   document opens at the time given, so its signer holds a credential of
//!   a site the verifier trusts (its own, or a cooperating site's); the
//!   signer is a master of the site the attestation names; the list
//!   identifier and version, image UUID, size and SHA-512 are those of the
//!   entry the verifier itself holds in force; and the list has not
//!   expired. So an attestation from a site not trusted, for another version
//!   of the list or other bytes, or past its list's expiry, is refused, and
//!   the peer that offered it lied; one from a cooperating site counts only
//!   for a list this site accepts itself.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::credential::{Credential, SiteCas, open_signed, sign_document};
use crate::manifest::{ChunkSize, ManifestRoot};
use crate::swarm::Role;
use crate::{Error, Timestamp};

/// What a master attests to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The site whose master attests.
    pub site: String,
    /// The list's `dc:identifier`.
    pub list: Uuid,
    /// The list's `hv:version`.
    pub list_version: String,
    /// The list's `dc:date:expires` (seconds since the epoch): the
    /// attestation expires with it.
    pub expires: i64,
    /// The image's `dc:identifier`.
    pub image: Uuid,
    /// Its `hv:size`.
    pub size: u64,
    /// Its `sl:checksum:sha512`, hex.
    pub sha512: String,
    /// The manifest's chunk size in bytes.
    pub chunk_size: u64,
    /// The manifest's root.
    pub root: [u8; 32],
}

/// The entry a verifier holds in force, which an attestation must name.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The list's identifier.
    pub list: Uuid,
    /// The list's version in force.
    pub list_version: &'a str,
    /// The image.
    pub image: Uuid,
    /// Its size.
    pub size: u64,
    /// Its SHA-512, hex.
    pub sha512: &'a str,
}

/// A root [`verify_attestation`] accepted.
#[derive(Debug, Clone)]
pub struct Attested {
    /// The chunk size the root is for.
    pub chunk_size: ChunkSize,
    /// The root.
    pub root: ManifestRoot,
    /// The master that attested.
    pub signer: Credential,
}

/// Signs `a` as the holder of a master's `credential`, whose key `sign`
/// signs with.
pub fn sign_attestation(
    a: &Attestation,
    credential: &[u8],
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<Vec<u8>, Error> {
    sign_document(a, credential, sign)
}

/// Verifies a signed attestation for `entry` at `at` (see the module docs).
pub fn verify_attestation(bytes: &[u8], cas: &SiteCas, entry: &Entry<'_>, at: Timestamp) -> Result<Attested, Error> {
    let (a, signer): (Attestation, Credential) = open_signed(bytes, cas, at)?;
    let refuse = |detail: String| Error::Credential { check: "attestation", detail };
    if signer.role != Role::Master || signer.site != a.site {
        return Err(refuse(format!("by a {:?} of site {}, in the name of site {}", signer.role, signer.site, a.site)));
    }
    if a.list != entry.list || a.list_version != entry.list_version {
        return Err(refuse(format!(
            "for list {} version {}, where {} version {} is in force",
            a.list, a.list_version, entry.list, entry.list_version
        )));
    }
    if a.image != entry.image || a.size != entry.size || a.sha512 != entry.sha512 {
        return Err(refuse(format!("for other bytes than image {} of the list in force", entry.image)));
    }
    if at.unix() > a.expires {
        return Err(refuse(format!("expired with its list at {}", a.expires)));
    }
    Ok(Attested { chunk_size: ChunkSize::new(a.chunk_size)?, root: ManifestRoot(a.root), signer })
}
