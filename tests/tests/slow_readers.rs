//! Peers that ask a master for chunks and never read them: as many of them
//! as the master has upload slots. Each loses its slot at its deadline (its
//! chunk's bytes at the floor rate, plus a grace), rather than at libp2p's
//! request timeout, and a worker completes meanwhile.
#![allow(clippy::unwrap_used)]

mod loopback;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, StreamProtocol};
use loopback::Site;
use p2p::codec::{read_frame, write_frame};
use p2p::transport::PEER_PROTOCOL;
use proto::bitfield::Bitfield;
use proto::swarm::Role;
use proto::wire::{Hello, Limit, Request, Response, WireBitfield};
use uuid::Uuid;

const MIB: u64 = 1 << 20;

/// A peer that says hello to the node at `addr` (holding none of the
/// `chunks` of image `wire`), asks for chunk `index` and never reads the
/// answer; it holds the stream until aborted.
fn slow_reader(addr: Multiaddr, wire: Uuid, chunks: u32, index: u32) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut swarm =
            p2p::transport::build_swarm(Keypair::generate_ed25519(), false, |_| libp2p_stream::Behaviour::new())?;
        let mut control = swarm.behaviour().new_control();
        let peer = p2p::transport::peer_of(&addr).unwrap();
        swarm.dial(addr)?;
        tokio::spawn(async move {
            loop {
                futures::StreamExt::select_next_some(&mut swarm).await;
            }
        });
        let protocol: StreamProtocol = PEER_PROTOCOL;
        let mut hello = control.open_stream(peer, protocol.clone()).await?;
        let none = WireBitfield::new(&Bitfield::new(chunks));
        let me = Hello { site: "loop".into(), role: Role::Worker, images: vec![(wire, none)], lists: vec![] };
        write_frame(&mut hello, &Request::Hello(me)).await?;
        let _: Response = read_frame(&mut hello, Limit::Data).await?;
        let mut ask = control.open_stream(peer, protocol).await?;
        write_frame(&mut ask, &Request::Chunk { image: wire, index, insist: true }).await?;
        std::future::pending::<()>().await;
        drop(ask);
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_lose_their_upload_slots() -> anyhow::Result<()> {
    // A chunk for each of the master's slots.
    let slots = proto::swarm::UploadPolicy::master().slots;
    let mut site = Site::new(1, u64::from(slots) * 4 * MIB, 4 * MIB).await?;
    site.start(0).await?;
    site.until("the master to swarm on the image", |s| s.image(0).is_some()).await?;
    let addr = site.client(0).clone().listen_addrs().await?.remove(0);
    let readers: Vec<_> = (0..slots).map(|i| slow_reader(addr.clone(), site.wire_image(), slots, i)).collect();
    site.until("the master's slots taken", |s| s.image(0).is_some_and(|m| m.bytes_out >= u64::from(slots) * 4 * MIB))
        .await?;
    let taken = std::time::Instant::now();
    site.start(1).await?;
    site.until_workers_complete().await?;
    // The slots came free at the readers' deadlines, not at libp2p's
    // request timeout (node::net::Limits), which the worker would
    // otherwise have waited out.
    let timeout = node::net::Limits::default().request_timeout;
    assert!(taken.elapsed() < timeout, "the worker waited {:?}", taken.elapsed());
    assert!(site.holds_verified(1));
    let overdue = site.client(0).status().uploads_overdue;
    assert!(overdue >= u64::from(slots), "every slow reader lost its slot: {overdue}");
    for r in readers {
        assert!(!r.is_finished(), "a slow reader stopped: {:?}", r.await);
    }
    Ok(())
}
