//! The records a [`Store`](super::Store) keeps, as JSON: the site's
//! settings, subscriptions, accepted list versions and one record per
//! image, with what an image's record says about its state.

use std::path::PathBuf;

use proto::Timestamp;
pub use proto::policy::{Decision, NewImages};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The site's trust and cache settings, set by `init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteConfig {
    /// A PEM bundle of trusted CA certificates.
    pub ca_file: Option<PathBuf>,
    /// An IGTF-style CA directory.
    pub ca_dir: Option<PathBuf>,
    /// Extra CRL files.
    pub crls: Vec<PathBuf>,
    /// Whether every certificate on a path needs a current CRL.
    pub crl_check: bool,
    /// A shell command run on every cache event (vmcatcher's hook contract).
    pub hook: Option<String>,
    /// Seconds a hook may run before it is killed.
    pub hook_timeout_secs: u64,
    /// Failed download attempts allowed per image and list version.
    pub download_attempts: u32,
    /// Expired images older than this many days are deleted.
    pub expired_max_age_days: u32,
    /// Expired images are deleted, oldest first, while free space is below
    /// this percentage of the file system.
    pub min_free_percent: u8,
    /// Expired images are deleted, oldest first, while they take more than
    /// this many bytes together (no cap when `None`).
    #[serde(default)]
    pub expired_max_bytes: Option<u64>,
    /// Re-hash every complete image with SHA-512 before installing it, even
    /// when the manifest root already binds its chunks to the list.
    #[serde(default)]
    pub strict_sha512: bool,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            ca_dir: None,
            crls: Vec::new(),
            crl_check: true,
            hook: None,
            hook_timeout_secs: 10,
            download_attempts: 5,
            expired_max_age_days: 30,
            min_free_percent: 10,
            expired_max_bytes: None,
            strict_sha512: false,
        }
    }
}

/// A subscription to one image list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Where the list is fetched from.
    pub url: String,
    /// The list's `dc:identifier`, pinned at subscription.
    pub identifier: Uuid,
    /// How new images are treated.
    pub new_images: NewImages,
    /// A disabled subscription's images are not approved.
    pub enabled: bool,
    /// The list version in force, if one was accepted. New versions must be
    /// higher; `subscription reset` clears it (fast-forward recovery).
    pub current: Option<ListRef>,
    /// Sequence number for the next accepted version (the last
    /// [`KEPT_VERSIONS`] are kept).
    pub next_seq: u64,
    /// Whether the list in force still verifies (trust, CRLs, dates).
    pub list_valid: bool,
    /// The last update's error, if it failed.
    pub last_error: Option<String>,
    /// When the list was last fetched successfully.
    pub updated: Option<Timestamp>,
}

/// One accepted list version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRef {
    /// Its position in the subscription's history.
    pub seq: u64,
    /// Its `hv:version`.
    pub version: String,
    /// SHA-512 of its canonical content, hex.
    pub content_sha512: String,
}

/// Accepted versions of a list whose messages the store keeps: the one in
/// force and those just before it. Only the one in force is read; older
/// ones go as new ones come, so that a list updated daily for years does
/// not grow the store without end.
pub const KEPT_VERSIONS: u64 = 8;

/// One entry of a list's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedList {
    /// Which version, and the SHA-512 of its canonical content.
    pub list: ListRef,
    /// When it was accepted.
    pub accepted_at: Timestamp,
}

/// An image's state on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// Complete and verified in `images/<uuid>`.
    Available,
    /// Approved and endorsed, not (yet) complete here.
    Partial,
    /// No longer endorsed (withdrawn, list expired or no longer verifiable).
    Expired,
    /// Endorsed but not approved by the site.
    Refused,
    /// Revoked by the site.
    Revoked,
}

impl ImageState {
    /// The state's name as the CLI prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Partial => "partial",
            Self::Expired => "expired",
            Self::Refused => "refused",
            Self::Revoked => "revoked",
        }
    }
}

/// Everything the node knows about one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `dc:identifier`.
    pub uuid: Uuid,
    /// The list (subscription) it belongs to.
    pub list: Uuid,
    /// `dc:title`.
    pub title: String,
    /// `hv:version`.
    pub version: String,
    /// `hv:size`.
    pub size: u64,
    /// `sl:checksum:sha512`, hex.
    pub sha512: String,
    /// Chunk size used for the data file and its have-bitfield.
    pub chunk_size: u64,
    /// The manifest root in force, hex: the one the list vouches for or,
    /// where it names none, the one `attestation` vouches for.
    pub root: Option<String>,
    /// Where the list names no root: a master's of this site signed
    /// attestation of the root ([`proto::attestation`]), hex, for the list
    /// version in force.
    #[serde(default)]
    pub attestation: Option<String>,
    /// `hv:uri`.
    pub uri: String,
    /// The whole `hv:image` entry, for hooks.
    pub entry: serde_json::Value,
    /// The list's `ad:vo`, for hooks.
    pub vo: Option<String>,
    /// SHA-512 (hex) of the list version the entry came from.
    pub list_content: String,
    /// On the list in force, and that list verifies.
    pub endorsed: bool,
    /// The site's decision.
    pub decision: Decision,
    /// Whether this host keeps a copy.
    pub cache: bool,
    /// The state on this host.
    pub state: ImageState,
    /// Failed download attempts for `list_content`.
    pub attempts: u32,
    /// The last download error.
    pub last_error: Option<String>,
    /// The `sha512` that the data on disk (partial or complete) was written
    /// for; when the list changes it, that data is stale.
    pub data_for: Option<String>,
}

impl ImageRecord {
    /// The state these facts imply, given whether the data is complete.
    pub fn derived_state(&self, complete: bool) -> ImageState {
        match (self.decision, self.endorsed) {
            (Decision::Revoked, _) => ImageState::Revoked,
            (_, false) => ImageState::Expired,
            (Decision::Refused, true) => ImageState::Refused,
            (Decision::Approved, true) if complete => ImageState::Available,
            (Decision::Approved, true) => ImageState::Partial,
        }
    }

    /// Whether this host wants the image's data: to be cached here, and
    /// approved and endorsed.
    pub fn wants_data(&self) -> bool {
        self.cache && matches!(self.derived_state(true), ImageState::Available)
    }

    /// Why the image is not available here, in words for an operator;
    /// `None` when it is available, or on its way with nothing in the way.
    pub fn why_not_moving(&self, download_attempts: u32) -> Option<String> {
        Some(match self.state {
            ImageState::Available => return None,
            ImageState::Revoked => "revoked by this site (`image approve` approves it again)".into(),
            ImageState::Refused => "waiting for approval (`image approve`)".into(),
            ImageState::Expired => {
                "no longer endorsed: withdrawn from its list, or the list expired or no longer verifies".into()
            }
            ImageState::Partial if !self.cache => {
                "approved, not cached on this host (`image approve` caches it)".into()
            }
            ImageState::Partial if self.root.is_none() => {
                "not swarmable: the list carries no manifest root and no attestation has arrived".into()
            }
            ImageState::Partial if self.attempts >= download_attempts => format!(
                "gave up downloading after {}: {}",
                crate::units::count(self.attempts as usize, "failed attempt"),
                self.last_error.as_deref().unwrap_or("no error recorded")
            ),
            ImageState::Partial => match &self.last_error {
                Some(e) => format!("not complete here: {e}"),
                None => return None,
            },
        })
    }

    /// How many chunks the image has.
    pub fn chunk_count(&self) -> u32 {
        u32::try_from(self.size.div_ceil(self.chunk_size.max(1))).unwrap_or(u32::MAX)
    }
}
