//! The tracker service on libp2p: the server side of [`TRACKER_PROTOCOL`],
//! which the `imageswarm-tracker` binary runs, and the demo and tests run
//! in process.
//!
//! # Contract
//! * Speaks [`TRACKER_PROTOCOL`] (announce, answered from the
//!   [`Registry`]), identify, and Kademlia in server mode, so that nodes can
//!   also use a tracker as their first DHT contact.
//! * The peer an announcement is recorded for is the connection's
//!   authenticated peer id, never a claim inside the message, and of the
//!   addresses it announces only those on the connection's own remote IP
//!   that name one host are kept (no unspecified, multicast, broadcast,
//!   link-local or DNS addresses): the tracker cannot be made to point nodes
//!   at someone else's address.
//! * Bounded: connection limits (in all, pending, and per address,
//!   [`crate::per_ip`]), no new connections above [`TrackerConfig::max_memory`],
//!   concurrent streams per protocol, and the registry's own bounds.
//! * With site CAs ([`TrackerConfig::site_cas`]) the tracker is closed
//!   ([`crate::admission`]): it answers announcements only from peers whose
//!   credential verified, records the site and role their credential names
//!   (never the announcement's), takes newer CRLs from their admits, and
//!   cuts off, and forgets, a peer whose credential is revoked or expired.
//!   Kademlia is off, so it hands out no peers but through answers.
//! * With [`TrackerConfig::metrics`] it serves what it counts
//!   (`TrackerMetrics`): announcements answered and refused, and live
//!   announcements per image, refreshed every second.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, connection_limits, identify, kad, request_response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use proto::credential::SiteCas;
use proto::wire::{Admission, Admit, Announce, Limit, Peers};

use crate::admission::Gate;
use crate::codec::WireCodec;
use crate::per_ip::{DEFAULT_MAX_PER_IP, PerIp};
use crate::transport::{ADMIT_PROTOCOL, KAD_PROTOCOL, TRACKER_PROTOCOL, build_swarm, ip_of, kademlia};
use crate::{Error, Result};
use proto::tracker::Registry;
use uuid::Uuid;

/// A tracker's memory above which it takes no new connections: ample for
/// a 10,000-host site (docs/BENCHMARKS.md).
pub const DEFAULT_MAX_MEMORY: usize = 4 << 30;

/// A tracker's settings.
#[derive(Debug)]
pub struct TrackerConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// The tracker's key (its peer id).
    pub key: Keypair,
    /// How long an announcement lasts.
    pub ttl: Duration,
    /// Listen on QUIC too.
    pub quic: bool,
    /// Most established connections.
    pub max_connections: u32,
    /// Most connections from one IP address.
    pub max_per_ip: usize,
    /// No new connections while the tracker holds more memory than this.
    pub max_memory: usize,
    /// Serve only members of these sites (`None`: anyone).
    pub site_cas: Option<SiteCas>,
    /// Serve Prometheus metrics here ([`crate::metrics`]).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Labels of per-image metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabel {
    image: String,
}

/// What a tracker counts: `imageswarm_tracker_announces_total`,
/// `imageswarm_tracker_announces_refused_total` (from peers not admitted)
/// and `imageswarm_tracker_peers{image}` (live announcements per image).
#[derive(Debug, Clone, Default)]
struct TrackerMetrics {
    announces: Counter,
    refused: Counter,
    peers: Family<ImageLabel, Gauge>,
}

impl TrackerMetrics {
    fn registry(&self) -> prometheus_client::registry::Registry {
        let mut r = prometheus_client::registry::Registry::with_prefix("imageswarm_tracker");
        r.register("announces", "Announcements answered", self.announces.clone());
        r.register("announces_refused", "Announcements from peers not admitted, dropped", self.refused.clone());
        r.register("peers", "Live announcements per image", self.peers.clone());
        r
    }

    fn set_peers(&self, counts: &[(Uuid, usize)]) {
        self.peers.clear();
        for (image, n) in counts {
            let n = i64::try_from(*n).unwrap_or(i64::MAX);
            self.peers.get_or_create(&ImageLabel { image: image.to_string() }).set(n);
        }
    }
}

impl TrackerConfig {
    /// A tracker on 127.0.0.1 (an unused port) with a fresh key, as the
    /// demo and the loopback tests run it.
    pub fn loopback(ttl: Duration) -> Self {
        use libp2p::multiaddr::Protocol;
        let addr = Multiaddr::empty().with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST)).with(Protocol::Tcp(0));
        Self {
            listen: vec![addr],
            key: Keypair::generate_ed25519(),
            ttl,
            quic: false,
            max_connections: 1024,
            max_per_ip: DEFAULT_MAX_PER_IP,
            max_memory: DEFAULT_MAX_MEMORY,
            site_cas: None,
            metrics: None,
        }
    }
}

