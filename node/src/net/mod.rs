//! The swarm node: images moved between hosts in verified chunks over libp2p.
//!
//! # Contract
//! * [`start`] runs one node on a tokio runtime and returns a [`Client`]
//!   handle; the node's state lives in one event loop task (rust-libp2p's
//!   client + event loop structure). Every channel between them is bounded.
//! * **What is served**: only images that the store holds endorsed (on a
//!   list that verifies now), approved and cached, and only chunks that are
//!   durable and verified. Everything else is refused with
//!   [`proto::wire::Refusal::NotEndorsed`] or `NotHeld`. After every update
//!   cycle the set of images is recomputed, so an image whose list expired,
//!   was superseded or revoked stops being served at once, and the update
//!   moves its data out of the cache.
//! * **What is accepted**: a chunk counts only after its BLAKE3 hash matches
//!   a manifest whose root the signed list vouches for and it is written;
//!   it is recorded as present only once synced to disk, in group commits
//!   (see [`crate::cache::Cache::commit_received`]). A peer that
//!   sends a chunk that fails the check is disconnected and banned for
//!   [`NodeConfig::ban`]; the chunk is fetched elsewhere.
//! * **Back to source**: only masters download from `hv:uri`, unless
//!   [`NodeConfig::back_to_source`] says otherwise.
//! * **Discovery**: trackers first; Kademlia provider records when no
//!   tracker answers (open sites only); and peers already known.
//! * **Membership**: in a closed site ([`Membership::Closed`]) a peer is
//!   served nothing, and asked nothing, until its credential verified and
//!   it admitted this node in turn ([`p2p::admission`]); site and role are
//!   the credential's. Newer CRLs pass from peer to peer, and a peer whose
//!   credential is revoked is disconnected and blocked.
//! * **Limits**: token buckets on upload and download, a separate one on a
//!   master's egress, one on chunk bytes to and from other sites (the WAN), connection and stream limits, and the swarm's own
//!   bound on requests in flight per peer.

mod behaviour;
mod event_loop;
mod metrics;
mod notices;
mod rate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use behaviour::{Behaviour, BehaviourEvent, Limits, build_swarm, lists_topic, load_or_create_key};
use libp2p::{Multiaddr, PeerId};
pub use p2p::transport::peer_of;
use proto::credential::SiteCas;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::site::UpdateReport;
use crate::{Error, Result};

/// Everything a node is told; the CLI fills it from flags and a TOML file.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory (initialised with `imageswarm init`).
    pub data_dir: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Trackers, each with its `/p2p/<peer id>`.
    pub trackers: Vec<Multiaddr>,
    /// Other nodes to connect to at start, each with its `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// This node's site.
    pub site: String,
    /// Whether this node is a master (goes back to source and seeds).
    pub master: bool,
    /// Whether this worker fetches between sites for its site.
    pub gateway: bool,
    /// For a gateway: its `(index, count)` among its site's gateways, fixed
    /// (otherwise its place among the gateways it sees). It fetches across
    /// sites only its stripe of the chunks, and receives the rest from its
    /// own site (see `proto::swarm::FetchStripe`).
    pub gateway_stripe: Option<(u32, u32)>,
    /// For a gateway: how the sites that fetch from the masters' site split
    /// the image between them, fixed (otherwise arranged from
    /// `federation`).
    pub site_share: Option<SiteShareNames>,
    /// The cooperating sites, in the federation file's order
    /// ([`crate::federation::apply`]).
    pub federation: Vec<String>,
    /// Whether a worker may download from `hv:uri` itself.
    pub back_to_source: bool,
    /// Upload cap in bytes per second.
    pub upload_limit: Option<u64>,
    /// Download cap in bytes per second.
    pub download_limit: Option<u64>,
    /// A master's egress cap in bytes per second (on top of the upload cap).
    pub master_egress_limit: Option<u64>,
    /// A cap in bytes per second on chunk bytes to and from peers of other
    /// sites (a gateway's or master's WAN link), on top of the others.
    pub wan_limit: Option<u64>,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
    /// Listen and dial on QUIC too.
    pub quic: bool,
    /// How often lists are fetched and the cache settled.
    pub update_interval: Duration,
    /// How often installed images are checked against their lists again,
    /// in full (also once at start); `None`: never.
    pub verify_interval: Option<Duration>,
    /// How often each image is announced to the trackers.
    pub announce_interval: Duration,
    /// How long a peer that sent bad data stays banned.
    pub ban: Duration,
    /// Connection and stream limits.
    pub limits: Limits,
    /// The node dials peers while it has fewer connections than this.
    pub max_peers: usize,
    /// Chunk requests in flight per peer (the state machine's pipeline).
    /// The state machine's default, 2: deeper pipelines pile a node's
    /// requests onto its first few peers (docs/BENCHMARKS.md, the testbed).
    /// A node with a single source gains from more.
    pub pipeline: u32,
    /// Who may join this node's swarm.
    pub membership: Membership,
}

