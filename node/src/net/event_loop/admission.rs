//! Admission, translated between libp2p and the [`Gate`]: credentials sent
//! and checked on every new connection, trackers asked to admit this node
//! before it announces, CRLs passed on, and peers cut off.
//!
//! # Contract
//! * The transfer machine hears of a peer ([`Host::handle_connected`])
//!   only when the gate says it is ready, so nothing is asked of or sent to
//!   a peer before that; requests and notices from a peer that is not ready
//!   are dropped unanswered.
//! * In a closed site a new peer's gossip score is held below the publish
//!   threshold until it is ready (`super::super::behaviour`); when it is,
//!   the lists not yet published are (see [`super::lists`]).
//! * A tracker is announced to only once it admitted this node.
//! * A peer that refuses this node's credential is disconnected, and not
//!   dialled again for an announce interval; its refusal is a warning the
//!   first time and whenever its reason changes, a debug line otherwise
//!   (two sites that do not trust each other meet again and again).
//! * When the gate takes a newer CRL (from a peer, a tracker's answer or the
//!   CRL file) or site policy, every ready peer and admitting tracker is
//!   sent this node's admit again, which carries it; the peers a CRL
//!   revokes are disconnected and blocked at once, and the next tick cuts
//!   off the rest that [`Gate::overdue`] names. A policy another master
//!   signed is applied to the store ([`Site::apply_policy`]); one this
//!   master signed is stored ([`Site::keep_policy`]).
//! * A master of a closed site signs a new policy version whenever what
//!   its store decides (endorsers, subscriptions, image decisions) differs
//!   from the policy held: after host commands, updates and lists taken.
//!
//! [`Host::handle_connected`]: proto::transfer::Host::handle_connected

use std::path::Path;
use std::time::{Instant, SystemTime};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId};
use p2p::admission::{Connected, CutOff, Gate};
use proto::policy::{Policy, sign_policy};
use proto::swarm::Role;
use proto::wire::{Admission, Admit};

use super::super::behaviour::UNADMITTED_SCORE;
use super::EventLoop;
use super::jobs::{self, IoDone};
use crate::net::{Membership, NodeConfig};
use crate::site::Site;
use crate::{Error, Result};

/// A node whose own credential expires within this long says so at start.
const CREDENTIAL_WARNING_SECS: i64 = 14 * 86_400;

/// Where this node stands with a tracker in a closed site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TrackerAdmission {
    /// This node's admit is on its way.
    Asked,
    /// The tracker admitted this node.
    Admitted,
}

/// Peers whose refusals of this node's credential are remembered at most;
/// beyond them the record starts afresh (and warns again).
pub(super) const REFUSALS_KEPT: usize = 1024;

/// A CRL file and when it last changed, read again when that changes.
#[derive(Debug)]
pub(super) struct CrlFile {
    pub(super) path: std::path::PathBuf,
    pub(super) modified: Option<SystemTime>,
}

impl CrlFile {
    fn modified(path: &Path) -> Option<SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }
}

impl EventLoop {
    /// A first connection to `peer`.
    pub(super) fn on_first_connection(&mut self, peer: PeerId) {
        if self.is_tracker(&peer) {
            return;
        }
        match self.gate.connected(peer, Instant::now()) {
            Connected::Ready => self.on_ready(peer),
            Connected::Send(admit) => {
                self.swarm.behaviour_mut().gossip.set_application_score(&peer, UNADMITTED_SCORE);
                self.send_admit(peer, admit);
            }
            Connected::Wait => {}
        }
    }

    fn send_admit(&mut self, peer: PeerId, admit: Admit) -> OutboundRequestId {
        self.swarm.behaviour_mut().admit.send_request(&peer, admit)
    }

    /// The connected peers the gate has made ready.
    pub(super) fn ready_peers(&self) -> Vec<PeerId> {
        self.handles.keys().copied().filter(|p| self.gate.is_ready(p)).collect()
    }

    fn is_tracker(&self, peer: &PeerId) -> bool {
        self.trackers.is_tracker(peer)
    }

    /// `peer` may now be served and spoken to.
    fn on_ready(&mut self, peer: PeerId) {
        if let Some(c) = self.gate.credential(&peer) {
            tracing::debug!(%peer, site = c.site, role = ?c.role, "peer ready");
            self.swarm.behaviour_mut().gossip.set_application_score(&peer, 0.0);
            self.publish_lists();
        }
        let h = self.handle(peer);
        let now = self.now();
        self.host.handle_connected(now, h);
        self.ask_attestations(peer);
    }

