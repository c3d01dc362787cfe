//! The swarm over libp2p on loopback: real nodes, a real tracker, a lying
//! peer. Every wait is bounded by `loopback::PATIENCE`.

#![allow(clippy::unwrap_used)]

mod loopback;

use std::time::Duration;

use loopback::{Lie, Site, ask, liar};
use proto::wire::{Refusal, Request, Response};

const MIB: u64 = 1 << 20;

/// Mbit/s in bytes per second.
fn mbit(m: u64) -> Option<u64> {
    Some(m * 1_000_000 / 8)
}

/// 1. A tracker, a master and 6 workers share a 64 MiB image; every worker
///    ends up holding it verified, and the workers fed each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_workers_share_an_image() -> anyhow::Result<()> {
    let mut site = Site::new(6, 64 * MIB, MIB).await?;
    let mut master = site.config(0);
    master.upload_limit = mbit(400);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    master.metrics = Some(metrics);
    site.start_with(0, master).await?;
    // Every metric docs/CLI.md names is served under that name from the
    // start, before anything counted (per-site ones need another site).
    let documented = documented_metrics();
    assert!(documented.len() >= 13, "{documented:?}");
    let served = |text: &str, name: &str| {
        text.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    };
    site.until("the master to serve every documented metric", |_| {
        let text = loopback::http_get(metrics).unwrap_or_default();
        documented.iter().filter(|n| !n.starts_with("imageswarm_site_")).all(|n| served(&text, n))
    })
    .await?;
    let at_start = loopback::metric(metrics, "imageswarm_bytes_out_total", None)?;
    assert_eq!(at_start, 0);
    for i in 1..=6 {
        site.start(i).await?;
    }
    site.until_workers_complete().await?;
    for i in 1..=6 {
        assert!(site.holds_verified(i), "worker {i} holds the image with the list's SHA-512");
        // The tracker is counted apart from the peers: 6 other nodes at most.
        let s = site.client(i).status();
        assert_eq!(s.trackers, 1, "worker {i} is connected to the tracker");
        assert!((1..=6).contains(&s.connected), "worker {i}: {} peers, trackers left out", s.connected);
    }
    let sent = site.image(0).unwrap().bytes_out;
    let from_workers: u64 = (1..=6).map(|i| site.image(i).unwrap().bytes_out).sum();
    assert!(sent < 6 * 64 * MIB, "the master sent {sent} bytes: less than one copy per worker");
    assert!(from_workers > 0, "workers served each other");
    let text = loopback::http_get(metrics)?;
    let key = format!("imageswarm_bytes_out_total{{image=\"{}\"}} ", site.demo.image);
    let exported: u64 = text.lines().find_map(|l| l.strip_prefix(&key)?.parse().ok()).unwrap_or(0);
    // The status snapshot may lag the counters by one refresh, never lead.
    assert!(exported >= sent && sent > 0, "metrics show {exported} bytes sent, status {sent}:\n{text}");
    assert!(text.contains("imageswarm_image_state{"), "{text}");
    let from_source = loopback::metric(metrics, "imageswarm_source_bytes_total", None)?;
    assert_eq!(from_source, 64 * MIB, "the master downloaded the image from its source once");
    Ok(())
}

/// The metric names docs/CLI.md lists in its node table, as a node serves
/// them (the tracker's table is the tracker's).
fn documented_metrics() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CLI.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `imageswarm_")?.split('`').next().map(|n| format!("imageswarm_{n}")))
        .filter(|n| !n.starts_with("imageswarm_tracker_"))
        .collect()
}

/// 2. A peer that serves corrupt chunks is banned after its first bad chunk
///    to each worker, and every worker still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_peer_is_banned_and_the_rest_complete() -> anyhow::Result<()> {
    let mut site = Site::new(4, 16 * MIB, MIB).await?;
    let mut master = site.config(0);
    master.upload_limit = mbit(200);
    site.start_with(0, master).await?;
    let (_liar, liar_task) =
        liar(site.demo.image, site.wire_image(), 16, MIB as usize, site.tracker.clone(), Lie::CorruptChunks).await?;
    for i in 1..=4 {
        site.start(i).await?;
    }
    site.until_workers_complete().await?;
    let mut bans = 0;
    for i in 1..=4 {
        assert!(site.holds_verified(i), "worker {i} holds the verified image");
        let s = site.client(i).status();
        assert!(s.bans <= 1, "worker {i} banned the liar once at most, not {}", s.bans);
        assert!(s.chunks_failed <= 2, "worker {i} took at most one pipeline of bad chunks: {}", s.chunks_failed);
        bans += s.bans;
    }
    assert!(bans >= 1, "the liar was asked for chunks and banned");
    liar_task.abort();
    Ok(())
}

