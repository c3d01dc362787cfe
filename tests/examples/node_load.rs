//! Load for one node through the real libp2p stack, for
//! `bench/node-load.sh`: PEERS peers, each with its own key and its own
//! TCP + Noise + Yamux connection, say hello to the node (holding none of
//! the image) and then ask it for the image's chunks in turn, one request
//! at a time on a new stream each, as nodes ask, reading every answer
//! whole, for DURATION seconds. A refusal (every upload slot taken, or the
//! peer over its request rate) makes the peer wait 100 ms before it asks
//! again. The peers never announce a chunk, so the node goes on serving
//! them for as long as they ask.
//!
//! ```text
//! node_load NODE_MULTIADDR NODE_PID LIST_JSON PEERS DURATION_S
//! ```
//!
//! LIST_JSON is the list as `list add-image` writes it; the node must hold
//! its first image. Every 10 s it prints a line on stderr: peers connected,
//! chunks and refusals in those 10 s, failures, and the node's RSS,
//! descriptors and threads (`/proc/NODE_PID`). At the end one line on
//! stdout, `result: peers=… connected=… chunks=… mib_per_s=… refused=…
//! failed=… node_cpu=… rss_first_mib=… rss_last_mib=… rss_max_mib=…
//! fds_first=… fds_last=… threads_first=… threads_last=… threads_min=…
//! threads_max=…`, where "first" is of the samples in the first minute
//! after every peer connected and "last" of those in the last minute: the
//! median for RSS and descriptors, the highest for threads (tokio's
//! blocking pool starts and ends threads as disk work comes and goes), and
//! `node_cpu` the node's CPU seconds per second over the run (1.0 = one
//! core busy).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use p2p::codec::{read_frame, write_frame};
use p2p::transport::{PEER_PROTOCOL, build_swarm, peer_of};
use proto::bitfield::Bitfield;
use proto::imagelist::ImageList;
use proto::swarm::Role;
use proto::wire::{Hello, Limit, Request, Response, WireBitfield, content_id};
use testkit::procfs::{Usage, usage};
use uuid::Uuid;