    /// Whether this node may announce to `tracker` now; in a closed site it
    /// asks the tracker to admit it first.
    pub(super) fn tracker_admits(&mut self, tracker: PeerId) -> bool {
        let Some(admit) = self.gate.admit() else { return true };
        match self.tracker_admission.get(&tracker) {
            Some(TrackerAdmission::Admitted) => true,
            Some(TrackerAdmission::Asked) => false,
            None => {
                self.send_admit(tracker, admit);
                self.tracker_admission.insert(tracker, TrackerAdmission::Asked);
                false
            }
        }
    }

    pub(super) fn on_admit_event(&mut self, ev: request_response::Event<Admit, Admission>) {
        use request_response::{Event, Message as M};
        match ev {
            Event::Message { peer, message: M::Request { request, channel, .. }, .. } => {
                let (answer, ready) = self.gate.on_admit(peer, &request, Instant::now(), crate::now());
                let _ = self.swarm.behaviour_mut().admit.send_response(channel, answer);
                if ready {
                    self.on_ready(peer);
                }
            }
            Event::Message { peer, message: M::Response { response, .. }, .. } => {
                let tracker = self.is_tracker(&peer);
                let admitted = self.gate.on_admission(peer, response, crate::now());
                if admitted.is_ok() {
                    self.refusals.remove(&peer);
                }
                match admitted {
                    Ok(_) if tracker => {
                        let first = self.tracker_admission.insert(peer, TrackerAdmission::Admitted)
                            != Some(TrackerAdmission::Admitted);
                        if first {
                            tracing::info!(tracker = %peer, "admitted by the tracker");
                            self.announce_all();
                        }
                    }
                    Ok(true) => self.on_ready(peer),
                    Ok(false) => {}
                    Err(why) => {
                        if self.refusals.get(&peer).is_some_and(|(w, _)| *w == why) {
                            tracing::debug!(%peer, tracker, why, "the peer refused this node's credential again");
                        } else {
                            tracing::warn!(%peer, tracker, why, "the peer refused this node's credential");
                        }
                        if self.refusals.len() >= REFUSALS_KEPT {
                            self.refusals.clear();
                        }
                        self.refusals.insert(peer, (why.to_string(), Instant::now()));
                        self.tracker_admission.remove(&peer);
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
            Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "admit not answered");
                self.tracker_admission.remove(&peer);
            }
            _ => {}
        }
        self.pass_on_news();
    }

    /// Reads the CRL file again if it changed.
    fn reread_crl_file(&mut self) {
        let Some(f) = &mut self.crl_file else { return };
        let modified = CrlFile::modified(&f.path);
        if modified == f.modified {
            return;
        }
        f.modified = modified;
        let path = f.path.clone();
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| self.gate.offer_crl(&b).map_err(|e| e.to_string()))
        {
            Ok(true) => tracing::info!(path = %path.display(), "site CRL file taken"),
            Ok(false) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "site CRL file not taken"),
        }
    }

    /// After a newer CRL or site policy: sends it to everyone ready and
    /// every admitting tracker, cuts off whom a CRL revokes, and follows a
    /// policy another master signed.
    fn pass_on_news(&mut self) {
        let news = self.gate.take_news();
        if news.is_empty() {
            return;
        }
        if let Some(admit) = self.gate.admit() {
            let ready = self.ready_peers();
            let trackers: Vec<PeerId> = self
                .tracker_admission
                .iter()
                .filter(|(_, s)| **s == TrackerAdmission::Admitted)
                .map(|(p, _)| *p)
                .collect();
            for p in ready.into_iter().chain(trackers) {
                self.send_admit(p, admit.clone());
            }
        }
        if news.crls {
            self.cut_off();
        }
        if let Some(policy) = news.policy {
            let site = self.site.clone();
            let own = policy.signer().peer == self.swarm.local_peer_id().to_string();
            self.jobs.control(async move {
                IoDone::PolicyApplied(
                    jobs::blocking(move || {
                        if own { site.keep_policy(&policy) } else { site.apply_policy(&policy, crate::now()) }
                    })
                    .await,
                )
            });
        }
    }

    /// On a master of a closed site: signs and spreads a new version of the
    /// site policy when what its store decides differs from the policy held.
    pub(super) fn publish_policy(&mut self) {
        if self.role != Role::Master || !self.gate.is_closed() {
            return;
        }
        let content = match self.site.policy_content() {
            Ok(c) => c,
            Err(e) => return tracing::error!(error = %e, "reading the site's decisions failed"),
        };
        let held = self.gate.policy().map(|p| p.policy());
        if held.is_some_and(|p| p.content == content) {
            return;
        }
        let Membership::Closed { credential, .. } = &self.cfg.membership else { return };
        let policy = Policy { site: self.cfg.site.clone(), version: held.map_or(1, |p| p.version + 1), content };
        let signed = sign_policy(&policy, credential, |body| self.key.sign(body).unwrap_or_default());
        match signed.map(|b| self.gate.offer_policy(&b, crate::now())) {
            Ok(Ok(_)) => {
                tracing::info!(version = policy.version, "site policy signed");
                self.pass_on_news();
            }
            Ok(Err(e)) | Err(e) => tracing::error!(error = %e, "signing the site policy failed"),
        }
    }

    /// Disconnects the peers the gate names; revoked ones stay blocked.
    pub(super) fn cut_off(&mut self) {
        for (peer, why) in self.gate.overdue(Instant::now(), crate::now()) {
            tracing::warn!(%peer, %why, "peer cut off");
            if why == CutOff::Revoked {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// On every tick: the CRL file, and whoever is overdue.
    pub(super) fn admission_tick(&mut self) {
        if !self.gate.is_closed() {
            return;
        }
        self.reread_crl_file();
        self.pass_on_news();
        self.cut_off();
    }

    /// The last connection to `peer` closed.
    pub(super) fn admission_forget(&mut self, peer: &PeerId) {
        self.gate.disconnected(peer);
        self.tracker_admission.remove(peer);
    }
}

/// The gate for a node's configuration, and the role it runs as. In a
/// closed site the node's own credential must verify now, with its own
/// key, and name the site and role the node was started with.
pub(super) fn gate(cfg: &NodeConfig, key: &Keypair, site: &Site) -> Result<(Gate, Option<CrlFile>, Role)> {
    let claimed = if cfg.master {
        Role::Master
    } else if cfg.gateway {
        Role::Gateway
    } else {
        Role::Worker
    };
    let Membership::Closed { credential, cas, crl_file } = &cfg.membership else {
        return Ok((Gate::open(), None, claimed));
    };
    let peer = key.public().to_peer_id();
    let own = p2p::admission::ed25519_key(&peer)
        .ok_or_else(|| Error::Invalid("the node's key is not an Ed25519 key".into()))?;
    let c = cas
        .verify(credential, &own, crate::now())
        .map_err(|e| Error::Invalid(format!("this node's credential does not admit it: {e}")))?;
    if c.peer != peer.to_string() {
        return Err(Error::Invalid(format!("the credential names peer {}, this node is {peer}", c.peer)));
    }
    if c.site != cfg.site {
        return Err(Error::Invalid(format!(
            "the credential is for site {}, but the node was started for site {}",
            c.site, cfg.site
        )));
    }
    if c.role != claimed {
        let flag = |r: Role| match r {
            Role::Master => "--master",
            Role::Gateway => "--gateway",
            Role::Worker => "neither --master nor --gateway",
        };
        return Err(Error::Invalid(format!(
            "the credential is a {} credential: start the node with {}, not {}",
            proto::credential::role_name(c.role),
            flag(c.role),
            flag(claimed)
        )));
    }
    tracing::info!(site = c.site, role = ?c.role, expires = %c.expires, "closed site: peers must show credentials");
    if c.expires.unix() - crate::now().unix() < CREDENTIAL_WARNING_SECS {
        tracing::warn!(expires = %c.expires, "this node's credential expires soon: peers cut it off then; issue a new one");
    }
    let file = crl_file.clone().map(|path| CrlFile { path, modified: None });
    let mut gate = Gate::closed(cas.clone(), Some(credential.clone()));
    // The policy followed before the restart stands until a newer one comes.
    if let Some(stored) = site.store().policy()? {
        let taken = hex::decode(&stored.signed)
            .map_err(|e| e.to_string())
            .and_then(|b| gate.offer_policy(&b, crate::now()).map_err(|e| e.to_string()));
        if let Err(e) = taken {
            tracing::warn!(error = %e, "the stored site policy no longer verifies; waiting for a newer one");
        }
        gate.take_news();
    }
    Ok((gate, file, claimed))
}
