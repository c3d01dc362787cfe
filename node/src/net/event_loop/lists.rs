//! Signed lists between peers: pushed on gossip when a node takes a new
//! version, and asked for when a hello names a newer one.
//!
//! # Contract
//! * Every list in force travels in this node's hellos ([`HeldList`]). A
//!   peer's hello that names a newer version of a list subscribed here, or
//!   one this node holds none of, is answered by asking that peer for it
//!   ([`Request::List`]), one ask per list at a time (the rest wait for
//!   the next hello). So a node that connects learns every newer list its
//!   peers hold, whenever they took it.
//! * A list in force is published on gossip once per version, and only
//!   while gossip would deliver it to a ready peer: gossipsub refuses the
//!   same bytes again for as long as its duplicate cache holds them, also
//!   after an attempt that reached no one, so an attempt is made only when
//!   it cannot be wasted. A version not yet published is tried again when
//!   a peer joins the topic, becomes ready, or at the next announcement.
//! * A list from a peer (gossip or an answer) is taken only after
//!   `Site::offer_list` verified it, off the loop's thread, at most
//!   [`MAX_OFFERS`] at once; beyond that it is ignored. From gossip it is
//!   forwarded only if taken, and its sender penalised if it does not
//!   verify; an answer that does not verify is dropped, and that peer is
//!   asked for the list no more until its next hello.

use libp2p::request_response::ResponseChannel;
use libp2p::{PeerId, gossipsub};
use proto::imagelist::version;
use proto::wire::{HeldList, MAX_HELLO_LISTS, Refusal, Request, Response};
use uuid::Uuid;

use super::jobs::{IoDone, MAX_OFFERS, blocking};
use super::{EventLoop, Outbound};
use crate::net::behaviour::lists_topic;
use crate::site::ListOutcome;
use crate::{Error, Result};

/// Where a list offered to this node came from.
#[derive(Debug)]
pub(super) enum Carrier {
    /// Gossip, under this message id: its verdict goes back to gossipsub.
    Gossip(gossipsub::MessageId),
    /// A peer's answer to this node's [`Request::List`].
    Answer,
}

impl EventLoop {
    /// The lists in force here, as a hello names them.
    pub(super) fn held_lists(&self) -> Vec<HeldList> {
        let subs = match self.site.store().subscriptions() {
            Ok(subs) => subs,
            Err(e) => {
                tracing::error!(error = %e, "reading subscriptions failed");
                return Vec::new();
            }
        };
        subs.into_iter()
            .filter(|s| s.enabled && s.list_valid)
            .filter_map(|s| Some(HeldList { identifier: s.identifier, version: s.current?.version }))
            .take(MAX_HELLO_LISTS)
            .collect()
    }

    /// A peer's hello named `lists`: asks it for each that is newer than
    /// what is held here, of the lists subscribed here.
    pub(super) fn ask_newer_lists(&mut self, peer: PeerId, lists: &[HeldList]) {
        for held in lists.iter().take(MAX_HELLO_LISTS) {
            let Ok(Some(sub)) = self.site.store().subscription(held.identifier) else { continue };
            let newer = sub.enabled
                && sub.current.as_ref().is_none_or(|cur| version::compare(&held.version, &cur.version).is_gt());
            // One ask per list at a time: the answer, once taken, is what
            // every other peer would have sent.
            if newer && self.asking_lists.insert(held.identifier) {
                tracing::debug!(%peer, list = %held.identifier, version = %held.version, "asking a peer for a newer list");
                let identifier = held.identifier;
                let id = self.swarm.behaviour_mut().peer.send_request(&peer, Request::List { identifier });
                self.outbound.insert(id, Outbound::List { identifier });
            }
        }
    }

    /// A peer asks for the list in force under `identifier`.
    pub(super) fn on_list_request(&mut self, identifier: Uuid, channel: ResponseChannel<Response>) {
        let store = self.site.store();
        let held = store.subscription(identifier).ok().flatten().filter(|s| s.enabled && s.list_valid);
        let bytes = held.and_then(|s| store.list_message(identifier, s.current?.seq).ok().flatten());
        let r = match bytes {
            Some(b) => Response::List(b),
            None => Response::Refused(Refusal::NotHeld),
        };
        self.respond(channel, r);
    }

    /// Publishes each list in force that this node has not published yet,
    /// if gossip would deliver it to a ready peer.
    pub(super) fn publish_lists(&mut self) {
        if !self.gossip_reaches_a_peer() {
            return;
        }
        let Ok(subs) = self.site.store().subscriptions() else { return };
        for sub in subs.into_iter().filter(|s| s.enabled && s.list_valid) {
            let Some(cur) = sub.current else { continue };
            if self.published.get(&sub.identifier) == Some(&cur.seq) {
                continue;
            }
            let Ok(Some(bytes)) = self.site.store().list_message(sub.identifier, cur.seq) else { continue };
            match self.swarm.behaviour_mut().gossip.publish(lists_topic(), bytes) {
                Ok(_) => tracing::debug!(list = %sub.identifier, version = %cur.version, "list published"),
                // Gossip carried these bytes already (from a peer, which
                // forwards them): published as far as this node goes.
                Err(gossipsub::PublishError::Duplicate) => {}
                Err(e) => {
                    tracing::debug!(list = %sub.identifier, error = %e, "list not published yet");
                    continue;
                }
            }
            self.published.insert(sub.identifier, cur.seq);
        }
    }

