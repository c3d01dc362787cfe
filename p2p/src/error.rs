//! The one error type of the `p2p` library.

/// Everything the shared plumbing can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport could not be built, or could not listen.
    #[error("network: {0}")]
    Net(String),
    /// A key file is unusable.
    #[error("key: {0}")]
    Key(String),
    /// The federation file is unreadable or names something unusable.
    #[error("federation file: {0}")]
    Federation(String),
}

/// `Result` with the plumbing's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
