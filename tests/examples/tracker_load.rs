//! Load for a tracker through the real libp2p stack, for
//! `bench/tracker-load.sh`: PEERS peers, each with its own key and its own
//! TCP + Noise + Yamux connection, announce IMAGES images every PERIOD
//! seconds (each announcement a request on a new stream, as nodes send
//! them), each peer at its own phase of the period.
//!
//! ```text
//! tracker_load TRACKER_MULTIADDR TRACKER_PID PEERS IMAGES PERIOD_S DURATION_S
//! ```
//!
//! Peers join at `RAMP` per second (default 1,000). The measured window
//! starts one period after the last peer joined and lasts to the end. Each
//! second it prints a progress line on stderr; at the end one line on
//! stdout, `result: peers=… announces_per_s=… p50_ms=… p99_ms=… max_ms=…
//! failed=… tracker_cpu=… rss_start_mib=… rss_end_mib=…`, where
//! `tracker_cpu` is the tracker's user + system CPU seconds per second of
//! the window (1.0 = one core busy), read from `/proc/TRACKER_PID/stat`,
//! and the RSS figures its VmRSS at the window's start and end.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use p2p::codec::WireCodec;
use p2p::transport::{TRACKER_PROTOCOL, build_swarm, peer_of};
use proto::swarm::Role;
use proto::wire::{Announce, Limit, Peers};
use uuid::Uuid;

type Behaviour = request_response::Behaviour<WireCodec<Announce, Peers>>;

/// What every peer reports.
#[derive(Debug, Default)]
struct Tally {
    /// Answers in the measured window, with their latencies in µs.
    latencies: Vec<u32>,
    /// Answers since the last progress line.
    recent: u64,
    failed: u64,
    connected: u64,
}

struct Plan {
    tracker: Multiaddr,
    tracker_id: PeerId,
    images: u32,
    period: Duration,
    window_start: Instant,
    end: Instant,
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> anyhow::Result<T> {
    args.get(i).with_context(|| format!("missing {name}"))?.parse().ok().with_context(|| format!("bad {name}"))
}

async fn peer(n: u32, plan: Arc<Plan>, tally: Arc<Mutex<Tally>>) -> anyhow::Result<()> {
    let behaviour = |_: &Keypair| {
        let cfg = request_response::Config::default().with_request_timeout(Duration::from_secs(10));
        Behaviour::with_codec(WireCodec::new(Limit::Control), [(TRACKER_PROTOCOL, ProtocolSupport::Outbound)], cfg)
    };
    let mut swarm = build_swarm(Keypair::generate_ed25519(), false, behaviour)?;
    swarm.dial(plan.tracker.clone())?;
    // Each peer at its own phase, so that the load is even over the period.
    let phase = plan.period.mul_f64(f64::from(n % 997) / 997.0);
    let mut next = tokio::time::Instant::now() + phase;
    let mut sent: HashMap<OutboundRequestId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                if Instant::now() >= plan.end {
                    return Ok(());
                }
                for i in 0..plan.images {
                    let a = Announce {
                        image: Uuid::from_u128(u128::from(i) + 1),
                        site: "load".into(),
                        role: Role::Worker,
                        complete: (n + i) % 2 == 0,
                        addrs: vec![],
                        want: 16,
                    };
                    let id = swarm.behaviour_mut().send_request(&plan.tracker_id, a);
                    sent.insert(id, Instant::now());
                }
                next += plan.period;
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { .. } => tally.lock().expect("tally").connected += 1,
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, .. }, ..
                }) => {
                    let Some(at) = sent.remove(&request_id) else { continue };
                    let now = Instant::now();
                    let mut t = tally.lock().expect("tally");
                    t.recent += 1;
                    if now >= plan.window_start && now < plan.end {
                        t.latencies.push(u32::try_from(now.duration_since(at).as_micros()).unwrap_or(u32::MAX));
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, .. }) => {
                    sent.remove(&request_id);
                    tally.lock().expect("tally").failed += 1;
                }
                _ => {}
            },
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        bail!("usage: tracker_load TRACKER_MULTIADDR TRACKER_PID PEERS IMAGES PERIOD_S DURATION_S");
    }
    let tracker: Multiaddr = arg(&args, 1, "TRACKER_MULTIADDR")?;
    let tracker_id = peer_of(&tracker).context("the tracker's address needs its /p2p/ peer id")?;
    let pid: u32 = arg(&args, 2, "TRACKER_PID")?;
    let peers: u32 = arg(&args, 3, "PEERS")?;
    let images: u32 = arg(&args, 4, "IMAGES")?;
    let period = Duration::from_secs(arg(&args, 5, "PERIOD_S")?);
    let duration = Duration::from_secs(arg(&args, 6, "DURATION_S")?);
    let ramp: u32 = std::env::var("RAMP").ok().and_then(|r| r.parse().ok()).unwrap_or(1000).max(1);

    let start = Instant::now();
    let joined = Duration::from_secs_f64(f64::from(peers) / f64::from(ramp));
    let window_start = start + joined + period;
    let end = start + duration;
    if window_start + period > end {
        bail!("DURATION_S leaves no measured window: peers join for {joined:?}, then one period");
    }
    let plan = Arc::new(Plan { tracker, tracker_id, images, period, window_start, end });
    let tally = Arc::new(Mutex::new(Tally::default()));

    let spawner = {
        let (plan, tally) = (plan.clone(), tally.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / ramp);
            for n in 0..peers {
                tick.tick().await;
                let (plan, tally) = (plan.clone(), tally.clone());
                tokio::spawn(async move {
                    if let Err(e) = peer(n, plan, tally).await {
                        eprintln!("peer {n}: {e:#}");
                    }
                });
            }
        })
    };

    let mut window = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < end {
        tick.tick().await;
        let testkit::procfs::Usage { cpu_secs: cpu, rss_mib: rss, .. } = testkit::procfs::usage(pid)?;
        if window.is_none() && Instant::now() >= window_start {
            window = Some((Instant::now(), cpu, rss));
        }
        let mut t = tally.lock().expect("tally");
        eprintln!(
            "t={:>4}s connected={} answers/s={} failed={} tracker_cpu_s={cpu:.1} rss_mib={rss:.0}",
            start.elapsed().as_secs(),
            t.connected,
            t.recent,
            t.failed
        );
        t.recent = 0;
    }
    spawner.abort();
    let testkit::procfs::Usage { cpu_secs: cpu_end, rss_mib: rss_end, .. } = testkit::procfs::usage(pid)?;
    let (w_at, cpu_start, rss_start) = window.context("the measured window never started")?;
    let cpu_secs = w_at.elapsed().as_secs_f64();
    let secs = end.duration_since(window_start).as_secs_f64();
    let mut t = tally.lock().expect("tally");
    t.latencies.sort_unstable();
    println!(
        "result: peers={peers} images={images} period_s={} connected={} announces_per_s={:.0} p50_ms={:.2} \
         p99_ms={:.2} max_ms={:.2} failed={} tracker_cpu={:.3} rss_start_mib={rss_start:.0} rss_end_mib={rss_end:.0}",
        period.as_secs(),
        t.connected,
        t.latencies.len() as f64 / secs,
        percentile(&t.latencies, 0.5),
        percentile(&t.latencies, 0.99),
        percentile(&t.latencies, 1.0),
        t.failed,
        (cpu_end - cpu_start) / cpu_secs,
    );
    Ok(())
}
