//! Attested roots over the swarm, for images whose list names none
//! ([`crate::site::attest`]).
//!
//! # Contract
//! * An image that is endorsed, approved and cached here, but has no root
//!   yet, is *unrooted*: it is not swarmed on, and it is announced to the
//!   trackers (so that this node meets those that hold it).
//! * A master of a closed site attests to an unrooted image once it is
//!   available here (downloaded from its source), one job per image at a
//!   time, then swarms on it.
//! * Any other node asks for the attestation of each unrooted image: every
//!   peer that becomes ready, and each announce interval up to
//!   [`ASK_PER_INTERVAL`] ready peers per image. An attestation is checked
//!   off the loop's thread; one that holds is recorded and the image is
//!   swarmed on, and the peer that offered one that does not hold is banned.
//! * A request names the list version the asker holds; a node answers with
//!   the attestation it holds if its list in force has that version, and
//!   refuses otherwise. So during a list update honest peers refuse each
//!   other, and an attestation that does not hold for the version asked
//!   for is a lie.

use std::collections::HashSet;

use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use proto::attestation::sign_attestation;
use proto::swarm::Role;
use proto::transfer::Offence;
use proto::wire::{Refusal, Request, Response};
use uuid::Uuid;

use super::jobs::{IoDone, blocking};
use super::{EventLoop, Outbound};
use crate::net::Membership;
use crate::site::attest::Attested;
use crate::store::ImageRecord;
use crate::{Error, Result};

/// How many ready peers are asked for an unrooted image's attestation per
/// announce interval.
pub(super) const ASK_PER_INTERVAL: usize = 3;

/// Unrooted images, and the masters' attestations under way.
#[derive(Debug, Default)]
pub(super) struct Unrooted {
    /// Waiting for a root, by image.
    pub(super) images: HashSet<Uuid>,
    /// Attestations being made here.
    making: HashSet<Uuid>,
    /// Turns the peers asked each interval.
    turn: usize,
}

impl EventLoop {
    /// Notes `rec` as unrooted; on a master, attests to it if it can.
    pub(super) fn unrooted(&mut self, rec: &ImageRecord) {
        self.unrooted.images.insert(rec.uuid);
        let Membership::Closed { credential, .. } = &self.cfg.membership else { return };
        if self.role != Role::Master
            || rec.state != crate::store::ImageState::Available
            || !self.unrooted.making.insert(rec.uuid)
        {
            return;
        }
        let (site, key, credential, uuid) = (self.site.clone(), self.key.clone(), credential.clone(), rec.uuid);
        let name = self.cfg.site.clone();
        self.jobs.control(async move {
            let result = blocking(move || {
                site.attest(uuid, &name, |a| {
                    sign_attestation(a, &credential, |body| key.sign(body).unwrap_or_default()).map_err(Error::from)
                })
            })
            .await;
            IoDone::Attested { image: uuid, from: None, result }
        });
    }

    /// Asks `peer` for the attestation of every unrooted image.
    pub(super) fn ask_attestations(&mut self, peer: PeerId) {
        let images: Vec<Uuid> = self.unrooted.images.iter().copied().collect();
        for image in images {
            self.ask_attestation(peer, image);
        }
    }

    /// Asks `peer` for the attestation of `image` for the list version in
    /// force here.
    fn ask_attestation(&mut self, peer: PeerId, image: Uuid) {
        let Ok(Some(list_version)) = self.site.list_version_of(image) else { return };
        let id = self.swarm.behaviour_mut().peer.send_request(&peer, Request::Attestation { image, list_version });
        self.outbound.insert(id, Outbound::Attestation { image });
    }

    /// Each announce interval: asks a few ready peers per unrooted image.
    pub(super) fn ask_attestations_around(&mut self) {
        if self.unrooted.images.is_empty() {
            return;
        }
        let ready = self.ready_peers();
        if ready.is_empty() {
            return;
        }
        self.unrooted.turn = self.unrooted.turn.wrapping_add(1);
        let images: Vec<Uuid> = self.unrooted.images.iter().copied().collect();
        for image in images {
            for k in 0..ASK_PER_INTERVAL.min(ready.len()) {
                let peer = ready[(self.unrooted.turn * ASK_PER_INTERVAL + k) % ready.len()];
                self.ask_attestation(peer, image);
            }
        }
    }

    /// A peer asks for an image's attestation for `list_version`.
    pub(super) fn on_attestation_request(
        &mut self,
        image: Uuid,
        list_version: &str,
        channel: ResponseChannel<Response>,
    ) {
        let r = match self.site.attestation_for(image, list_version).ok().flatten() {
            Some(bytes) => Response::Attestation(bytes),
            None => Response::Refused(Refusal::NotHeld),
        };
        self.respond(channel, r);
    }

    /// A peer's answer to this node's request for an attestation.
    pub(super) fn on_attestation(&mut self, from: PeerId, image: Uuid, bytes: Vec<u8>) {
        let Some(cas) = self.gate.cas().cloned() else { return };
        if !self.unrooted.images.contains(&image) {
            return;
        }
        let site = self.site.clone();
        self.jobs.control(async move {
            let result = blocking(move || site.take_attestation(image, &bytes, &cas, crate::now())).await;
            IoDone::Attested { image, from: Some(from), result }
        });
    }

    /// An attestation was made here or checked.
    pub(super) fn on_attested(&mut self, image: Uuid, from: Option<PeerId>, result: Result<Attested>) {
        if from.is_none() {
            self.unrooted.making.remove(&image);
        }
        match result {
            Ok(Attested::Recorded) => {
                tracing::info!(%image, from = ?from, "attested root in force");
                self.sync_or_log();
            }
            Ok(Attested::Unneeded) => {}
            Err(Error::Proto(e)) if from.is_some() => {
                let peer = from.and_then(|p| self.handles.get(&p).copied());
                tracing::warn!(%image, error = %e, "a peer offered an attestation that does not hold");
                if let Some(h) = peer {
                    self.ban(h, &Offence::Attestation { image });
                }
            }
            Err(e) => tracing::warn!(%image, error = %e, "no attested root"),
        }
    }
}
