//! A closed site on loopback: nodes and the tracker serve the holders of
//! the site's credentials only, and a revocation cuts a node off
//! everywhere. Every wait is bounded by `loopback::PATIENCE`.

#![allow(clippy::unwrap_used)]

mod loopback;

use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use loopback::{Site, another_site, credentialed, probe};
use node::authority;
use node::net::Membership;
use p2p::admission::ADMISSION_TIMEOUT;
use proto::bitfield::Bitfield;
use proto::swarm::Role;
use proto::wire::{Admission, Admit, Announce, Hello, Request, Response, WireBitfield};

const MIB: u64 = 1 << 20;

/// What an intruder asks a node for: a manifest, a chunk, the signed list,
/// and (with its hello) the images, chunks and lists the node holds.
fn asks(site: &Site) -> Vec<Request> {
    let image = site.wire_image();
    let hello = Hello {
        site: node::demo::SITE.into(),
        role: Role::Worker,
        images: vec![(image, WireBitfield::new(&Bitfield::new(4)))],
        lists: vec![],
    };
    vec![
        Request::Manifest { image },
        Request::Chunk { image, index: 0, insist: true },
        Request::List { identifier: site.list_identifier() },
        Request::Hello(hello),
    ]
}

fn announce(site: &Site) -> Announce {
    let image = site.demo.image;
    Announce { image, site: node::demo::SITE.into(), role: Role::Worker, complete: false, addrs: vec![], want: 50 }
}

/// 3. A host with no credential, and one with another site's credential,
///    get no manifest, chunk, hello or peer list from a node or the
///    tracker, and both are disconnected; a member gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_nothing_and_are_disconnected() -> anyhow::Result<()> {
    let mut site = Site::closed(1, 4 * MIB, MIB).await?;
    site.start(0).await?;
    site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    let master = site.client(0).clone().listen_addrs().await?.remove(0);
    let tracker = site.tracker[0].clone();

    // A member is answered, so what the strangers miss is the credential.
    let (key, admit) = credentialed(&site.demo.site_dir(), Role::Worker);
    let p = probe(master.clone(), key, Some(admit), asks(&site), None).await?;
    assert!(matches!(p.admission, Some(Admission::Admitted { .. })), "{p:?}");
    assert!(p.answers.iter().any(|r| matches!(r, Response::Manifest(h) if h.len() == 4)), "{p:?}");
    assert!(p.answers.iter().any(|r| matches!(r, Response::Hello(h) if !h.images.is_empty())), "{p:?}");
    let list = site.list_identifier();
    assert!(p.answers.iter().any(|r| matches!(r, Response::Hello(h) if h.lists.iter().any(|l| l.identifier == list))));
    let signed = std::fs::read(site.demo.www.join("list.smime"))?;
    assert!(
        p.answers.iter().any(|r| matches!(r, Response::List(b) if *b == signed)),
        "the list as its endorser signed it"
    );
    let (key, admit) = credentialed(&site.demo.site_dir(), Role::Worker);
    let p = probe(tracker.clone(), key, Some(admit), vec![], Some(announce(&site))).await?;
    assert!(p.peers >= 1, "the tracker names the master to a member: {p:?}");

    let (_elsewhere, other) = another_site()?;
    for target in [master, tracker] {
        let p = probe(target.clone(), Keypair::generate_ed25519(), None, asks(&site), Some(announce(&site))).await?;
        assert!(p.answers.is_empty() && p.peers == 0, "a stranger was answered by {target}: {p:?}");
        let closed = p.closed_after.unwrap_or_else(|| panic!("{target} kept a stranger connected: {p:?}"));
        assert!(closed <= ADMISSION_TIMEOUT + Duration::from_secs(3), "{target} took {closed:?} to disconnect");

        let (key, admit) = credentialed(&other, Role::Worker);
        let p = probe(target.clone(), key, Some(admit), asks(&site), Some(announce(&site))).await?;
        assert!(
            matches!(&p.admission, Some(Admission::Refused(why)) if why.contains("issuer")),
            "{target} took another site's credential: {p:?}"
        );
        assert!(p.answers.is_empty() && p.peers == 0, "another site's member was answered by {target}: {p:?}");
        assert!(p.closed_after.is_some(), "{target} kept another site's member connected");
    }
    Ok(())
}

