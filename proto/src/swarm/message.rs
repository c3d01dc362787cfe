//! The swarm's vocabulary: who a peer is, what peers say to each other about
//! one image, what became of a request, and what the I/O layer must do.
//! These types cross the sans-I/O boundary; nothing here decides anything.

use crate::bitfield::Bitfield;
use crate::manifest::ChunkError;

/// A chunk's position in the image.
pub type ChunkIndex = u32;

/// The caller's handle for a peer.
pub type PeerId = u64;

/// Microseconds on the caller's monotonic clock.
pub type Micros = u64;

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// A worker host: downloads and shares within its site.
    Worker,
    /// A worker that also fetches across sites for its site.
    Gateway,
    /// A master: holds every image from the source and seeds.
    Master,
}

impl Role {
    /// Whether the role may exchange chunks with other sites.
    pub fn crosses_sites(self) -> bool {
        matches!(self, Self::Gateway | Self::Master)
    }
}

/// Who a peer is, as the tracker or the peer itself says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's site.
    pub site: u32,
    /// The peer's role.
    pub role: Role,
    /// A number every node derives alike from the peer's identity (the node
    /// hashes its libp2p peer id), which orders a site's gateways the same
    /// way at each of them ([`FetchStripe`](super::FetchStripe)).
    pub key: u64,
}

/// Messages between peers about one image. Chunk data travels outside
/// these: the I/O layer carries it for [`Action::Upload`] and reports what
/// became of a request with [`Swarm::handle_reply`](super::Swarm::handle_reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Every chunk the sender has; sent first on each connection. It adds to
    /// what the receiver knows of the sender and takes nothing away: it may
    /// be older than the sender's Haves already received.
    Bitfield(Bitfield),
    /// The sender now has this chunk.
    Have(ChunkIndex),
    /// Please send this chunk.
    Request(ChunkIndex),
    /// Please send this chunk: the sender has nothing else in flight, a
    /// master refused it this chunk before, and none of its other peers holds
    /// it (they left, or were banned for bad data). A master serves it
    /// whatever copies it believes exist.
    Insist(ChunkIndex),
    /// Never mind this request.
    Cancel(ChunkIndex),
}

/// What became of a chunk request this node sent. The three ways it can
/// fail stay apart: only [`Reply::Corrupt`] is the peer's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The chunk arrived and matched the manifest (and, in the node, is
    /// written).
    Verified,
    /// The peer sent bytes that are not the chunk: it is banned.
    Corrupt(ChunkError),
    /// The peer refused (it lacks the chunk, is busy, or leaves it to
    /// others): ask elsewhere for a while.
    Refused,
    /// The request never got an answer (the stream or connection failed):
    /// as a refusal, and not held against the peer.
    Failed,
}

/// Something the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message.
    Send {
        /// To whom.
        to: PeerId,
        /// What.
        msg: Message,
    },
    /// Send a chunk's data; report the end with [`Swarm::handle_upload_done`](super::Swarm::handle_upload_done).
    Upload {
        /// To whom.
        to: PeerId,
        /// Which chunk.
        chunk: ChunkIndex,
    },
    /// Refuse this request (not held, not allowed, or busy).
    Refuse {
        /// The peer that asked.
        to: PeerId,
        /// The chunk it asked for.
        chunk: ChunkIndex,
    },
    /// Disconnect and ban this peer: it sent data that failed verification.
    Ban {
        /// The peer.
        peer: PeerId,
        /// What was wrong with the chunk it sent.
        error: ChunkError,
    },
    /// Every chunk is here and verified.
    Completed,
}
