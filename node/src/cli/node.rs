//! `imageswarm node` and `imageswarm wait`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use libp2p::Multiaddr;
use node::federation::Federation;
use node::fetch::Timeouts;
use node::net::{self, Membership, NodeConfig, SiteShareNames};
use node::site::Site;
use node::site::declared::{DeclaredEndorser, DeclaredSubscription};
use proto::swarm::Role;
use serde::Deserialize;

/// Every setting of a node. Each key of the `--config` TOML file has the
/// flag's name (`upload-limit = 200`); flags win over the file. The file
/// alone may also name the data directory and declare the host's endorsers
/// and subscriptions.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct NodeArgs {
    /// Listen on this multiaddr (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(default)]
    listen: Vec<Multiaddr>,
    /// A tracker, best with its /p2p/<peer id> (repeatable). Without it, the
    /// node pins the peer id the tracker shows at the first connection
    /// (DATA_DIR/trackers.pinned) and warns once. Trackers are hints: when
    /// none answers, the node finds peers through Kademlia.
    #[arg(long = "tracker", value_name = "MULTIADDR", num_args = 1..)]
    #[serde(default)]
    tracker: Vec<Multiaddr>,
    /// Another node to connect to at start, with its /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(default)]
    bootstrap: Vec<Multiaddr>,
    /// This host's site; peers of the same site are preferred, and workers
    /// exchange chunks only within their site.
    #[arg(long, value_name = "NAME")]
    site: Option<String>,
    /// Run as a master: download images from their source (hv:uri) and seed.
    /// In a closed site the credential's role decides; the flag may only
    /// repeat it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    master: Option<bool>,
    /// Fetch images from other sites for this site. In a closed site the
    /// credential's role decides (`site issue --role gateway`); the flag may
    /// only repeat it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    gateway: Option<bool>,
    /// With --gateway: this gateway's place among its site's gateways,
    /// counted from 0, e.g. 1/2 for the second of two. It fetches across
    /// sites only its stripe of each image; the rest reaches it from its own
    /// site, so no chunk crosses into the site twice. Without it a gateway
    /// takes its place among the gateways of its site it is connected to,
    /// and the others take over its stripe when it goes.
    #[arg(long, value_name = "I/N")]
    gateway_stripe: Option<GatewayStripe>,
    /// With --gateway and --sharing-sites: the site where the masters are.
    #[arg(long, value_name = "NAME")]
    source_site: Option<String>,
    /// With --gateway and --source-site: the sites that fetch from the
    /// source site (comma-separated, the same list at every site). They
    /// split each image: a gateway asks the source only for its site's
    /// share and trades the rest with the other sites, so the source
    /// site's WAN uplink carries one copy instead of one per site. Without
    /// it, --federation arranges the same: the source is the first site in
    /// the file with a master in the image's swarm, and the file's other
    /// sites share.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    #[serde(default)]
    sharing_sites: Vec<String>,
    /// Let this worker download from hv:uri itself (off: only masters do,
    /// which protects the endorser's server).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    back_to_source: Option<bool>,
    /// Upload cap in Mbit/s.
    #[arg(long, value_name = "MBIT")]
    upload_limit: Option<f64>,
    /// Download cap in Mbit/s.
    #[arg(long, value_name = "MBIT")]
    download_limit: Option<f64>,
    /// A master's egress cap in Mbit/s, on top of the upload cap.
    #[arg(long, value_name = "MBIT")]
    master_egress_limit: Option<f64>,
    /// Cap in Mbit/s on chunk traffic to and from other sites (a gateway's
    /// or master's WAN link), both ways, on top of the other caps.
    #[arg(long, value_name = "MBIT")]
    wan_limit: Option<f64>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Also listen and dial on QUIC (give a /udp/.../quic-v1 --listen address).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    quic: Option<bool>,
    /// Seconds between list updates (fetch, verify, settle the cache).
    #[arg(long, value_name = "SECS")]
    update_interval: Option<u64>,
    /// Seconds between announcements to the trackers.
    #[arg(long, value_name = "SECS")]
    announce_interval: Option<u64>,
    /// Seconds between full checks of the installed images against their
    /// lists (also one at start); 0: never (default 86400).
    #[arg(long, value_name = "SECS")]
    verify_interval: Option<u64>,
    /// Seconds a peer that sent bad data stays banned.
    #[arg(long, value_name = "SECS")]
    ban_secs: Option<u64>,
    /// Most connected peers.
    #[arg(long, value_name = "N")]
    max_peers: Option<usize>,
    /// Most connections from one IP address (default 16): raise it for
    /// peers behind NAT, or many nodes on one host.
    #[arg(long, value_name = "N")]
    max_per_ip: Option<usize>,
    /// Chunk requests in flight per peer (default 2; more suits a node
    /// with a single source).
    #[arg(long, value_name = "N")]
    pipeline: Option<u32>,
    /// This node's credential (from `imageswarm site issue`). With
    /// --site-ca, the site is closed: peers see nothing from this node
    /// until their own credential verified.
    #[arg(long, value_name = "FILE")]
    credential: Option<PathBuf>,
    /// A site CA (its ca.pem) whose members this node admits (repeatable:
    /// cooperating sites add theirs).
    #[arg(long = "site-ca", value_name = "FILE")]
    #[serde(default)]
    site_ca: Vec<PathBuf>,
    /// A CRL file of the site (its crl.pem), read again whenever it changes;
    /// give it to the masters: revocations spread from them to every node.
    #[arg(long, value_name = "FILE")]
    site_crl: Option<PathBuf>,
    /// The federation file, the same at every cooperating site: the sites'
    /// names, CAs and trackers (docs/CLI.md). The node also admits the
    /// members of every site it names (and of no other), and without
    /// --tracker uses its own site's trackers, a gateway or master every
    /// site's. Gateways arrange themselves from it: no other flag is needed.
    #[arg(long, value_name = "FILE")]
    federation: Option<PathBuf>,
    /// Admit anyone, with the site and role they claim: for demos and
    /// tests only. A node needs this or --site-ca.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    open_site: Option<bool>,
    /// Read settings from this TOML file (flags override it). Besides the
    /// flags, it may name the data directory (`data-dir`) and declare the
    /// host's endorsers (`[[endorser]]` with `dn` and `issuer`) and
    /// subscriptions (`[[subscription]]` with `url` and `new-images`): the
    /// node brings its store in step with them at start and on SIGHUP.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// The data directory (config file only; --data-dir wins).
    #[arg(skip)]
    data_dir: Option<PathBuf>,
    /// Endorsers approved (config file only).
    #[arg(skip)]
    #[serde(default)]
    endorser: Vec<DeclaredEndorser>,
    /// Lists subscribed to (config file only).
    #[arg(skip)]
    #[serde(default)]
    subscription: Vec<DeclaredSubscription>,
}

