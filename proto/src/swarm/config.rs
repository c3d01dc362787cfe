//! The swarm's tunables. Defaults suit a cooperative site swarm; the node
//! and netsim scenarios set the rest.

use super::{FetchStripe, Micros, PickerMode, Role, UploadPolicy};

/// Tunables. `Default` suits a cooperative site swarm of 10 Gbit/s hosts.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's site.
    pub site: u32,
    /// This node's role.
    pub role: Role,
    /// Requests in flight per peer.
    pub pipeline: u32,
    /// Requests in flight per peer of another site: WAN round trips are
    /// long, so more requests must be under way to fill the link. More than
    /// fill it queue behind the remote peer's uplink, where the last chunks
    /// of a site's share wait and stretch that site's tail.
    pub cross_site_pipeline: u32,
    /// For gateways: which chunks to bring across sites first.
    pub fetch_stripe: Option<FetchStripe>,
    /// Requests in flight to peers other than this site's masters, in total
    /// (those get up to `pipeline` each besides). About the peers' upload slots:
    /// more would split this node's downlink into slivers while senders'
    /// uplinks sit idle, fewer would leave the downlink idle between chunks.
    /// A gateway (with a [`Config::fetch_stripe`]) gets at least four
    /// `cross_site_pipeline`s, for the pipelines to peers of other sites
    /// that it fills first.
    pub max_inflight: u32,
    /// Chunks picked at random before rarest-first takes over.
    pub random_first: u32,
    /// How chunks are chosen.
    pub picker: PickerMode,
    /// Whether same-site peers are preferred and cross-site rules apply.
    pub locality: bool,
    /// How long a request may stay unanswered.
    pub request_timeout: Micros,
    /// How long a peer that refused a chunk is not asked for it again.
    pub refusal_backoff: Micros,
    /// How long a peer that refused anything is not asked at all: refusals
    /// mean "busy" or "others have it", so asking at once for the next chunk
    /// would mostly collect refusals.
    pub refusal_pause: Micros,
    /// In endgame a chunk is asked of a second peer only once its request
    /// is this many times as old as a request usually takes (an average of
    /// the recent ones), and at least [`Config::late_floor`]: a second copy
    /// costs a whole chunk of the downlink, and is worth it only when the
    /// first is late. 0 duplicates at once.
    pub late_factor: u32,
    /// The least age at which a request counts as late.
    pub late_floor: Micros,
    /// How this node serves requests.
    pub upload: UploadPolicy,
    /// Seed for tie-breaking and sampling.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            site: 0,
            role: Role::Worker,
            pipeline: 2,
            cross_site_pipeline: 6,
            fetch_stripe: None,
            max_inflight: 16,
            random_first: 4,
            picker: PickerMode::RarestFirst,
            locality: true,
            request_timeout: 10_000_000,
            refusal_backoff: 200_000,
            refusal_pause: 20_000,
            late_factor: 2,
            late_floor: 20_000,
            upload: UploadPolicy::default(),
            seed: 0,
        }
    }
}
