//! Scenario files: TOML descriptions of sites, capacities, masters, WAN
//! links, image, churn and malicious peers.
//!
//! ```toml
//! name = "site-10k"
//! seed = 1
//! image_size = "10GiB"
//! chunk_size = "4MiB"
//! payload_share = 1.0      # optional: the share of a link's rate chunks get
//!
//! [[site]]
//! name = "a"
//! hosts = 10000
//! host_up_gbit = 10.0
//! host_down_gbit = 10.0
//! masters = 2              # masters at this site
//! master_up_gbit = 25.0
//! gateways = 0             # hosts that fetch across sites
//! wan_gbit = 10.0          # optional: the site's WAN link, each direction
//!
//! [swarm]                  # optional, defaults shown in `Swarm`
//! [startup]                # optional, see `Startup`
//! [latency]                # optional: lan_ms, wan_ms
//! [churn]                  # optional: leave_fraction, leave_within_s, down_s
//! [malicious]              # optional: fraction, liars
//! [faults]                 # optional: partitions, loss, jitter, clogs, crashes
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::Error;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    pub name: String,
    /// Seed for every random choice; the same seed gives the same report.
    #[serde(default = "one")]
    pub seed: u64,
    /// The image size, e.g. `"10GiB"`.
    pub image_size: String,
    /// The chunk size, e.g. `"4MiB"`.
    pub chunk_size: String,
    /// The share of every link's rate that carries chunk bytes (1 by
    /// default). On a real link the rest goes to Ethernet, IP and TCP
    /// headers and the transport's framing, so a scenario that stands for
    /// measured links sets what a plain HTTP copy over them achieves. The
    /// bound is of the links' whole rates, as the testbed's is.
    #[serde(default = "whole")]
    pub payload_share: f64,
    /// The sites.
    #[serde(rename = "site")]
    pub sites: Vec<Site>,
    /// Swarm tunables.
    #[serde(default)]
    pub swarm: Swarm,
    /// How hosts start and find each other.
    #[serde(default)]
    pub startup: Startup,
    /// Latencies.
    #[serde(default)]
    pub latency: Latency,
    /// Hosts leaving and coming back.
    #[serde(default)]
    pub churn: Churn,
    /// Hosts serving corrupt chunks.
    #[serde(default)]
    pub malicious: Malicious,
    /// Faults seeded into the run.
    #[serde(default)]
    pub faults: Faults,
}

fn one() -> u64 {
    1
}

fn whole() -> f64 {
    1.0
}

/// One site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// A name for reports.
    pub name: String,
    /// Worker hosts, gateways included.
    pub hosts: u32,
    /// Each host's upload, Gbit/s.
    pub host_up_gbit: f64,
    /// Each host's download, Gbit/s.
    pub host_down_gbit: f64,
    /// Masters at this site.
    #[serde(default)]
    pub masters: u32,
    /// Each master's upload, Gbit/s.
    #[serde(default)]
    pub master_up_gbit: f64,
    /// Hosts of this site that fetch across sites.
    #[serde(default)]
    pub gateways: u32,
    /// The site's WAN link in each direction, Gbit/s (none: unlimited).
    pub wan_gbit: Option<f64>,
}

