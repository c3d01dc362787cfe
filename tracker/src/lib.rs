//! imageswarm's tracker, and the libp2p plumbing every imageswarm process
//! shares.
//!
//! * [`registry`]: per image, the peers that announced it with site, role,
//!   completeness and a TTL, and the bounded, site-aware answer (pure).
//! * [`service`]: the tracker on libp2p.
//! * [`transport`]: TCP + Noise + Yamux (QUIC optional), protocol names, keys.
//! * [`codec`]: the length-prefixed request-response codec over
//!   [`proto::wire`].
//!
//! Trackers are hints: nodes keep working through Kademlia and the peers
//! they know when every tracker is down.

pub mod codec;
mod error;
pub mod registry;
pub mod service;
pub mod transport;

pub use error::{Error, Result};
