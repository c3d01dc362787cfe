//! `imageswarm demo`: a whole site on loopback.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use node::demo::{Demo, kumar_ross};
use node::net::{self, Client, NodeConfig};
use p2p::tracker::{Tracker, TrackerConfig};
use proto::manifest::ChunkSize;

/// `imageswarm demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Workers (besides the one master).
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Image size, e.g. 256MiB or 1GiB.
    #[arg(long, default_value = "256MiB", value_parser = node::units::parse_size)]
    size: u64,
    /// Every node's upload and download cap, in Mbit/s.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Chunk size, e.g. 512KiB (a power of two; by default as `list
    /// add-image` picks it for the image's size).
    #[arg(long, value_parser = node::units::parse_size)]
    chunk_size: Option<u64>,
    /// Keep the demo's files here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[allow(clippy::print_stdout)]
pub(crate) fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let rate = super::node::mbit(a.rate)?;
    let chunk = match a.chunk_size {
        Some(bytes) => ChunkSize::new(bytes)?,
        None => ChunkSize::for_image(a.size),
    };
    let tmp;
    let root = match &a.keep {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("imageswarm-demo.").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("demo source: {e}"))?;
    let port = server.server_addr().to_ip().context("demo source address")?.port();
    let base = format!("http://127.0.0.1:{port}");
    println!(
        "preparing a test CA, an endorser, a {} random image and its signed list in {}",
        human(a.size),
        root.display()
    );
    let demo = Demo::prepare(&root, a.nodes, a.size, chunk, &base)?;
    demo.serve_source(server)?;
    demo.init_hosts(&format!("{base}/list.smime"))?;
    let chunks = ::node::units::count(a.size.div_ceil(chunk.get()) as usize, "chunk");
    println!("image {} ({chunks} of {})", demo.image, human(chunk.get()));

    let rt = tokio::runtime::Runtime::new()?;
    let ok = rt.block_on(swarm(&demo, &a, rate, chunk.get()))?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[allow(clippy::print_stdout)]
async fn swarm(demo: &Demo, a: &DemoArgs, rate: u64, chunk: u64) -> anyhow::Result<bool> {
    let mut tcfg = TrackerConfig::loopback(Duration::from_secs(60));
    tcfg.site_cas = Some(demo.site_cas()?);
    let mut tracker = Tracker::new(tcfg)?;
    let tracker_addrs = tracker.listen_addrs().await;
    println!("tracker {}", tracker_addrs.first().map(ToString::to_string).unwrap_or_default());
    let tracker_task = tokio::spawn(tracker.run());

    let mut clients: Vec<Client> = Vec::new();
    let mut tasks = Vec::new();
    for (i, dir) in demo.data_dirs.iter().enumerate() {
        let mut c = NodeConfig::new(dir.clone(), node::demo::SITE.into());
        c.membership = demo.membership(i)?;
        c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        c.trackers.clone_from(&tracker_addrs);
        c.master = i == 0;
        c.upload_limit = Some(rate);
        c.download_limit = (i > 0).then_some(rate);
        c.announce_interval = Duration::from_secs(2);
        let (client, task) = net::start(c).await?;
        clients.push(client);
        tasks.push(task);
    }

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {bytes:>10}/{total_bytes:<10} {msg}")?
        .progress_chars("=> ");
    let pbs: Vec<ProgressBar> = (0..clients.len())
        .map(|i| {
            let pb = bars.add(ProgressBar::new(demo.size));
            pb.set_style(style.clone());
            pb.set_prefix(if i == 0 { "master".to_string() } else { format!("worker {i}") });
            pb
        })
        .collect();

    let started = Instant::now();
    let mut seeded_at: Option<Instant> = None;
    let mut done: Vec<Option<Duration>> = vec![None; clients.len()];
    let deadline = started + Duration::from_secs(a.timeout);
    while Instant::now() < deadline && done.iter().skip(1).any(Option::is_none) {
        for (i, c) in clients.iter().enumerate() {
            let s = c.status();
            let Some(img) = s.images.iter().find(|m| m.uuid == demo.image) else { continue };
            let bytes = (u64::from(img.have) * chunk).min(demo.size);
            pbs[i].set_position(bytes);
            pbs[i].set_message(format!("{}, {} sent", ::node::units::count(img.peers, "peer"), human(img.bytes_out)));
            if img.available && done[i].is_none() {
                let t0 = *seeded_at.get_or_insert_with(Instant::now);
                done[i] = Some(t0.elapsed());
                pbs[i].finish_with_message(format!("verified, {} sent", human(img.bytes_out)));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let master_out = clients[0].status().images.iter().find(|m| m.uuid == demo.image).map_or(0, |m| m.bytes_out);
    for c in &clients {
        c.shutdown().await;
    }
    for t in tasks {
        let _ = t.await;
    }
    tracker_task.abort();

    let r = rate as f64;
    let bound = kumar_ross(a.nodes, demo.size, r, r, r);
    println!();
    println!("completion times, from the moment the master held the verified image:");
    let mut all = true;
    for (i, d) in done.iter().enumerate().skip(1) {
        let path = node::store::Paths::new(&demo.data_dirs[i]).image(demo.image);
        let verified = d.is_some() && node::cache::sha512_file(&path).is_ok_and(|h| hex::encode(h) == demo.sha512);
        all &= verified;
        match d {
            Some(d) => println!(
                "  worker {i:>2}: {:>7.2} s ({:.2}x the bound) {}",
                d.as_secs_f64(),
                d.as_secs_f64() / bound,
                if verified { "verified" } else { "SHA-512 MISMATCH" }
            ),
            None => println!("  worker {i:>2}: did not complete within {} s", a.timeout),
        }
    }
    let worst = done.iter().skip(1).flatten().max().map_or(f64::NAN, Duration::as_secs_f64);
    println!("kumar-ross bound: {bound:.2} s ({} at {} Mbit/s)", ::node::units::count(a.nodes, "worker"), a.rate);
    println!(
        "one HTTP server at {} Mbit/s would need {:.2} s to serve {} copies",
        a.rate,
        a.nodes as f64 * demo.size as f64 / r,
        a.nodes
    );
    println!("master sent {:.2} image copies", master_out as f64 / demo.size as f64);
    println!("slowest worker: {worst:.2} s = {:.2}x the bound", worst / bound);
    println!(
        "{}",
        if all { "every worker holds the verified image" } else { "NOT every worker holds the verified image" }
    );
    Ok(all)
}

fn human(bytes: u64) -> String {
    node::units::format_size(bytes)
}