impl NodeArgs {
    /// The flags, completed from the config file.
    fn merged(self) -> anyhow::Result<Self> {
        let Some(f) = self.file()? else { return Ok(self) };
        let list = |a: Vec<Multiaddr>, b: Vec<Multiaddr>| if a.is_empty() { b } else { a };
        Ok(Self {
            listen: list(self.listen, f.listen),
            tracker: list(self.tracker, f.tracker),
            bootstrap: list(self.bootstrap, f.bootstrap),
            site: self.site.or(f.site),
            master: self.master.or(f.master),
            gateway: self.gateway.or(f.gateway),
            gateway_stripe: self.gateway_stripe.or(f.gateway_stripe),
            source_site: self.source_site.or(f.source_site),
            sharing_sites: if self.sharing_sites.is_empty() { f.sharing_sites } else { self.sharing_sites },
            back_to_source: self.back_to_source.or(f.back_to_source),
            upload_limit: self.upload_limit.or(f.upload_limit),
            download_limit: self.download_limit.or(f.download_limit),
            master_egress_limit: self.master_egress_limit.or(f.master_egress_limit),
            wan_limit: self.wan_limit.or(f.wan_limit),
            metrics: self.metrics.or(f.metrics),
            quic: self.quic.or(f.quic),
            update_interval: self.update_interval.or(f.update_interval),
            announce_interval: self.announce_interval.or(f.announce_interval),
            verify_interval: self.verify_interval.or(f.verify_interval),
            ban_secs: self.ban_secs.or(f.ban_secs),
            max_peers: self.max_peers.or(f.max_peers),
            max_per_ip: self.max_per_ip.or(f.max_per_ip),
            pipeline: self.pipeline.or(f.pipeline),
            credential: self.credential.or(f.credential),
            site_ca: if self.site_ca.is_empty() { f.site_ca } else { self.site_ca },
            site_crl: self.site_crl.or(f.site_crl),
            federation: self.federation.or(f.federation),
            open_site: self.open_site.or(f.open_site),
            config: self.config,
            data_dir: f.data_dir,
            endorser: f.endorser,
            subscription: f.subscription,
        })
    }