/// Swarm tunables, applied to every node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Swarm {
    /// Peers a node asks the tracker for (its announcement's `want`).
    pub tracker_want: u16,
    /// A node dials peers while it has fewer connections than this.
    pub max_peers: usize,
    /// A node accepts connections while it has fewer than this.
    pub max_connections: u32,
    /// Requests in flight per peer.
    pub pipeline: u32,
    /// Requests in flight per node, in total.
    pub max_inflight: u32,
    /// Requests in flight per peer of another site.
    pub cross_site_pipeline: u32,
    /// Concurrent uploads per host (not master).
    pub upload_slots: u32,
    /// Concurrent uploads per master.
    pub master_slots: u32,
    /// Queued requests per master.
    pub master_queue: usize,
    /// Concurrent uploads to one peer of the same site, for hosts and
    /// masters (`UploadPolicy::per_peer`).
    pub upload_per_peer: u32,
    /// Queued requests per host (not master).
    pub max_queue: usize,
    /// Random chunks before rarest-first.
    pub random_first: u32,
    /// A master stands back once this many usable copies exist.
    pub master_copies: u16,
    /// Request timeout, ms.
    pub request_timeout_ms: u64,
    /// How long a peer that refused a chunk is not asked for it again, ms.
    pub refusal_backoff_ms: f64,
    /// How long a peer that refused anything is not asked at all, ms.
    pub refusal_pause_ms: f64,
    /// In endgame, a request gets a second copy once it is this many times
    /// as old as requests take on average (0: at once).
    pub late_factor: u32,
    /// The sites form a federation, in their order here: the other sites
    /// split what crosses from the masters' site
    /// ([`proto::swarm::SiteShare`]) and trade the rest, as gateways given
    /// `--federation` do. Gateways always take their stripe among the
    /// gateways of their site they see.
    pub site_shares: bool,
}

/// Every default is the node's, so a scenario without a `[swarm]` table
/// simulates what ships.
impl Default for Swarm {
    fn default() -> Self {
        let node = proto::swarm::Config::default();
        let master = proto::swarm::UploadPolicy::master();
        Self {
            tracker_want: proto::transfer::TRACKER_WANT,
            max_peers: proto::transfer::MAX_PEERS,
            max_connections: proto::transfer::MAX_CONNECTIONS,
            pipeline: node.pipeline,
            max_inflight: node.max_inflight,
            cross_site_pipeline: node.cross_site_pipeline,
            upload_slots: node.upload.slots,
            master_slots: master.slots,
            master_queue: master.max_queue,
            upload_per_peer: node.upload.per_peer,
            max_queue: node.upload.max_queue,
            random_first: node.random_first,
            master_copies: node.upload.master_copies,
            request_timeout_ms: node.request_timeout / 1000,
            refusal_backoff_ms: node.refusal_backoff as f64 / 1000.0,
            refusal_pause_ms: node.refusal_pause as f64 / 1000.0,
            late_factor: node.late_factor,
            site_shares: true,
        }
    }
}

/// How a host starts: what a real node does between its start and its
/// first hello, as delays. Hosts (not masters, which run from the start)
/// start at `list_s` plus a uniform share of `list_spread_s` (the process
/// starts, fetches the signed list and verifies it), announce to the
/// tracker and dial the peers it names, each connection up (transport
/// handshake done) `connect_s` later, and announce again every
/// `announce_interval_s`. A complete image is installed (and the host
/// counted done) `install_s` after its last chunk is committed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Startup {
    /// Seconds from the scenario's start until a host has verified its list.
    pub list_s: f64,
    /// Hosts start spread uniformly over this many seconds after `list_s`.
    pub list_spread_s: f64,
    /// Seconds from a dial to a connection ready for hellos.
    pub connect_s: f64,
    /// Seconds between a host's announcements to the tracker.
    pub announce_interval_s: f64,
    /// Seconds an install takes.
    pub install_s: f64,
}

impl Default for Startup {
    fn default() -> Self {
        Self { list_s: 0.0, list_spread_s: 0.0, connect_s: 0.0, announce_interval_s: 30.0, install_s: 0.0 }
    }
}

/// Per-link latency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Within a site, ms.
    pub lan_ms: f64,
    /// Between sites, ms.
    pub wan_ms: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self { lan_ms: 0.2, wan_ms: 20.0 }
    }
}

/// Hosts that leave and rejoin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Fraction of hosts that leave once.
    pub leave_fraction: f64,
    /// A host leaves at a time drawn uniformly from `leave_within_s`
    /// seconds after its start.
    #[serde(default)]
    pub leave_within_s: f64,
    /// How long a host stays away, seconds.
    #[serde(default)]
    pub down_s: f64,
}

/// Hosts that serve corrupt data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Malicious {
    /// The share of plain workers that serve corrupt chunks.
    #[serde(default)]
    pub fraction: f64,
    /// The share of plain workers that claim every chunk and answer every
    /// request with `Busy`.
    #[serde(default)]
    pub liars: f64,
}