/// Who may join a node's swarm ([`p2p::admission`]).
#[derive(Debug, Clone, Default)]
pub enum Membership {
    /// Anyone, with the site and role they claim (`--open-site`: demos and
    /// tests).
    #[default]
    Open,
    /// Members of the sites whose CAs are given, with the site and role
    /// their credentials name.
    Closed {
        /// This node's credential (PEM or DER).
        credential: Vec<u8>,
        /// The site CAs, with any CRLs taken already.
        cas: SiteCas,
        /// A CRL file read again whenever it changes (a master's copy of
        /// the site's `crl.pem`).
        crl_file: Option<PathBuf>,
    },
}

impl NodeConfig {
    /// Defaults for a worker of `site` storing in `data_dir`.
    pub fn new(data_dir: PathBuf, site: String) -> Self {
        Self {
            data_dir,
            listen: Vec::new(),
            trackers: Vec::new(),
            bootstrap: Vec::new(),
            site,
            master: false,
            gateway: false,
            gateway_stripe: None,
            site_share: None,
            federation: Vec::new(),
            back_to_source: false,
            upload_limit: None,
            download_limit: None,
            master_egress_limit: None,
            wan_limit: None,
            metrics: None,
            quic: false,
            update_interval: Duration::from_secs(300),
            verify_interval: Some(Duration::from_secs(24 * 3600)),
            announce_interval: Duration::from_secs(30),
            ban: Duration::from_secs(3600),
            limits: Limits::default(),
            max_peers: proto::transfer::MAX_PEERS,
            pipeline: proto::swarm::Config::default().pipeline,
            membership: Membership::Open,
        }
    }
}

/// The sites that split what crosses from the masters' site, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteShareNames {
    /// The site the masters are at.
    pub source: String,
    /// The sites that fetch from it, in the same order at every site.
    pub sites: Vec<String>,
}

/// What a node reports about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStatus {
    /// The image.
    pub uuid: Uuid,
    /// Its title.
    pub title: String,
    /// Its size in bytes.
    pub size: u64,
    /// Verified chunks held.
    pub have: u32,
    /// Chunks in all.
    pub chunks: u32,
    /// Complete, verified and installed.
    pub available: bool,
    /// Peers swarming on it.
    pub peers: usize,
    /// Chunk bytes received (verified or not).
    pub bytes_in: u64,
    /// Chunk bytes sent.
    pub bytes_out: u64,
    /// Chunks fetched and verified since the node started.
    pub fetched: u64,
    /// Chunk bytes received per second, lately.
    pub rate_in: u64,
    /// Chunk bytes sent per second, lately.
    pub rate_out: u64,
    /// Peers banned for sending bad data of this image (this take-up).
    pub banned: u32,
}

impl ImageStatus {
    /// Why an incomplete image does not move, when every peer that offered
    /// it sent bad data: said, rather than left to look merely slow.
    pub fn stalled_by_bans(&self) -> Option<String> {
        (!self.available && self.peers == 0 && self.banned > 0).then(|| {
            format!(
                "no peer to fetch from: {} that offered it sent bad data and {} banned; waiting for others",
                crate::units::count(self.banned as usize, "peer"),
                if self.banned == 1 { "is" } else { "are" }
            )
        })
    }
}

/// Each trusted CA's subject and the `nextUpdate` of its latest CRL.
pub type CrlDates = Vec<(String, Option<proto::Timestamp>)>;

