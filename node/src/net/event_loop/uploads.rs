//! Uploads whose response is on its way, and the slow readers among them.
//!
//! # Contract
//! * An upload frees its slot in the transfer machine once libp2p reports
//!   its response sent or failed, or once it has taken longer than its
//!   deadline: its bytes at [`FLOOR_BYTES_PER_SEC`], plus [`GRACE`]. So a
//!   peer that does not read loses its slot, and peers that do not read
//!   cannot hold every slot of an image until libp2p's request timeout.
//! * While an overdue upload of a peer is still pending in libp2p, the
//!   peer's chunk requests are refused (`Busy`), so that it cannot take slot
//!   after slot. The upload ends in libp2p at the latest at its request
//!   timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::request_response::InboundRequestId;
use uuid::Uuid;

/// The slowest a peer may read a chunk and keep its upload slot.
pub(super) const FLOOR_BYTES_PER_SEC: u64 = 256 << 10;

/// Added to every upload's deadline, for the first bytes' latency.
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// An upload: the image, the peer's handle and the chunk.
pub(super) type Upload = (Uuid, u64, u32);

#[derive(Debug)]
struct Open {
    upload: Upload,
    deadline: Instant,
    /// Past its deadline: the machine was told it ended.
    overdue: bool,
}

/// The uploads whose response is on its way.
#[derive(Debug, Default)]
pub(super) struct Uploads {
    open: HashMap<InboundRequestId, Open>,
    /// Per peer handle: overdue uploads still pending in libp2p.
    slow: HashMap<u64, u32>,
    /// Uploads that became overdue, since start.
    overdue: u64,
}

impl Uploads {
    /// `upload` of `bytes` was handed to libp2p at `now` as response `id`.
    pub(super) fn start(&mut self, id: InboundRequestId, upload: Upload, bytes: u64, now: Instant) {
        let deadline = now + GRACE + Duration::from_millis(bytes.saturating_mul(1000) / FLOOR_BYTES_PER_SEC);
        self.open.insert(id, Open { upload, deadline, overdue: false });
    }

    /// Response `id` was sent or failed: the upload to report ended, unless
    /// it was reported when it became overdue.
    pub(super) fn end(&mut self, id: &InboundRequestId) -> Option<Upload> {
        let o = self.open.remove(id)?;
        if !o.overdue {
            return Some(o.upload);
        }
        let peer = o.upload.1;
        if let Some(n) = self.slow.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.slow.remove(&peer);
            }
        }
        None
    }

    /// The uploads that became overdue by `now`, to report ended.
    pub(super) fn overdue(&mut self, now: Instant) -> Vec<Upload> {
        let mut late = Vec::new();
        for o in self.open.values_mut().filter(|o| !o.overdue && o.deadline <= now) {
            o.overdue = true;
            *self.slow.entry(o.upload.1).or_default() += 1;
            late.push(o.upload);
        }
        self.overdue += late.len() as u64;
        late
    }

    /// How many uploads became overdue since start.
    pub(super) fn overdue_count(&self) -> u64 {
        self.overdue
    }

    /// Whether `peer` has an overdue upload still pending.
    pub(super) fn is_slow(&self, peer: u64) -> bool {
        self.slow.contains_key(&peer)
    }

    /// Forgets `peer`'s uploads (it left): libp2p reports none of them.
    pub(super) fn forget_peer(&mut self, peer: u64) {
        self.open.retain(|_, o| o.upload.1 != peer);
        self.slow.remove(&peer);
    }
}
