//! The one error type of the `tracker` library.

/// Everything the tracker library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport could not be built or could not listen.
    #[error("network: {0}")]
    Net(String),
    /// A key file is unusable.
    #[error("key: {0}")]
    Key(String),
}

/// `Result` with the tracker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