/// 4. A revoked node is cut off within 60 s: the master reads the site's
///    new CRL from its file, and the worker and the tracker, which have no
///    such file, take it from the swarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_everywhere() -> anyhow::Result<()> {
    let mut site = Site::closed(2, 4 * MIB, MIB).await?;
    site.start_all().await?;
    site.until_workers_complete().await?;
    let Some(Membership::Closed { credential, .. }) = site.members.as_ref().map(|m| m[2].clone()) else {
        unreachable!("a closed site")
    };
    let key = node::net::load_or_create_key(&site.demo.data_dirs[2].join("node.key"))?;
    let peer = key.public().to_peer_id();
    let master = site.client(0).clone().listen_addrs().await?.remove(0);
    let worker = site.client(1).clone().listen_addrs().await?.remove(0);

    let revoked = Instant::now();
    authority::revoke(&site.demo.site_dir(), &peer.to_string(), node::now())?;
    site.until("the revoked worker to be cut off", |s| s.client(2).status().connected == 0).await?;
    let took = revoked.elapsed();
    assert!(took < Duration::from_secs(60), "cut off after {took:?}");
    site.stop(2).await;

    // Its credential no longer opens anything. Nodes block the peer as well.
    for target in [master, worker, site.tracker[0].clone()] {
        let admit = Admit { credential: credential.clone(), crls: vec![], policy: None };
        let p = probe(target.clone(), key.clone(), Some(admit), asks(&site), Some(announce(&site))).await?;
        assert!(p.answers.is_empty() && p.peers == 0, "{target} still answers the revoked node: {p:?}");
        assert!(!matches!(p.admission, Some(Admission::Admitted { .. })), "{target} admits the revoked node");
        assert!(p.closed_after.is_some(), "{target} kept the revoked node connected");
    }
    let p = probe(site.tracker[0].clone(), key, Some(Admit { credential, crls: vec![], policy: None }), vec![], None)
        .await?;
    assert!(
        matches!(&p.admission, Some(Admission::Refused(why)) if why.contains("revoked")),
        "the tracker learned of the revocation through the swarm: {p:?}"
    );
    Ok(())
}

/// 2 and 5. Workers set up with their CAs only (no endorser, no
/// subscription) get the image through the site policy the master signs,
/// and `image revoke` on the master takes it off every worker within 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_the_masters_policy() -> anyhow::Result<()> {
    let mut site = Site::closed_bare(3, 4 * MIB, MIB).await?;
    for i in 1..=3 {
        let store = node::store::Store::open(&site.demo.data_dirs[i])?;
        assert!(store.endorsers()?.is_empty() && store.subscriptions()?.is_empty(), "worker {i} starts bare");
    }
    site.start_all().await?;
    site.until_workers_complete().await?;
    let image = site.demo.image;
    for i in 1..=3 {
        assert!(site.holds_verified(i), "worker {i} holds the verified image");
        let subs = site.host(i).store().subscriptions()?;
        assert_eq!(subs.len(), 1, "worker {i} subscribed as the policy says");
        assert_eq!(site.host(i).store().endorsers()?.len(), 1, "worker {i} approved the policy's endorser");
    }

    let revoked = Instant::now();
    site.host(0).decide(image, node::store::Decision::Revoked, node::now())?;
    site.client(0).request_sync();
    site.until("every worker to drop the image", |s| {
        (1..=3).all(|i| {
            s.host(i).store().image(image).ok().flatten().is_some_and(|r| r.state == node::store::ImageState::Revoked)
                && !s.image_path(i).exists()
        })
    })
    .await?;
    let took = revoked.elapsed();
    assert!(took < Duration::from_secs(60), "revoked everywhere after {took:?}");
    Ok(())
}

/// L1 of the attack checklist: a credential is bound to the key the Noise
/// handshake proves. One shown by another peer (a stolen one) is refused,
/// and a dial that reaches a node under another peer id than the one asked
/// for fails before anything is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_works_only_for_the_key_it_names() -> anyhow::Result<()> {
    let mut site = Site::closed(1, 4 * MIB, MIB).await?;
    site.start(0).await?;
    let master = site.client(0).clone().listen_addrs().await?.remove(0);

    let (_owner, stolen) = credentialed(&site.demo.site_dir(), Role::Worker);
    let p = probe(master.clone(), Keypair::generate_ed25519(), Some(stolen), asks(&site), None).await?;
    assert!(
        matches!(&p.admission, Some(Admission::Refused(why)) if why.contains("key")),
        "a stolen credential was taken: {p:?}"
    );
    assert!(p.answers.is_empty() && p.closed_after.is_some(), "{p:?}");

    // The master's address with another peer id: the handshake shows the
    // master's key, which is not the one asked for.
    let mut wrong = master.clone();
    wrong.pop();
    let wrong = wrong.with_p2p(Keypair::generate_ed25519().public().to_peer_id()).unwrap();
    let p = probe(wrong, Keypair::generate_ed25519(), None, asks(&site), None).await?;
    assert!(p.closed_after.is_none() && p.answers.is_empty(), "a connection under the wrong peer id: {p:?}");
    Ok(())
}

/// Between cooperating sites only gateways and masters meet: a node that
/// trusts another site's CA admits that site's gateway to a master, and
/// refuses that site's worker, and a worker admits no other site's peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_sites_only_gateways_and_masters_meet() -> anyhow::Result<()> {
    let mut site = Site::closed(1, 4 * MIB, MIB).await?;
    let (_elsewhere, other) = another_site()?;
    for i in 0..=1 {
        site.start_with(i, site.config_trusting(i, &other)?).await?;
    }
    let master = site.client(0).clone().listen_addrs().await?.remove(0);
    let worker = site.client(1).clone().listen_addrs().await?.remove(0);
    for (target, role, admitted) in [
        (&master, Role::Gateway, true),
        (&master, Role::Worker, false),
        (&worker, Role::Gateway, false),
        (&worker, Role::Master, false),
    ] {
        let (key, admit) = credentialed(&other, role);
        let p = probe(target.clone(), key, Some(admit), vec![], None).await?;
        match (&p.admission, admitted) {
            (Some(Admission::Admitted { .. }), true) => {}
            (Some(Admission::Refused(why)), false) if why.contains("gateways and masters") => {}
            _ => panic!("another site's {role:?} at {target}: {p:?}"),
        }
    }
    Ok(())
}