/// What a tracker runs.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
pub struct TrackerBehaviour {
    limits: connection_limits::Behaviour,
    memory: libp2p::memory_connection_limits::Behaviour,
    per_ip: PerIp,
    identify: identify::Behaviour,
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    admit: request_response::Behaviour<WireCodec<Admit, Admission>>,
    tracker: request_response::Behaviour<WireCodec<Announce, Peers>>,
}

/// A running tracker.
#[allow(missing_debug_implementations)]
pub struct Tracker {
    swarm: libp2p::Swarm<TrackerBehaviour>,
    registry: Registry,
    gate: Gate,
    started: Instant,
    metrics: TrackerMetrics,
}

impl Tracker {
    /// Builds the tracker and starts listening.
    pub fn new(cfg: TrackerConfig) -> Result<Self> {
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_pending_incoming(Some(crate::transport::MAX_PENDING_INCOMING));
        let gate = cfg.site_cas.map_or_else(Gate::open, |cas| Gate::closed(cas, None));
        let rr = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(1024);
        let mut swarm = build_swarm(cfg.key, cfg.quic, |k| TrackerBehaviour {
            limits: connection_limits::Behaviour::new(limits),
            memory: crate::transport::memory_limit(cfg.max_memory),
            per_ip: PerIp::new(cfg.max_per_ip),
            identify: crate::transport::identify(k),
            kad: Toggle::from((!gate.is_closed()).then(|| kademlia(k, false))),
            admit: request_response::Behaviour::with_codec(
                WireCodec::new(Limit::Control),
                [(ADMIT_PROTOCOL, request_response::ProtocolSupport::Inbound)],
                rr.clone(),
            ),
            tracker: request_response::Behaviour::with_codec(
                WireCodec::new(Limit::Control),
                [(TRACKER_PROTOCOL, request_response::ProtocolSupport::Inbound)],
                rr,
            ),
        })?;
        for a in &cfg.listen {
            swarm.listen_on(a.clone()).map_err(|e| Error::Net(format!("listening on {a}: {e}")))?;
        }
        let metrics = TrackerMetrics::default();
        if let Some(addr) = cfg.metrics {
            crate::metrics::serve(addr, metrics.registry())?;
        }
        Ok(Self { swarm, registry: Registry::new(cfg.ttl.as_secs()), gate, started: Instant::now(), metrics })
    }

    /// Runs until the first listen address is up and returns every address
    /// known by then, each with `/p2p/<peer id>`.
    pub async fn listen_addrs(&mut self) -> Vec<Multiaddr> {
        while self.swarm.listeners().next().is_none() {
            let ev = self.swarm.select_next_some().await;
            self.on_event(ev);
        }
        let id = *self.swarm.local_peer_id();
        self.swarm.listeners().map(|a| a.clone().with_p2p(id).unwrap_or_else(|a| a)).collect()
    }