    /// What the file --config names holds, read afresh.
    fn file(&self) -> anyhow::Result<Option<Self>> {
        let Some(path) = &self.config else { return Ok(None) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(toml::from_str(&text).with_context(|| format!("{}", path.display()))?))
    }

    /// Brings `site`'s store in step with the endorsers and subscriptions
    /// the config file declares now.
    fn bring_in_step(&self, site: &Site) -> anyhow::Result<()> {
        let Some(f) = self.file()? else { return Ok(()) };
        let failed = site.bring_in_step(&f.endorser, &f.subscription, node::now())?;
        if failed > 0 {
            tracing::warn!(failed, "declarations of the config file not taken (see the errors above)");
        }
        Ok(())
    }

    /// The node's configuration for `data_dir`.
    pub(crate) fn into_config(self, data_dir: &Path) -> anyhow::Result<NodeConfig> {
        let a = self.merged()?;
        let membership = membership(&a)?;
        // In a closed site the credential names the site and the role; the
        // flags may only repeat them (the node refuses to start otherwise).
        let (site, role) = match &membership {
            Membership::Closed { credential, .. } => {
                (proto::credential::site_named(credential)?, Some(proto::credential::role_named(credential)?))
            }
            Membership::Open => (String::new(), None),
        };
        let site = match a.site.clone() {
            Some(s) => s,
            None if role.is_some() => site,
            None => bail!("--site is required (or `site` in the config file)"),
        };
        let mut c = NodeConfig::new(data_dir.to_path_buf(), site);
        c.membership = membership;
        c.listen = if a.listen.is_empty() { vec!["/ip4/0.0.0.0/tcp/0".parse()?] } else { a.listen };
        c.trackers = a.tracker;
        c.bootstrap = a.bootstrap;
        c.master = a.master.unwrap_or_else(|| role == Some(Role::Master));
        c.gateway = a.gateway.unwrap_or_else(|| role == Some(Role::Gateway));
        if let Some(path) = &a.federation {
            node::federation::apply(&Federation::load(path)?, &mut c)?;
        }
        if !c.gateway && (a.gateway_stripe.is_some() || a.source_site.is_some() || !a.sharing_sites.is_empty()) {
            bail!("--gateway-stripe, --source-site and --sharing-sites apply to gateways only (add --gateway)");
        }
        c.gateway_stripe = a.gateway_stripe.map(|s| (s.index, s.count));
        c.site_share = match (a.source_site, a.sharing_sites) {
            (None, sites) if sites.is_empty() => None,
            (Some(source), sites) if !sites.is_empty() => {
                if sites.contains(&source) {
                    bail!(
                        "--sharing-sites lists the source site {source:?}: it holds the masters and fetches from no one"
                    );
                }
                if source != c.site && !sites.contains(&c.site) {
                    bail!("--sharing-sites must list this gateway's own site {:?}", c.site);
                }
                Some(SiteShareNames { source, sites })
            }
            _ => bail!("--source-site and --sharing-sites go together"),
        };
        c.back_to_source = a.back_to_source.unwrap_or(false);
        c.upload_limit = a.upload_limit.map(mbit).transpose()?;
        c.download_limit = a.download_limit.map(mbit).transpose()?;
        c.master_egress_limit = a.master_egress_limit.map(mbit).transpose()?;
        c.wan_limit = a.wan_limit.map(mbit).transpose()?;
        c.metrics = a.metrics;
        c.quic = a.quic.unwrap_or(false);
        if let Some(s) = a.update_interval {
            c.update_interval = Duration::from_secs(s.max(1));
        }
        if let Some(s) = a.announce_interval {
            c.announce_interval = Duration::from_secs(s.max(1));
        }
        if let Some(s) = a.verify_interval {
            c.verify_interval = (s > 0).then(|| Duration::from_secs(s));
        }
        if let Some(s) = a.ban_secs {
            c.ban = Duration::from_secs(s);
        }
        if let Some(n) = a.max_peers {
            c.max_peers = n;
        }
        if let Some(n) = a.max_per_ip {
            c.limits.max_per_ip = n.max(1);
        }
        if let Some(n) = a.pipeline {
            c.pipeline = n.max(1);
        }
        Ok(c)
    }
}

