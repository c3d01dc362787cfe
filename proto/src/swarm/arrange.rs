//! How a gateway shares the work of bringing an image into its site: with
//! the other gateways of its site, and with the other sites.
//!
//! Every chunk another site needs crosses the WAN, and the site holding the
//! masters (the source) has one uplink for all the others. So the sites that
//! fetch from the source split the image into shares, one site for each
//! chunk by a hash of its index. From a source-site peer a gateway asks only
//! for its own site's share, and brings in the rest from the other sites,
//! which fetched their shares. It asks the source for another site's chunk
//! when it has no peer at that site. A gateway at the source site does not
//! ask other sites: its masters have everything, and the other sites'
//! uplinks are needed for their trade.
//!
//! Within a site the gateways split the work again: a gateway asks across
//! sites only for its own stripe, and receives the other gateways' stripes
//! from its own site, so no chunk crosses into a site twice.
//!
//! # Contract
//! * [`FetchStripe::arrange`] derives the rules in force for one image from
//!   the peers in its swarm, and the swarm derives them again whenever a
//!   peer comes or goes; nothing else is exchanged. Each part may instead
//!   be fixed by the operator.
//! * A gateway's stripe is its place, by [`PeerInfo::key`], among itself and
//!   the gateways of its site in the swarm. Gateways that see the same
//!   gateways agree; one that goes leaves its stripe to the others.
//! * The source is this node's own site when a master of it is in the
//!   swarm, and otherwise the first site of the federation, in its file's
//!   order, with a master in the swarm. The sharing sites are the
//!   federation's other sites, in the file's order. Every site reads the
//!   same file, so the sites agree on the split.
//! * A disagreement while peers come and go costs WAN bytes, never
//!   completion: the picker lifts the rules while the gateway has nothing in
//!   flight and in endgame.

use super::{ChunkIndex, PeerInfo, Role};

/// How a gateway arranges its fetching across sites.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchStripe {
    /// This node's [`PeerInfo::key`], as its peers see it.
    pub key: u64,
    /// `(index, count)` among the site's gateways, fixed by the operator;
    /// `None`: from the gateways in the swarm.
    pub gateway: Option<(u32, u32)>,
    /// How the sites split what comes from the source, fixed by the
    /// operator; `None`: from `federation` and the masters in the swarm.
    pub share: Option<SiteShare>,
    /// The cooperating sites, in the federation file's order (empty: no
    /// federation, and no split between sites unless `share` is set).
    pub federation: Vec<u32>,
}

/// How the sites that fetch from the masters' site split the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteShare {
    /// The site the masters are at.
    pub source: u32,
    /// The sites that fetch from it, in share order (at most 64 are told
    /// apart; a chunk of a later site is never fetched from the source on
    /// the grounds that the site is absent).
    pub sites: Vec<u32>,
}

impl SiteShare {
    /// The position in `sites` of the site whose share `c` is.
    fn owner(&self, c: ChunkIndex) -> usize {
        (spread(c) % self.sites.len().max(1) as u64) as usize
    }

    /// Which of `sites` have a peer among `peers`, as a bit mask.
    fn present(&self, peers: impl Iterator<Item = u32>) -> u64 {
        peers.fold(0, |mask, site| match self.sites.iter().position(|&s| s == site) {
            Some(i) if i < 64 => mask | 1 << i,
            _ => mask,
        })
    }
}

/// The rules in force for one image at one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arranged {
    /// `(index, count)` among the site's gateways.
    gateway: (u32, u32),
    share: Option<SiteShare>,
    /// [`SiteShare::present`] over the swarm's peers.
    present: u64,
}

impl FetchStripe {
    /// The rules for a gateway of `site` whose swarm holds `peers`.
    pub(crate) fn arrange<I>(&self, site: u32, peers: I) -> Arranged
    where
        I: Iterator<Item = PeerInfo> + Clone,
    {
        let gateway = self.gateway.unwrap_or_else(|| {
            let gateways = peers.clone().filter(|p| p.role == Role::Gateway && p.site == site);
            let before = gateways.clone().filter(|p| p.key < self.key).count() as u32;
            (before, gateways.count() as u32 + 1)
        });
        let share = self.share.clone().or_else(|| {
            let masters = || peers.clone().filter(|p| p.role == Role::Master).map(|p| p.site);
            let source = if masters().any(|s| s == site) {
                site
            } else {
                *self.federation.iter().find(|&&s| masters().any(|m| m == s))?
            };
            let sites = self.federation.iter().copied().filter(|&s| s != source).collect();
            Some(SiteShare { source, sites })
        });
        let present = share.as_ref().map_or(0, |s| s.present(peers.map(|p| p.site)));
        Arranged { gateway, share, present }
    }
}

