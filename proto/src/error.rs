//! The one error type of `proto`.
//!
//! Verification failures name the check that failed: [`Error::check`] gives a
//! stable, short name (`signature`, `revocation`, `expires`, ...) and the
//! `Display` text starts with it, so an operator reading one line knows which
//! rule rejected a list.

/// Which part of certificate-path validation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainCheck {
    /// The signer's certificate does not lead to a trusted CA.
    Chain,
    /// A certificate on the path is expired or not yet valid.
    Validity,
    /// A certificate on the path is listed on its issuer's CRL.
    Revocation,
    /// No current, correctly signed CRL is available for an issuer.
    Crl,
    /// The certificate is not meant for signing S/MIME messages.
    Purpose,
}

impl ChainCheck {
    /// The check's stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chain => "chain",
            Self::Validity => "validity",
            Self::Revocation => "revocation",
            Self::Crl => "crl",
            Self::Purpose => "purpose",
        }
    }
}

impl std::fmt::Display for ChainCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in `proto`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a JSON document we accept.
    #[error("format: image list is not valid JSON: {0}")]
    Json(String),
    /// A JSON object repeats a key; which value counts would be ambiguous.
    #[error("format: image list repeats the key `{0}`")]
    DuplicateKey(String),
    /// A field is missing or has the wrong type or value.
    #[error("format: {at}: {reason}")]
    Field {
        /// Where the field sits, e.g. `hv:imagelist/hv:images[2]/hv:size`.
        at: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A date is not of the form `YYYY-MM-DDTHH:MM:SSZ`.
    #[error("format: `{0}` is not a date of the form YYYY-MM-DDTHH:MM:SSZ")]
    Date(String),
    /// The message is not a detached `multipart/signed` S/MIME message.
    #[error("smime: {0}")]
    Smime(String),
    /// Producing a signature failed.
    #[error("sign: {0}")]
    Sign(String),
    /// A CA certificate or CRL handed to the trust store is unusable.
    #[error("trust-store: {0}")]
    TrustStore(String),
    /// The message does not carry exactly one signer.
    #[error("signers: expected exactly one signer, found {0}")]
    SignerCount(usize),
    /// The signer's certificate failed path validation.
    #[error("{check}: {detail}")]
    Chain {
        /// The part of path validation that failed.
        check: ChainCheck,
        /// OpenSSL's description of the failure.
        detail: String,
    },
    /// The signature does not cover these bytes.
    #[error("signature: {0}")]
    Signature(String),
    /// `hv:dn` differs from the signer's subject.
    #[error("endorser-dn: the list names `{list}` but the signer is `{signer}`")]
    EndorserDn {
        /// `hv:dn` as written in the list.
        list: String,
        /// The signer certificate's subject.
        signer: String,
    },
    /// `hv:ca` differs from the signer's issuer.
    #[error("endorser-ca: the list names `{list}` but the signer was issued by `{signer}`")]
    EndorserCa {
        /// `hv:ca` as written in the list.
        list: String,
        /// The signer certificate's issuer.
        signer: String,
    },
    /// The signer is not among the endorsers the site approved.
    #[error("endorser-approval: `{dn}` (issued by `{ca}`) is not an approved endorser")]
    NotApproved {
        /// The signer's subject.
        dn: String,
        /// The signer's issuer.
        ca: String,
    },
    /// `dc:date:created` lies after the verification time.
    #[error("created: the list claims creation at {created}, after the verification time {at}")]
    CreatedInFuture {
        /// `dc:date:created`.
        created: crate::Timestamp,
        /// The time the check was made at.
        at: crate::Timestamp,
    },
    /// `dc:date:expires` has passed.
    #[error("expires: the list expired at {expires} (verification time {at})")]
    Expired {
        /// `dc:date:expires`.
        expires: crate::Timestamp,
        /// The time the check was made at.
        at: crate::Timestamp,
    },
    /// A list's `dc:identifier` differs from the one it should continue.
    #[error("identifier: expected list {expected}, got {got}")]
    IdentifierChanged {
        /// The identifier already held.
        expected: uuid::Uuid,
        /// The identifier offered.
        got: uuid::Uuid,
    },
    /// A list offers a lower `hv:version` than one already accepted.
    #[error("version: rollback from {stored} to {offered}")]
    Rollback {
        /// The version already accepted.
        stored: String,
        /// The lower version offered.
        offered: String,
    },
    /// A list reuses an accepted `hv:version` with different content.
    #[error("version: {0} was already accepted with different content")]
    VersionReused(String),
    /// A chunk size that is not a supported power of two.
    #[error("manifest: chunk size {0} is not a power of two from 1 KiB to 1 GiB")]
    ChunkSize(u64),
    /// An image cut into more chunks than a manifest may have
    /// ([`crate::manifest::MAX_CHUNKS`]).
    #[error(
        "manifest: {size} bytes in chunks of {chunk_size} bytes make {chunks} chunks, more than the {max} a \
         manifest may have (peers could never exchange it): cut it in chunks of {least} bytes or more"
    )]
    TooManyChunks {
        /// The image's size.
        size: u64,
        /// The chunk size asked for.
        chunk_size: u64,
        /// The chunks that makes.
        chunks: u64,
        /// The most there may be.
        max: u64,
        /// The least chunk size that fits.
        least: u64,
    },
    /// A manifest whose root differs from the one it must match.
    #[error("manifest: root {computed} does not match the expected {expected}")]
    ManifestRoot {
        /// The root that was vouched for.
        expected: String,
        /// The root computed from the manifest.
        computed: String,
    },
    /// A message from the network that does not decode within its limits.
    #[error("wire: {0}")]
    Wire(String),
    /// A site credential or a site CRL failed a check
    /// ([`crate::credential`]).
    #[error("credential {check}: {detail}")]
    Credential {
        /// The check that failed (`format`, `issuer`, `validity`, `key`,
        /// `subject`, `revoked`, `crl`, `authority`).
        check: &'static str,
        /// What was found.
        detail: String,
    },
}

impl Error {
    /// The stable name of the check that failed.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Json(_) | Self::DuplicateKey(_) | Self::Field { .. } | Self::Date(_) => "format",
            Self::Smime(_) => "smime",
            Self::Sign(_) => "sign",
            Self::TrustStore(_) => "trust-store",
            Self::SignerCount(_) => "signers",
            Self::Chain { check, .. } => check.name(),
            Self::Signature(_) => "signature",
            Self::EndorserDn { .. } => "endorser-dn",
            Self::EndorserCa { .. } => "endorser-ca",
            Self::NotApproved { .. } => "endorser-approval",
            Self::CreatedInFuture { .. } => "created",
            Self::Expired { .. } => "expires",
            Self::IdentifierChanged { .. } => "identifier",
            Self::Rollback { .. } | Self::VersionReused(_) => "version",
            Self::ChunkSize(_) | Self::TooManyChunks { .. } | Self::ManifestRoot { .. } => "manifest",
            Self::Wire(_) => "wire",
            Self::Credential { check, .. } => check,
        }
    }
}
