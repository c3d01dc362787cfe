//! L3 and L4, floods of connections and of streams against the node's own
//! swarm (its behaviour, transport and limits, as `node` builds them), on
//! loopback:
//!
//! - fresh peer ids, each completing its handshake: no more are established
//!   than the node's cap, and the rest are closed;
//! - sockets that open and never start the handshake: no more are held
//!   than the pending cap, the rest are closed at once, and those held are
//!   closed at the upgrade timeout, after which a real peer connects;
//! - streams of the peer protocol opened on one connection and left silent:
//!   no more are held than the per-connection stream cap, the rest are
//!   dropped at once, and those held go at the request timeout.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::swarm::{SwarmEvent, dummy};
use libp2p::{Multiaddr, Swarm};
use node::net::{Behaviour, Limits, build_swarm};
use p2p::transport::{MAX_PENDING_INCOMING, PEER_PROTOCOL, UPGRADE_TIMEOUT};

/// A node's swarm listening on 127.0.0.1, polled by a task of its own
/// (which reports how many connections it holds on `established`).
async fn node(limits: Limits) -> (Multiaddr, tokio::sync::watch::Receiver<usize>) {
    let mut swarm: Swarm<Behaviour> = build_swarm(Keypair::generate_ed25519(), false, limits, false).unwrap();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address.with_p2p(*swarm.local_peer_id()).unwrap();
        }
    };
    let (tx, rx) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        let mut held = 0usize;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => held += 1,
                SwarmEvent::ConnectionClosed { .. } => held -= 1,
                _ => continue,
            }
            let _ = tx.send(held);
        }
    });
    (addr, rx)
}

/// A peer with a fresh key that dials `addr`; reports whether its
/// connection is up at the end of `watch`.
async fn fresh_peer(addr: Multiaddr, watch: Duration) -> bool {
    let mut swarm = p2p::transport::build_swarm(Keypair::generate_ed25519(), false, |_| dummy::Behaviour).unwrap();
    swarm.dial(addr).unwrap();
    let end = tokio::time::Instant::now() + watch;
    let mut up = false;
    while let Ok(ev) = tokio::time::timeout_at(end, swarm.select_next_some()).await {
        match ev {
            SwarmEvent::ConnectionEstablished { .. } => up = true,
            SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } => up = false,
            _ => {}
        }
    }
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_peer_ids_beyond_the_cap_are_not_established() {
    let cap = 8;
    let limits = Limits { max_connections: cap, max_per_ip: 64, ..Limits::default() };
    let (addr, held) = node(limits).await;
    let peers: Vec<_> = (0..24).map(|_| tokio::spawn(fresh_peer(addr.clone(), Duration::from_secs(5)))).collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(*held.borrow(), cap as usize, "connections the node holds");
    let mut up = 0;
    for p in peers {
        up += usize::from(p.await.unwrap());
    }
    assert_eq!(up, cap as usize, "peers connected at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_take_at_most_the_pending_cap_and_go_at_the_upgrade_timeout() {
    let limits = Limits { max_per_ip: 1024, ..Limits::default() };
    let (addr, _) = node(limits).await;
    let port = addr.iter().find_map(|p| if let libp2p::multiaddr::Protocol::Tcp(p) = p { Some(p) } else { None });
    let socket = std::net::SocketAddr::from(([127, 0, 0, 1], port.unwrap()));
    let flood = MAX_PENDING_INCOMING as usize + 72;
    let (refused, held_open, after) = tokio::task::spawn_blocking(move || {
        let sockets: Vec<TcpStream> = (0..flood).map(|_| TcpStream::connect(socket).unwrap()).collect();
        for s in &sockets {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        // Which the node closed soon after: a read sees the end.
        std::thread::sleep(Duration::from_secs(1));
        let refused = sockets.iter().filter(|s| closed_by_node(s)).count();
        // The rest, once the upgrade timeout passed.
        let start = Instant::now();
        std::thread::sleep(UPGRADE_TIMEOUT + Duration::from_secs(2));
        let after = sockets.iter().filter(|s| !closed_by_node(s)).count();
        (refused, flood - refused, (after, start.elapsed()))
    })
    .await
    .unwrap();
    assert!(refused >= flood - MAX_PENDING_INCOMING as usize, "closed at once: {refused} of {flood}");
    assert!(held_open <= MAX_PENDING_INCOMING as usize, "held while pending: {held_open}");
    assert_eq!(after.0, 0, "sockets still open {:?} after the flood", after.1);
    assert!(fresh_peer(addr, Duration::from_secs(3)).await, "a real peer connects once the flood is gone");
}

/// Whether the node closed `s`: a read sees the end or a reset, not its
/// timeout.
fn closed_by_node(s: &TcpStream) -> bool {
    match s.peek(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_beyond_the_stream_cap_are_dropped_and_the_rest_go_at_the_request_timeout() {
    let (cap, timeout) = (16, Duration::from_secs(3));
    let (addr, _) = node(Limits { max_streams: cap, request_timeout: timeout, ..Limits::default() }).await;
    let peer = p2p::transport::peer_of(&addr).unwrap();
    let mut flooder =
        p2p::transport::build_swarm(Keypair::generate_ed25519(), false, |_| libp2p_stream::Behaviour::new()).unwrap();
    let control = flooder.behaviour().new_control();
    flooder.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            flooder.select_next_some().await;
        }
    });
    let flood = 4 * cap;
    // Each stream sends nothing: a read ends when the node lets it go,
    // timed from the stream's own opening.
    let mut reads = Vec::new();
    for _ in 0..flood {
        reads.push(tokio::spawn(silent_stream(control.clone(), peer)));
    }
    let mut ends: Vec<Duration> = futures::future::join_all(reads).await.into_iter().map(Result::unwrap).collect();
    ends.sort();
    let dropped = ends.iter().filter(|e| **e < timeout / 2).count();
    assert_eq!(dropped, flood - cap, "dropped at once ({ends:?})");
    assert!(ends[dropped..].iter().all(|e| *e < timeout * 2), "held at most about the request timeout: {ends:?}");
    // The connection lives on, and its places are free again.
    let again = silent_stream(control, peer).await;
    assert!(again >= timeout / 2, "a stream opened after the flood is held: {again:?}");
}

/// Opens a stream of the peer protocol to `peer`, sends nothing, and says
/// how long the node held it.
async fn silent_stream(mut control: libp2p_stream::Control, peer: libp2p::PeerId) -> Duration {
    let mut s = match tokio::time::timeout(Duration::from_secs(5), control.open_stream(peer, PEER_PROTOCOL)).await {
        Ok(Ok(s)) => s,
        other => panic!("the node negotiates the peer protocol: {other:?}"),
    };
    let opened = Instant::now();
    let _ = s.read(&mut [0u8; 1]).await;
    opened.elapsed()
}