/// D4 through libp2p: a peer that claims every chunk and never finishes
/// sending one loses each request at the request timeout, and the chunks
/// come from the master instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_sends_its_chunks_is_timed_out_and_the_worker_completes() -> anyhow::Result<()> {
    let mut site = Site::new(1, 8 * MIB, MIB).await?;
    let (_liar, liar_task) =
        liar(site.demo.image, site.wire_image(), 8, MIB as usize, site.tracker.clone(), Lie::Silent).await?;
    site.start_all().await?;
    site.until_workers_complete().await?;
    assert!(site.holds_verified(1));
    assert_eq!(site.client(1).status().bans, 0, "slow is not bad: nothing banned");
    liar_task.abort();
    Ok(())
}

/// D5 through the swarm: once the only peer left that holds the image is a
/// liar, the worker bans it and its status says that every peer that
/// offered the image sent bad data, rather than looking merely slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_peers_all_sent_bad_data_says_so() -> anyhow::Result<()> {
    let mut site = Site::new(1, 16 * MIB, MIB).await?;
    let mut master = site.config(0);
    master.upload_limit = mbit(20);
    site.start_with(0, master).await?;
    let (_liar, liar_task) =
        liar(site.demo.image, site.wire_image(), 16, MIB as usize, site.tracker.clone(), Lie::CorruptChunks).await?;
    site.start(1).await?;
    site.until("the worker's first chunks", |s| s.image(1).is_some_and(|m| m.have >= 2)).await?;
    site.stop(0).await;
    site.until("the liar banned and no peer left", |s| s.image(1).is_some_and(|m| m.peers == 0 && m.banned >= 1))
        .await?;
    let m = site.image(1).unwrap();
    assert!(!m.available);
    let why = m.stalled_by_bans().unwrap();
    assert!(why.starts_with("no peer to fetch from: 1 peer that offered it sent bad data and is banned"), "{why}");
    liar_task.abort();
    Ok(())
}

/// 3. The tracker dies before the workers start; they find each other
///    through Kademlia (bootstrapped from the master) and complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_completes_through_kademlia_without_tracker() -> anyhow::Result<()> {
    let mut site = Site::new(4, 16 * MIB, MIB).await?;
    let mut master = site.config(0);
    master.upload_limit = mbit(100);
    site.start_with(0, master).await?;
    let mut client = site.client(0).clone();
    let master_addr = client.listen_addrs().await?;
    site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    site.kill_tracker().await;
    for i in 1..=4 {
        let mut c = site.config(i);
        c.bootstrap.clone_from(&master_addr);
        site.start_with(i, c).await?;
    }
    let mut most_peers = 0;
    site.until("every worker to complete", |s| {
        most_peers = most_peers.max((1..=4).map(|i| s.client(i).status().connected).max().unwrap_or(0));
        (1..=4).all(|i| s.image(i).is_some_and(|m| m.available))
    })
    .await?;
    for i in 1..=4 {
        assert!(site.holds_verified(i));
    }
    assert!(most_peers >= 2, "workers found peers besides the master (at most {most_peers} connected)");
    let served_by_workers: u64 = (1..=4).map(|i| site.image(i).unwrap().bytes_out).sum();
    assert!(served_by_workers > 0, "workers found and fed each other without a tracker");
    Ok(())
}

/// 4. The master leaves once a full copy exists among the workers; the
///    workers finish from each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_leaves_after_one_copy() -> anyhow::Result<()> {
    let mut site = Site::new(4, 16 * MIB, MIB).await?;
    site.start(0).await?;
    site.start(1).await?;
    for i in 2..=4 {
        let mut c = site.config(i);
        c.download_limit = mbit(40);
        site.start_with(i, c).await?;
    }
    site.until("a full copy among the workers", |s| s.image(1).is_some_and(|m| m.available)).await?;
    let behind = (2..=4).filter(|i| site.image(*i).is_none_or(|m| !m.available)).count();
    site.stop(0).await;
    site.until_workers_complete().await?;
    for i in 1..=4 {
        assert!(site.holds_verified(i));
    }
    assert!(behind > 0, "some workers were still incomplete when the master left");
    Ok(())
}

