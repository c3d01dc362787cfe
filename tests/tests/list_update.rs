//! Lists between peers while the swarm runs: an update that gives an image
//! other bytes under the same UUID, an older list replayed by a peer, and a
//! peer gossiping a broken list. Every wait is bounded by
//! `loopback::PATIENCE`.

#![allow(clippy::unwrap_used)]

mod loopback;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::Multiaddr;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use loopback::Site;
use node::net::{self, BehaviourEvent};
use proto::swarm::Role;
use proto::wire::{HeldList, Hello, Refusal, Request, Response};

const MIB: u64 = 1 << 20;

/// 7. While some nodes still hold and serve the old bytes and others fetch
///    the new ones, no honest peer bans another: images travel named by
///    their content, so the two versions never meet. Every node ends with
///    the new bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_changes_an_images_bytes_bans_no_one() -> anyhow::Result<()> {
    let mut site = Site::closed(3, 8 * MIB, MIB).await?;
    site.start_all().await?;
    site.until_workers_complete().await?;

    // Worker 3 sleeps through the update, and wakes to a list source that
    // still serves the old version: it serves the old bytes from its start
    // until the new list reaches it through the swarm.
    site.stop(3).await;
    std::fs::copy(site.demo.www.join("list.smime"), site.demo.www.join("list-old.smime"))?;
    let new_sha = tokio::task::block_in_place(|| site.demo.replace_image_bytes())?;
    assert_ne!(new_sha, site.demo.sha512);
    site.set_list_url(3, &format!("{}/list-old.smime", site.source)).await?;

    // The master takes the new version at its restart, downloads the new
    // bytes and seeds them; the workers hear of it through the swarm.
    site.stop(0).await;
    site.start(0).await?;
    site.start(3).await?;
    let holds_new =
        |s: &Site, i: usize| node::cache::sha512_file(&s.image_path(i)).is_ok_and(|h| hex::encode(h) == new_sha);
    site.until("every node to hold the new bytes", |s| (0..=3).all(|i| holds_new(s, i))).await?;
    for i in 0..=3 {
        let st = site.client(i).status();
        assert_eq!((st.bans, st.chunks_failed), (0, 0), "node {i} took an honest peer for a liar");
    }
    Ok(())
}

/// The version of the list in force at node `i`.
fn version_at(site: &Site, i: usize) -> String {
    let sub = site.host(i).store().subscription(site.list_identifier()).unwrap().unwrap();
    sub.current.unwrap().version
}

/// The signed list as the source serves it now.
fn served_list(site: &Site) -> Vec<u8> {
    std::fs::read(site.demo.www.join("list.smime")).unwrap()
}

/// Publishes the next version of the list (only its expiry changes) at the
/// source, where no node looks for it before its next update cycle.
fn next_version(site: &Site) {
    let expires = node::now().add_seconds(6 * 86_400);
    site.demo.republish_expiring(expires).unwrap();
}

/// A peer that dials `target` and speaks the node's protocols: its hellos
/// name `claims` as the lists it holds, a request for a list is answered
/// with `answer` (counted in the returned counter), and each of `gossip` is
/// published on the lists topic, `gap` apart, the first as soon as the
/// target takes gossip from it. It runs until aborted.
fn fake_peer(
    target: Multiaddr,
    claims: Vec<HeldList>,
    answer: Vec<u8>,
    gossip: Vec<Vec<u8>>,
    gap: Duration,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let task = tokio::spawn(async move {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut swarm = net::build_swarm(key, false, net::Limits::default(), false).unwrap();
        let peer = net::peer_of(&target).unwrap();
        swarm.behaviour_mut().gossip.subscribe(&net::lists_topic()).unwrap();
        swarm.dial(target).unwrap();
        let hello = Hello { site: "loop".into(), role: Role::Worker, images: vec![], lists: claims };
        let mut gossip = gossip.into_iter().peekable();
        let mut next_publish = Instant::now();
        loop {
            if gossip.peek().is_some() && Instant::now() >= next_publish {
                let bytes = gossip.peek().unwrap().clone();
                // Refused (no peer yet on the topic) until the target
                // subscribed; tried again at the next turn.
                if swarm.behaviour_mut().gossip.publish(net::lists_topic(), bytes).is_ok() {
                    gossip.next();
                    next_publish = Instant::now() + gap;
                }
            }
            let ev = tokio::time::timeout(Duration::from_millis(50), swarm.select_next_some()).await;
            match ev {
                Ok(SwarmEvent::ConnectionEstablished { .. }) => {
                    swarm.behaviour_mut().peer.send_request(&peer, Request::Hello(hello.clone()));
                }
                Ok(SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                }))) => {
                    let response = match request {
                        Request::Hello(_) => Response::Hello(hello.clone()),
                        Request::List { .. } => {
                            count.fetch_add(1, Ordering::Relaxed);
                            Response::List(answer.clone())
                        }
                        _ => Response::Refused(Refusal::NotHeld),
                    };
                    let _ = swarm.behaviour_mut().peer.send_response(channel, response);
                }
                _ => {}
            }
        }
    });
    (task, asked)
}

/// S5, a replayed list: a peer that names a newer version of the list in
/// its hello and, asked for it, answers with an older version, signed by
/// the endorser (a replay). The node refuses it, keeps the version in force
/// and its image, and bans no one for it (a stale peer is not a liar).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_list_replayed_by_a_peer_changes_nothing() -> anyhow::Result<()> {
    let mut site = Site::new(1, 4 * MIB, MIB).await?;
    let old = served_list(&site);
    next_version(&site);
    site.start_all().await?;
    site.until_workers_complete().await?;
    let in_force = version_at(&site, 1);
    let addr = site.client(1).clone().listen_addrs().await?.remove(0);
    let claims = vec![HeldList { identifier: site.list_identifier(), version: "99.0.0".into() }];
    let (replayer, asked) = fake_peer(addr, claims, old, vec![], Duration::ZERO);
    site.until("the node to ask the replayer for the list", |_| asked.load(Ordering::Relaxed) > 0).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    replayer.abort();
    assert_eq!(version_at(&site, 1), in_force, "the replayed list rolled the version back");
    assert!(site.holds_verified(1));
    assert_eq!(site.client(1).status().bans, 0);
    Ok(())
}

/// S5, gossip penalties end to end: a peer that gossips a list broken in
/// itself (not S/MIME) is graylisted by the node's gossipsub, so the valid
/// newer list it gossips right after is not even looked at; the same list
/// from a peer in good standing is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_gossips_a_broken_list_is_not_heard_for_a_while() -> anyhow::Result<()> {
    let mut site = Site::new(1, 4 * MIB, MIB).await?;
    site.start_all().await?;
    site.until_workers_complete().await?;
    let in_force = version_at(&site, 1);
    next_version(&site);
    let newer = served_list(&site);
    let addr = site.client(1).clone().listen_addrs().await?.remove(0);
    let broken = b"this is not an S/MIME message".to_vec();
    let gossip = vec![broken, newer.clone()];
    let (liar, _) = fake_peer(addr.clone(), vec![], vec![], gossip, Duration::from_millis(500));
    // Well past the second publication, and within the graylisting.
    tokio::time::sleep(Duration::from_secs(4)).await;
    liar.abort();
    assert_eq!(version_at(&site, 1), in_force, "the newer list from a graylisted peer was taken");
    let (honest, _) = fake_peer(addr, vec![], vec![], vec![newer], Duration::ZERO);
    site.until("the newer list from an honest peer", |s| version_at(s, 1) != in_force).await?;
    honest.abort();
    Ok(())
}
