//! A tracker that answers every announcement with garbage: bytes that are
//! no message, and a length prefix of 4 GiB (which the codec refuses before
//! allocating). The nodes it is given to stay up and complete through the
//! site's real tracker.
#![allow(clippy::unwrap_used)]

mod loopback;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use loopback::Site;
use p2p::transport::TRACKER_PROTOCOL;

/// Starts a "tracker" that reads each announcement's stream a little and
/// answers with garbage, by turns random-looking bytes and a 4 GiB length
/// prefix. Returns its address and the count of announcements it answered.
async fn garbage_tracker() -> (Multiaddr, Arc<AtomicUsize>) {
    let mut swarm =
        p2p::transport::build_swarm(Keypair::generate_ed25519(), false, |_| libp2p_stream::Behaviour::new()).unwrap();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address.with_p2p(*swarm.local_peer_id()).unwrap();
        }
    };
    let mut incoming = swarm.behaviour().new_control().accept(TRACKER_PROTOCOL).unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let n = count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut head = [0u8; 64];
                let _ = stream.read(&mut head).await;
                let garbage: Vec<u8> = if n % 2 == 0 {
                    (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
                } else {
                    u32::MAX.to_be_bytes().iter().copied().chain([0u8; 16]).collect()
                };
                let _ = stream.write_all(&garbage).await;
                let _ = stream.close().await;
            });
        }
    });
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (addr, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_answering_garbage_leaves_the_nodes_up_and_the_site_completes() -> anyhow::Result<()> {
    let (liar, answered) = garbage_tracker().await;
    let mut site = Site::new(3, 8 << 20, 256 << 10).await?;
    for i in 0..=3 {
        let mut c = site.config(i);
        // The liar first: every node announces to it too.
        c.trackers.insert(0, liar.clone());
        site.start_with(i, c).await?;
    }
    site.until_workers_complete().await?;
    assert!(answered.load(Ordering::Relaxed) >= 4, "the garbage tracker was asked");
    for i in 0..=3 {
        assert!(!site.nodes[i].as_ref().unwrap().task.is_finished(), "node {i} stays up");
        if i > 0 {
            assert!(site.holds_verified(i));
        }
    }
    Ok(())
}
