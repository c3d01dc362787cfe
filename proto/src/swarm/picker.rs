//! Which chunk to ask a peer for.
//!
//! * The first `random_first` chunks are picked at random, so a new node
//!   quickly holds something worth trading.
//! * After that, rarest first: a candidate with the fewest copies among this
//!   node's peers, ties broken at random. Missing chunks sit in buckets by
//!   availability ([`Buckets`], moved in O(1) as peers announce chunks or
//!   leave), and the picker walks the buckets from the rarest up, starting
//!   each at a random offset, so a pick costs the number of chunks it has to
//!   look at, not the image size.
//! * The random baseline samples up to [`SAMPLES`] missing chunks and falls
//!   back to scanning the peer's bitfield against this node's, a byte at a
//!   time.
//! * In endgame (every missing chunk already requested) a chunk may be asked
//!   of a second peer; the first copy to arrive cancels the other.
//!
//! A candidate is a chunk the peer has, this node lacks, no request is
//! outstanding for (or, in endgame, only one, not to this peer), and the peer
//! has not refused recently.

use super::rng::Rng;
use super::{ChunkIndex, PeerState};
use crate::bitfield::Bitfield;

/// How many random candidates the picker examines before scanning.
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
    pub(crate) buckets: &'a Buckets,
    pub(crate) requested: &'a [u8],
    pub(crate) now: u64,
    pub(crate) random: bool,
    pub(crate) endgame: bool,
}

impl View<'_> {
    fn candidate(&self, peer: &PeerState, c: ChunkIndex) -> bool {
        let i = c as usize;
        if self.have.get(c) || !peer.have.get(c) || peer.refused_until(c) > self.now {
            return false;
        }
        match self.requested[i] {
            0 => true,
            1 => self.endgame && !peer.inflight.iter().any(|r| r.chunk == c),
            _ => false,
        }
    }

    /// Keeps `c` in `best` if it is a candidate that ranks better.
    fn consider(&self, peer: &PeerState, c: ChunkIndex, rng: &mut Rng, best: &mut Option<(u16, u64, ChunkIndex)>) {
        if !self.candidate(peer, c) {
            return;
        }
        let tie = rng.next_u64();
        if best.is_none_or(|(_, t, _)| tie < t) {
            *best = Some((0, tie, c));
        }
    }

    /// Picks a chunk to request from `peer`, if any.
    pub(crate) fn pick(&self, peer: &PeerState, rng: &mut Rng) -> Option<ChunkIndex> {
        if self.random {
            return self.pick_random(peer, rng);
        }
        // Availability 0 means no peer has it, so start at 1.
        for bucket in self.buckets.lists.iter().skip(1) {
            if bucket.is_empty() {
                continue;
            }
            let start = rng.below(bucket.len());
            let found = bucket[start..].iter().chain(&bucket[..start]).find(|&&c| self.candidate(peer, c));
            if let Some(&c) = found {
                return Some(c);
            }
        }
        None
    }

    fn pick_random(&self, peer: &PeerState, rng: &mut Rng) -> Option<ChunkIndex> {
        let pool = self.missing;
        if pool.is_empty() || peer.have.count_hint() == 0 {
            return None;
        }
        let mut best: Option<(u16, u64, ChunkIndex)> = None;
        for _ in 0..SAMPLES.min(pool.len()) {
            self.consider(peer, pool[rng.below(pool.len())], rng, &mut best);
        }
        if best.is_none() {
            let theirs = peer.have.as_bytes();
            for (byte, (&t, &h)) in theirs.iter().zip(self.have.as_bytes()).enumerate() {
                let mut wanted = t & !h;
                while wanted != 0 {
                    let bit = wanted.leading_zeros();
                    wanted &= !(0x80 >> bit);
                    self.consider(peer, byte as u32 * 8 + bit, rng, &mut best);
                }
            }
        }
        best.map(|(_, _, c)| c)
    }
}

/// Missing chunks grouped by availability, for O(1) updates.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets {
    lists: Vec<Vec<ChunkIndex>>,
    /// Each missing chunk's position in its bucket.
    pos: Vec<u32>,
    /// Each missing chunk's bucket; `GONE` once it is no longer missing.
    bucket: Vec<u16>,
}

const GONE: u16 = u16::MAX;

impl Buckets {
    /// Every chunk in `missing` at availability 0.
    pub(crate) fn new(chunks: u32, missing: &[ChunkIndex]) -> Self {
        let mut b =
            Self { lists: vec![Vec::new()], pos: vec![0; chunks as usize], bucket: vec![GONE; chunks as usize] };
        for &c in missing {
            b.insert(c, 0);
        }
        b
    }

    fn insert(&mut self, c: ChunkIndex, avail: u16) {
        let a = avail as usize;
        if self.lists.len() <= a {
            self.lists.resize_with(a + 1, Vec::new);
        }
        self.pos[c as usize] = self.lists[a].len() as u32;
        self.lists[a].push(c);
        self.bucket[c as usize] = avail;
    }

    /// Takes `c` out (it arrived); no-op if it is not missing.
    pub(crate) fn remove(&mut self, c: ChunkIndex) {
        let b = self.bucket[c as usize];
        if b == GONE {
            return;
        }
        let list = &mut self.lists[b as usize];
        let p = self.pos[c as usize] as usize;
        list.swap_remove(p);
        if let Some(&moved) = list.get(p) {
            self.pos[moved as usize] = p as u32;
        }
        self.bucket[c as usize] = GONE;
    }

    /// Moves a missing chunk to availability `avail`.
    pub(crate) fn set(&mut self, c: ChunkIndex, avail: u16) {
        let b = self.bucket[c as usize];
        if b == GONE || b == avail {
            return;
        }
        self.remove(c);
        self.insert(c, avail);
    }
}
