//! The imageswarm node: the library behind the `imageswarm` command.
//!
//! * [`endorse`]: the endorser's tools: build, extend and sign image lists.
//! * [`site`]: a host's subscriptions and image cache through one update
//!   cycle; [`store`] keeps its state, [`cache`] its image files,
//!   [`fetch`] talks to list and image servers, [`hooks`] runs event hooks.
//! * [`trustfiles`]: load CA certificates and CRLs from files and
//!   IGTF-style directories.
//! * [`authority`]: a site's CA, the node credentials it issues and its
//!   revocations.
//! * [`federation`]: the federation file: which sites cooperate.
//! * [`dn`]: distinguished names as operators write them.
//! * [`fsutil`]: crash-safe file writes.
//! * [`units`]: human-friendly sizes.
//!
//! All checks live in `proto`; this crate does the I/O around them.

pub mod authority;
pub mod cache;
pub mod control;
pub mod demo;
pub mod dn;
pub mod endorse;
mod error;
pub mod federation;
pub mod fetch;
pub mod fsutil;
pub mod hooks;
pub mod net;
pub mod site;
pub mod store;
pub mod trustfiles;
pub mod units;

pub use error::{Error, Result};

/// The current time, for the checks in `proto` (which never read the clock).
pub fn now() -> proto::Timestamp {
    p2p::wall_clock()
}