    /// Whether gossipsub would send a publication to some peer: one that is
    /// on the lists topic and scored at or above its publish threshold
    /// (`flood_publish`, gossipsub's default, sends to all such peers).
    fn gossip_reaches_a_peer(&self) -> bool {
        let topic = lists_topic().hash();
        let threshold = gossipsub::PeerScoreThresholds::default().publish_threshold;
        let gossip = &self.swarm.behaviour().gossip;
        gossip
            .all_peers()
            .any(|(p, topics)| topics.contains(&&topic) && gossip.peer_score(p).is_none_or(|s| s >= threshold))
    }

    /// Verifies a list from `from` off the loop's thread, at most
    /// [`MAX_OFFERS`] at once; beyond that it is ignored (not forwarded, no
    /// penalty): whoever holds it offers it again.
    pub(super) fn offer_list(&mut self, from: PeerId, carrier: Carrier, bytes: Vec<u8>) {
        if self.jobs.offers >= MAX_OFFERS {
            tracing::debug!(peer = %from, ?carrier, "too many lists being verified: one ignored");
            if let Carrier::Gossip(id) = carrier {
                let verdict = gossipsub::MessageAcceptance::Ignore;
                self.swarm.behaviour_mut().gossip.report_message_validation_result(&id, &from, verdict);
            }
            return;
        }
        self.jobs.offers += 1;
        let site = self.site.clone();
        self.jobs.control(async move {
            let result = blocking(move || site.offer_list(&bytes, crate::now())).await;
            IoDone::Offered { carrier, from, result }
        });
    }

    /// A list from a peer was checked.
    pub(super) fn on_offered(&mut self, carrier: Carrier, from: PeerId, result: Result<ListOutcome>) {
        match &result {
            Ok(ListOutcome::Unchanged) => {
                tracing::debug!(peer = %from, "list received through the swarm: held already")
            }
            Ok(o) => tracing::info!(peer = %from, outcome = ?o, "list received through the swarm"),
            Err(e) => tracing::info!(peer = %from, error = %e, "list from the swarm not taken"),
        }
        if let Carrier::Gossip(id) = carrier {
            let verdict = gossip_verdict(&result);
            self.swarm.behaviour_mut().gossip.report_message_validation_result(&id, &from, verdict);
        }
        if matches!(result, Ok(ListOutcome::Accepted(_))) {
            self.sync_or_log();
            self.publish_lists();
        }
    }
}

/// What gossipsub is told of a list from the lists topic. Accepted lists
/// are forwarded. A message that is broken in itself (not S/MIME, not a
/// list, a signature that does not cover the content, a list naming an
/// endorser other than its signer) is rejected, which costs its sender
/// score (`super::super::behaviour`): no honest peer forwards one. Anything
/// that depends on what this host trusts or knows (CAs, CRLs, approved
/// endorsers, the clock, the version held) is only ignored: not forwarded,
/// no penalty, since an honest peer may judge it otherwise.
fn gossip_verdict(result: &Result<ListOutcome>) -> gossipsub::MessageAcceptance {
    use gossipsub::MessageAcceptance as A;
    match result {
        Ok(_) => A::Accept,
        Err(Error::Proto(e)) if matches!(e.check(), "smime" | "format" | "signature" | "signers" | "endorser-dn") => {
            A::Reject
        }
        Err(_) => A::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lists_broken_in_themselves_are_rejected() {
        use gossipsub::MessageAcceptance as A;
        let verdict = |r: Result<ListOutcome>| gossip_verdict(&r);
        let proto = |e: proto::Error| Err(Error::Proto(e));
        let at = proto::Timestamp::from_unix(0).unwrap();
        assert!(matches!(verdict(Ok(ListOutcome::Unchanged)), A::Accept));
        assert!(matches!(verdict(proto(proto::Error::Smime("junk".into()))), A::Reject));
        assert!(matches!(verdict(proto(proto::Error::Signature("mismatch".into()))), A::Reject));
        assert!(matches!(verdict(proto(proto::Error::VersionReused("1".into()))), A::Ignore));
        assert!(matches!(verdict(proto(proto::Error::Expired { expires: at, at })), A::Ignore));
        assert!(matches!(verdict(Err(Error::Invalid("local".into()))), A::Ignore));
    }
}
