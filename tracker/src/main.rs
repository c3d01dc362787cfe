//! `imageswarm-tracker`: peer discovery hints for an imageswarm site.
// Doc comments on the command-line types are its `--help` text, where
// `<peer id>` is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use libp2p::Multiaddr;
use p2p::tracker::{Tracker, TrackerConfig};

/// Peer discovery hints for an imageswarm site.
///
/// Nodes announce each image they swarm on; the tracker answers with a
/// bounded set of other peers: same-site peers first, complete peers before
/// partial ones, and masters only while few others have the image. Several
/// trackers may serve one site, and nodes keep working (through Kademlia)
/// when all of them are down.
///
/// The first line on stdout is the tracker's address with its
/// /p2p/<peer id>, ready for `imageswarm node --tracker`.
#[derive(Debug, Parser)]
#[command(name = "imageswarm-tracker", version, max_term_width = 100)]
struct Cli {
    /// Listen on this multiaddr, e.g. /ip4/0.0.0.0/tcp/4000.
    #[arg(long, value_name = "MULTIADDR", required_unless_present = "print_peer_id")]
    listen: Option<Multiaddr>,
    /// Keep the tracker's key (and so its peer id) in this file; created
    /// when missing. Without it, every start has a new peer id.
    #[arg(long, value_name = "F")]
    key_file: Option<PathBuf>,
    /// Print the peer id of --key-file's key (making the key if missing)
    /// and exit, without starting: what nodes' --tracker addresses and the
    /// federation file name.
    #[arg(long, requires = "key_file")]
    print_peer_id: bool,
    /// Seconds an announcement stays on record.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    ttl: u64,
    /// Most established connections.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_connections: u32,
    /// Most connections from one IP address: raise it for a site whose
    /// hosts reach the tracker through NAT.
    #[arg(long, default_value_t = p2p::per_ip::DEFAULT_MAX_PER_IP, value_name = "N")]
    max_per_ip: usize,
    /// Take no new connections while the tracker holds more memory than
    /// this many MiB (those it has keep working).
    #[arg(long, default_value_t = p2p::tracker::DEFAULT_MAX_MEMORY >> 20, value_name = "MIB")]
    max_memory: usize,
    /// A site CA (its ca.pem) whose members the tracker serves (repeatable):
    /// it answers only peers whose credential verified, with the site and
    /// role their credential names. Revocations reach it from the nodes.
    #[arg(long = "site-ca", value_name = "FILE")]
    site_ca: Vec<PathBuf>,
    /// The federation file of cooperating sites (as `imageswarm node
    /// --federation` reads it): the tracker also serves the members of every
    /// site it names, which is how the sites' gateways find each other.
    #[arg(long, value_name = "FILE")]
    federation: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics: announcements
    /// answered and refused, and live announcements per image.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Serve anyone, with the site and role they claim: for demos and tests
    /// only. The tracker needs this, --site-ca or --federation.
    #[arg(long)]
    open_site: bool,
    /// Log more on stderr (-v info, -vv debug). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A tracker starts alone, so Kademlia's bootstrap, which libp2p runs
    // when the first listen address comes up, always finds no peers; its
    // warning says nothing wrong, and shows from -vv on.
    let default = ["warn,libp2p_kad::behaviour=error", "info,libp2p_kad::behaviour=error", "debug"]
        [usize::from(cli.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let key = match &cli.key_file {
        Some(p) => p2p::transport::load_or_create_key(p)?,
        None => libp2p::identity::Keypair::generate_ed25519(),
    };
    let Some(listen) = cli.listen.filter(|_| !cli.print_peer_id) else {
        writeln!(std::io::stdout().lock(), "{}", key.public().to_peer_id()).context("writing to stdout")?;
        return Ok(());
    };
    let trusts = !cli.site_ca.is_empty() || cli.federation.is_some();
    let site_cas = match (cli.open_site, trusts) {
        (true, false) => {
            tracing::warn!("--open-site: the tracker answers any host with the peers it knows");
            None
        }
        (true, true) => anyhow::bail!("--open-site serves anyone: it goes with neither --site-ca nor --federation"),
        (false, false) => anyhow::bail!(
            "the tracker needs --site-ca (the site's ca.pem) or --federation, so that only the sites' members \
             learn their peers; --open-site serves anyone, for demos and tests"
        ),
        (false, true) => {
            let mut cas = proto::credential::SiteCas::new();
            for p in &cli.site_ca {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                cas.add_ca(&bytes).with_context(|| format!("{}", p.display()))?;
            }
            if let Some(path) = &cli.federation {
                p2p::federation::Federation::load(path)?.add_cas(&mut cas)?;
            }
            Some(cas)
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut t = Tracker::new(TrackerConfig {
            listen: vec![listen],
            key,
            ttl: Duration::from_secs(cli.ttl),
            quic: false,
            max_connections: cli.max_connections,
            max_per_ip: cli.max_per_ip,
            max_memory: cli.max_memory << 20,
            site_cas,
            metrics: cli.metrics,
        })?;
        let addrs = t.listen_addrs().await;
        let mut out = std::io::stdout().lock();
        for a in &addrs {
            writeln!(out, "{a}").context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")?;
        drop(out);
        t.run().await;
        Ok(())
    })
}