/// Who may join, from --credential, --site-ca, --site-crl and --open-site
/// (the federation file adds its sites' CAs).
fn membership(a: &NodeArgs) -> anyhow::Result<Membership> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    match (a.open_site.unwrap_or(false), a.site_ca.is_empty(), &a.credential) {
        (true, true, None) => {
            tracing::warn!("--open-site: any host that reaches this node gets its lists, manifests and chunks");
            Ok(Membership::Open)
        }
        (true, _, _) => bail!("--open-site admits anyone: it goes with neither --site-ca nor --credential"),
        (false, true, _) => bail!(
            "a node needs --site-ca (its site's ca.pem) and --credential (from `imageswarm site issue`), \
             so that only the site's members get its images; --open-site admits anyone, for demos and tests"
        ),
        (false, false, None) => bail!("--site-ca needs --credential: this node must prove its own membership too"),
        (false, false, Some(cred)) => {
            let mut cas = proto::credential::SiteCas::new();
            for p in &a.site_ca {
                cas.add_ca(&read(p)?).with_context(|| format!("{}", p.display()))?;
            }
            if let Some(p) = &a.site_crl {
                cas.offer_crl(&read(p)?).with_context(|| format!("{}", p.display()))?;
            }
            Ok(Membership::Closed { credential: read(cred)?, cas, crl_file: a.site_crl.clone() })
        }
    }
}

/// `--gateway-stripe I/N`: a place among `N` gateways, `I < N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct GatewayStripe {
    index: u32,
    count: u32,
}

