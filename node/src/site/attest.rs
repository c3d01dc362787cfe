//! Attested manifest roots ([`proto::attestation`]) for images whose list
//! names none.
//!
//! # Contract
//! * [`Site::attest`] (a master): for an image available here whose list
//!   names no root and that has no attestation for the list version in
//!   force, builds the root from the chunk hashes its download from the
//!   source recorded (the download checked size and SHA-512 against the
//!   list), has `sign` sign the attestation, and records root and
//!   attestation, in one turn, only if the record is still the one it was
//!   built from.
//! * [`Site::take_attestation`] (any member): verifies an attestation a peer
//!   offered against the entry in force here and, if it holds, records its
//!   root and bytes, in one turn, for the record it was checked against. A
//!   refused attestation is an [`Error::Proto`] naming the check: the peer
//!   that offered it lied.
//! * An accepted list version clears every attestation (`Site::accept`): each
//!   names the version it was made for.

use proto::Timestamp;
use proto::attestation::{Attestation, Entry, verify_attestation};
use proto::credential::SiteCas;
use proto::imagelist::ImageList;
use proto::manifest::{ChunkSize, Manifest};
use uuid::Uuid;

use super::Site;
use crate::store::{ImageRecord, ImageState, ListRef, Subscription};
use crate::{Error, Result};

/// What became of an attestation made or offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attested {
    /// Recorded: the image's root is in force.
    Recorded,
    /// Nothing to do: the image has a root already, or its record changed
    /// meanwhile.
    Unneeded,
}

/// Whether `rec` waits for an attested root.
pub fn wants_attestation(rec: &ImageRecord) -> bool {
    rec.root.is_none()
}

impl Site {
    /// The list in force for `sub`, parsed.
    pub(super) fn list_in_force(&self, sub: &Subscription) -> Result<Option<(ListRef, ImageList)>> {
        let Some(cur) = &sub.current else { return Ok(None) };
        let Some(msg) = self.store.list_message(sub.identifier, cur.seq)? else { return Ok(None) };
        let list = ImageList::from_json(proto::smime::SignedMessage::parse(&msg)?.content())?;
        Ok(Some((cur.clone(), list)))
    }

    /// The `hv:version` of the list in force that names `uuid`.
    pub fn list_version_of(&self, uuid: Uuid) -> Result<Option<String>> {
        let Some(rec) = self.store.image(uuid)? else { return Ok(None) };
        Ok(self.store.subscription(rec.list)?.and_then(|s| s.current).map(|c| c.version))
    }

    /// The attestation held for `uuid`, if the list in force here has
    /// `list_version` (what a peer on that version may be given).
    pub fn attestation_for(&self, uuid: Uuid, list_version: &str) -> Result<Option<Vec<u8>>> {
        let Some(rec) = self.store.image(uuid)? else { return Ok(None) };
        let current = self.store.subscription(rec.list)?.and_then(|s| s.current);
        if current.is_none_or(|c| c.version != list_version) {
            return Ok(None);
        }
        Ok(rec.attestation.and_then(|h| hex::decode(h).ok()))
    }

    /// Builds, signs (`sign`) and records the attestation of `uuid` as a
    /// master of `site` (see the module docs).
    pub fn attest(
        &self,
        uuid: Uuid,
        site: &str,
        sign: impl FnOnce(&Attestation) -> Result<Vec<u8>>,
    ) -> Result<Attested> {
        let Some(rec) = self.store.image(uuid)? else { return Ok(Attested::Unneeded) };
        if !wants_attestation(&rec) || rec.state != ImageState::Available {
            return Ok(Attested::Unneeded);
        }
        let sub = self.store.subscription(rec.list)?;
        let Some((cur, list)) = sub.map(|s| self.list_in_force(&s)).transpose()?.flatten() else {
            return Ok(Attested::Unneeded);
        };
        let hashes: Option<Vec<[u8; 32]>> = self.store.chunk_hashes(uuid, rec.chunk_count())?.into_iter().collect();
        let hashes = hashes.ok_or_else(|| Error::Store(format!("image {uuid}: chunk hashes missing")))?;
        let manifest = Manifest::from_hashes(ChunkSize::new(rec.chunk_size)?, rec.size, hashes)?;
        let a = Attestation {
            site: site.to_owned(),
            list: rec.list,
            list_version: cur.version,
            expires: list.expires.unix(),
            image: uuid,
            size: rec.size,
            sha512: rec.sha512.clone(),
            chunk_size: rec.chunk_size,
            root: manifest.root().0,
        };
        let signed = sign(&a)?;
        self.record_root(&rec, &manifest.root().to_string(), rec.chunk_size, &signed)
    }

    /// Verifies an attestation of `uuid` a peer offered, against the site
    /// CAs this node trusts, at `now`, and records it (see the module docs).
    pub fn take_attestation(&self, uuid: Uuid, bytes: &[u8], cas: &SiteCas, now: Timestamp) -> Result<Attested> {
        let Some(rec) = self.store.image(uuid)? else { return Ok(Attested::Unneeded) };
        let Some(cur) = self.store.subscription(rec.list)?.and_then(|s| s.current) else {
            return Ok(Attested::Unneeded);
        };
        if !wants_attestation(&rec) {
            return Ok(Attested::Unneeded);
        }
        let entry =
            Entry { list: rec.list, list_version: &cur.version, image: uuid, size: rec.size, sha512: &rec.sha512 };
        let a = verify_attestation(bytes, cas, &entry, now)?;
        if a.chunk_size.get() != rec.chunk_size {
            return Err(Error::Refused(format!(
                "image {uuid}: attested for {}-byte chunks, kept here in {}",
                a.chunk_size.get(),
                rec.chunk_size
            )));
        }
        self.record_root(&rec, &a.root.to_string(), rec.chunk_size, bytes)
    }

    /// Records an attested root for `was`, if the record is still `was`.
    fn record_root(&self, was: &ImageRecord, root: &str, chunk_size: u64, signed: &[u8]) -> Result<Attested> {
        let _turn = self.take_turn();
        let Some(mut rec) = self.store.image(was.uuid)? else { return Ok(Attested::Unneeded) };
        if rec.list_content != was.list_content || rec.sha512 != was.sha512 || !wants_attestation(&rec) {
            return Ok(Attested::Unneeded);
        }
        rec.root = Some(root.to_owned());
        rec.chunk_size = chunk_size;
        rec.attestation = Some(hex::encode(signed));
        self.store.put_image(&rec)?;
        tracing::info!(image = %rec.uuid, root, "attested manifest root recorded");
        Ok(Attested::Recorded)
    }
}