/// A snapshot of a node, refreshed by its event loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The node's peer id.
    pub peer_id: Option<PeerId>,
    /// The addresses it listens on.
    pub listen: Vec<Multiaddr>,
    /// Connected peers: other nodes, not trackers.
    pub connected: usize,
    /// Connected trackers.
    pub trackers: usize,
    /// Peers banned since start.
    pub bans: u64,
    /// Chunks that failed verification since start.
    pub chunks_failed: u64,
    /// Uploads cut off since start because the peer did not read them in
    /// time (its slot went to others).
    pub uploads_overdue: u64,
    /// Images it swarms on.
    pub images: Vec<ImageStatus>,
    /// Downloads from images' sources under way: image, bytes so far
    /// (counted from the image's start), size.
    pub downloads: Vec<(Uuid, u64, u64)>,
    /// The CAs' CRL dates, as the last update cycle found them.
    pub crls: CrlDates,
    /// The last update cycle's error, if it failed.
    pub last_error: Option<String>,
}

enum Command {
    Shutdown(oneshot::Sender<()>),
    /// The store changed behind the node's back (a host command ran):
    /// recompute the images it serves.
    Sync,
    /// Run an update cycle now and answer with its report.
    Update(event_loop::UpdateAnswer),
}

/// A handle on a running node.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Shutdown(_) => "Shutdown",
            Self::Sync => "Sync",
            Self::Update(_) => "Update",
        })
    }
}

impl Client {
    /// The latest snapshot.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the snapshot changes; `Err` once the node has stopped.
    pub async fn changed(&mut self) -> Result<()> {
        self.status.changed().await.map_err(|_| Error::Net("the node stopped".into()))
    }

    /// Waits until the node listens, and returns its addresses with
    /// `/p2p/<peer id>`.
    pub async fn listen_addrs(&mut self) -> Result<Vec<Multiaddr>> {
        loop {
            let s = self.status();
            if let (Some(id), false) = (s.peer_id, s.listen.is_empty()) {
                return Ok(s.listen.into_iter().map(|a| a.with_p2p(id).unwrap_or_else(|a| a)).collect());
            }
            self.changed().await?;
        }
    }

    /// Asks the node to recompute what it serves from the store, from any
    /// thread; a request while one is pending is merged into it.
    pub fn request_sync(&self) {
        let _ = self.commands.try_send(Command::Sync);
    }

    /// Runs an update cycle that starts after this call, and returns its
    /// report (or why the cycle failed as a whole).
    pub async fn update_now(&self) -> Result<UpdateReport> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Update(tx)).await.map_err(stopped)?;
        rx.await.map_err(stopped)?.map_err(Error::Refused)
    }

    /// [`Client::update_now`], from a thread outside the node's runtime.
    pub fn update_now_blocking(&self) -> Result<UpdateReport> {
        let (tx, rx) = oneshot::channel();
        self.commands.blocking_send(Command::Update(tx)).map_err(stopped)?;
        rx.blocking_recv().map_err(stopped)?.map_err(Error::Refused)
    }

    /// Stops the node and waits until it has.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The error of a request to a node whose loop has ended.
fn stopped<E>(_: E) -> Error {
    Error::Net("the node stopped".into())
}

/// Starts a node; it runs until [`Client::shutdown`] or a fatal error, which
/// the returned task yields.
pub async fn start(cfg: NodeConfig) -> Result<(Client, tokio::task::JoinHandle<Result<()>>)> {
    let dir = cfg.data_dir.clone();
    let site = tokio::task::spawn_blocking(move || crate::site::Site::open(&dir, crate::fetch::Timeouts::default()))
        .await
        .map_err(|e| Error::Net(e.to_string()))??;
    start_on(cfg, Arc::new(site)).await
}

/// [`start`] on a site the caller opened (and may share, e.g. with the
/// control socket).
pub async fn start_on(
    cfg: NodeConfig,
    site: Arc<crate::site::Site>,
) -> Result<(Client, tokio::task::JoinHandle<Result<()>>)> {
    let key = load_or_create_key(&cfg.data_dir.join("node.key"))?;
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(Status::default());
    // Every line the loop logs names the node: several run in one process
    // in the demo and the tests.
    let span = tracing::info_span!("node", id = %short_id(&key.public().to_peer_id()));
    let ev = event_loop::EventLoop::new(cfg, site, key, cmd_rx, status_tx)?;
    let task = tokio::spawn(tracing::Instrument::instrument(ev.run(), span));
    Ok((Client { commands: cmd_tx, status: status_rx }, task))
}

/// The last characters of a peer id, enough to tell a site's nodes apart
/// in logs.
fn short_id(p: &PeerId) -> String {
    let s = p.to_string();
    s[s.len().saturating_sub(6)..].to_owned()
}
