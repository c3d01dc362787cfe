//! Meeting peers: hellos, and the notices that follow them.
//!
//! # Contract
//! * Each side of a new connection sends a hello (its site, role and the
//!   bitfield of every image it swarms on) and answers the other's. A peer's
//!   chunks count for an image only once this node swarms on the image.
//!   Images taken up while peers are connected (for the first time, or again
//!   after they were dropped) are followed by a new exchange of hellos with
//!   each of them, naming those images; a hello names at most
//!   [`MAX_HELLO_IMAGES`], and its answer names the images it named first.
//! * Notices travel on notice streams ([`crate::net::notices`]), which may
//!   overtake the hello. Until the sender's hello is here they wait, up to
//!   [`FRAMES_BEFORE_HELLO`] frames: a bitfield means nothing without the
//!   sender's role and site.
//! * A peer whose notice queue is full is disconnected. A notice stream that
//!   broke is reopened and followed by a fresh bitfield of every image, up
//!   to [`notices::STREAMS`] streams a connection.
//! * A hello or bitfield that shows a peer holding chunks of an image whose
//!   manifest this node lacks asks for the manifest at once.

use std::collections::HashMap;
use std::hash::Hash;

use libp2p::PeerId;
use proto::swarm::PeerInfo;
use proto::wire::{Hello, MAX_HELLO_IMAGES, Notice, NoticeFrame, Refusal, Request, Response, WireBitfield};
use uuid::Uuid;

use super::{EventLoop, Outbound, site_number};
use crate::net::notices::{self, Reopened};

/// Notice frames kept, per peer, until its hello arrives.
const FRAMES_BEFORE_HELLO: usize = 64;

