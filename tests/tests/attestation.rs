//! Lists made by other tools (plain HEPiX fields, no manifest root) over the
//! swarm of a closed site: the master downloads the image once and attests
//! to its root; members take only attestations that hold. Every wait is
//! bounded by `loopback::PATIENCE`.

#![allow(clippy::unwrap_used)]

mod loopback;

use std::sync::atomic::Ordering;

use libp2p::identity::Keypair;
use loopback::{Site, another_site, credentialed, probe_offering};
use proto::attestation::{Attestation, sign_attestation};
use proto::swarm::Role;

const MIB: u64 = 1 << 20;

/// 1. A list with plain HEPiX fields only, signed by `openssl smime`,
///    reaches 4 workers through the swarm; the source serves the image
///    once, to the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_list_swarms_with_the_masters_attestation() -> anyhow::Result<()> {
    let mut site = Site::closed_plain(4, 8 * MIB, MIB).await?;
    site.start_all().await?;
    site.until_workers_complete().await?;
    for i in 1..=4 {
        assert!(site.holds_verified(i), "worker {i} holds the image with the list's SHA-512");
        let rec = site.host(i).store().image(site.demo.image)?.unwrap();
        assert!(rec.attestation.is_some() && rec.root.is_some(), "worker {i} swarmed on an attested root");
    }
    assert_eq!(site.demo.image_downloads.load(Ordering::Relaxed), 1, "the source served the master alone");
    let from_workers: u64 = (1..=4).map(|i| site.image(i).unwrap().bytes_out).sum();
    assert!(from_workers > 0, "workers served each other");
    Ok(())
}

/// 6. A forged attestation, one from an untrusted site, one for another version
///    of the list and an expired one are each refused, and the peer that
///    offered it is banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_that_do_not_hold_get_their_peer_banned() -> anyhow::Result<()> {
    let mut site = Site::closed_plain(1, 4 * MIB, MIB).await?;
    site.start(1).await?;
    let image = site.demo.image;
    site.until("the worker to know the image", |s| {
        s.host(1).store().image(image).ok().flatten().is_some_and(|r| r.root.is_none())
    })
    .await?;
    let worker = site.client(1).clone().listen_addrs().await?.remove(0);
    let rec = site.host(1).store().image(image)?.unwrap();
    let version = site.host(1).list_version_of(image)?.unwrap();
    let honest = Attestation {
        site: node::demo::SITE.into(),
        list: rec.list,
        list_version: version.clone(),
        expires: node::now().unix() + 86_400,
        image,
        size: rec.size,
        sha512: rec.sha512.clone(),
        chunk_size: rec.chunk_size,
        root: [7; 32],
    };
    let (_elsewhere, other) = another_site()?;

    let home = site.demo.site_dir();
    let lies = ["forged", "an untrusted site's", "another version's", "expired"];
    for (n, what) in lies.into_iter().enumerate() {
        let (key, admit) = credentialed(&home, Role::Master);
        let offered = match what {
            "forged" => sign_attestation(&honest, &admit.credential, |b| Keypair::generate_ed25519().sign(b).unwrap())?,
            // A master of a site the worker does not trust signed it; a
            // member of the worker's site offers it.
            "an untrusted site's" => {
                let (k, theirs) = credentialed(&other, Role::Master);
                sign_attestation(&honest, &theirs.credential, |b| k.sign(b).unwrap())?
            }
            "another version's" => {
                let a = Attestation { list_version: format!("{version}.9"), ..honest.clone() };
                sign_attestation(&a, &admit.credential, |b| key.sign(b).unwrap())?
            }
            _ => {
                let a = Attestation { expires: node::now().unix() - 60, ..honest.clone() };
                sign_attestation(&a, &admit.credential, |b| key.sign(b).unwrap())?
            }
        };
        let p = probe_offering(worker.clone(), key, Some(admit), vec![], None, Some(offered)).await?;
        assert!(p.closed_after.is_some(), "the worker kept the peer that offered a {what} attestation");
        // The status shows the ban within a refresh.
        site.until(&format!("the peer with a {what} attestation to be banned"), |s| {
            s.client(1).status().bans == n as u64 + 1
        })
        .await?;
        let rec = site.host(1).store().image(image)?.unwrap();
        assert!(rec.root.is_none() && rec.attestation.is_none(), "a {what} attestation was taken");
    }

    // The master's own attestation is taken, and the image arrives.
    site.start(0).await?;
    site.until_workers_complete().await?;
    assert!(site.holds_verified(1));
    assert_eq!(site.client(1).status().bans, lies.len() as u64, "the master was not taken for a liar");
    Ok(())
}

/// An attestation by a cooperating site's master counts for a list this
/// site accepts itself: a worker that trusts that site's CA takes it,
/// relayed by a member of its own site, and records its root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperating_sites_attestation_counts_for_a_list_this_site_accepts() -> anyhow::Result<()> {
    let mut site = Site::closed_plain(1, 4 * MIB, MIB).await?;
    let (_elsewhere, other) = another_site()?;
    site.start_with(1, site.config_trusting(1, &other)?).await?;
    let image = site.demo.image;
    site.until("the worker to know the image", |s| {
        s.host(1).store().image(image).ok().flatten().is_some_and(|r| r.root.is_none())
    })
    .await?;
    let rec = site.host(1).store().image(image)?.unwrap();
    let cut = proto::manifest::ChunkSize::new(rec.chunk_size)?;
    let digest = node::endorse::digest_file(&site.demo.www.join("image.img"), cut, &mut |_| {})?;
    let a = Attestation {
        site: "elsewhere".into(),
        list: rec.list,
        list_version: site.host(1).list_version_of(image)?.unwrap(),
        expires: node::now().unix() + 86_400,
        image,
        size: rec.size,
        sha512: rec.sha512.clone(),
        chunk_size: rec.chunk_size,
        root: digest.manifest.root().0,
    };
    let (signer, theirs) = credentialed(&other, Role::Master);
    let offered = sign_attestation(&a, &theirs.credential, |b| signer.sign(b).unwrap())?;
    let (key, admit) = credentialed(&site.demo.site_dir(), Role::Master);
    let worker = site.client(1).clone().listen_addrs().await?.remove(0);
    let offer = probe_offering(worker, key, Some(admit), vec![], None, Some(offered));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), offer).await;
    let rec = site.host(1).store().image(image)?.unwrap();
    assert_eq!(rec.root, Some(digest.manifest.root().to_string()), "the cooperating site's root was taken");
    assert_eq!(site.client(1).status().bans, 0);
    Ok(())
}