/// 5. A worker restarts mid-download and resumes: it keeps every verified
///    chunk and fetches only the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_worker_resumes() -> anyhow::Result<()> {
    let mut site = Site::new(1, 32 * MIB, MIB).await?;
    site.start(0).await?;
    let mut c = site.config(1);
    c.download_limit = mbit(60);
    site.start_with(1, c.clone()).await?;
    site.until("a third of the chunks", |s| s.image(1).is_some_and(|m| m.have >= 10)).await?;
    site.stop(1).await;
    let dir = site.demo.data_dirs[1].clone();
    let uuid = site.demo.image;
    let kept = tokio::task::spawn_blocking(move || node::store::Store::open(&dir)?.have(uuid, 32)).await??.count();
    assert!((10..32).contains(&kept), "{kept} chunks were durable at the stop");
    site.start_with(1, c).await?;
    site.until("the worker to resume", |s| s.image(1).is_some()).await?;
    assert!(site.image(1).unwrap().have >= kept, "the restarted worker starts from its durable chunks");
    site.until_workers_complete().await?;
    assert!(site.holds_verified(1));
    let fetched = site.image(1).unwrap().fetched;
    assert_eq!(fetched, u64::from(32 - kept), "after the restart only the missing chunks were fetched");
    Ok(())
}

/// 6. A new list version withdraws the image mid-distribution: every node
///    stops serving it, refuses requests for it, and expires its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_image_stops_being_served_and_expires() -> anyhow::Result<()> {
    let mut site = Site::new(2, 32 * MIB, MIB).await?;
    for i in 0..=2 {
        let mut c = site.config(i);
        c.update_interval = Duration::from_secs(1);
        if i > 0 {
            c.download_limit = mbit(40);
        }
        site.start_with(i, c).await?;
    }
    site.until("the distribution to be under way", |s| s.image(1).is_some_and(|m| m.have >= 4)).await?;
    assert!(site.image(1).is_some_and(|m| !m.available), "withdrawn mid-distribution");
    tokio::task::block_in_place(|| site.demo.withdraw_image())?;
    site.until("every node to stop swarming on the image", |s| (0..=2).all(|i| s.image(i).is_none())).await?;
    let uuid = site.demo.image;
    for i in 0..=2 {
        let paths = node::store::Paths::new(&site.demo.data_dirs[i]);
        site.until("the data to leave the cache", |_| !paths.partial(uuid).exists() && !paths.image(uuid).exists())
            .await?;
        let addr = site.client(i).clone().listen_addrs().await?.remove(0);
        let answer = ask(addr, Request::Chunk { image: site.wire_image(), index: 0, insist: false }).await?;
        assert_eq!(answer, Response::Refused(Refusal::NotEndorsed), "node {i} refuses the withdrawn image");
    }
    let expired = std::fs::read_dir(node::store::Paths::new(&site.demo.data_dirs[0]).expired)?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with(&uuid.to_string()));
    assert!(expired, "the master's complete copy moved to expired/");
    Ok(())
}

/// 7. Requests for anything not on a valid list are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_unlisted_images_are_refused() -> anyhow::Result<()> {
    let mut site = Site::new(1, 4 * MIB, MIB).await?;
    site.start(0).await?;
    site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    let addr = site.client(0).clone().listen_addrs().await?.remove(0);
    let other = uuid::Uuid::new_v4();
    let chunk = ask(addr.clone(), Request::Chunk { image: other, index: 0, insist: true }).await?;
    assert_eq!(chunk, Response::Refused(Refusal::NotEndorsed));
    let manifest = ask(addr.clone(), Request::Manifest { image: other }).await?;
    assert_eq!(manifest, Response::Refused(Refusal::NotEndorsed));
    // The listed image is served, to a peer that introduced itself.
    let listed = ask(addr.clone(), Request::Manifest { image: site.wire_image() }).await?;
    assert!(matches!(listed, Response::Manifest(ref h) if h.len() == 4));
    // Named by its UUID alone, it could be any content: not served.
    let bare = ask(addr, Request::Manifest { image: site.demo.image }).await?;
    assert_eq!(bare, Response::Refused(Refusal::NotEndorsed));
    Ok(())
}

