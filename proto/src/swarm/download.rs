//! The requests a node sends for one image: which peer is asked for which
//! chunk, and the bookkeeping of requests in flight.
//!
//! # Contract
//! These are methods of [`Swarm`], split out of `swarm.rs` by subject; they
//! keep its invariants, which every method here leaves holding:
//! * `inflight` is the number of entries in the `inflight` lists of peers
//!   other than this site's masters, and never exceeds
//!   [`Config::max_inflight`](super::Config::max_inflight); `to_masters`
//!   counts this site's masters' entries, at most `pipeline` per master;
//! * `requested[c]` counts the open requests for chunk `c` (2 or more only
//!   in endgame), `requested_mask` and `requested_distinct` mirror it, and
//!   `requested_at[c]` is when its oldest open request was sent;
//! * `missing` holds exactly the chunks not in `have`, `missing_pos` their
//!   positions in it;
//! * a peer marked `exhausted` had no candidate at its last scan, and is
//!   cleared by anything that could give it one.

use super::{
    ChunkIndex, MASTERS, Message, Micros, NOT_MISSING, PeerId, PeerState, PickerMode, Request, Role, Swarm, earliest,
    picker,
};

/// Refusals in a row, without a chunk delivered, after which a peer's
/// pause starts doubling: a busy honest peer delivers now and then, a peer
/// that claims chunks and refuses them never does. High enough that the
/// few holders of a large swarm's last chunks, which everyone asks and
/// which refuse many in a row, are not paused for it.
pub const REFUSALS_BEFORE_DOUBLING: u32 = 32;

/// The most times that pause doubles (20 ms becomes 20.5 s with the
/// default `refusal_pause`, longer than a request may take).
pub const MAX_PAUSE_DOUBLINGS: u32 = 10;

/// How a request to a peer ended without its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The peer refused, or the transport failed.
    Refused,
    /// No answer within `request_timeout`.
    TimedOut,
}

impl Swarm {
    /// `from` refused `c` or failed to send it: it is not asked for `c` for
    /// `refusal_backoff`, and paused ([`Swarm::pause_after_miss`]).
    pub(super) fn on_refused(&mut self, now: Micros, from: PeerId, c: ChunkIndex) {
        if self.take_inflight(from, c) {
            let until = now + self.cfg.refusal_backoff;
            if let Some(p) = self.peers.get_mut(&from) {
                p.refused.retain(|(x, _)| *x != c);
                p.refused.push((c, until));
            }
            let pause = self.pause_after_miss(now, from, Miss::Refused);
            self.schedule_wake(from, pause);
        }
        self.fill_all(now);
    }

    /// `from` missed a request: it is not asked for anything for
    /// `refusal_pause`, doubled for each miss in a row past
    /// [`REFUSALS_BEFORE_DOUBLING`] since it last delivered (a timeout
    /// counts as that many: a peer that does not answer within
    /// `request_timeout` is slow, not busy). A peer that claims chunks and
    /// refuses or withholds them all is so soon asked seldom, and cannot
    /// keep this node's requests in flight and the masters standing back.
    /// A master's refusals are its stand-back policy and pause it evenly.
    /// Returns when the pause ends.
    pub(super) fn pause_after_miss(&mut self, now: Micros, from: PeerId, miss: Miss) -> Micros {
        let base = self.cfg.refusal_pause;
        let Some(p) = self.peers.get_mut(&from) else { return now + base };
        let pause = if p.info.role == Role::Master {
            base
        } else {
            p.refused_in_row = match miss {
                Miss::Refused => p.refused_in_row,
                Miss::TimedOut => p.refused_in_row.max(REFUSALS_BEFORE_DOUBLING),
            }
            .saturating_add(1);
            base << p.refused_in_row.saturating_sub(REFUSALS_BEFORE_DOUBLING).min(MAX_PAUSE_DOUBLINGS)
        };
        p.paused_until = p.paused_until.max(now + pause);
        p.paused_until
    }

    /// `from` delivered a chunk that verified.
    pub(super) fn delivered(&mut self, from: PeerId) {
        if let Some(p) = self.peers.get_mut(&from) {
            p.refused_in_row = 0;
        }
    }

    /// Withdraws the requests that waited `request_timeout`.
    pub(super) fn expire_requests(&mut self, now: Micros) {
        let timeout = self.cfg.request_timeout;
        let backoff = self.cfg.refusal_backoff;
        let mut expired = Vec::new();
        let mut next: Option<Micros> = None;
        for (&id, p) in &mut self.peers {
            p.forget_refusals(&self.have, now, backoff);
            p.inflight.retain(|r| {
                let late = r.sent_at + timeout <= now;
                if late {
                    expired.push((id, r.chunk));
                } else {
                    next = Some(earliest(next, r.sent_at + timeout));
                }
                !late
            });
        }
        self.request_deadline = next;
        for (id, chunk) in expired {
            self.stats.timeouts += 1;
            if let Some(info) = self.peers.get(&id).map(|p| p.info) {
                self.count_request(info, false);
            }
            self.unrequest(chunk);
            if let Some(p) = self.peers.get_mut(&id) {
                p.refused.push((chunk, now + backoff.max(timeout)));
            }
            let pause = self.pause_after_miss(now, id, Miss::TimedOut);
            self.schedule_wake(id, pause.min(now + backoff.max(timeout)));
            self.send(id, Message::Cancel(chunk));
        }
    }

