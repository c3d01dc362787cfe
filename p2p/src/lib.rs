//! The libp2p plumbing every imageswarm process shares: the node and the
//! tracker run the same transport, speak the same protocol names, frame
//! messages with the same codec and run Kademlia alike.
//!
//! * [`transport`]: TCP + Noise + Yamux (QUIC optional), protocol names,
//!   identify, Kademlia settings and the key file.
//! * [`admission`]: who is admitted to a closed site, for nodes and
//!   trackers alike.
//! * [`codec`]: the length-prefixed request-response codec over
//!   [`proto::wire`], and the same framing for long-lived streams.
//! * [`tracker`]: the tracker service, answering announcements from
//!   [`proto::tracker::Registry`].
//! * [`federation`]: the federation file, which every node and tracker of
//!   cooperating sites reads.
//! * [`per_ip`]: a cap on the connections one address may open.
//! * [`metrics`]: Prometheus metrics over HTTP.

pub mod admission;
pub mod coalesce;
pub mod codec;
mod error;
pub mod federation;
pub mod metrics;
pub mod per_ip;
pub mod tracker;
pub mod transport;

pub use error::{Error, Result};

/// The wall clock, read where a process needs the time of day: credential
/// and list validity. Everything below takes the time as an argument.
pub fn wall_clock() -> proto::Timestamp {
    proto::Timestamp::from_datetime(time::OffsetDateTime::now_utc())
}
