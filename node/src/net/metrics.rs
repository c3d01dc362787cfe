//! Prometheus metrics of one node, served over HTTP.
//!
//! # Contract
//! Metric names start with `imageswarm_`. Per image: bytes in and out,
//! chunks verified and failed, and its state as a labelled gauge. Per
//! remote site: chunk bytes in from and out to its peers (a peer's site is
//! its credential's, or in an open site what its hello claims). Per image
//! downloaded from its source: the bytes and how far the download got. Per
//! list subscribed: the version in force, its expiry and the last
//! successful update. Per trusted CA: when its CRL is due. Per node: its
//! site, role and version, connected peers, bans and disk free. Every counter of an image this host
//! knows, and of every other site of its federation, is there from the
//! start at 0, so that alerts never see "no data".
//! [`p2p::metrics::serve`] serves them. docs/CLI.md names every metric as
//! it is served.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use proto::Timestamp;

use proto::imagelist::ImageList;

use crate::store::Subscription;

/// Labels of per-image metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ImageLabel {
    pub(crate) image: String,
}

/// Labels of per-site metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SiteLabel {
    pub(crate) site: String,
}

/// Labels of the image state gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub(crate) image: String,
    pub(crate) state: String,
}

/// Labels of per-list metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListLabel {
    pub(crate) list: String,
}

/// Labels of the list version gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VersionLabel {
    pub(crate) list: String,
    pub(crate) version: String,
}

/// Labels of per-CA metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CaLabel {
    pub(crate) ca: String,
}

/// Labels of the node's info gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InfoLabel {
    pub(crate) site: String,
    pub(crate) role: String,
    pub(crate) version: String,
}

/// The node's metrics; cheap to clone (every metric is shared).
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) bytes_in: Family<ImageLabel, Counter>,
    pub(crate) bytes_out: Family<ImageLabel, Counter>,
    pub(crate) chunks_verified: Family<ImageLabel, Counter>,
    pub(crate) chunks_failed: Family<ImageLabel, Counter>,
    pub(crate) source_bytes: Family<ImageLabel, Counter>,
    pub(crate) source_position: Family<ImageLabel, Gauge>,
    pub(crate) image_state: Family<StateLabel, Gauge>,
    pub(crate) site_bytes_in: Family<SiteLabel, Counter>,
    pub(crate) site_bytes_out: Family<SiteLabel, Counter>,
    pub(crate) list_version: Family<VersionLabel, Gauge>,
    pub(crate) list_expiry: Family<ListLabel, Gauge>,
    pub(crate) list_updated: Family<ListLabel, Gauge>,
    pub(crate) crl_next_update: Family<CaLabel, Gauge>,
    pub(crate) info: Family<InfoLabel, Gauge>,
    pub(crate) peers: Gauge,
    pub(crate) bans: Counter,
    pub(crate) disk_free: Gauge,
}