/// 8. A worker that cannot reach the list's URL gets the list through the
///    swarm (verified before it is taken or forwarded) and then the image:
///    on gossip when it is there as the list goes round, and from its
///    peers' hellos when it joins after the swarm went quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reaches_a_cut_off_worker_through_the_swarm() -> anyhow::Result<()> {
    let mut site = Site::new(2, 8 * MIB, MIB).await?;
    for i in [1, 2] {
        site.set_list_url(i, "http://127.0.0.1:9/unreachable.smime").await?;
    }
    site.start(0).await?;
    site.start(1).await?;
    site.until_workers_complete().await?;
    // Gossip publishes a version once: by now it has gone round, and
    // nothing publishes it again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    site.start(2).await?;
    site.until_workers_complete().await?;
    for i in [1, 2] {
        assert!(site.holds_verified(i), "worker {i}");
        let err = site.client(i).status().last_error.unwrap_or_default();
        assert!(err.contains("127.0.0.1:9"), "worker {i}'s own fetch failed: {err:?}");
    }
    Ok(())
}

/// A list source that accepts connections and never answers.
struct Hang {
    url: String,
    held: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Hang {
    fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/list.smime", listener.local_addr()?);
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = held.clone();
        // Bounded: a node makes one connection per update cycle.
        std::thread::spawn(move || {
            for s in listener.incoming().take(16).flatten() {
                keep.lock().unwrap().push(s);
            }
        });
        Ok(Self { url, held })
    }

    /// Connections whose client still waits for an answer.
    fn waiting(&self) -> usize {
        use std::io::Read;
        let open = |mut s: &std::net::TcpStream| {
            if s.set_nonblocking(true).is_err() {
                return false;
            }
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
                }
            }
        };
        self.held.lock().unwrap().iter().filter(|s| open(s)).count()
    }
}

impl Drop for Hang {
    /// Hangs up, so that the waiting update ends (and the runtime with it).
    fn drop(&mut self) {
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// 11. A restarted master whose list source hangs seeds at once: it swarms
///     on its store, re-checked locally, while its first update cycle still
///     waits for the source (up to the fetch's 60 s read timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_seeds_while_its_list_source_hangs() -> anyhow::Result<()> {
    let mut site = Site::new(1, 8 * MIB, MIB).await?;
    site.start(0).await?;
    site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    site.stop(0).await;
    let hang = Hang::start()?;
    site.set_list_url(0, &hang.url).await?;
    site.start(0).await?;
    site.start(1).await?;
    site.until_workers_complete().await?;
    assert!(site.holds_verified(1));
    assert_eq!(hang.waiting(), 1, "the master's update still waits for its list source");
    assert_eq!(site.client(0).status().last_error, None);
    Ok(())
}

/// 12. A master that saw its image partial (it re-read its store while its
///     download from the source ran) serves the image once the download
///     completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_serves_the_image_its_download_completed() -> anyhow::Result<()> {
    let mut site = Site::new(1, 64 * MIB, MIB).await?;
    site.start(0).await?;
    site.until("the master to swarm on the image", |s| {
        s.client(0).request_sync();
        s.image(0).is_some()
    })
    .await?;
    let seen = site.image(0).unwrap();
    site.start(1).await?;
    site.until_workers_complete().await?;
    assert!(site.holds_verified(1));
    eprintln!("the master first swarmed on the image with {}/{} chunks", seen.have, seen.chunks);
    Ok(())
}

/// 13. A peer's bitfield that overtakes its hello (notices and hellos travel
///     on different streams) still counts: the worker learns what the peer
///     holds, asks it, and bans it for the corrupt chunk it sends. A worker
///     that dropped the early bitfield never asks that peer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitfield_that_overtakes_its_senders_hello_counts() -> anyhow::Result<()> {
    let mut site = Site::new(1, 16 * MIB, MIB).await?;
    let mut master = site.config(0);
    master.upload_limit = mbit(50);
    site.start_with(0, master).await?;
    site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    let (_liar, liar_task) =
        liar(site.demo.image, site.wire_image(), 16, MIB as usize, site.tracker.clone(), Lie::BitfieldBeforeHello)
            .await?;
    site.start(1).await?;
    site.until_workers_complete().await?;
    assert!(site.holds_verified(1));
    let s = site.client(1).status();
    assert_eq!(s.bans, 1, "the worker asked the peer whose bitfield came first, and banned it");
    liar_task.abort();
    Ok(())
}

/// 9. The same swarm over QUIC: nodes listen on QUIC only (the tracker
///    stays on TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_swarm_over_quic() -> anyhow::Result<()> {
    let mut site = Site::new(2, 8 * MIB, MIB).await?;
    for i in 0..=2 {
        let mut c = site.config(i);
        c.quic = true;
        c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
        site.start_with(i, c).await?;
    }
    site.until_workers_complete().await?;
    for i in 1..=2 {
        assert!(site.holds_verified(i));
        let addrs = site.client(i).clone().listen_addrs().await?;
        assert!(addrs.iter().all(|a| a.to_string().contains("/quic-v1/")), "{addrs:?}");
    }
    Ok(())
}

