//! Discovery: announcements to trackers, their answers, and Kademlia
//! lookups when no tracker answers.
//!
//! # Contract
//! * Every image served here, every subscribed list and, in a closed site,
//!   the site itself ([`site_meeting_point`]) are announced to every
//!   tracker each announce interval; answers are dialled up to the
//!   connection budget.
//! * When no tracker has answered for an image for two intervals, the DHT is
//!   asked for its providers.
//! * Each announcement also publishes the lists in force not yet published
//!   (see [`super::lists`]).

use std::time::Duration;

use libp2p::request_response;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, kad};
use proto::policy::site_meeting_point;
use proto::swarm::Role;
use proto::wire::{Announce, PeerHint, Peers};
use uuid::Uuid;

use super::EventLoop;

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

    fn send_to_trackers(&mut self, a: Announce) {
        for (p, _) in self.trackers.known.clone() {
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
            || self.refusals.get(&p).is_some_and(|(_, at)| at.elapsed() < self.cfg.announce_interval)
            || self.peer_count() >= self.cfg.max_peers
        {
            return;
        }
        let opts = DialOpts::peer_id(p).addresses(addrs).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(peer = %p, error = %e, "dial failed");
        }
    }
}
