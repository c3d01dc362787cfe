//! Which chunk to ask a peer for.
//!
//! * The first `random_first` chunks are picked at random, so a new node
//!   quickly holds something worth trading.
//! * After that, rarest first: among the candidates, one with the fewest
//!   copies among this node's peers, ties broken by a per-pick random
//!   permutation. Candidates are found a byte at a time as
//!   `peer has ∧ ¬this node has ∧ ¬requested`, 64 chunks at a time, so a
//!   pick costs the chunk count divided by 64 plus one availability lookup
//!   per candidate, and a peer with nothing new is dismissed in one pass.
//! * In endgame (every missing chunk already requested) a chunk whose
//!   request is late may be asked of a second peer; the first copy to arrive
//!   cancels the other.
//! * A gateway asking a peer of another site follows its
//!   [`FetchStripe`](super::FetchStripe):
//!   only its own stripe of what its site may fetch from that peer, unless
//!   it has nothing in flight at all or is in endgame.
//! * The random baseline samples up to [`SAMPLES`] missing chunks and falls
//!   back to the same byte-wise scan.
//!
//! A candidate is a chunk the peer has, this node lacks, no request is
//! outstanding for (or, in endgame, only one, late and not to this peer),
//! and the peer has not refused recently.

use super::arrange::Across;
use super::rng::Rng;
use super::{ChunkIndex, PeerState};
use crate::bitfield::Bitfield;

/// How many random candidates the random picker examines before scanning.
pub(crate) const SAMPLES: usize = 24;

/// How chunks are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PickerMode {
    /// Random first chunks, then rarest first (the default).
    #[default]
    RarestFirst,
    /// Any candidate at random (a baseline for comparison).
    Random,
}

/// The state the picker reads.
pub(crate) struct View<'a> {
    pub(crate) have: &'a Bitfield,
    pub(crate) missing: &'a [ChunkIndex],
    /// Chunks with at least one request outstanding.
    pub(crate) requested_mask: &'a Bitfield,
    pub(crate) requested: &'a [u8],
    /// When each chunk's oldest open request was sent.
    pub(crate) requested_at: &'a [u64],
    /// A request this old is late.
    pub(crate) late_after: u64,
    pub(crate) availability: &'a [u16],
    pub(crate) now: u64,
    pub(crate) random: bool,
    pub(crate) endgame: bool,
    /// No request of this node is in flight.
    pub(crate) idle: bool,
    /// Set when a gateway asks a peer of another site.
    pub(crate) across: Option<Across<'a>>,
}

impl View<'_> {
    fn candidate(&self, peer: &PeerState, c: ChunkIndex) -> bool {
        self.candidate_unless_refused(peer, c) && (peer.refused.is_empty() || peer.refused_until(c) <= self.now)
    }

    /// [`View::candidate`] without the refusal check, which [`View::scan`]
    /// does for a whole byte at once.
    fn candidate_unless_refused(&self, peer: &PeerState, c: ChunkIndex) -> bool {
        let i = c as usize;
        if self.have.get(c) || !peer.have.get(c) {
            return false;
        }
        match self.requested[i] {
            0 => true,
            1 => {
                self.endgame
                    && self.requested_at[i] + self.late_after <= self.now
                    && !peer.inflight.iter().any(|r| r.chunk == c)
            }
            _ => false,
        }
    }

    /// Whether a gateway's rules are lifted: nothing in flight, or endgame.
    fn rules_lifted(&self) -> bool {
        self.endgame || self.idle
    }

    /// Whether `c`, which `peer` just announced, may be asked of it (the
    /// caller has checked that it is a candidate).
    pub(crate) fn may_ask(&self, peer: &PeerState, c: ChunkIndex) -> bool {
        self.rules_lifted() || self.across.as_ref().is_none_or(|a| a.wants(c, peer.info.site))
    }

    /// Picks a chunk to request from `peer`, if any.
    pub(crate) fn pick(&self, peer: &PeerState, rng: &mut Rng) -> Option<ChunkIndex> {
        if let Some(a) = &self.across {
            let from = peer.info.site;
            let own = self.pick_where(peer, rng, |c| a.wants(c, from));
            if own.is_some() || !self.rules_lifted() {
                return own;
            }
        }
        self.pick_where(peer, rng, |_| true)
    }

    fn pick_where(&self, peer: &PeerState, rng: &mut Rng, keep: impl Fn(ChunkIndex) -> bool) -> Option<ChunkIndex> {
        if self.random {
            return self.pick_random(peer, rng, keep);
        }
        let salt = rng.next_u64();
        let mut best: Option<(u16, u64, ChunkIndex)> = None;
        self.scan(peer, |c| {
            if !keep(c) {
                return;
            }
            let rank = self.availability[c as usize];
            if best.is_some_and(|(r, _, _)| rank > r) {
                return;
            }
            let tie = (u64::from(c) ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if best.is_none_or(|(r, t, _)| (rank, tie) < (r, t)) {
                best = Some((rank, tie, c));
            }
        });
        best.map(|(_, _, c)| c)
    }

    /// Calls `f` for every candidate, in chunk order, found 64 chunks at a
    /// time. The peer's current refusals are turned into a mask first, so a
    /// peer that refused many chunks (a master standing back) costs one pass
    /// over its refusals, not one per candidate.
    fn scan(&self, peer: &PeerState, mut f: impl FnMut(ChunkIndex)) {
        let mut refused = Vec::new();
        for &(c, until) in &peer.refused {
            if until > self.now {
                if refused.is_empty() {
                    refused = vec![0u64; (peer.have.len() as usize).div_ceil(64)];
                }
                if let Some(w) = refused.get_mut(c as usize / 64) {
                    *w |= 1 << (63 - c % 64);
                }
            }
        }
        let words = peer.have.words().zip(self.have.words()).zip(self.requested_mask.words());
        for (i, ((t, h), r)) in words.enumerate() {
            let blocked = refused.get(i).copied().unwrap_or(0);
            let mut wanted = if self.endgame { t & !h & !blocked } else { t & !h & !r & !blocked };
            while wanted != 0 {
                let bit = wanted.leading_zeros();
                wanted &= !(1 << (63 - bit));
                let c = i as u32 * 64 + bit;
                // Outside endgame the word already says it all (the mask is
                // set exactly while a request is out); in endgame a chunk
                // with one request may take a second, not from this peer.
                debug_assert!(self.endgame || self.candidate_unless_refused(peer, c));
                if !self.endgame || self.candidate_unless_refused(peer, c) {
                    f(c);
                }
            }
        }
    }

    fn pick_random(&self, peer: &PeerState, rng: &mut Rng, keep: impl Fn(ChunkIndex) -> bool) -> Option<ChunkIndex> {
        let pool = self.missing;
        if pool.is_empty() {
            return None;
        }
        for _ in 0..SAMPLES.min(pool.len()) {
            let c = pool[rng.below(pool.len())];
            if keep(c) && self.candidate(peer, c) {
                return Some(c);
            }
        }
        let salt = rng.next_u64();
        let mut best: Option<(u64, ChunkIndex)> = None;
        self.scan(peer, |c| {
            if !keep(c) {
                return;
            }
            let tie = (u64::from(c) ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if best.is_none_or(|(t, _)| tie < t) {
                best = Some((tie, c));
            }
        });
        best.map(|(_, c)| c)
    }
}