/// 10. When the list in force expires, serving stops at once and the image
///     expires, without waiting for the next update cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_list_stops_serving_at_its_expiry() -> anyhow::Result<()> {
    let mut site = Site::new(1, 4 * MIB, MIB).await?;
    let expires = node::now().add_seconds(6);
    tokio::task::block_in_place(|| site.demo.republish_expiring(expires))?;
    for i in 0..=1 {
        let mut c = site.config(i);
        c.update_interval = Duration::from_secs(3600);
        site.start_with(i, c).await?;
    }
    site.until_workers_complete().await?;
    assert!(node::now() < expires, "the distribution finished before the expiry");
    site.until("every node to stop serving the image", |s| (0..=1).all(|i| s.image(i).is_none())).await?;
    let late = node::now().unix() - expires.unix();
    assert!(late <= 2, "serving stopped {late} s after the expiry (the next update was an hour away)");
    let addr = site.client(0).clone().listen_addrs().await?.remove(0);
    let answer = ask(addr, Request::Chunk { image: site.wire_image(), index: 0, insist: false }).await?;
    assert_eq!(answer, Response::Refused(Refusal::NotEndorsed));
    assert!(!site.image_path(1).exists(), "the worker's copy left the cache");
    Ok(())
}

/// Three sites: the master at "home"; "east" (two gateways and a worker) and
/// "west" (a gateway and a worker) split the image between them. Every
/// node completes, and the master sends about one copy, not one per site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_split_what_crosses_from_the_masters_site() -> anyhow::Result<()> {
    const SIZE: u64 = 32 * MIB;
    let mut site = Site::new(5, SIZE, MIB).await?;
    let mut master = site.config(0);
    master.site = "home".into();
    master.upload_limit = mbit(200);
    site.start_with(0, master).await?;
    let share = node::net::SiteShareNames { source: "home".into(), sites: vec!["east".into(), "west".into()] };
    let mut metrics = Vec::new();
    for (i, name, stripe) in [
        (1, "east", Some((0, 2))),
        (2, "east", Some((1, 2))),
        (3, "east", None),
        (4, "west", Some((0, 1))),
        (5, "west", None),
    ] {
        let mut c = site.config(i);
        c.site = name.into();
        c.gateway = stripe.is_some();
        c.gateway_stripe = stripe;
        c.site_share = stripe.map(|_| share.clone());
        c.metrics = Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?);
        metrics.push((name, c.metrics));
        site.start_with(i, c).await?;
    }
    site.until_workers_complete().await?;
    for i in 1..=5 {
        assert!(site.holds_verified(i), "node {i} holds the verified image");
    }
    // What entered each site, as its nodes' own metrics count it.
    for name in ["east", "west"] {
        let mut entered = 0u64;
        for (_, addr) in metrics.iter().filter(|(n, _)| *n == name) {
            entered += loopback::metric(addr.unwrap(), "imageswarm_site_bytes_in_total", None)?;
        }
        assert!(
            (SIZE..=SIZE * 3 / 2).contains(&entered),
            "{entered} bytes entered site {name}: at least one copy, at most 1.5"
        );
    }
    let sent = site.image(0).unwrap().bytes_out;
    // With the shares the master sends about one copy; without them both
    // sites fetch much of the image from it, and 1.3 copies tells the two
    // apart.
    assert!(sent < SIZE * 13 / 10, "the master sent {sent} bytes for two sites of one share each");
    Ok(())
}

