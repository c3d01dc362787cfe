//! Discovery: announcements to trackers, their answers, Kademlia lookups
//! when no tracker answers, and signed lists on gossip.
//!
//! # Contract
//! * Every image served here, every subscribed list and, in a closed site,
//!   the site itself ([`site_meeting_point`]) are announced to every
//!   tracker each announce interval; answers are dialled up to the
//!   connection budget.
//! * When no tracker has answered for an image for two intervals, the DHT is
//!   asked for its providers.
//! * A list in force is published once per version, and again when a peer
//!   joins the topic (or, in a closed site, becomes ready); a received list
//!   is taken and forwarded only after `Site::offer_list` accepted it.
//!   gossipsub refuses to publish bytes it carried, or tried to publish,
//!   within [`LIST_DUPLICATE_WINDOW`], so a list received in that window
//!   counts as published (gossip forwards it), and one this node tried to
//!   publish in it, whether or not that reached a peer, is published again
//!   at the first announcement after it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libp2p::request_response;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, gossipsub, kad};
use proto::policy::site_meeting_point;
use proto::swarm::Role;
use proto::wire::{Announce, PeerHint, Peers};
use uuid::Uuid;

use super::EventLoop;
use super::jobs::{IoDone, MAX_OFFERS, blocking};
use crate::net::behaviour::{LIST_DUPLICATE_WINDOW, list_message_id, lists_topic};
use crate::site::ListOutcome;
use crate::{Error, Result};

/// The lists gossip carried lately, by message id, and whether they came
/// from a peer: at most a window's worth, and at most [`RecentLists::MAX`].
#[derive(Debug, Default)]
pub(super) struct RecentLists(VecDeque<(gossipsub::MessageId, Instant, bool)>);

impl RecentLists {
    const MAX: usize = 64;

    /// Records that gossip carried `id` now, from a peer or from this node.
    pub(super) fn saw(&mut self, id: gossipsub::MessageId, received: bool) {
        let now = Instant::now();
        self.0.retain(|(_, at, _)| now.duration_since(*at) < LIST_DUPLICATE_WINDOW);
        if self.0.len() == Self::MAX {
            self.0.pop_front();
        }
        self.0.push_back((id, now, received));
    }

    /// Whether gossip carried `id` within the window: `Some(true)` if it
    /// came from a peer.
    fn carried(&self, id: &gossipsub::MessageId) -> Option<bool> {
        self.0
            .iter()
            .filter(|(x, at, _)| x == id && at.elapsed() < LIST_DUPLICATE_WINDOW)
            .map(|&(_, _, received)| received)
            .reduce(|a, b| a || b)
    }
}

impl EventLoop {
    pub(super) fn announce_all(&mut self) {
        let uuids: Vec<Uuid> = self.images.keys().copied().collect();
        for u in uuids {
            self.announce(u);
        }
        // Images that wait for an attested root: to meet those that hold it.
        let unrooted: Vec<Uuid> = self.unrooted.images.iter().copied().collect();
        for u in unrooted {
            self.send_to_trackers(self.announcement(u, self.role, false));
        }
        // Subscribers of a list meet under its identifier too, so a worker
        // that cannot reach the list's URL finds peers to gossip it.
        let lists: Vec<Uuid> = match self.site.store().subscriptions() {
            Ok(subs) => subs.into_iter().filter(|s| s.enabled).map(|s| s.identifier).collect(),
            Err(e) => return tracing::error!(error = %e, "reading subscriptions failed"),
        };
        for id in lists {
            self.send_to_trackers(self.announcement(id, Role::Worker, false));
        }
        // Members of a closed site also meet under the site's own key: a
        // worker that swarms on nothing yet finds its site, and the policy.
        // Holding the policy counts as complete, so that the tracker hands
        // out masters only while few other members hold it.
        if self.gate.is_closed() {
            let held = self.gate.policy().is_some();
            self.send_to_trackers(self.announcement(site_meeting_point(&self.cfg.site), self.role, held));
        }
        self.publish_lists();
    }

    /// Publishes each list in force that this node has not published yet.
    pub(super) fn publish_lists(&mut self) {
        let Ok(subs) = self.site.store().subscriptions() else { return };
        for sub in subs.into_iter().filter(|s| s.enabled && s.list_valid) {
            let Some(cur) = sub.current else { continue };
            if self.published.get(&sub.identifier) == Some(&cur.seq) {
                continue;
            }
            let Ok(Some(bytes)) = self.site.store().list_message(sub.identifier, cur.seq) else { continue };
            let id = list_message_id(&bytes);
            match self.recent_lists.carried(&id) {
                Some(true) => {
                    self.published.insert(sub.identifier, cur.seq);
                    continue;
                }
                Some(false) => continue,
                None => {}
            }
            // gossipsub takes the bytes into its duplicate cache on every
            // attempt, also one that reached no peer: until the window has
            // passed it refuses them as a duplicate, so only `Ok` is a
            // publication, and any other outcome is tried again at the first
            // announcement after the window.
            self.recent_lists.saw(id, false);
            match self.swarm.behaviour_mut().gossip.publish(lists_topic(), bytes) {
                Ok(_) => {
                    tracing::debug!(list = %sub.identifier, version = %cur.version, "list published");
                    self.published.insert(sub.identifier, cur.seq);
                }
                Err(e) => tracing::debug!(list = %sub.identifier, error = %e, "list not published yet"),
            }
        }
    }