impl Metrics {
    pub(crate) fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("imageswarm");
        r.register("bytes_in", "Chunk bytes received", self.bytes_in.clone());
        r.register("bytes_out", "Chunk bytes sent", self.bytes_out.clone());
        r.register("chunks_verified", "Chunks received that passed verification", self.chunks_verified.clone());
        r.register("chunks_failed", "Chunks received that failed verification", self.chunks_failed.clone());
        r.register(
            "source_bytes",
            "Image bytes downloaded from the image's source (hv:uri)",
            self.source_bytes.clone(),
        );
        r.register(
            "source_download_position_bytes",
            "How far the latest download of the image from its source got",
            self.source_position.clone(),
        );
        r.register("image_state", "1 for the state each image is in", self.image_state.clone());
        r.register("site_bytes_in", "Chunk bytes received from peers of another site", self.site_bytes_in.clone());
        r.register("site_bytes_out", "Chunk bytes sent to peers of another site", self.site_bytes_out.clone());
        r.register("node_info", "1, labelled with the node's site, role and version", self.info.clone());
        r.register("peers", "Connected peers (other nodes; trackers are not counted)", self.peers.clone());
        r.register("bans", "Peers banned for sending bad data", self.bans.clone());
        r.register("list_version", "1 for the version in force of each list", self.list_version.clone());
        r.register("list_expiry_seconds", "When the list in force expires (Unix time)", self.list_expiry.clone());
        r.register(
            "list_updated_seconds",
            "When the list was last fetched successfully (Unix time)",
            self.list_updated.clone(),
        );
        r.register(
            "crl_next_update_seconds",
            "When the latest CRL of each trusted CA is due to be replaced (Unix time; 0: no CRL)",
            self.crl_next_update.clone(),
        );
        r.register("disk_free_bytes", "Bytes free on the data directory's file system", self.disk_free.clone());
        r
    }

    /// Sets the per-CA gauge: each trusted CA's subject and the
    /// `nextUpdate` of its latest CRL.
    pub(crate) fn set_crls(&self, cas: &[(String, Option<Timestamp>)]) {
        self.crl_next_update.clear();
        for (ca, next) in cas {
            self.crl_next_update.get_or_create(&CaLabel { ca: ca.clone() }).set(next.map_or(0, Timestamp::unix));
        }
    }

    /// Sets the info gauge: this node's site, role and version.
    pub(crate) fn set_info(&self, site: &str, role: proto::swarm::Role) {
        let role = match role {
            proto::swarm::Role::Master => "master",
            proto::swarm::Role::Gateway => "gateway",
            proto::swarm::Role::Worker => "worker",
        };
        let l =
            InfoLabel { site: site.to_owned(), role: role.to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() };
        self.info.get_or_create(&l).set(1);
    }

    /// Makes an image's counters show, at 0 until they count.
    pub(crate) fn touch_image(&self, uuid: uuid::Uuid) {
        let l = Self::image(uuid);
        for f in [&self.bytes_in, &self.bytes_out, &self.chunks_verified, &self.chunks_failed, &self.source_bytes] {
            f.get_or_create(&l).inc_by(0);
        }
        self.source_position.get_or_create(&l).inc_by(0);
    }

    /// Makes the counters of traffic with another site show, at 0 until
    /// they count.
    pub(crate) fn touch_site(&self, site: &str) {
        Self::count_site(&self.site_bytes_in, Some(site), 0);
        Self::count_site(&self.site_bytes_out, Some(site), 0);
    }

    /// Sets the per-list gauges to `lists`: each subscription, with its list
    /// in force if it has one. Lists no longer subscribed go.
    pub(crate) fn set_lists(&self, lists: &[(Subscription, Option<ImageList>)]) {
        self.list_version.clear();
        self.list_expiry.clear();
        self.list_updated.clear();
        for (sub, in_force) in lists {
            let list = sub.identifier.to_string();
            if let Some(cur) = &sub.current {
                let l = VersionLabel { list: list.clone(), version: cur.version.clone() };
                self.list_version.get_or_create(&l).set(1);
            }
            if let Some(l) = in_force {
                self.list_expiry.get_or_create(&ListLabel { list: list.clone() }).set(l.expires.unix());
            }
            if let Some(t) = sub.updated {
                self.list_updated.get_or_create(&ListLabel { list }).set(t.unix());
            }
        }
    }

    pub(crate) fn image(uuid: uuid::Uuid) -> ImageLabel {
        ImageLabel { image: uuid.to_string() }
    }

    /// Counts `n` chunk bytes exchanged with a peer of another site, if
    /// `remote` names one.
    pub(crate) fn count_site(family: &Family<SiteLabel, Counter>, remote: Option<&str>, n: u64) {
        if let Some(site) = remote {
            family.get_or_create(&SiteLabel { site: site.to_owned() }).inc_by(n);
        }
    }

    /// Sets the image's state gauge to `state` (and its others to 0).
    pub(crate) fn set_state(&self, uuid: uuid::Uuid, state: &str) {
        for s in ["available", "partial", "expired", "refused", "revoked"] {
            let l = StateLabel { image: uuid.to_string(), state: s.into() };
            self.image_state.get_or_create(&l).set(i64::from(s == state));
        }
    }
}