    pub(super) fn endgame(&self) -> bool {
        self.requested_distinct as usize >= self.missing.len()
    }

    /// How old a request must be to count as late (see
    /// [`Config::late_factor`](super::Config::late_factor)).
    pub(super) fn late_after(&self) -> Micros {
        self.latency.map_or(0, |l| (l * Micros::from(self.cfg.late_factor)).max(self.cfg.late_floor))
    }

    /// In endgame, when the next request with no second copy asked for
    /// becomes late.
    pub(super) fn next_late(&self, now: Micros) -> Option<Micros> {
        if !self.endgame() {
            return None;
        }
        let after = self.late_after();
        self.missing
            .iter()
            .filter(|&&c| self.requested[c as usize] == 1)
            .map(|&c| self.requested_at[c as usize] + after)
            .filter(|&t| t > now)
            .min()
    }

    /// Tops up the requests to every peer, in the order of their ranks.
    pub(super) fn fill_all(&mut self, now: Micros) {
        if self.missing.is_empty() {
            return;
        }
        // Same-site peers first (at a gateway, other sites'), masters last
        // (they stand back whenever a peer can serve instead). Within a rank
        // the walk starts one place further on each time, so requests spread
        // over the peers instead of piling onto the first ones connected.
        // Filling never changes who is connected, so the order stays put
        // meanwhile. Masters have requests of their own beside
        // `max_inflight`, so a full pipeline to peers never leaves them
        // unasked.
        self.fill_turn = self.fill_turn.wrapping_add(1);
        let first = self.order.partition_point(|&(r, _)| r == 0);
        let masters = self.order.partition_point(|&(r, _)| r < MASTERS);
        let mut ranks = [(0, first), (first, masters), (masters, self.order.len())];
        // Where the cross-site rules give way (in endgame, or with nothing
        // in flight) a gateway asks its own site first, as a worker does:
        // across the WAN it then takes only what its site lacks.
        if self.cfg.role == Role::Gateway && (self.endgame() || self.idle()) {
            ranks.swap(0, 1);
        }
        for (start, end) in ranks {
            let len = end - start;
            for k in 0..len {
                if start < masters && self.inflight >= self.cfg.max_inflight {
                    break;
                }
                let (_, id) = self.order[start + (k + self.fill_turn as usize) % len];
                self.fill_one(now, id);
            }
        }
    }