    /// Serves forever.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_event(ev),
                _ = tick.tick() => {
                    self.cut_off();
                    self.metrics.set_peers(&self.registry.counts(self.started.elapsed().as_secs()));
                }
            }
        }
    }

    /// Disconnects and forgets the peers the gate names.
    fn cut_off(&mut self) {
        for (peer, why) in self.gate.overdue(Instant::now(), crate::wall_clock()) {
            tracing::info!(%peer, %why, "peer cut off");
            self.registry.forget(&peer.to_bytes());
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<TrackerBehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "tracker listening"),
            SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } if num_established.get() == 1 => {
                self.gate.connected(peer_id, Instant::now());
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => self.gate.disconnected(&peer_id),
            SwarmEvent::Behaviour(TrackerBehaviourEvent::Admit(request_response::Event::Message {
                peer,
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) => {
                let (answer, _) = self.gate.on_admit(peer, &request, Instant::now(), crate::wall_clock());
                let _ = self.swarm.behaviour_mut().admit.send_response(channel, answer);
                if self.gate.take_news().crls {
                    self.cut_off();
                }
            }
            SwarmEvent::Behaviour(TrackerBehaviourEvent::Tracker(request_response::Event::Message {
                peer,
                connection_id,
                message: request_response::Message::Request { mut request, channel, .. },
            })) => {
                let seen_from = self.swarm.behaviour().per_ip.remote_ip(connection_id);
                request.addrs.retain(|a| Multiaddr::try_from(a.clone()).is_ok_and(|a| dialable(&a, seen_from)));
                if self.gate.is_closed() {
                    let Some(c) = self.gate.credential(&peer) else {
                        tracing::debug!(%peer, "announce from a peer not admitted: dropped");
                        self.metrics.refused.inc();
                        return;
                    };
                    request.site.clone_from(&c.site);
                    request.role = c.role;
                }
                let now = self.started.elapsed().as_secs();
                let image = request.image;
                let answer = self.registry.announce(now, peer.to_bytes(), request);
                self.metrics.announces.inc();
                let n = i64::try_from(self.registry.count(image)).unwrap_or(i64::MAX);
                self.metrics.peers.get_or_create(&ImageLabel { image: image.to_string() }).set(n);
                tracing::debug!(%peer, %image, peers = answer.peers.len(), "announce");
                if self.swarm.behaviour_mut().tracker.send_response(channel, answer).is_err() {
                    tracing::debug!(%peer, "announcer left before the answer");
                }
            }
            SwarmEvent::Behaviour(TrackerBehaviourEvent::Identify(identify::Event::Received {
                peer_id, info, ..
            })) if info.protocols.contains(&KAD_PROTOCOL) => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for a in info.listen_addrs {
                        kad.add_address(&peer_id, a);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether the tracker may hand `addr` out as an announcer's: an IP
/// address that names one host (not unspecified, multicast, broadcast or
/// link-local), and the one the announcement came from when that is known,
/// so that no one can make the tracker point nodes at someone else's
/// address. Addresses of other forms (DNS names) are not handed out.
fn dialable(addr: &Multiaddr, seen_from: Option<IpAddr>) -> bool {
    let Some(ip) = ip_of(addr) else { return false };
    let one_host = match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || v4.is_link_local()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local()),
    };
    one_host && seen_from.is_none_or(|from| from == ip)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Whether a fresh peer's dial to a tracker that holds at most
    /// `max_memory` bytes gets a connection.
    async fn connects(max_memory: usize) -> bool {
        let mut cfg = TrackerConfig::loopback(Duration::from_secs(60));
        cfg.max_memory = max_memory;
        let mut t = Tracker::new(cfg).unwrap();
        let addr = t.listen_addrs().await.remove(0);
        let served = tokio::spawn(t.run());
        let mut c = build_swarm(Keypair::generate_ed25519(), false, |_| libp2p::swarm::dummy::Behaviour).unwrap();
        c.dial(addr).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match c.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => return true,
                    SwarmEvent::OutgoingConnectionError { .. } | SwarmEvent::ConnectionClosed { .. } => return false,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        served.abort();
        outcome
    }

    /// L5: a process above its memory limit takes no new connections.
    #[tokio::test]
    async fn above_its_memory_limit_the_tracker_takes_no_new_connections() {
        assert!(connects(DEFAULT_MAX_MEMORY).await);
        assert!(!connects(1 << 20).await, "a tracker holding more than 1 MiB took a connection");
    }

    #[test]
    fn the_tracker_counts_under_the_documented_names() {
        let m = TrackerMetrics::default();
        m.announces.inc();
        let image = Uuid::from_u128(7);
        m.set_peers(&[(image, 2)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
        for line in [
            "imageswarm_tracker_announces_total 1".to_owned(),
            "imageswarm_tracker_announces_refused_total 0".to_owned(),
            format!("imageswarm_tracker_peers{{image=\"{image}\"}} 2"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        m.set_peers(&[]);
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
        assert!(!text.contains("imageswarm_tracker_peers{"), "an image no one announces goes: {text}");
    }

    #[test]
    fn the_tracker_hands_out_only_addresses_of_the_announcing_host() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let from = Some("10.0.0.7".parse().unwrap());
        assert!(dialable(&a("/ip4/10.0.0.7/tcp/4001"), from));
        assert!(!dialable(&a("/ip4/192.0.2.1/tcp/4001"), from), "someone else's host");
        assert!(dialable(&a("/ip4/192.0.2.1/tcp/4001"), None), "where the source is not known");
        for bad in
            ["/ip4/0.0.0.0/tcp/1", "/ip4/224.0.0.1/tcp/1", "/ip4/255.255.255.255/tcp/1", "/ip4/169.254.1.1/tcp/1"]
        {
            assert!(!dialable(&a(bad), None), "{bad}");
        }
        for bad in ["/ip6/::/tcp/1", "/ip6/ff02::1/tcp/1", "/ip6/fe80::1/tcp/1", "/dns4/example.org/tcp/1"] {
            assert!(!dialable(&a(bad), None), "{bad}");
        }
        assert!(dialable(&a("/ip6/2001:db8::1/udp/4001/quic-v1"), None));
    }
}
