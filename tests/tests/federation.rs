//! Cooperating sites on loopback, arranged by one federation file: each
//! site takes about one copy of an image across its WAN link, a site
//! outside the file gets nothing, a site that has not approved an image
//! does not pull it, and a site whose gateway dies still completes. What
//! enters a site is what its nodes' own metrics count
//! (`imageswarm_site_bytes_in`). Every wait is bounded by
//! `loopback::PATIENCE`.

#![allow(clippy::unwrap_used)]

mod loopback;

use loopback::federation::Federated;
use loopback::{credentialed, probe};
use node::store::{Decision, NewImages};
use proto::swarm::Role::{Gateway, Master, Worker};
use proto::wire::{Admission, Request};

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 256 << 10;
/// The first site, the demo's own: its master holds the image.
const A: &str = node::demo::SITE;

/// 1 and 3. Three sites, each with a tracker, a gateway and three workers;
///    only the first site's master holds the image. Every worker completes,
///    and the bytes entering each of the other two sites are at most 1.2
///    times the image. A fourth site with valid credentials of its own,
///    which the federation file does not name, gets nothing: its gateway
///    is refused and disconnected by every node and tracker it reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_each_take_about_one_copy_and_a_site_outside_gets_nothing() -> anyhow::Result<()> {
    const SIZE: u64 = 16 * MIB;
    let mut placed = vec![(A, Master)];
    for s in [A, "b", "c"] {
        placed.extend([(s, Gateway), (s, Worker), (s, Worker), (s, Worker)]);
    }
    placed.push(("d", Gateway));
    let outsider = placed.len() - 1;
    let mut f = Federated::new(&[A, "b", "c", "d"], &["d"], &placed, SIZE, CHUNK).await?;
    f.start_all().await?;
    f.site
        .until("every member to complete", |s| (1..outsider).all(|i| s.image(i).is_some_and(|m| m.available)))
        .await?;
    for i in 1..outsider {
        assert!(f.site.holds_verified(i), "node {i} holds the verified image");
    }
    for name in ["b", "c"] {
        let entered = f.entered(name)?;
        assert!(
            (SIZE..=SIZE * 6 / 5).contains(&entered),
            "{entered} bytes entered site {name}, {:.3} copies",
            entered as f64 / SIZE as f64
        );
    }

    // 3. The outside site.
    let d = f.site.image(outsider);
    assert!(d.as_ref().is_none_or(|m| m.have == 0 && m.peers == 0), "the outside gateway got {d:?}");
    assert_eq!(f.entered("d")?, 0);
    let (key, admit) = credentialed(&f.authorities[3].1, Gateway);
    let a = f.at(A);
    let mut targets = vec![f.tracker_addrs[0].clone()];
    for i in [a[0], a[1]] {
        targets.push(f.site.client(i).clone().listen_addrs().await?.remove(0));
    }
    for target in targets {
        let asks = vec![Request::Manifest { image: f.site.wire_image() }];
        let p = probe(target.clone(), key.clone(), Some(admit.clone()), asks, None).await?;
        assert!(
            matches!(&p.admission, Some(Admission::Refused(why)) if why.contains("issuer")),
            "{target} took the outside site's gateway: {p:?}"
        );
        assert!(p.answers.is_empty(), "{target} answered the outside site's gateway: {p:?}");
        assert!(p.closed_after.is_some(), "{target} kept the outside site's gateway connected");
    }
    Ok(())
}

/// 4. A site that has not approved the image does not pull it while
///    another site completes; once it approves, it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_pulls_an_image_only_once_it_approves_it() -> anyhow::Result<()> {
    const SIZE: u64 = 8 * MIB;
    let placed = [(A, Master), ("b", Gateway), ("b", Worker), ("c", Gateway), ("c", Worker)];
    let mut f = Federated::new(&[A, "b", "c"], &[], &placed, SIZE, CHUNK).await?;
    let c = f.at("c");
    for &i in &c {
        let store = node::store::Store::open(&f.site.demo.data_dirs[i])?;
        let mut sub = store.subscriptions()?.remove(0);
        sub.new_images = NewImages::Refuse;
        store.put_subscription(&sub)?;
    }
    f.start_all().await?;
    f.site.until("site b to complete", |s| f.at("b").iter().all(|&i| s.image(i).is_some_and(|m| m.available))).await?;
    for &i in &c {
        let rec = f.site.host(i).store().image(f.site.demo.image)?;
        assert!(rec.is_some_and(|r| r.decision == Decision::Refused), "node {i} saw the image and refused it");
        assert!(f.site.image(i).is_none(), "node {i} does not swarm on a refused image");
    }
    assert_eq!(f.entered("c")?, 0, "nothing entered the site that refused the image");

    for &i in &c {
        f.site.host(i).decide(f.site.demo.image, Decision::Approved, node::now())?;
        f.site.client(i).request_sync();
    }
    f.site.until("site c to complete", |s| c.iter().all(|&i| s.image(i).is_some_and(|m| m.available))).await?;
    for i in 1..placed.len() {
        assert!(f.site.holds_verified(i), "node {i} holds the verified image");
    }
    let entered = f.entered("c")?;
    assert!((SIZE..=SIZE * 6 / 5).contains(&entered), "{entered} bytes entered site c");
    Ok(())
}

/// 5. A gateway killed mid-transfer (its task aborted: its connections drop
///    with no goodbye, as with `kill -9`): its site completes through its
///    other gateway, which takes over the dead one's stripe, and the bytes
///    that entered the site, counted by the master as it sent them, stay
///    under 1.5 times the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_gateway_dies_completes_through_its_other_gateway() -> anyhow::Result<()> {
    const SIZE: u64 = 16 * MIB;
    let placed = [(A, Master), ("b", Gateway), ("b", Gateway), ("b", Worker), ("b", Worker)];
    let mut f = Federated::new(&[A, "b"], &[], &placed, SIZE, CHUNK).await?;
    // The master's WAN link is slow enough for the transfer to take
    // seconds: the gateway dies with part of its stripe in.
    f.start_edited(0, |c| c.wan_limit = Some(40_000_000 / 8)).await?;
    f.site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    for i in 1..placed.len() {
        f.start(i).await?;
    }
    let chunks = (SIZE / CHUNK) as u32;
    f.site.until("the first gateway to hold a quarter", |s| s.image(1).is_some_and(|m| m.have >= chunks / 4)).await?;
    f.site.kill(1).await;
    f.site.until("the rest of site b to complete", |s| (2..5).all(|i| s.image(i).is_some_and(|m| m.available))).await?;
    for i in 2..5 {
        assert!(f.site.holds_verified(i), "node {i} holds the verified image");
    }
    let sent = f.metric(0, "imageswarm_site_bytes_out_total", Some("site=\"b\""))?;
    assert!(
        (SIZE..=SIZE * 3 / 2).contains(&sent),
        "{sent} bytes entered site b, {:.3} copies",
        sent as f64 / SIZE as f64
    );
    Ok(())
}