/// Faults seeded into a run (rows S1–S4 of the attack checklist). Every
/// choice they make comes from the scenario's seed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Cuts between a part of the hosts and the rest, each healing after
    /// its time.
    pub partitions: Vec<Partition>,
    /// The share of chunk and manifest requests, and their answers, whose
    /// stream fails in transit: the asker learns of the failure after the
    /// link's latency, as a transport failure.
    pub loss: f64,
    /// Extra delay per request and answer, uniform in `0..jitter_ms`, so
    /// that they overtake each other (notices keep their stream's order).
    pub jitter_ms: f64,
    /// Swizzle-clogging: hosts stop talking one by one, then start again
    /// in another order.
    pub clog: Option<Clog>,
    /// Hosts that crash, losing what they had not committed.
    pub crash: Option<Crash>,
    /// How long a group commit takes, in milliseconds (0: at once).
    pub commit_ms: f64,
}

/// A partition: from `at_s`, for `for_s`, a `fraction` of the hosts
/// (masters stay on the other side) is cut from the rest. A symmetric cut
/// closes every connection across it and refuses new ones; a one-way cut
/// (`one_way`) keeps the connections but loses every message and chunk the
/// rest sends to the cut part.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub at_s: f64,
    pub for_s: f64,
    pub fraction: f64,
    #[serde(default)]
    pub one_way: bool,
}

/// From `at_s`, a `fraction` of the hosts is clogged one at a time, `step_s`
/// apart, then unclogged one at a time in a shuffled order: a message to or
/// from a clogged host waits until the host is unclogged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clog {
    pub at_s: f64,
    pub fraction: f64,
    pub step_s: f64,
}

/// A `fraction` of the honest workers crash within `within_s` of their
/// start and restart `down_s` later with only the chunks committed before
/// the crash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {
    pub fraction: f64,
    pub within_s: f64,
    pub down_s: f64,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Scenario(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Scenario(format!("{}: {e}", path.display())))
    }

    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let s: Self = toml::from_str(text).map_err(|e| Error::Scenario(e.to_string()))?;
        if s.sites.is_empty() || s.sites.iter().all(|x| x.masters == 0) {
            return Err(Error::Scenario("at least one site needs a master".into()));
        }
        if s.sites.iter().any(|x| x.hosts == 0 || x.host_up_gbit <= 0.0 || x.host_down_gbit <= 0.0) {
            return Err(Error::Scenario("every site needs hosts with positive capacities".into()));
        }
        if s.sites.iter().any(|x| x.masters > 0 && x.master_up_gbit <= 0.0) {
            return Err(Error::Scenario("masters need a positive master_up_gbit".into()));
        }
        if !(s.payload_share > 0.0 && s.payload_share <= 1.0) {
            return Err(Error::Scenario("payload_share must be above 0 and at most 1".into()));
        }
        Ok(s)
    }

    /// Image size in bytes.
    pub fn image_bytes(&self) -> Result<u64, Error> {
        parse_size(&self.image_size)
    }

    /// Chunk size in bytes.
    pub fn chunk_bytes(&self) -> Result<u64, Error> {
        parse_size(&self.chunk_size)
    }

    /// The bytes per second of chunks that a link of `gbit` carries (see
    /// [`Scenario::payload_share`]).
    pub fn link_rate(&self, gbit: f64) -> f64 {
        gbit * crate::GBIT * self.payload_share
    }

    /// Per site, the bytes per second of chunks its WAN link carries
    /// (unbounded without one).
    pub fn wan_rates(&self) -> Vec<f64> {
        self.sites.iter().map(|x| x.wan_gbit.map_or(f64::INFINITY, |g| self.link_rate(g))).collect()
    }
}

/// `"10GiB"`, `"4MiB"`, `"512KiB"` or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().map_err(|_| Error::Scenario(format!("`{s}` is not a size")))?;
    let mult = match t[split..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(Error::Scenario(format!("`{s}`: unknown unit `{other}`"))),
    };
    Ok(n * mult)
}
