//! A site's policy: which endorsers, lists and images its members accept,
//! decided once on a policy holder (a master) and followed by every member.
//!
//! # Contract
//! * A [`Policy`] names its site, a version and its [`PolicyContent`]: the
//!   approved endorsers, the subscriptions (URL, the list's identifier, how
//!   new images are treated, enabled or not) and the site's decision about
//!   each image it decided on.
//! * It travels signed ([`sign_policy`]): by the Ed25519 key of a master's
//!   credential of that site, with the credential
//!   ([`crate::credential::sign_document`]).
//! * [`verify_policy`] is the only way to a [`VerifiedPolicy`]. It fails with
//!   [`Error::Credential`] or [`Error::Wire`] unless: the signed document
//!   opens ([`crate::credential::open_signed`]: it decodes, its credential
//!   verifies at the time given and signed it); the signer is a master; and
//!   its site, the policy's site and the verifier's site are one.
//! * A member replaces the policy it holds only with a higher version
//!   ([`VerifiedPolicy::supersedes`]): an older policy, replayed, changes
//!   nothing.
//! * Members of a closed site meet under [`site_meeting_point`] at the
//!   trackers, so the policy reaches a member that swarms on nothing yet.
//! * A policy narrows what a member accepts, never widens it: the lists of
//!   the endorsers it approves must still verify against the member's own
//!   CAs and CRLs, which the policy cannot name.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::credential::{Credential, SiteCas, open_signed, sign_document};
use crate::swarm::Role;
use crate::{Error, Timestamp};

/// How a subscription treats images it has not seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewImages {
    /// Recorded as `refused` until the site approves them (the default).
    #[default]
    Refuse,
    /// Approved, but not downloaded to this host until approved for caching.
    Accept,
    /// Approved and downloaded.
    Cache,
}

impl NewImages {
    /// The mode's name, as configuration and the command line write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Accept => "accept",
            Self::Cache => "cache",
        }
    }
}

/// What the site decided about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// May run here.
    Approved,
    /// Not approved (yet).
    Refused,
    /// Withdrawn by the site: never stored or served until approved again.
    Revoked,
}

/// An approved endorser: subject and issuer, in OpenSSL's one-line form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyEndorser {
    /// The endorser's subject.
    pub dn: String,
    /// Its issuer.
    pub ca: String,
}

/// A subscription every member keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicySubscription {
    /// The list's `dc:identifier`.
    pub identifier: Uuid,
    /// Where the list is fetched from.
    pub url: String,
    /// How new images are treated.
    pub new_images: NewImages,
    /// Whether it is enabled.
    pub enabled: bool,
}

/// The site's decision about one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyImage {
    /// The image's `dc:identifier`.
    pub uuid: Uuid,
    /// Approved, refused or revoked.
    pub decision: Decision,
    /// Whether members cache it.
    pub cache: bool,
}

/// What a policy decides, in one canonical order (sorted by key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyContent {
    /// The approved endorsers.
    pub endorsers: Vec<PolicyEndorser>,
    /// The subscriptions.
    pub subscriptions: Vec<PolicySubscription>,
    /// The decisions about images.
    pub images: Vec<PolicyImage>,
}

impl PolicyContent {
    /// Sorts every part, so that equal decisions compare equal.
    pub fn canonical(mut self) -> Self {
        self.endorsers.sort();
        self.endorsers.dedup();
        self.subscriptions.sort();
        self.images.sort_by_key(|i| i.uuid);
        self.images.dedup_by_key(|i| i.uuid);
        self
    }

    /// The decision about `uuid`, if the policy makes one.
    pub fn image(&self, uuid: Uuid) -> Option<&PolicyImage> {
        self.images.binary_search_by_key(&uuid, |i| i.uuid).ok().map(|i| &self.images[i])
    }
}

/// A site's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The site it governs.
    pub site: String,
    /// Higher replaces lower.
    pub version: u64,
    /// What it decides.
    pub content: PolicyContent,
}

/// A policy [`verify_policy`] accepted, with the bytes that carry it.
#[derive(Debug, Clone)]
pub struct VerifiedPolicy {
    policy: Policy,
    signer: Credential,
    bytes: Vec<u8>,
}

impl VerifiedPolicy {
    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The master that signed it.
    pub fn signer(&self) -> &Credential {
        &self.signer
    }

    /// The signed bytes, to pass on.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether this policy replaces `held`.
    pub fn supersedes(&self, held: Option<&Self>) -> bool {
        held.is_none_or(|h| self.policy.version > h.policy.version)
    }
}

/// The identifier a closed site's members announce under to trackers, so
/// that a member that swarms on nothing yet (a worker with no subscription)
/// still meets its site, and with it the site's policy.
pub fn site_meeting_point(site: &str) -> Uuid {
    let h = blake3::hash(format!("imageswarm site {site}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

/// Signs `policy` as the holder of `credential`, whose key `sign` signs
/// with; returns the bytes [`verify_policy`] takes.
pub fn sign_policy(policy: &Policy, credential: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<Vec<u8>, Error> {
    sign_document(policy, credential, sign)
}

/// Verifies a signed policy for a member of `site` at `at` (see the module
/// docs).
pub fn verify_policy(bytes: &[u8], cas: &SiteCas, site: &str, at: Timestamp) -> Result<VerifiedPolicy, Error> {
    let (policy, signer): (Policy, Credential) = open_signed(bytes, cas, at)?;
    let refuse = |detail: String| Error::Credential { check: "policy", detail };
    if signer.role != Role::Master {
        return Err(refuse(format!("signed by a {:?}, not a master", signer.role)));
    }
    if signer.site != site || policy.site != site {
        return Err(refuse(format!(
            "a policy for site {} signed by a master of {}, offered to site {site}",
            policy.site, signer.site
        )));
    }
    Ok(VerifiedPolicy { policy, signer, bytes: bytes.to_vec() })
}