/// A chunk's index, scrambled, for splitting chunks between sites and
/// gateways independently of the masters' own `c % masters` stripes (with
/// two masters and two sites, `c % 2` would give each site one master).
fn spread(c: ChunkIndex) -> u64 {
    u64::from(c).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

/// A gateway's [`Arranged`] rules applied to one peer of another site.
pub(crate) struct Across<'a> {
    pub(crate) rules: &'a Arranged,
    /// This node's site.
    pub(crate) site: u32,
}

impl Across<'_> {
    /// Whether `c` may be asked of a peer at `from` while the rules hold:
    /// allowed from that site, and in this gateway's stripe.
    pub(crate) fn wants(&self, c: ChunkIndex, from: u32) -> bool {
        self.allowed(c, from) && self.preferred(c)
    }

    /// Whether the site split lets `c` be asked of a peer at `from`.
    fn allowed(&self, c: ChunkIndex, from: u32) -> bool {
        let Some(share) = &self.rules.share else {
            return true;
        };
        if self.site == share.source {
            return false;
        }
        if from != share.source {
            return true;
        }
        let owner = share.owner(c);
        share.sites[owner] == self.site || (owner < 64 && self.rules.present & 1 << owner == 0)
    }

    /// Whether `c` is this gateway's among its site's gateways.
    fn preferred(&self, c: ChunkIndex) -> bool {
        let (index, count) = self.rules.gateway;
        let shares = self.rules.share.as_ref().map_or(1, |s| s.sites.len().max(1) as u64);
        count <= 1 || (spread(c) / shares) % u64::from(count) == u64::from(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(site: u32, role: Role, key: u64) -> PeerInfo {
        PeerInfo { site, role, key }
    }

    #[test]
    fn gateways_take_their_places_by_key_and_the_first_site_with_masters_is_the_source() {
        let stripe = FetchStripe { key: 50, federation: vec![7, 1, 2], ..FetchStripe::default() };
        let peers = [
            peer(1, Role::Gateway, 10),
            peer(1, Role::Gateway, 90),
            peer(1, Role::Worker, 5),
            peer(2, Role::Gateway, 1),
            peer(7, Role::Master, 3),
        ];
        let a = stripe.arrange(1, peers.iter().copied());
        assert_eq!(a.gateway, (1, 3), "between keys 10 and 90; workers and other sites do not count");
        assert_eq!(a.share, Some(SiteShare { source: 7, sites: vec![1, 2] }));
        assert_eq!(a.present, 0b11, "both sharing sites have a peer");

        // The gateway with key 10 gone: its stripe passes to the others.
        let a = stripe.arrange(1, peers.iter().copied().filter(|p| p.key != 10));
        assert_eq!(a.gateway, (0, 2));
        // Without masters in the swarm, no site is the source.
        assert_eq!(stripe.arrange(1, peers[..4].iter().copied()).share, None);
        // A master of the gateway's own site makes its site the source.
        let own = peers.iter().copied().chain([peer(1, Role::Master, 4)]);
        assert_eq!(stripe.arrange(1, own).share.map(|s| s.source), Some(1));
    }

    #[test]
    fn what_the_operator_fixes_stands() {
        let share = SiteShare { source: 0, sites: vec![2, 1] };
        let stripe = FetchStripe { key: 50, gateway: Some((1, 2)), share: Some(share.clone()), federation: vec![] };
        let a = stripe.arrange(1, [peer(1, Role::Gateway, 10), peer(3, Role::Master, 1)].into_iter());
        assert_eq!((a.gateway, a.share), ((1, 2), Some(share)));
    }

    #[test]
    fn the_two_gateways_of_a_site_split_its_share_and_the_sites_split_the_image() {
        let rules = |site, key| {
            let stripe = FetchStripe { key, federation: vec![0, 1, 2], ..FetchStripe::default() };
            let peers = [
                peer(0, Role::Master, 9),
                peer(1, Role::Gateway, 20),
                peer(1, Role::Gateway, 30),
                peer(2, Role::Gateway, 40),
            ];
            stripe.arrange(site, peers.into_iter().filter(|p| p.key != key))
        };
        let (a, b, c) = (rules(1, 20), rules(1, 30), rules(2, 40));
        let across = |r| Across { rules: r, site: 1 };
        let mut from_source = [0; 3];
        for chunk in 0..3000 {
            let (x, y) = (across(&a).wants(chunk, 0), across(&b).wants(chunk, 0));
            let z = Across { rules: &c, site: 2 }.wants(chunk, 0);
            assert!(u8::from(x) + u8::from(y) + u8::from(z) <= 1, "chunk {chunk} is asked once of the source");
            from_source[0] += u32::from(x);
            from_source[1] += u32::from(y);
            from_source[2] += u32::from(z);
        }
        assert_eq!(from_source.iter().sum::<u32>(), 3000, "and every chunk is someone's");
        // Site 1's half is split between its two gateways.
        let [x, y, z] = from_source;
        assert!((600..900).contains(&x) && (600..900).contains(&y) && (1300..1700).contains(&z), "{from_source:?}");
    }
}