impl std::str::FromStr for GatewayStripe {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not I/N with I < N, e.g. 0/2 for the first of two gateways");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl TryFrom<String> for GatewayStripe {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Mbit/s as bytes per second.
pub(crate) fn mbit(m: f64) -> anyhow::Result<u64> {
    if !(m.is_finite() && m > 0.0) {
        bail!("a rate must be a positive number of Mbit/s, not {m}");
    }
    Ok((m * 1e6 / 8.0) as u64)
}

/// Runs a node until SIGINT or SIGTERM; SIGHUP brings the store in step with
/// the config file's declarations and runs an update cycle now. So does the
/// start, when the file declares any, once the node runs (a list source
/// that does not answer delays nothing).
#[allow(clippy::print_stdout)]
pub(crate) fn run_node(data_dir: Option<&Path>, args: NodeArgs) -> anyhow::Result<ExitCode> {
    let file = args.file()?;
    let declares = file.as_ref().is_some_and(|f| !f.endorser.is_empty() || !f.subscription.is_empty());
    let from_file = file.and_then(|f| f.data_dir);
    let dir = super::site::data_dir(data_dir.or(from_file.as_deref()))?;
    let declared = Arc::new(args.clone());
    let cfg = args.into_config(dir)?;
    let site = Arc::new(Site::open(dir, Timeouts::default())?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        // First, so that a reload asked while the node starts is not fatal.
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut hup) = (signal(SignalKind::terminate())?, signal(SignalKind::hangup())?);
        let (mut client, task) = net::start_on(cfg, site.clone()).await?;
        // Host commands (`images`, `image revoke`, ...) run inside the node
        // while it holds the store, then the node re-reads what it serves.
        let in_node = super::InNode { site: site.clone(), client: client.clone(), turn: std::sync::Mutex::new(()) };
        node::control::serve(dir, move |args| super::run_in_node(&in_node, args))?;
        for a in client.listen_addrs().await? {
            println!("listening on {a}");
        }
        if declares {
            reload(&client, &site, &declared, "start");
        }
        let mut task = task;
        loop {
            tokio::select! {
                r = &mut task => return r.context("the node task failed")?.map(|()| ExitCode::SUCCESS).map_err(Into::into),
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                // SIGHUP (`systemctl reload`): the node goes on meanwhile.
                _ = hup.recv() => reload(&client, &site, &declared, "SIGHUP"),
            }
        }
        client.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// In the background: brings the store in step with the config file's
/// endorsers and subscriptions, then runs an update cycle, logged as it
/// ends. `why` names what asked for it.
fn reload(client: &net::Client, site: &Arc<Site>, declared: &Arc<NodeArgs>, why: &'static str) {
    tracing::info!(why, "reading the config file's declarations and updating");
    let (c, site, declared) = (client.clone(), site.clone(), declared.clone());
    tokio::spawn(async move {
        match tokio::task::spawn_blocking(move || declared.bring_in_step(&site)).await {
            Ok(Ok(())) => c.request_sync(),
            Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "the config file was not read again"),
            Err(e) => tracing::error!(error = %e, "bringing the store in step with the config file failed"),
        }
        match c.update_now().await {
            Ok(r) if r.failed() => {
                tracing::warn!(why, last_error = ?c.status().last_error, "update: a list or image failed");
            }
            Ok(_) => tracing::info!(why, "update done"),
            Err(e) => tracing::warn!(why, error = %e, "update failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        node: NodeArgs,
    }

    #[test]
    fn the_config_file_sets_what_the_flags_do_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            r#"
            site = "cern"
            open-site = true
            listen = ["/ip4/0.0.0.0/tcp/4001"]
            tracker = ["/ip4/10.0.0.5/tcp/4000"]
            master = true
            upload-limit = 800
            download-limit = 900
            metrics = "127.0.0.1:9464"
            announce-interval = 7
            pipeline = 4
            "#,
        )
        .unwrap();
        let args =
            Wrap::parse_from(["x", "--config", file.to_str().unwrap(), "--upload-limit", "200", "--site", "lyon"]);
        let c = args.node.into_config(dir.path()).unwrap();
        assert_eq!(c.site, "lyon", "the flag wins");
        assert_eq!(c.upload_limit, Some(25_000_000), "200 Mbit/s from the flag");
        assert_eq!(c.download_limit, Some(112_500_000), "900 Mbit/s from the file");
        assert!(c.master);
        assert_eq!(c.listen, vec!["/ip4/0.0.0.0/tcp/4001".parse::<Multiaddr>().unwrap()]);
        assert_eq!(c.trackers.len(), 1);
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.announce_interval, Duration::from_secs(7));
        assert_eq!(c.pipeline, 4);

        std::fs::write(&file, "site = \"x\"\nopen-site = true\nuplaod-limit = 1\n").unwrap();
        let args = Wrap::parse_from(["x", "--config", file.to_str().unwrap()]);
        let err = args.node.into_config(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("uplaod-limit"), "a misspelt key is an error naming it: {err:#}");
    }

    #[test]
    fn a_gateway_takes_its_stripe_and_the_site_share_from_flags_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "site = \"east\"\nopen-site = true\ngateway = true\ngateway-stripe = \"1/2\"\nsource-site = \"home\"\nsharing-sites = [\"east\", \"west\"]\n").unwrap();
        let c = Wrap::parse_from(["x", "--config", file.to_str().unwrap()]).node.into_config(dir.path()).unwrap();
        assert_eq!(c.gateway_stripe, Some((1, 2)));
        let share = SiteShareNames { source: "home".into(), sites: vec!["east".into(), "west".into()] };
        assert_eq!(c.site_share, Some(share));

        let flags = [
            "x",
            "--open-site",
            "--site",
            "west",
            "--gateway",
            "--source-site",
            "home",
            "--sharing-sites",
            "east,west",
        ];
        let c = Wrap::parse_from(flags).node.into_config(dir.path()).unwrap();
        assert_eq!(c.site_share.unwrap().sites, ["east", "west"]);