    /// Tops up the requests to one peer.
    pub(super) fn fill_one(&mut self, now: Micros, id: PeerId) {
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        if self.missing.is_empty() || !self.may_exchange(p.info) {
            return;
        }
        while self.has_room(id, now) {
            let Some(p) = self.peers.get(&id) else {
                return;
            };
            if p.exhausted {
                return;
            }
            // The view borrows all of `self`; the generator goes back after.
            let mut rng = self.rng.clone();
            let picked = self.picker_view(now, p).pick(p, &mut rng);
            self.rng = rng;
            let Some(chunk) = picked else {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.exhausted = true;
                }
                // In endgame the peer may get a candidate when a request
                // elsewhere becomes late.
                if let Some(t) = self.next_late(now) {
                    self.late_wake = Some(earliest(self.late_wake, t));
                }
                return;
            };
            self.request(now, id, chunk);
        }
    }

    /// Whether the picker's rules let `c` be asked of `id` (see
    /// [`picker::View::may_ask`]).
    pub(super) fn may_ask(&self, now: Micros, id: PeerId, c: ChunkIndex) -> bool {
        self.peers.get(&id).is_some_and(|p| self.picker_view(now, p).may_ask(p, c))
    }

    /// What the picker reads to choose a chunk to ask `p` for.
    pub(super) fn picker_view<'a>(&'a self, now: Micros, p: &PeerState) -> picker::View<'a> {
        let across = self
            .arranged
            .as_ref()
            .filter(|_| p.info.site != self.cfg.site)
            .map(|rules| super::arrange::Across { rules, site: self.cfg.site });
        picker::View {
            have: &self.have,
            missing: &self.missing,
            requested_mask: &self.requested_mask,
            requested: &self.requested,
            requested_at: &self.requested_at,
            late_after: self.late_after(),
            availability: &self.availability,
            now,
            // Chunks held: `missing` is the complement of `have`.
            random: self.cfg.picker == PickerMode::Random
                || self.have.len() - (self.missing.len() as u32) < self.cfg.random_first,
            endgame: self.endgame(),
            idle: self.idle(),
            across,
        }
    }

    /// Whether nothing is in flight, to peers or masters.
    pub(super) fn idle(&self) -> bool {
        self.inflight + self.to_masters == 0
    }

    /// Whether another request may go to `id` now.
    pub(super) fn has_room(&self, id: PeerId, now: Micros) -> bool {
        self.peers.get(&id).is_some_and(|p| {
            let depth = if p.info.site == self.cfg.site { self.cfg.pipeline } else { self.cfg.cross_site_pipeline };
            (self.own_master(p.info) || self.inflight < self.cfg.max_inflight)
                && (p.inflight.len() as u32) < depth
                && p.paused_until <= now
        })
    }

    /// Whether `info` is a master of this node's site, whose requests do
    /// not count against `max_inflight`.
    pub(super) fn own_master(&self, info: super::PeerInfo) -> bool {
        info.role == Role::Master && info.site == self.cfg.site
    }

    /// Counts a request to the peer `info` in (`true`) or out.
    pub(super) fn count_request(&mut self, info: super::PeerInfo, add: bool) {
        let n = if self.own_master(info) { &mut self.to_masters } else { &mut self.inflight };
        *n = if add { *n + 1 } else { *n - 1 };
        if self.arranged.is_some() && self.idle() {
            // A gateway with nothing in flight is free of its rules: peers
            // they left with no candidate may have some now.
            self.peers.values_mut().for_each(|p| p.exhausted = false);
        }
    }

    /// Sends a request for `chunk` to `id` and records it.
    pub(super) fn request(&mut self, now: Micros, id: PeerId, chunk: ChunkIndex) {
        let was_endgame = self.endgame();
        if self.requested[chunk as usize] == 0 {
            self.requested_distinct += 1;
            self.requested_mask.set(chunk);
            self.requested_at[chunk as usize] = now;
        }
        self.requested[chunk as usize] += 1;
        // Insist only when starving: nothing else in flight, refused before,
        // and no other peer that may be asked now holds the chunk. A peer
        // that refused it, or is paused after refusals, does not count:
        // peers that claim chunks and refuse them would otherwise keep the
        // masters standing back for good.
        let insist = self.idle()
            && self.peers.get(&id).is_some_and(|p| {
                p.info.role == Role::Master
                    && p.refused.iter().any(|&(c, _)| c == chunk)
                    && !self.peers.values().any(|q| {
                        q.info.role != Role::Master
                            && q.have.get(chunk)
                            && q.refused_until(chunk) <= now
                            && q.paused_until <= now
                    })
            });
        if let Some(p) = self.peers.get_mut(&id) {
            p.inflight.push(Request { chunk, sent_at: now });
            let info = p.info;
            self.count_request(info, true);
        }
        if !was_endgame && self.endgame() {
            // Chunks with one request become candidates for a second one.
            self.peers.values_mut().for_each(|p| p.exhausted = false);
        }
        self.request_deadline = Some(earliest(self.request_deadline, now + self.cfg.request_timeout));
        self.send(id, if insist { Message::Insist(chunk) } else { Message::Request(chunk) });
    }

    /// Removes a request for `chunk` from `peer`; returns whether one was open.
    pub(super) fn take_inflight(&mut self, peer: PeerId, chunk: ChunkIndex) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Some(pos) = p.inflight.iter().position(|r| r.chunk == chunk) else {
            return false;
        };
        p.inflight.swap_remove(pos);
        let info = p.info;
        self.count_request(info, false);
        self.unrequest(chunk);
        true
    }

    /// Counts one request for `chunk` fewer; the caller has already taken
    /// it out of its peer's in-flight list.
    pub(super) fn unrequest(&mut self, chunk: ChunkIndex) {
        let r = &mut self.requested[chunk as usize];
        if *r == 0 {
            return;
        }
        *r -= 1;
        match *r {
            0 => {
                self.requested_distinct -= 1;
                self.requested_mask.unset(chunk);
            }
            // The request left may be younger than the one withdrawn.
            1 => {
                let left = self.peers.values().flat_map(|p| &p.inflight).find(|q| q.chunk == chunk);
                if let Some(q) = left {
                    self.requested_at[chunk as usize] = q.sent_at;
                }
            }
            _ => {}
        }
        // Still missing: a candidate again wherever a peer has it (with no
        // request left, or in endgame with one fewer).
        if !self.have.get(chunk) {
            for p in self.peers.values_mut() {
                if p.have.get(chunk) {
                    p.exhausted = false;
                }
            }
        }
    }

    pub(super) fn remove_missing(&mut self, chunk: ChunkIndex) {
        let pos = self.missing_pos[chunk as usize];
        if pos == NOT_MISSING {
            return;
        }
        let last = self.missing.len() - 1;
        self.missing.swap(pos as usize, last);
        let moved = self.missing[pos as usize];
        self.missing_pos[moved as usize] = pos;
        self.missing.pop();
        self.missing_pos[chunk as usize] = NOT_MISSING;
    }
}