/// What the peers did, summed.
#[derive(Debug, Default)]
struct Tally {
    connected: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

struct Plan {
    node: Multiaddr,
    node_id: PeerId,
    image: Uuid,
    chunks: u32,
    end: Instant,
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> anyhow::Result<T> {
    args.get(i).with_context(|| format!("missing {name}"))?.parse().ok().with_context(|| format!("bad {name}"))
}

async fn peer(n: u32, plan: Arc<Plan>, tally: Arc<Tally>) -> anyhow::Result<()> {
    let mut swarm = build_swarm(Keypair::generate_ed25519(), false, |_| libp2p_stream::Behaviour::new())?;
    let mut control = swarm.behaviour().new_control();
    swarm.dial(plan.node.clone())?;
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut hello = control.open_stream(plan.node_id, PEER_PROTOCOL).await?;
    let none = WireBitfield::new(&Bitfield::new(plan.chunks));
    let me = Hello { site: "bench".into(), role: Role::Worker, images: vec![(plan.image, none)], lists: vec![] };
    write_frame(&mut hello, &Request::Hello(me)).await?;
    let _: Response = read_frame(&mut hello, Limit::Data).await?;
    tally.connected.fetch_add(1, Ordering::Relaxed);
    // Each peer starts at its own place in the image.
    let mut index = n.wrapping_mul(7) % plan.chunks;
    while Instant::now() < plan.end {
        let answer = async {
            let mut s = control.open_stream(plan.node_id, PEER_PROTOCOL).await?;
            write_frame(&mut s, &Request::Chunk { image: plan.image, index, insist: true }).await?;
            anyhow::Ok(read_frame::<_, Response>(&mut s, Limit::Data).await?)
        };
        match answer.await {
            Ok(Response::Chunk(bytes)) => {
                tally.chunks.fetch_add(1, Ordering::Relaxed);
                tally.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                index = (index + 1) % plan.chunks;
            }
            Ok(Response::Refused(_)) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) | Err(_) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    driver.abort();
    Ok(())
}

fn median(samples: &[Usage], of: impl Fn(&Usage) -> f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(of).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn most_threads<'a>(samples: impl IntoIterator<Item = &'a Usage>) -> usize {
    samples.into_iter().map(|u| u.threads).max().unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        bail!("usage: node_load NODE_MULTIADDR NODE_PID LIST_JSON PEERS DURATION_S");
    }
    let node: Multiaddr = arg(&args, 1, "NODE_MULTIADDR")?;
    let node_id = peer_of(&node).context("the node's address needs its /p2p/ peer id")?;
    let pid: u32 = arg(&args, 2, "NODE_PID")?;
    let list = ImageList::from_json(&std::fs::read(&args[3]).context("LIST_JSON")?)?;
    let first = list.images.first().context("the list names no image")?;
    let chunking = first.chunking.as_ref().context("the image has no chunking (made by `list add-image`?)")?;
    let chunks = u32::try_from(first.size.div_ceil(chunking.chunk_size.get()).max(1))?;
    let peers: u32 = arg(&args, 4, "PEERS")?;
    let duration = Duration::from_secs(arg(&args, 5, "DURATION_S")?);
    let start = Instant::now();
    let plan = Arc::new(Plan {
        node,
        node_id,
        image: content_id(first.identifier, &chunking.root),
        chunks,
        end: start + duration,
    });
    let tally = Arc::new(Tally::default());
    for n in 0..peers {
        let (plan, tally) = (plan.clone(), tally.clone());
        tokio::spawn(async move {
            if let Err(e) = peer(n, plan, tally).await {
                eprintln!("peer {n}: {e:#}");
            }
        });
    }

    let cpu_start = usage(pid)?.cpu_secs;
    let mut samples: Vec<(Instant, Usage)> = Vec::new();
    let mut all_connected: Option<Instant> = None;
    let (mut chunks_before, mut refused_before) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    while Instant::now() < plan.end {
        tick.tick().await;
        let u = usage(pid)?;
        let connected = tally.connected.load(Ordering::Relaxed);
        if all_connected.is_none() && connected == u64::from(peers) {
            all_connected = Some(Instant::now());
        }
        samples.push((Instant::now(), u));
        let (chunks_now, refused_now) = (tally.chunks.load(Ordering::Relaxed), tally.refused.load(Ordering::Relaxed));
        eprintln!(
            "t={:>4}s connected={connected} chunks={} refused={} failed={} rss_mib={:.0} fds={} threads={}",
            start.elapsed().as_secs(),
            chunks_now - chunks_before,
            refused_now - refused_before,
            tally.failed.load(Ordering::Relaxed),
            u.rss_mib,
            u.fds,
            u.threads,
        );
        (chunks_before, refused_before) = (chunks_now, refused_now);
    }
    let all_connected = all_connected.context("not every peer connected")?;
    let first: Vec<Usage> = samples
        .iter()
        .filter(|(t, _)| *t > all_connected && *t <= all_connected + Duration::from_secs(60))
        .map(|s| s.1)
        .collect();
    let last: Vec<Usage> =
        samples.iter().filter(|(t, _)| *t + Duration::from_secs(60) >= plan.end).map(|s| s.1).collect();
    if first.is_empty() || last.is_empty() {
        bail!("too short to compare the first minute with the last");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (usage(pid)?.cpu_secs - cpu_start) / secs;
    let rss_max = samples.iter().map(|s| s.1.rss_mib).fold(0.0, f64::max);
    println!(
        "result: peers={peers} connected={} chunks={} mib_per_s={:.1} refused={} failed={} node_cpu={cpu:.2} \
         rss_first_mib={:.0} rss_last_mib={:.0} rss_max_mib={rss_max:.0} fds_first={:.0} fds_last={:.0} \
         threads_first={} threads_last={} threads_min={} threads_max={}",
        tally.connected.load(Ordering::Relaxed),
        tally.chunks.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed) as f64 / f64::from(1 << 20) / secs,
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        median(&first, |u| u.rss_mib),
        median(&last, |u| u.rss_mib),
        median(&first, |u| u.fds as f64),
        median(&last, |u| u.fds as f64),
        most_threads(&first),
        most_threads(&last),
        samples.iter().map(|s| s.1.threads).min().unwrap_or(0),
        most_threads(samples.iter().map(|s| &s.1)),
    );
    Ok(())
}
