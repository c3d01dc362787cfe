//! What goes into and comes out of a [`super::Host`] besides plain calls:
//! notices, the replies to its requests, and the effects the I/O layer
//! carries out.

use std::sync::Arc;

use super::ImageId;
use crate::bitfield::Bitfield;
use crate::manifest::{ChunkError, ChunkHash, VerifiedChunk};
use crate::swarm::{ChunkIndex, PeerId};
use crate::wire::Refusal;

/// A swarm notice about one image, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Every chunk the sender has.
    Bitfield(Bitfield),
    /// The sender now has this chunk.
    Have(ChunkIndex),
    /// The sender no longer wants this chunk.
    Cancel(ChunkIndex),
}

/// The answer to a chunk request this node sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkReply<B> {
    /// Bytes, not yet checked.
    Data(B),
    /// The peer refused.
    Refused(Refusal),
    /// No answer came: the stream or connection failed.
    Failed,
}

/// The answer to a manifest request this node sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestReply {
    /// Chunk hashes, not yet checked against the root.
    Hashes(Arc<[ChunkHash]>),
    /// The peer refused.
    Refused(Refusal),
    /// No answer came.
    Failed,
}

/// Why a peer is banned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offence {
    /// It sent bytes that are not the chunk asked for.
    Chunk {
        /// The image.
        image: ImageId,
        /// What was wrong with them.
        error: ChunkError,
    },
    /// It sent a manifest whose root is not the list's.
    Manifest {
        /// The image.
        image: ImageId,
    },
    /// It offered an attestation of the image's root that does not hold
    /// here (forged, another site's, another list version's, expired).
    Attestation {
        /// The image.
        image: ImageId,
    },
}

impl Offence {
    /// The image the bad data was for.
    pub fn image(&self) -> ImageId {
        match self {
            Self::Chunk { image, .. } | Self::Manifest { image } | Self::Attestation { image } => *image,
        }
    }
}

/// Disk work for an image failed; the I/O layer logged why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFailed;

/// Something the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<B> {
    /// Send this node's hello to a peer: these images, in this order.
    Hello {
        /// To whom.
        to: PeerId,
        /// The images and what this node has of each.
        images: Vec<(ImageId, Bitfield)>,
    },
    /// Send a notice on the peer's notice stream.
    Notice {
        /// To whom.
        to: PeerId,
        /// About which image.
        image: ImageId,
        /// What.
        notice: Notice,
    },
    /// Ask a peer for a chunk; report the answer with
    /// [`super::Host::handle_chunk_reply`].
    RequestChunk {
        /// Whom.
        to: PeerId,
        /// The image.
        image: ImageId,
        /// The chunk.
        index: ChunkIndex,
        /// See [`crate::swarm::Message::Insist`].
        insist: bool,
    },
    /// Ask a peer for an image's manifest; report the answer with
    /// [`super::Host::handle_manifest_reply`].
    RequestManifest {
        /// Whom.
        to: PeerId,
        /// The image.
        image: ImageId,
    },
    /// Answer a peer's chunk request with the chunk's bytes; report the end
    /// with [`super::Host::handle_upload_done`].
    Serve {
        /// To whom.
        to: PeerId,
        /// The image.
        image: ImageId,
        /// The chunk.
        index: ChunkIndex,
    },
    /// Answer a peer's chunk request with a refusal.
    Refuse {
        /// To whom.
        to: PeerId,
        /// The image.
        image: ImageId,
        /// The chunk.
        index: ChunkIndex,
        /// Why.
        refusal: Refusal,
    },
    /// Write a verified chunk into the image's partial data; report with
    /// [`super::Host::handle_written`].
    Write {
        /// The image.
        image: ImageId,
        /// The take-up it is for.
        epoch: u64,
        /// The chunk.
        chunk: VerifiedChunk<B>,
    },
    /// Make these written chunks durable and record them; report with
    /// [`super::Host::handle_committed`].
    Commit {
        /// The image.
        image: ImageId,
        /// The take-up they are for.
        epoch: u64,
        /// Each chunk with its hash.
        chunks: Vec<(ChunkIndex, ChunkHash)>,
    },
    /// Check and install the complete image; report with
    /// [`super::Host::handle_installed`].
    Install {
        /// The image.
        image: ImageId,
        /// The take-up it is for.
        epoch: u64,
    },
    /// Cut the connection to this peer and refuse it for a while.
    Ban {
        /// The peer.
        peer: PeerId,
        /// Why.
        offence: Offence,
    },
    /// Disk work for the image failed and it left the swarm: take it up
    /// again from what the store records.
    StartOver {
        /// The image.
        image: ImageId,
    },
}
