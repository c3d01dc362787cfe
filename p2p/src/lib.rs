//! The libp2p plumbing every imageswarm process shares: the node and the
//! tracker run the same transport, speak the same protocol names, frame
//! messages with the same codec and run Kademlia alike.
//!
//! * [`transport`]: TCP + Noise + Yamux (QUIC optional), protocol names,
//!   identify, Kademlia settings and the key file.
//! * [`codec`]: the length-prefixed request-response codec over
//!   [`proto::wire`], and the same framing for long-lived streams.
//! * [`tracker`]: the tracker service, answering announcements from
//!   [`proto::tracker::Registry`].

pub mod codec;
mod error;
pub mod tracker;
pub mod transport;

pub use error::{Error, Result};