    /// Verifies a list from gossip off the loop's thread, at most
    /// [`MAX_OFFERS`] at once; beyond that it is ignored (not forwarded,
    /// no penalty): whoever publishes it publishes it again.
    pub(super) fn offer_list(&mut self, from: PeerId, id: gossipsub::MessageId, bytes: Vec<u8>) {
        if self.jobs.offers >= MAX_OFFERS {
            tracing::debug!(peer = %from, "too many lists being verified: one from gossip ignored");
            let verdict = gossipsub::MessageAcceptance::Ignore;
            self.swarm.behaviour_mut().gossip.report_message_validation_result(&id, &from, verdict);
            return;
        }
        self.jobs.offers += 1;
        let site = self.site.clone();
        self.jobs.control(async move {
            let result = blocking(move || site.offer_list(&bytes, crate::now())).await;
            IoDone::Offered { id, from, result }
        });
    }

    /// A list from gossip was checked: forwarded if accepted, the sender
    /// penalised if it failed verification.
    pub(super) fn on_offered(&mut self, id: gossipsub::MessageId, from: PeerId, result: Result<ListOutcome>) {
        use gossipsub::MessageAcceptance as A;
        let verdict = match &result {
            Ok(_) => A::Accept,
            // Valid but stale or not ours: not forwarded, no penalty.
            Err(Error::Proto(e)) if matches!(e.check(), "version" | "identifier") => A::Ignore,
            Err(Error::Proto(_)) => A::Reject,
            Err(_) => A::Ignore,
        };
        match &result {
            Ok(o) => tracing::info!(peer = %from, outcome = ?o, "list received through the swarm"),
            Err(e) => tracing::info!(peer = %from, error = %e, "list from the swarm not taken"),
        }
        self.swarm.behaviour_mut().gossip.report_message_validation_result(&id, &from, verdict);
        if matches!(result, Ok(ListOutcome::Accepted(_))) {
            self.sync_or_log();
            self.publish_lists();
        }
    }

    fn send_to_trackers(&mut self, a: Announce) {
        for (p, _) in self.trackers.clone() {
            if self.tracker_admits(p) {
                let _ = self.swarm.behaviour_mut().tracker.send_request(&p, a.clone());
            }
        }
    }

    pub(super) fn announcement(&self, image: Uuid, role: Role, complete: bool) -> Announce {
        Announce {
            image,
            site: self.cfg.site.clone(),
            role,
            complete,
            addrs: self.swarm.external_addresses().chain(self.swarm.listeners()).map(|a| a.to_vec()).collect(),
            want: proto::transfer::TRACKER_WANT,
        }
    }

    pub(super) fn announce(&mut self, image: Uuid) {
        let (Some(l), Some(t)) = (self.images.get(&image), self.host.image(image)) else { return };
        let now = self.now();
        let stale = l.tracker_ok.is_none_or(|t| now > t + 2 * self.cfg.announce_interval.as_micros() as u64);
        self.send_to_trackers(self.announcement(image, self.role, t.have().is_full()));
        if stale && self.started.elapsed() > Duration::from_secs(1) {
            // No tracker answered lately: ask the DHT who provides the image.
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.get_providers(kad::RecordKey::new(&image.as_bytes()));
            }
        }
    }

    pub(super) fn on_tracker_event(&mut self, ev: request_response::Event<Announce, Peers>) {
        use request_response::{Event, Message as M};
        match ev {
            Event::Message { message: M::Response { response, .. }, .. } => {
                let now = self.now();
                for l in self.images.values_mut() {
                    l.tracker_ok = Some(now);
                }
                for hint in response.peers {
                    self.on_hint(hint);
                }
            }
            Event::Message { message: M::Request { channel, .. }, .. } => {
                // Nodes are not trackers.
                let _ = self.swarm.behaviour_mut().tracker.send_response(channel, Peers { peers: vec![], ttl_secs: 0 });
            }
            Event::OutboundFailure { peer, error, .. } => tracing::debug!(%peer, %error, "tracker did not answer"),
            _ => {}
        }
    }

    pub(super) fn on_hint(&mut self, hint: PeerHint) {
        let Ok(p) = PeerId::from_bytes(&hint.peer) else { return };
        let addrs: Vec<Multiaddr> = hint.addrs.into_iter().filter_map(|a| Multiaddr::try_from(a).ok()).collect();
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            for a in &addrs {
                kad.add_address(&p, a.clone());
            }
        }
        self.dial(p, addrs);
    }

    pub(super) fn dial(&mut self, p: PeerId, addrs: Vec<Multiaddr>) {
        if p == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&p)
            || self.bans.iter().any(|(_, b)| *b == p)
            || self.swarm.connected_peers().count() >= self.cfg.max_peers
        {
            return;
        }
        let opts = DialOpts::peer_id(p).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(peer = %p, error = %e, "dial failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lists_know_who_carried_a_list_and_stay_bounded() {
        let id = |n: u8| gossipsub::MessageId::from(vec![n]);
        let mut r = RecentLists::default();
        assert_eq!(r.carried(&id(1)), None);
        r.saw(id(1), false);
        assert_eq!(r.carried(&id(1)), Some(false), "published here: published again after the window");
        r.saw(id(1), true);
        assert_eq!(r.carried(&id(1)), Some(true), "also received: gossip forwards it");
        for n in 2..=200 {
            r.saw(id(n), true);
        }
        assert_eq!(r.0.len(), RecentLists::MAX);
        assert_eq!(r.carried(&id(1)), None, "the oldest make room");
        assert_eq!(r.carried(&id(200)), Some(true));
    }
}
