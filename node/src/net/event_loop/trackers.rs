//! Trackers by address: a tracker given without `/p2p/<peer id>` is pinned
//! to the peer id it shows at the first connection.
//!
//! # Contract
//! * A tracker address with `/p2p/` names the tracker; one without it is
//!   looked up in `DATA/trackers.pinned` (`ADDRESS PEER_ID` lines). If it is
//!   not there, the node dials the address until a connection comes up,
//!   takes the peer id the transport authenticated, records it in that file
//!   (written atomically) and warns once: from then on the address means
//!   that peer, at this start and every later one, and a tracker there with
//!   another key is not used (its connections fail the transport's peer id
//!   check).
//! * Until its id is known, an address is dialled at most once per announce
//!   interval, and nothing is announced to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId};

use super::super::peer_of;
use super::EventLoop;
use crate::{Error, Result};

/// The pins' file name in the data directory.
pub(super) const PINNED: &str = "trackers.pinned";

/// The trackers' addresses: those with a peer id, and those still waiting
/// for theirs.
pub(super) struct Trackers {
    pub(super) known: Vec<(PeerId, Multiaddr)>,
    pub(super) unpinned: Vec<Multiaddr>,
    file: PathBuf,
}

impl Trackers {
    /// The trackers `addrs` name, with the pins recorded in `data_dir`.
    pub(super) fn new(addrs: &[Multiaddr], data_dir: &Path) -> Result<Self> {
        let file = data_dir.join(PINNED);
        let pins = read_pins(&file)?;
        let mut t = Self { known: Vec::new(), unpinned: Vec::new(), file };
        for a in addrs {
            match peer_of(a) {
                Some(p) => t.known.push((p, a.clone())),
                None => match pins.get(a) {
                    Some(p) => t.known.push((*p, with_peer(a, *p))),
                    None => t.unpinned.push(a.clone()),
                },
            }
        }
        Ok(t)
    }

    /// Whether `peer` is one of the trackers.
    pub(super) fn is_tracker(&self, peer: &PeerId) -> bool {
        self.known.iter().any(|(p, _)| p == peer)
    }
}

impl EventLoop {
    /// Dials the trackers whose peer id is not known yet.
    pub(super) fn dial_unpinned_trackers(&mut self) {
        for a in self.trackers.unpinned.clone() {
            if let Err(e) = self.swarm.dial(DialOpts::unknown_peer_id().address(a.clone()).build()) {
                tracing::debug!(address = %a, error = %e, "dialling a tracker by its address failed");
            }
        }
    }

    /// A connection came up: if it is to a tracker address that waits for
    /// its peer id, `peer` is that tracker from now on.
    pub(super) fn pin_tracker(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        let ConnectedPoint::Dialer { address, .. } = endpoint else { return };
        let bare: Multiaddr = address.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
        let Some(i) = self.trackers.unpinned.iter().position(|a| *a == bare) else { return };
        let addr = self.trackers.unpinned.remove(i);
        let full = with_peer(&addr, peer);
        self.swarm.add_peer_address(peer, full.clone());
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            kad.add_address(&peer, full.clone());
        }
        self.trackers.known.push((peer, full.clone()));
        match self.record_pin(&addr, peer) {
            Ok(()) => tracing::warn!(
                address = %addr, %peer, file = %self.trackers.file.display(),
                "tracker pinned to the peer id it showed; give --tracker {full} to name it yourself"
            ),
            Err(e) => tracing::error!(address = %addr, %peer, error = %e, "the tracker's pin was not recorded"),
        }
    }

    fn record_pin(&self, addr: &Multiaddr, peer: PeerId) -> Result<()> {
        let mut pins = read_pins(&self.trackers.file)?;
        pins.insert(addr.clone(), peer);
        let text: String = pins.iter().map(|(a, p)| format!("{a} {p}\n")).collect();
        crate::fsutil::write_atomic(&self.trackers.file, text.as_bytes())
    }
}

fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    addr.clone().with_p2p(peer).unwrap_or_else(|a| a)
}

/// The pins recorded in `file` (none if it does not exist).
fn read_pins(file: &Path) -> Result<BTreeMap<Multiaddr, PeerId>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("reading", file)(e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let bad = || Error::Invalid(format!("{}: `{l}` is not `ADDRESS PEER_ID`", file.display()));
            let (a, p) = l.trim().split_once(' ').ok_or_else(bad)?;
            Ok((a.parse().map_err(|_| bad())?, p.trim().parse().map_err(|_| bad())?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pins_name_the_trackers_given_by_address_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (bare, peer) = ("/ip4/10.0.0.5/tcp/4000".parse::<Multiaddr>().unwrap(), PeerId::random());
        let named = with_peer(&"/ip4/10.0.0.6/tcp/4000".parse().unwrap(), PeerId::random());
        let t = Trackers::new(&[bare.clone(), named.clone()], dir.path()).unwrap();
        assert_eq!(t.unpinned, std::slice::from_ref(&bare));
        assert_eq!(t.known.len(), 1);

        std::fs::write(dir.path().join(PINNED), format!("{bare} {peer}\n")).unwrap();
        let t = Trackers::new(&[bare.clone(), named], dir.path()).unwrap();
        assert!(t.unpinned.is_empty());
        assert!(t.is_tracker(&peer));
        assert!(t.known.contains(&(peer, with_peer(&bare, peer))));

        std::fs::write(dir.path().join(PINNED), "garbage\n").unwrap();
        let e = Trackers::new(&[bare], dir.path()).err().unwrap().to_string();
        assert!(e.contains("ADDRESS PEER_ID"), "{e}");
    }
}
