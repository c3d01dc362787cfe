//! The peer protocol and notice streams, translated to and from the
//! transfer machine.
//!
//! # Contract
//! * Images travel named by their content ([`proto::wire::content_id`]):
//!   what a peer names that is not an image swarmed on here with the same
//!   content is dropped from hellos and notices, and refused in requests.
//! * Hellos, chunk and manifest requests travel on request-response
//!   (`/imageswarm/peer/2`); notices on notice streams
//!   ([`crate::net::notices`]). What they mean is the machine's
//!   ([`proto::transfer::Host`]): this module parses what arrives (a
//!   bitfield that does not decode is dropped here), hands it over with the
//!   time, and sends what the machine asks for.
//! * A reply to a chunk request reaches the machine as one of three kinds:
//!   bytes, a refusal, or a transport failure. The bytes are checked there.
//! * One answer channel per request key (image, peer, chunk): a second
//!   request for the same chunk while the first waits is refused here, as
//!   the machine would refuse it.
//! * A peer's requests other than for chunks are refused as Busy beyond
//!   [`CONTROL_REQUESTS_PER_SEC`], hellos and the rest each (chunk requests
//!   are bounded by upload slots).
//! * Requests and notices from a peer the admission gate has not made ready
//!   are dropped unanswered; a hello's site and role count only in an open
//!   site, a closed one takes them from the peer's credential.
//! * A peer whose notice queue is full is disconnected. A notice stream that
//!   broke is reopened and followed by a fresh bitfield of every image, up
//!   to [`notices::STREAMS`] streams a connection.

use std::num::NonZeroU32;

use libp2p::PeerId;
use libp2p::request_response::{self, InboundRequestId, ResponseChannel};
use proto::bitfield::Bitfield;
use proto::swarm::PeerInfo;
use proto::transfer::{self, ChunkReply, ManifestReply};
use proto::wire::{Hello, Notice, NoticeFrame, Refusal, Request, Response, WireBitfield};
use uuid::Uuid;

use super::lists::Carrier;
use super::{EventLoop, Outbound, peer_key, site_number};
use crate::net::metrics::Metrics;
use crate::net::notices::{self, Reopened};

/// Requests other than for chunks one peer may make per second, and at
/// once, of each kind: hellos, and the rest (manifests, attestations,
/// lists). A node that takes up a list of a thousand images at once sends
/// each peer some 60 hellos; hellos have a budget of their own, so that
/// asking for manifests never costs a peer its hellos.
pub(super) const CONTROL_REQUESTS_PER_SEC: u32 = 50;
const CONTROL_REQUESTS_BURST: u32 = 128;

/// The limits of [`CONTROL_REQUESTS_PER_SEC`], by peer.
pub(super) struct RequestRates {
    hellos: governor::DefaultKeyedRateLimiter<PeerId>,
    others: governor::DefaultKeyedRateLimiter<PeerId>,
}

impl RequestRates {
    pub(super) fn new() -> Self {
        let per_sec = NonZeroU32::new(CONTROL_REQUESTS_PER_SEC).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(CONTROL_REQUESTS_BURST).unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::per_second(per_sec).allow_burst(burst);
        Self { hellos: governor::RateLimiter::keyed(quota), others: governor::RateLimiter::keyed(quota) }
    }

    /// Whether `peer` may make `req` now (chunk requests always may: upload
    /// slots bound them).
    fn allow(&self, peer: &PeerId, req: &Request) -> bool {
        match req {
            Request::Chunk { .. } => true,
            Request::Hello(_) => self.hellos.check_key(peer).is_ok(),
            _ => self.others.check_key(peer).is_ok(),
        }
    }

    /// Forgets peers that are back to a full budget.
    pub(super) fn retain_recent(&self) {
        self.hellos.retain_recent();
        self.others.retain_recent();
    }
}

