//! A cap on the connections one IP address may open to this process.
//!
//! # Contract
//! * An inbound connection from an IP address that already has
//!   [`PerIp::max`] inbound connections here, pending or established, is
//!   denied before its handshake: one host cannot fill the connection slots
//!   with fresh peer ids.
//! * Loopback addresses are not counted: they are the host's own processes.
//! * A connection counts from the moment it is offered until it closes or
//!   fails; meanwhile [`PerIp::remote_ip`] names its address.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    dummy,
};
use libp2p::{Multiaddr, PeerId};

use crate::transport::ip_of;

/// Inbound connections most peers of one site may hold from one address:
/// a few processes per host, never a site's worth.
pub const DEFAULT_MAX_PER_IP: usize = 16;

/// The behaviour (see the module docs).
#[derive(Debug)]
pub struct PerIp {
    max: usize,
    /// The address of every open inbound connection.
    from: HashMap<ConnectionId, IpAddr>,
    /// Open inbound connections per address, loopback left out.
    counts: HashMap<IpAddr, usize>,
}

/// Why a connection was denied.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {max} connections here")]
pub struct TooManyFromIp {
    ip: IpAddr,
    max: usize,
}

impl PerIp {
    /// At most `max` inbound connections per address.
    pub fn new(max: usize) -> Self {
        Self { max, from: HashMap::new(), counts: HashMap::new() }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The remote IP address of the open inbound connection `id`.
    pub fn remote_ip(&self, id: ConnectionId) -> Option<IpAddr> {
        self.from.get(&id).copied()
    }

    fn offer(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else { return Ok(()) };
        if !ip.is_loopback() {
            let n = self.counts.entry(ip).or_default();
            if *n >= self.max {
                tracing::debug!(%ip, max = self.max, "connection from an address at its cap: denied");
                return Err(ConnectionDenied::new(TooManyFromIp { ip, max: self.max }));
            }
            *n += 1;
        }
        self.from.insert(id, ip);
        Ok(())
    }

    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.from.remove(&id) else { return };
        if let Some(n) = self.counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&ip);
            }
        }
    }
}

impl NetworkBehaviour for PerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.offer(connection_id, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(c) => self.release(c.connection_id),
            FromSwarm::ListenFailure(f) => self.release(f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_address_gets_at_most_its_cap_and_a_closed_connection_frees_a_place() {
        let mut p = PerIp::new(2);
        let a: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
        let b: Multiaddr = "/ip4/192.0.2.2/tcp/4001".parse().unwrap();
        let id = ConnectionId::new_unchecked;
        assert!(p.offer(id(1), &a).is_ok() && p.offer(id(2), &a).is_ok());
        let denied = p.offer(id(3), &a).unwrap_err();
        let why = denied.downcast_ref::<TooManyFromIp>().unwrap().to_string();
        assert!(why.contains("192.0.2.1 already has 2"), "{why}");
        assert!(p.offer(id(4), &b).is_ok(), "another address has its own cap");
        p.release(id(1));
        assert!(p.offer(id(5), &a).is_ok(), "a closed connection frees its place");
        p.release(id(3));
        assert!(p.offer(id(6), &a).is_err(), "a denied connection held no place to free");
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert!((10..20).all(|i| p.offer(id(i), &local).is_ok()), "loopback is not counted");
        assert_eq!(p.remote_ip(id(10)), Some("127.0.0.1".parse().unwrap()), "but its address is known");
        p.release(id(10));
        assert_eq!(p.remote_ip(id(10)), None);
    }
}
