//! `netsim run SCENARIO.toml`: simulate a scenario, with baselines, and print
//! a report whose last line is the `result:` line.
#![allow(clippy::print_stdout, clippy::print_stderr)] // the report and its errors are the output

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use netsim::flows::Sharing;
use netsim::report::{self, Bound, Summary};
use netsim::scenario::Scenario;
use netsim::sim::{self, Options};
use proto::swarm::PickerMode;

/// A large simulation holds about 1 GiB of node state and touches it at
/// random. mimalloc backs its segments with transparent huge pages where the
/// kernel allows them, which spares most TLB misses, so such a simulation
/// runs faster than with the system allocator (docs/BENCHMARKS.md has the
/// measurements).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flow-level simulation of imageswarm's swarm at site scale.
#[derive(Debug, Parser)]
#[command(name = "netsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a scenario and report completion times against the
    /// Kumar–Ross bound, beside two baselines run in the same simulator:
    /// every host downloading from the masters (central HTTP), and random
    /// chunks from random peers (no rarest-first, no locality).
    Run {
        /// The scenario (TOML), e.g. netsim/scenarios/site-10k.toml.
        scenario: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Write per-node completion times here (default: <scenario>.csv in
        /// the current directory).
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write the completion-time distribution plot here (default:
        /// <scenario>.svg in the current directory).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Skip the random-peer baseline (it runs beside the main run, on a
        /// second core, and costs about as much).
        #[arg(long)]
        no_random_baseline: bool,
        /// Share capacity max-min fairly, recomputed globally (exact; for
        /// small scenarios only).
        #[arg(long)]
        exact: bool,
    },
    /// Run a scenario under many seeds and print each seed whose run fails
    /// the checks: an invariant failed (see the scenario's `[faults]`), or
    /// an honest host never completed. Exits 1 if any seed fails. The same
    /// seed gives the same run, so `run --seed N` replays a failure.
    Sweep {
        /// The scenario (TOML), e.g. netsim/scenarios/faults.toml.
        scenario: PathBuf,
        /// How many seeds.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    // Progress of long runs goes to stderr; stdout carries the report.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let (scenario, seed, csv, svg, no_random_baseline, exact) = match Cli::parse().command {
        Command::Run { scenario, seed, csv, svg, no_random_baseline, exact } => {
            (scenario, seed, csv, svg, no_random_baseline, exact)
        }
        Command::Sweep { scenario, seeds, from } => return sweep(&scenario, from, seeds),
    };
    let mut s = Scenario::load(&scenario)?;
    if let Some(seed) = seed {
        s.seed = seed;
    }
    let bound = Bound::of(&s)?;
    let t_min = bound.value();
    let image = s.image_bytes()? as f64;
    let hosts: u32 = s.sites.iter().map(|x| x.hosts).sum();
    let masters: u32 = s.sites.iter().map(|x| x.masters).sum();
    println!(
        "scenario {}: {hosts} hosts in {} sites, {masters} masters, image {:.2} GiB in {} chunks of {} KiB, seed {}",
        s.name,
        s.sites.len(),
        image / f64::from(1u32 << 30),
        s.image_bytes()?.div_ceil(s.chunk_bytes()?),
        s.chunk_bytes()? >> 10,
        s.seed
    );
    println!(
        "kumar-ross bound: {t_min:.3} s (F/u_s {:.3} s, F/d_min {:.3} s, N*F/(u_s+sum u) {:.3} s, WAN {:.3} s)",
        bound.seed, bound.download, bound.aggregate, bound.wan
    );
    let sharing = if exact { Sharing::Exact } else { Sharing::Local };

    let central = report::central(&s)?;
    println!("baseline central HTTP:  {}", Summary::of(&central, t_min, image).fields());
    // The random baseline and imageswarm's run are independent: they run
    // side by side, one core each.
    let timed = |opt: &Options| {
        let started = Instant::now();
        sim::simulate(&s, opt, t_min).map(|o| (o, started.elapsed().as_secs_f64()))
    };
    let baseline = Options {
        name: "random peer",
        picker: PickerMode::Random,
        locality: false,
        master_policy: false,
        sharing,
        ..Options::default()
    };
    let (random, ours) = std::thread::scope(|scope| {
        let random = (!no_random_baseline).then(|| scope.spawn(|| timed(&baseline)));
        let ours = timed(&Options { sharing, ..Options::default() });
        let random = random.map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).transpose();
        (random, ours)
    });
    let random = match random? {
        Some((o, wall)) => {
            let sum = Summary::of(&o, t_min, image);
            println!(
                "baseline random peer:   {}  ({} of {} done, {wall:.1} s wall)",
                sum.fields(),
                sum.completed,
                sum.nodes
            );
            Some(o)
        }
        None => None,
    };
    let (ours, wall) = ours?;
    let sum = Summary::of(&ours, t_min, image);
    println!(
        "imageswarm:             {}  ({} of {} done, {} events, {wall:.1} s wall)",
        sum.fields(),
        sum.completed,
        sum.nodes,
        ours.events
    );
    let uses: Vec<String> = ours.download_use.iter().map(|u| format!("{:.0}%", 100.0 * u)).collect();
    println!("imageswarm download use per tenth of the bound: {}", uses.join(" "));
    let uses: Vec<String> = ours.master_use.iter().map(|u| format!("{:.0}%", 100.0 * u)).collect();
    println!("imageswarm master upload use per tenth of the bound: {}", uses.join(" "));
    if s.sites.len() > 1 {
        for line in report::site_lines(&s, &ours, t_min, image) {
            println!("imageswarm {line}");
        }
    }
    let malicious = ours.nodes.iter().filter(|n| n.malicious).count();
    if malicious > 0 {
        println!(
            "malicious hosts: {malicious}; bans: {}; most corrupt chunks one honest host took from one bad peer: {}",
            ours.bans, ours.max_corrupt_per_pair
        );
    }
    let stem = scenario.file_stem().map(|x| x.to_string_lossy().into_owned()).unwrap_or_else(|| "netsim".into());
    let csv = csv.unwrap_or_else(|| PathBuf::from(format!("{stem}.csv")));
    let svg = svg.unwrap_or_else(|| PathBuf::from(format!("{stem}.svg")));
    report::write_csv(&csv, &ours, t_min).context("writing the CSV")?;
    let mut runs = vec![("imageswarm", &ours), ("central HTTP", &central)];
    if let Some(r) = &random {
        runs.push(("random peer", r));
    }
    report::write_svg(&svg, &format!("{}: completion time / bound", s.name), &runs, t_min)
        .context("writing the SVG")?;
    println!("wrote {} and {}", csv.display(), svg.display());
    println!(
        "result: nodes={} sites={} p50={:.3} p99={:.3} max={:.3} master_egress={:.2} wan_max={:.2}",
        hosts,
        s.sites.len(),
        sum.p50,
        sum.p99,
        sum.max,
        sum.master_egress,
        sum.wan_max
    );
    Ok(())
}

/// `netsim sweep`: the seeds `from..from + seeds`, two at a time.
fn sweep(scenario: &std::path::Path, from: u64, seeds: u64) -> anyhow::Result<()> {
    let base = Scenario::load(scenario)?;
    let bound = Bound::of(&base)?.value();
    let next = std::sync::atomic::AtomicU64::new(from);
    let failed = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= from + seeds {
                        return;
                    }
                    let s = Scenario { seed, ..base.clone() };
                    let why = match sim::simulate(&s, &Options::default(), bound) {
                        Ok(o) => o.failure(),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(why) = why {
                        println!("seed {seed}: FAILED: {why}");
                        failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(seed);
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    failed.sort_unstable();
    println!(
        "result: scenario={} seeds={from}..{} failed={} ({:.0} s){}",
        base.name,
        from + seeds - 1,
        failed.len(),
        started.elapsed().as_secs_f64(),
        if failed.is_empty() { String::new() } else { format!(" failing seeds: {failed:?}") }
    );
    if failed.is_empty() { Ok(()) } else { std::process::exit(1) }
}
