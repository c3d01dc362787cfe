//! What a node runs on libp2p.
//!
//! # Contract
//! [`Behaviour`] combines identify, Kademlia (image providers), the peer
//! protocol, notice streams, the tracker protocol (as a client), gossipsub for signed lists,
//! admission (credentials), a block list for banned peers, connection limits and a memory
//! limit for new connections. Every
//! protocol bounds its concurrent streams. The transport is the one every imageswarm process
//! uses ([`p2p::transport`]).
//!
//! gossipsub scores peers: a list rejected as broken in itself costs its
//! sender [`REJECTED_WEIGHT`]. In a closed site ([`p2p::admission`])
//! Kademlia is off, since it would answer anyone with peers, and a peer not
//! yet admitted is held at [`UNADMITTED_SCORE`], below the threshold under
//! which gossipsub publishes, forwards or gossips nothing to it, and above
//! the one under which it would drop the peer's subscriptions, which it
//! needs once the peer is admitted.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{allow_block_list, connection_limits, gossipsub, identify, kad, request_response};
use p2p::codec::WireCodec;
use p2p::transport::{ADMIT_PROTOCOL, PEER_PROTOCOL, TRACKER_PROTOCOL};
use proto::wire::{Admission, Admit, Announce, Limit, Peers, Request, Response};

use crate::{Error, Result};

/// Limits on connections and streams.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Established connections in all.
    pub max_connections: u32,
    /// Connections from one IP address.
    pub max_per_ip: usize,
    /// Concurrent streams per protocol (inbound + outbound).
    pub max_streams: usize,
    /// How long a request may take before libp2p gives up on it.
    pub request_timeout: Duration,
    /// No new connections while the process holds more memory than this.
    pub max_memory: usize,
}

/// A node's memory above which it takes no new connections: far above
/// what a node serving its most peers holds (docs/BENCHMARKS.md).
const MAX_MEMORY: usize = 1 << 30;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: proto::transfer::MAX_CONNECTIONS,
            max_per_ip: p2p::per_ip::DEFAULT_MAX_PER_IP,
            max_streams: 512,
            request_timeout: Duration::from_secs(60),
            max_memory: MAX_MEMORY,
        }
    }
}

/// Every behaviour a node runs.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
pub struct Behaviour {
    /// Banned peers.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Connection limits.
    pub limits: connection_limits::Behaviour,
    /// No new connections while memory is short.
    pub memory: libp2p::memory_connection_limits::Behaviour,
    /// Inbound connections per address.
    pub per_ip: p2p::per_ip::PerIp,
    /// Addresses and agent of peers.
    pub identify: identify::Behaviour,
    /// Image providers, the fallback when no tracker answers (open sites
    /// only).
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    /// Credentials, both ways.
    pub admit: request_response::Behaviour<WireCodec<Admit, Admission>>,
    /// The peer protocol.
    pub peer: request_response::Behaviour<WireCodec<Request, Response>>,
    /// Swarm notices, on streams of their own (`super::notices`).
    pub notices: libp2p_stream::Behaviour,
    /// The tracker protocol, as a client.
    pub tracker: request_response::Behaviour<WireCodec<Announce, Peers>>,
    /// Signed lists, forwarded only after they verify here.
    pub gossip: gossipsub::Behaviour,
}

/// The gossip topic signed lists travel on.
pub fn lists_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new("/imageswarm/lists/1")
}

/// The largest signed list gossip carries.
pub(super) const MAX_LIST_BYTES: usize = 4 << 20;

/// A gossip message's identity: its content's hash.
fn list_message_id(data: &[u8]) -> gossipsub::MessageId {
    gossipsub::MessageId::from(blake3::hash(data).as_bytes().to_vec())
}

/// The gossip score of a peer that is not admitted (see the module docs).
pub(super) const UNADMITTED_SCORE: f64 = -60.0;

/// What one rejected list costs its sender, squared per list and decaying
/// by [`REJECTED_DECAY`] a second: one puts it below the graylist
/// threshold, where gossipsub ignores it, for about 10 s, and below the
/// publish threshold for about 35 s.
pub(super) const REJECTED_WEIGHT: f64 = -100.0;

/// How much of the rejected-list count is left after each second.
pub(super) const REJECTED_DECAY: f64 = 0.99;

