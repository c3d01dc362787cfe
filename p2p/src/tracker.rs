//! The tracker service on libp2p: the server side of [`TRACKER_PROTOCOL`],
//! which the `imageswarm-tracker` binary runs, and the demo and tests run
//! in process.
//!
//! # Contract
//! * Speaks [`TRACKER_PROTOCOL`] (announce, answered from the
//!   [`Registry`]), identify, and Kademlia in server mode, so that nodes can
//!   also use a tracker as their first DHT contact.
//! * The peer an announcement is recorded for is the connection's
//!   authenticated peer id, never a claim inside the message.
//! * Bounded: connection limits, concurrent streams per protocol, and the
//!   registry's own bounds.

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, connection_limits, identify, kad, request_response};
use proto::wire::{Announce, Limit, Peers};

use crate::codec::WireCodec;
use crate::transport::{KAD_PROTOCOL, TRACKER_PROTOCOL, build_swarm, kademlia};
use crate::{Error, Result};
use proto::tracker::Registry;

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
}

impl TrackerConfig {
    /// A tracker on 127.0.0.1 (an unused port) with a fresh key, as the
    /// demo and the loopback tests run it.
    pub fn loopback(ttl: Duration) -> Self {
        use libp2p::multiaddr::Protocol;
        let addr = Multiaddr::empty().with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST)).with(Protocol::Tcp(0));
        Self { listen: vec![addr], key: Keypair::generate_ed25519(), ttl, quic: false, max_connections: 1024 }
    }
}

/// What a tracker runs.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
pub struct TrackerBehaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    tracker: request_response::Behaviour<WireCodec<Announce, Peers>>,
}

/// A running tracker.
#[allow(missing_debug_implementations)]
pub struct Tracker {
    swarm: libp2p::Swarm<TrackerBehaviour>,
    registry: Registry,
    started: Instant,
}

impl Tracker {
    /// Builds the tracker and starts listening.
    pub fn new(cfg: TrackerConfig) -> Result<Self> {
        let limits = connection_limits::ConnectionLimits::default().with_max_established(Some(cfg.max_connections));
        let mut swarm = build_swarm(cfg.key, cfg.quic, |k| TrackerBehaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: crate::transport::identify(k),
            kad: kademlia(k, false),
            tracker: request_response::Behaviour::with_codec(
                WireCodec::new(Limit::Control),
                [(TRACKER_PROTOCOL, request_response::ProtocolSupport::Inbound)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(10))
                    .with_max_concurrent_streams(1024),
            ),
        })?;
        for a in &cfg.listen {
            swarm.listen_on(a.clone()).map_err(|e| Error::Net(format!("listening on {a}: {e}")))?;
        }
        Ok(Self { swarm, registry: Registry::new(cfg.ttl.as_secs()), started: Instant::now() })
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
        loop {
            let ev = self.swarm.select_next_some().await;
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<TrackerBehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "tracker listening"),
            SwarmEvent::Behaviour(TrackerBehaviourEvent::Tracker(request_response::Event::Message {
                peer,
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) => {
                let now = self.started.elapsed().as_secs();
                let image = request.image;
                let answer = self.registry.announce(now, peer.to_bytes(), request);
                tracing::debug!(%peer, %image, peers = answer.peers.len(), "announce");
                if self.swarm.behaviour_mut().tracker.send_response(channel, answer).is_err() {
                    tracing::debug!(%peer, "announcer left before the answer");
                }
            }
            SwarmEvent::Behaviour(TrackerBehaviourEvent::Identify(identify::Event::Received {
                peer_id, info, ..
            })) if info.protocols.contains(&KAD_PROTOCOL) => {
                for a in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                }
            }
            _ => {}
        }
    }
}
