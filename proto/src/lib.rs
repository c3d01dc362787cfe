//! The sans-I/O core of imageswarm.
//!
//! Everything here computes and nothing here performs I/O: no sockets, no
//! files, no clock, no OS randomness. Time is always an argument
//! ([`Timestamp`]), so the node and the simulator drive the same code and
//! every decision can be replayed.
//!
//! * [`imagelist`]: the HEPiX image list model, its JSON codec and the
//!   `hv:version` order.
//! * [`smime`]: S/MIME signing and message parsing with CRLF
//!   canonicalisation.
//! * [`trust`]: CA certificates, CRLs, endorser policy, and the one path from
//!   signed bytes to a [`trust::VerifiedList`].
//! * [`credential`]: site credentials and their revocation lists: who
//!   may join a site's swarm, as what.
//! * [`policy`]: a site's policy, signed by a master and followed by
//!   every member.
//! * [`attestation`]: a master's word for an image's manifest root, where
//!   the list carries none.
//! * [`bitfield`]: which chunks a node has.
//! * [`swarm`]: the swarm's decisions (which chunk, from whom, how many at
//!   once, whom to serve, whom to ban) as a sans-I/O state machine.
//! * [`tracker`]: who announced which image, and which peers a tracker
//!   hands out.
//! * [`transfer`]: everything else a node decides about moving an image:
//!   hellos, manifests, requests from peers, replies, the gating of writes,
//!   commits and the install, and bans, around [`swarm`].
//! * [`wire`]: the messages between nodes and trackers, and their codec.
//! * [`manifest`]: fixed-size chunking, BLAKE3 per chunk, and the root a list
//!   vouches for.
//!
//! Parse, don't validate: bytes become a `VerifiedList` only through
//! [`trust::verify_list`], and errors ([`Error`]) name the check that failed.

pub mod attestation;
pub mod bitfield;
pub mod credential;
mod error;
mod ffi;
pub mod imagelist;
pub mod manifest;
pub mod policy;
pub mod smime;
pub mod swarm;
mod timestamp;
pub mod tracker;
pub mod transfer;
pub mod trust;
pub mod wire;

pub use error::{ChainCheck, Error};
pub use timestamp::Timestamp;
