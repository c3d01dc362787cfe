//! The one error type of the `node` library.

use std::path::PathBuf;

/// Everything the node library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A check or format error from `proto`; its text names the check.
    #[error(transparent)]
    Proto(#[from] proto::Error),
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A certificate or key file is unusable.
    #[error("{}: {reason}", path.display())]
    Credential {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate does not belong to the list's endorser.
    #[error(
        "the certificate is `{cert_dn}` issued by `{cert_ca}`, but the list's endorser is `{list_dn}` issued by `{list_ca}`"
    )]
    WrongEndorser {
        /// The certificate's subject.
        cert_dn: String,
        /// The certificate's issuer.
        cert_ca: String,
        /// The list's `hv:dn`.
        list_dn: String,
        /// The list's `hv:ca`.
        list_ca: String,
    },
    /// The list is not ready to be signed.
    #[error("the list cannot be signed: {0}")]
    Incomplete(String),
    /// The metadata store failed or holds a record it cannot read.
    #[error("store: {0}")]
    Store(String),
    /// Another process holds the store.
    #[error("the store at {} is in use by another imageswarm process", .0.display())]
    StoreBusy(PathBuf),
    /// A download or fetch failed.
    #[error("{url}: {reason}")]
    Fetch {
        /// The URL, credentials removed.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The data received is not what the list vouches for.
    #[error("{0}")]
    BadData(String),
    /// A refusal by the site's rules, with the reason.
    #[error("{0}")]
    Refused(String),
    /// Chunks for partial data that was discarded, claimed anew or taken
    /// over by a download from the source while they were written (see
    /// [`crate::cache::partial`]); nothing of them was kept.
    #[error("{0}")]
    Superseded(String),
    /// A command-line or configuration value is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The network layer failed (transport, listening, the event loop).
    #[error("network: {0}")]
    Net(String),
}

impl Error {
    /// An I/O error with the file it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}

/// `Result` with the node's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