impl EventLoop {
    pub(super) fn send_notice(&mut self, to: u64, image: Uuid, notice: Notice) {
        let Some(&peer) = self.ids.get(&to) else { return };
        if self.notices.send(to, peer, image, notice).is_err() {
            tracing::warn!(%peer, queue = notices::QUEUE, "peer does not read its notices: disconnected");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// The notice stream to connection `h` broke and what was queued on it
    /// is lost: a new stream carries a fresh bitfield of every image, which
    /// replaces what the peer knew of this node.
    pub(super) fn on_notice_stream_broken(&mut self, h: u64) {
        let Some(&peer) = self.ids.get(&h) else { return };
        match self.notices.reopen(h) {
            Reopened::Yes => {
                tracing::debug!(%peer, "notice stream reopened");
                let bits: Vec<(Uuid, WireBitfield)> =
                    self.images.iter().map(|(u, i)| (*u, WireBitfield::new(i.have()))).collect();
                for (image, b) in bits {
                    self.send_notice(h, image, Notice::Bitfield(b));
                }
            }
            Reopened::TooOften => {
                tracing::warn!(%peer, streams = notices::STREAMS, "notice streams to this peer keep breaking: disconnected");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Reopened::Gone => {}
        }
    }

    /// Tells `peer` this node's site, role and images (`first` first); its
    /// answer tells the same of it, the images this hello names first.
    pub(super) fn send_hello(&mut self, peer: PeerId, first: &[Uuid]) {
        tracing::trace!(%peer, "hello sent");
        let hello = self.hello(first);
        let id = self.swarm.behaviour_mut().peer.send_request(&peer, Request::Hello(hello));
        self.outbound.insert(id, Outbound::Hello);
    }

    /// This node's hello: the bitfields of the images in `first` that it
    /// swarms on, then of others, up to [`MAX_HELLO_IMAGES`].
    pub(super) fn hello(&self, first: &[Uuid]) -> Hello {
        let images = named_first(&self.images, first, MAX_HELLO_IMAGES)
            .into_iter()
            .map(|(u, i)| (*u, WireBitfield::new(i.have())))
            .collect();
        Hello { site: self.cfg.site.clone(), role: self.role, images }
    }

    pub(super) fn on_hello(&mut self, from: PeerId, hello: Hello) {
        tracing::trace!(peer = %from, role = ?hello.role, images = hello.images.len(), "hello received");
        let h = self.handle(from);
        let info = PeerInfo { site: site_number(&hello.site), role: hello.role };
        self.met.insert(h, info);
        let now = self.now();
        let mut holder = false;
        for (uuid, bits) in hello.images {
            let Ok(bits) = bits.parse() else { continue };
            if let Some(img) = self.images.get_mut(&uuid) {
                holder |= img.hashes().is_none() && bits.count() > 0;
                img.peer_bitfield(now, h, info, bits);
                self.drain(uuid);
            }
        }
        // A peer that holds chunks holds the manifest: ask at once rather
        // than at the next tick, which cost a starting node 100 ms on average.
        if holder {
            self.ask_manifests();
        }
        for frame in self.before_hello.remove(&h).unwrap_or_default() {
            self.on_notices(from, frame);
        }
    }

    /// A frame of notices from a connected peer, applied in order once the
    /// peer's hello is here: a bitfield means nothing without the sender's
    /// role and site.
    pub(super) fn on_notices(&mut self, peer: PeerId, frame: NoticeFrame) {
        if !self.swarm.is_connected(&peer) {
            return;
        }
        let h = self.handle(peer);
        let Some(info) = self.met.get(&h).copied() else {
            let waiting = self.before_hello.entry(h).or_default();
            if waiting.len() < FRAMES_BEFORE_HELLO {
                waiting.push(frame);
            } else {
                tracing::debug!(%peer, "notices before the hello beyond the limit: dropped");
            }
            return;
        };
        let now = self.now();
        let mut touched: Vec<Uuid> = Vec::new();
        let mut holder = false;
        for (image, notice) in frame {
            if let Notice::Cancel(index) = notice
                && let Some((_, ch)) = self.inbound.remove(&(image, h, index))
            {
                let _ = self.swarm.behaviour_mut().peer.send_response(ch, Response::Refused(Refusal::Busy));
            }
            let Some(img) = self.images.get_mut(&image) else { continue };
            match notice {
                Notice::Bitfield(b) => {
                    if let Ok(bits) = b.parse() {
                        holder |= img.hashes().is_none() && bits.count() > 0;
                        img.peer_bitfield(now, h, info, bits);
                    }
                }
                n => img.notice(now, h, n),
            }
            if !touched.contains(&image) {
                touched.push(image);
            }
        }
        for image in touched {
            self.drain(image);
        }
        // As for a hello: a node that met its peers before it swarmed on the
        // image learns who holds it from these bitfields.
        if holder {
            self.ask_manifests();
        }
    }
}

/// The entries of `map` whose keys are in `first` (each once, in that
/// order), then the others, `max` in all.
fn named_first<'a, K: Eq + Hash, V>(map: &'a HashMap<K, V>, first: &[K], max: usize) -> Vec<(&'a K, &'a V)> {
    let mut out: Vec<(&K, &V)> = Vec::with_capacity(max.min(map.len()));
    for k in first {
        if let Some(e) = map.get_key_value(k)
            && !out.iter().any(|(o, _)| *o == e.0)
        {
            out.push(e);
        }
    }
    out.truncate(max);
    out.extend(map.iter().filter(|(k, _)| !first.contains(k)).take(max - out.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_names_the_asked_images_first_each_once_within_the_limit() {
        let map: HashMap<u32, ()> = (0..20).map(|k| (k, ())).collect();
        let keys = |v: Vec<(&u32, &())>| v.into_iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let got = keys(named_first(&map, &[19, 3, 99, 19], 16));
        assert_eq!(got[..2], [19, 3]);
        assert_eq!(got.len(), 16);
        let mut unique = got.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 16, "{got:?}");
        assert_eq!(keys(named_first(&map, &[5, 6, 7], 2)), [5, 6]);
        assert_eq!(named_first(&map, &[], 16).len(), 16);
        assert_eq!(named_first(&map, &[], 30).len(), 20);
    }
}