/// gossipsub's scoring: the application's score (admitted or not, in a
/// closed site) and lists the node rejected ([`super::event_loop`]'s
/// verdicts) are all that count. Peers sharing an address (one host's
/// namespaces, loopback) are not marked down for it, and a quiet topic,
/// which lists are, costs no one.
fn gossip_scoring() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let lists = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: REJECTED_WEIGHT,
        invalid_message_deliveries_decay: REJECTED_DECAY,
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        topics: [(lists_topic().hash(), lists)].into(),
        ..Default::default()
    };
    let thresholds = gossipsub::PeerScoreThresholds::default();
    debug_assert!(thresholds.graylist_threshold < UNADMITTED_SCORE && UNADMITTED_SCORE < thresholds.publish_threshold);
    (params, thresholds)
}

/// gossipsub in strict mode with manual validation: a node forwards a list
/// only after it verified it, and scores peers ([`gossip_scoring`]).
/// Messages are identified by their content, so the same list published by
/// many nodes travels once.
fn gossip(key: &Keypair) -> Result<gossipsub::Behaviour> {
    let cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_LIST_BYTES)
        .message_id_fn(|m: &gossipsub::Message| list_message_id(&m.data))
        .build()
        .map_err(|e| Error::Net(format!("gossipsub: {e}")))?;
    let mut g = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg)
        .map_err(|e| Error::Net(format!("gossipsub: {e}")))?;
    let (params, thresholds) = gossip_scoring();
    g.with_peer_score(params, thresholds).map_err(|e| Error::Net(format!("gossipsub scoring: {e}")))?;
    Ok(g)
}

impl Behaviour {
    fn new(key: &Keypair, limits: Limits, closed: bool, gossip: gossipsub::Behaviour) -> Self {
        let rr = request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(limits.max_streams);
        Self {
            blocked: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(limits.max_connections))
                    .with_max_established_per_peer(Some(2))
                    .with_max_pending_incoming(Some(p2p::transport::MAX_PENDING_INCOMING)),
            ),
            memory: p2p::transport::memory_limit(limits.max_memory),
            per_ip: p2p::per_ip::PerIp::new(limits.max_per_ip),
            identify: p2p::transport::identify(key),
            kad: Toggle::from((!closed).then(|| p2p::transport::kademlia(key, true))),
            admit: request_response::Behaviour::with_codec(
                WireCodec::new(Limit::Control),
                [(ADMIT_PROTOCOL, request_response::ProtocolSupport::Full)],
                rr.clone(),
            ),
            peer: request_response::Behaviour::with_codec(
                WireCodec::new(Limit::Data),
                [(PEER_PROTOCOL, request_response::ProtocolSupport::Full)],
                rr.clone(),
            ),
            notices: libp2p_stream::Behaviour::new(),
            tracker: request_response::Behaviour::with_codec(
                WireCodec::new(Limit::Control),
                [(TRACKER_PROTOCOL, request_response::ProtocolSupport::Outbound)],
                rr,
            ),
            gossip,
        }
    }
}

/// Builds a node's swarm; `closed` for a closed site.
pub fn build_swarm(key: Keypair, quic: bool, limits: Limits, closed: bool) -> Result<libp2p::Swarm<Behaviour>> {
    let gossip = gossip(&key)?;
    p2p::transport::build_swarm(key, quic, move |k| Behaviour::new(k, limits, closed, gossip))
        .map_err(|e| Error::Net(e.to_string()))
}

/// Loads the node's key, creating it when missing.
pub fn load_or_create_key(path: &std::path::Path) -> Result<Keypair> {
    p2p::transport::load_or_create_key(path).map_err(|e| Error::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cost of one rejected list, as gossipsub computes it (weight ×
    /// count², decaying by the second), against its thresholds.
    #[test]
    fn one_rejected_list_graylists_its_sender_for_a_while() {
        let (params, t) = gossip_scoring();
        params.validate().unwrap();
        let score = |secs: i32| REJECTED_WEIGHT * REJECTED_DECAY.powi(secs).powi(2);
        assert!(score(0) < t.graylist_threshold);
        assert!(score(5) < t.graylist_threshold && score(15) > t.graylist_threshold);
        assert!(score(30) < t.publish_threshold && score(40) > t.publish_threshold);
    }
}