/// 14. A second master whose source serves corrupt bytes installs nothing
///     of them: its download fails the check, and it then takes the image
///     from the first master through the swarm. (While its download runs,
///     the swarm leaves the image to it: a peer's verified chunk recorded
///     beside the source's unchecked bytes would vouch for whichever came
///     last.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_a_corrupt_source_takes_the_image_from_its_peers() -> anyhow::Result<()> {
    const SIZE: u64 = 16 * MIB;
    let mut site = Site::new(1, SIZE, MIB).await?;
    let mut first = site.config(0);
    // Slow enough that the second master's download runs while the swarm
    // offers it chunks.
    first.upload_limit = mbit(40);
    site.start_with(0, first).await?;
    site.until("the first master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    // The second host first holds part of the image, so that it swarms on
    // it from the start when it comes back as a master.
    site.start(1).await?;
    site.until("the second host to hold some chunks", |s| s.image(1).is_some_and(|m| m.have >= 2)).await?;
    site.stop(1).await;
    let source = site.demo.www.join("image.img");
    let mut bytes = std::fs::read(&source)?;
    // Every chunk, whichever the host already holds.
    for chunk in bytes.chunks_mut(MIB as usize) {
        chunk[7] ^= 0x55;
    }
    std::fs::write(&source, bytes)?;
    let mut second = site.config(1);
    second.master = true;
    site.start_with(1, second).await?;
    site.until("the second master to hold the image", |s| s.image(1).is_some_and(|m| m.available)).await?;
    assert!(site.holds_verified(1), "the second master holds the image the list vouches for");
    let fetched = site.image(1).unwrap().fetched;
    site.stop(1).await;
    let rec = node::store::Store::open(&site.demo.data_dirs[1])?.image(site.demo.image)?.unwrap();
    assert_eq!(rec.attempts, 1, "the download from the corrupt source ran once and failed");
    assert!(fetched >= SIZE / MIB, "the image came from the first master ({fetched} chunks fetched)");
    Ok(())
}

/// 16. A gateway's WAN cap holds its site's intake from other sites: with
///     16 Mbit/s, 8 MiB cannot enter in less than 4.2 s, whatever the other
///     links allow (they would carry it in well under a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_wan_cap_holds_what_enters_its_site() -> anyhow::Result<()> {
    const SIZE: u64 = 8 * MIB;
    let mut site = Site::new(2, SIZE, MIB).await?;
    let mut master = site.config(0);
    master.site = "home".into();
    site.start_with(0, master).await?;
    site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    let started = std::time::Instant::now();
    for (i, gateway) in [(1, true), (2, false)] {
        let mut c = site.config(i);
        c.site = "east".into();
        c.gateway = gateway;
        c.wan_limit = gateway.then_some(16_000_000 / 8);
        site.start_with(i, c).await?;
    }
    site.until_workers_complete().await?;
    let took = started.elapsed();
    let least = Duration::from_secs_f64(SIZE as f64 / 2_000_000.0) - Duration::from_millis(200);
    assert!(took >= least, "8 MiB entered through a 16 Mbit/s cap in {took:?}");
    assert!(site.holds_verified(2), "the worker holds the verified image");
    Ok(())
}

/// 17. A worker given the tracker's address without its peer id pins the id
///     the tracker shows at the first connection, and finds its peers
///     through it (it has no other way: no bootstrap, nothing in Kademlia).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_given_by_address_alone_is_pinned_and_used() -> anyhow::Result<()> {
    let mut site = Site::new(1, 8 * MIB, MIB).await?;
    site.start(0).await?;
    let named = site.tracker[0].clone();
    let tracker = node::net::peer_of(&named).unwrap();
    let bare: libp2p::Multiaddr = named.iter().filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_))).collect();
    let mut worker = site.config(1);
    worker.trackers = vec![bare.clone()];
    site.start_with(1, worker).await?;
    site.until_workers_complete().await?;
    let pins = std::fs::read_to_string(site.demo.data_dirs[1].join("trackers.pinned"))?;
    assert_eq!(pins, format!("{bare} {tracker}\n"));
    Ok(())
}

/// 18. A peer that floods a node with requests other than for chunks is
///     refused as Busy beyond its rate; another peer is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_requests_is_refused_beyond_its_rate() -> anyhow::Result<()> {
    let mut site = Site::new(1, MIB, MIB).await?;
    site.start(0).await?;
    site.until("the master to hold the image", |s| s.image(0).is_some_and(|m| m.available)).await?;
    let addr = site.client(0).clone().listen_addrs().await?.remove(0);
    let image = site.wire_image();
    let flood = vec![Request::Manifest { image }; 400];
    let key = libp2p::identity::Keypair::generate_ed25519();
    let p = loopback::probe(addr.clone(), key, None, flood, None).await?;
    let answered = p.answers.iter().filter(|r| matches!(r, Response::Manifest(_))).count();
    let busy = p.answers.iter().filter(|r| matches!(r, Response::Refused(Refusal::Busy))).count();
    assert_eq!(answered + busy, 400, "{:?}", p.answers);
    assert!((128..300).contains(&answered), "{answered} answered of 400 sent at once");
    let other = ask(addr, Request::Manifest { image }).await?;
    assert!(matches!(other, Response::Manifest(_)), "another peer is answered: {other:?}");
    Ok(())
}