        for (bad, says) in [
            (vec!["--site", "east", "--gateway-stripe", "0/2"], "add --gateway"),
            (vec!["--site", "east", "--gateway", "--source-site", "home"], "go together"),
            (vec!["--site", "north", "--gateway", "--source-site", "home", "--sharing-sites", "east,west"], "own site"),
            (
                vec!["--site", "east", "--gateway", "--source-site", "home", "--sharing-sites", "home,east"],
                "source site",
            ),
        ] {
            let err = Wrap::parse_from(["x", "--open-site"].into_iter().chain(bad)).node.into_config(dir.path());
            let err = err.unwrap_err();
            assert!(format!("{err:#}").contains(says), "{err:#}");
        }
        for bad in ["2/2", "1", "a/2", "0/0"] {
            assert!(bad.parse::<GatewayStripe>().is_err(), "{bad}");
        }
        assert_eq!("0/3".parse::<GatewayStripe>(), Ok(GatewayStripe { index: 0, count: 3 }));
    }

    #[test]
    fn a_node_is_closed_unless_told_to_admit_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let site = node::authority::SiteDir::new(&dir.path().join("authority"));
        node::authority::init(&site, "cern", 30, node::now()).unwrap();
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let raw = p2p::admission::ed25519_key(&peer).unwrap();
        let pem = node::authority::issue(&site, &peer.to_string(), &raw, Role::Worker, 1, node::now());
        let cred = dir.path().join("cred.pem");
        std::fs::write(&cred, pem.unwrap()).unwrap();
        let (ca, cred) = (site.ca().display().to_string(), cred.display().to_string());
        let config = |flags: &[&str]| {
            Wrap::parse_from(["x"].iter().chain(flags)).node.into_config(dir.path()).map_err(|e| format!("{e:#}"))
        };
        for (flags, says) in [
            (vec!["--site", "cern"], "--site-ca"),
            (vec!["--site", "cern", "--site-ca", &ca], "--credential"),
            (vec!["--site", "cern", "--open-site", "--site-ca", &ca], "goes with neither"),
        ] {
            let err = config(&flags).unwrap_err();
            assert!(err.contains(says), "{flags:?}: {err}");
        }
        let c = config(&["--site-ca", &ca, "--credential", &cred]).unwrap();
        assert_eq!(c.site, "cern", "the site comes from the credential");
        assert!(matches!(c.membership, Membership::Closed { .. }));
        assert!(matches!(config(&["--site", "x", "--open-site"]).unwrap().membership, Membership::Open));

        // A federation: the node admits the sites it names, and finds its
        // own site's trackers in it.
        let lyon = node::authority::SiteDir::new(&dir.path().join("lyon"));
        node::authority::init(&lyon, "lyon", 30, node::now()).unwrap();
        let tracker = |n: u8| format!("/ip4/192.0.2.{n}/tcp/7000/p2p/{peer}");
        let file = dir.path().join("federation.toml");
        let write = |sites: &[(&str, &node::authority::SiteDir, u8)]| {
            let text: String = sites
                .iter()
                .map(|(n, d, t)| {
                    format!(
                        "[[site]]\nname = {n:?}\nca = {:?}\ntrackers = [{:?}]\n",
                        d.ca().display().to_string(),
                        tracker(*t)
                    )
                })
                .collect();
            std::fs::write(&file, text).unwrap();
        };
        write(&[("cern", &site, 1), ("lyon", &lyon, 2)]);
        let fed = file.display().to_string();
        let c = config(&["--site-ca", &ca, "--credential", &cred, "--federation", &fed]).unwrap();
        let Membership::Closed { cas, .. } = &c.membership else { panic!("closed") };
        assert_eq!(cas.sites().collect::<Vec<_>>(), ["cern", "lyon"]);
        assert_eq!(c.trackers, [tracker(1).parse::<Multiaddr>().unwrap()], "a worker uses its own site's");
        assert_eq!(c.federation, ["cern", "lyon"]);
        assert!(!c.gateway && !c.master);

        // A gateway credential makes a gateway, which finds every site's
        // trackers in the file.
        let gateway = dir.path().join("gateway.pem");
        let pem = node::authority::issue(&site, &peer.to_string(), &raw, Role::Gateway, 1, node::now()).unwrap();
        std::fs::write(&gateway, pem).unwrap();
        let gateway = gateway.display().to_string();
        let c = config(&["--site-ca", &ca, "--credential", &gateway, "--federation", &fed]).unwrap();
        assert!(c.gateway && !c.master, "the role is the credential's");
        assert_eq!(c.trackers.len(), 2, "a gateway uses every site's trackers");
        write(&[("lyon", &lyon, 2)]);
        let err = config(&["--site-ca", &ca, "--credential", &cred, "--federation", &fed]).unwrap_err();
        assert!(err.contains("does not name this node's site"), "{err}");
    }
}