impl EventLoop {
    pub(super) fn send_notice(&mut self, to: u64, image: Uuid, notice: transfer::Notice) {
        let (Some(&peer), Some(image)) = (self.ids.get(&to), self.wire_id(image)) else { return };
        let notice = match notice {
            transfer::Notice::Bitfield(b) => Notice::Bitfield(WireBitfield::new(&b)),
            transfer::Notice::Have(i) => Notice::Have(i),
            transfer::Notice::Cancel(i) => Notice::Cancel(i),
        };
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
                let bits: Vec<(Uuid, Bitfield)> = self.host.images().map(|(u, t)| (*u, t.have().clone())).collect();
                for (image, b) in bits {
                    self.send_notice(h, image, transfer::Notice::Bitfield(b));
                }
            }
            Reopened::TooOften => {
                tracing::warn!(%peer, streams = notices::STREAMS, "notice streams to this peer keep breaking: disconnected");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Reopened::Gone => {}
        }
    }

    /// Sends this node's hello, with these images, to `to`.
    pub(super) fn send_hello(&mut self, to: u64, images: Vec<(Uuid, Bitfield)>) {
        let Some(&peer) = self.ids.get(&to) else { return };
        tracing::trace!(%peer, "hello sent");
        let hello = self.wire_hello(images);
        let id = self.swarm.behaviour_mut().peer.send_request(&peer, Request::Hello(hello));
        self.outbound.insert(id, Outbound::Hello);
    }

    fn wire_hello(&self, images: Vec<(Uuid, Bitfield)>) -> Hello {
        let images = images.iter().filter_map(|(u, b)| Some((self.wire_id(*u)?, WireBitfield::new(b)))).collect();
        Hello { site: self.cfg.site.clone(), role: self.role, images, lists: self.held_lists() }
    }

    /// A peer's hello, asked or answered.
    fn on_hello(&mut self, from: PeerId, hello: Hello) {
        tracing::trace!(peer = %from, role = ?hello.role, images = hello.images.len(), "hello received");
        let h = self.handle(from);
        // In a closed site, who the peer is comes from its credential.
        let (site, role) = match self.gate.credential(&from) {
            Some(c) => (c.site.clone(), c.role),
            None => (hello.site.clone(), hello.role),
        };
        let info = PeerInfo { site: site_number(&site), role, key: peer_key(&from) };
        self.peer_sites.insert(h, site);
        self.ask_newer_lists(from, &hello.lists);
        // Images of other content (another list version) are not these.
        let images =
            hello.images.into_iter().filter_map(|(w, b)| Some((self.local_image(w)?, b.parse().ok()?))).collect();
        let now = self.now();
        self.host.handle_hello(now, h, info, images);
    }

    /// A frame of notices from a connected peer.
    pub(super) fn on_notices(&mut self, peer: PeerId, frame: NoticeFrame) {
        if !self.swarm.is_connected(&peer) || !self.gate.is_ready(&peer) {
            return;
        }
        let h = self.handle(peer);
        let frame = frame
            .into_iter()
            .filter_map(|(wire, n)| {
                let image = self.local_image(wire)?;
                let n = match n {
                    Notice::Bitfield(b) => transfer::Notice::Bitfield(b.parse().ok()?),
                    Notice::Have(i) => transfer::Notice::Have(i),
                    Notice::Cancel(i) => transfer::Notice::Cancel(i),
                };
                Some((image, n))
            })
            .collect();
        let now = self.now();
        if !self.host.handle_notices(now, h, frame) {
            tracing::debug!(%peer, "notices before the hello beyond the limit: dropped");
        }
    }

    pub(super) fn on_peer_event(&mut self, ev: request_response::Event<Request, Response>) {
        use request_response::{Event, Message as M};
        match ev {
            Event::Message { peer, message: M::Request { request, channel, request_id }, .. } => {
                self.on_request(peer, request, channel, request_id);
            }
            Event::Message { peer, message: M::Response { request_id, response }, .. } => {
                if let Some(o) = self.outbound.remove(&request_id) {
                    self.on_response(peer, o, Some(response));
                }
            }
            Event::OutboundFailure { peer, request_id, error, .. } => {
                if let Some(o) = self.outbound.remove(&request_id) {
                    tracing::debug!(%peer, ?o, %error, "request failed");
                    self.on_response(peer, o, None);
                }
            }
            Event::ResponseSent { peer, request_id, .. } | Event::InboundFailure { peer, request_id, .. } => {
                if let Some((image, h, index)) = self.uploads.end(&request_id) {
                    tracing::trace!(%image, index, %peer, "upload ended");
                    let now = self.now();
                    self.host.handle_upload_done(now, h, image, index);
                }
            }
        }
    }

    fn on_request(&mut self, peer: PeerId, req: Request, channel: ResponseChannel<Response>, id: InboundRequestId) {
        if !self.gate.is_ready(&peer) {
            // Dropping the channel answers nothing.
            tracing::debug!(%peer, "request from a peer not admitted: dropped");
            return;
        }
        if !self.request_rates.allow(&peer, &req) {
            tracing::debug!(%peer, "requests from this peer beyond its rate: refused");
            return self.respond(channel, Response::Refused(Refusal::Busy));
        }
        let h = self.handle(peer);
        let now = self.now();
        match req {
            Request::Hello(hello) => {
                tracing::trace!(%peer, "hello asked");
                let asked: Vec<Uuid> = hello.images.iter().filter_map(|(w, _)| self.local_image(*w)).collect();
                let mine = self.wire_hello(self.host.hello_images(&asked));
                self.respond(channel, Response::Hello(mine));
                self.on_hello(peer, hello);
            }
            Request::Manifest { image: wire } => {
                tracing::trace!(%peer, %wire, "manifest requested");
                let r = match self.local_image(wire).map(|image| self.host.manifest_for(image)) {
                    Some(Ok(h)) => Response::Manifest(h.to_vec()),
                    Some(Err(refusal)) => Response::Refused(refusal),
                    None => Response::Refused(Refusal::NotEndorsed),
                };
                self.respond(channel, r);
            }
            Request::Attestation { image, list_version } => {
                self.on_attestation_request(image, &list_version, channel);
            }
            Request::List { identifier } => self.on_list_request(identifier, channel),
            Request::Chunk { image: wire, index, insist } => {
                let Some(image) = self.local_image(wire) else {
                    return self.respond(channel, Response::Refused(Refusal::NotEndorsed));
                };
                // Asked again while a request for it waits, or while an
                // upload to this peer is overdue (it does not read).
                if self.inbound.contains_key(&(image, h, index)) || self.uploads.is_slow(h) {
                    self.respond(channel, Response::Refused(Refusal::Busy));
                    return;
                }
                self.inbound.insert((image, h, index), (id, channel));
                self.host.handle_chunk_request(now, h, image, index, insist);
            }
        }
    }

    /// A response to a request this node sent; `None` when the request
    /// failed.
    fn on_response(&mut self, peer: PeerId, o: Outbound, resp: Option<Response>) {
        let now = self.now();
        match (o, resp) {
            (Outbound::Hello, Some(Response::Hello(hello))) => self.on_hello(peer, hello),
            (Outbound::Hello, _) => tracing::debug!(%peer, "no hello in answer to ours"),
            (Outbound::Chunk { image, peer: h, index }, resp) => {
                let reply = match resp {
                    Some(Response::Chunk(data)) => {
                        let n = data.len() as u64;
                        tracing::trace!(%image, index, %peer, bytes = n, "chunk received");
                        if let Some(l) = self.images.get_mut(&image) {
                            l.bytes_in += n;
                        }
                        self.metrics.bytes_in.get_or_create(&Metrics::image(image)).inc_by(n);
                        let remote = self.other_site(h);
                        Metrics::count_site(&self.metrics.site_bytes_in, remote, n);
                        // A chunk that is never written (it failed its check,
                        // or arrived twice) leaves its entry: the set is bounded
                        // and emptied with the image.
                        if self.wan.is_some()
                            && remote.is_some()
                            && self.from_other_sites.len() < super::MAX_FROM_OTHER_SITES
                        {
                            self.from_other_sites.insert((image, index));
                        }
                        ChunkReply::Data(data)
                    }
                    Some(Response::Refused(r)) => {
                        tracing::trace!(%image, index, %peer, ?r, "chunk refused");
                        ChunkReply::Refused(r)
                    }
                    // An answer of another kind is no answer.
                    Some(_) | None => ChunkReply::Failed,
                };
                self.host.handle_chunk_reply(now, h, image, index, reply);
            }
            (Outbound::Attestation { image }, Some(Response::Attestation(bytes))) => {
                self.on_attestation(peer, image, bytes);
            }
            (Outbound::Attestation { .. }, _) => {}
            (Outbound::List { identifier }, resp) => {
                self.asking_lists.remove(&identifier);
                if let Some(Response::List(bytes)) = resp {
                    self.offer_list(peer, Carrier::Answer, bytes);
                }
            }
            (Outbound::Manifest { image, peer: h }, resp) => {
                let reply = match resp {
                    Some(Response::Manifest(hashes)) => ManifestReply::Hashes(hashes.into()),
                    Some(Response::Refused(r)) => ManifestReply::Refused(r),
                    Some(_) | None => ManifestReply::Failed,
                };
                let known = |s: &Self| s.host.image(image).is_some_and(|t| t.manifest().is_some());
                let before = known(self);
                self.host.handle_manifest_reply(now, h, image, reply);
                if !before && known(self) {
                    tracing::info!(%image, %peer, "manifest received and matches the list");
                }
            }
        }
    }
}
