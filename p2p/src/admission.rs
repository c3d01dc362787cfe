//! Admission to a closed site: which connected peers are served, and as
//! what. Nodes and trackers keep one [`Gate`] each; it decides, the caller
//! sends what it asks for and disconnects whom it names. Time is passed in.
//!
//! # Contract
//! * An open gate ([`Gate::open`], `--open-site`) makes every connected
//!   peer ready at once; site and role are then what peers claim.
//! * In a closed gate a peer is *admitted* once its [`Admit`] verified
//!   against the site CAs ([`SiteCas::verify`]), with the key its peer id
//!   names (the key the Noise handshake proved), at the time given. It is
//!   *ready* once it is admitted and has admitted this node in turn (its
//!   [`Admission`] answered this node's [`Admit`]). [`Gate::on_admit`] and
//!   [`Gate::on_admission`] report the moment a peer becomes ready, once.
//!   Until then the caller serves it nothing and asks it nothing.
//! * Site and role come from the credential ([`Gate::credential`]), never
//!   from what a peer claims. A peer of another (trusted) site is admitted
//!   only if both it and this process are gateways or masters: only they
//!   carry traffic between sites. A tracker, which has no role, admits
//!   every trusted site's members.
//! * [`Gate::overdue`] names, and forgets, every peer to disconnect: one not
//!   admitted within [`ADMISSION_TIMEOUT`] of connecting, one whose
//!   credential was refused (after [`REFUSAL_GRACE`], so that the refusal
//!   reaches it), and one whose credential expired or is on a CRL taken
//!   since it was admitted.
//! * Every [`Admit`] and [`Admission`] carries the newest CRLs and site
//!   policy held; a newer one is taken ([`SiteCas::offer_crl`],
//!   [`Gate::offer_policy`]) and [`Gate::take_news`] tells the caller to
//!   pass it on (and to apply a policy), so a revocation or a policy spreads
//!   from the masters to every peer in a few hops. A tracker takes CRLs
//!   only.
//! * Bounded: one entry per connected peer, forgotten on disconnect.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::PublicKey;
use proto::Timestamp;
use proto::credential::{Credential, SiteCas};
use proto::policy::{VerifiedPolicy, verify_policy};
use proto::swarm::Role;
use proto::wire::{Admission, Admit, MAX_CRLS};

/// How long a connected peer has to prove its membership.
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer whose credential was refused stays connected, so that
/// the refusal, and why, reaches it.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// The Ed25519 public key a peer id names, if it names one.
pub fn ed25519_key(peer: &PeerId) -> Option<[u8; 32]> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    key.try_into_ed25519().ok().map(|k| k.to_bytes())
}

#[derive(Debug)]
struct Entry {
    since: Instant,
    /// When its credential was last refused.
    refused: Option<Instant>,
    credential: Option<Credential>,
    /// The peer admitted this node.
    accepted: bool,
}

#[derive(Debug)]
struct Closed {
    cas: SiteCas,
    /// This process's own credential (DER); trackers have none.
    own: Option<Vec<u8>>,
    /// The site this process belongs to (its credential's); trackers have
    /// none, and take no policy.
    site: Option<String>,
    /// Its role (its credential's); trackers have none.
    role: Option<Role>,
    peers: HashMap<PeerId, Entry>,
    policy: Option<VerifiedPolicy>,
    news: News,
}

/// What a [`Gate`] took since it was last asked: to pass on, and apply.
#[derive(Debug, Default)]
pub struct News {
    /// A newer CRL.
    pub crls: bool,
    /// A newer site policy.
    pub policy: Option<VerifiedPolicy>,
}

impl News {
    /// Whether there is nothing new.
    pub fn is_empty(&self) -> bool {
        !self.crls && self.policy.is_none()
    }
}

impl Closed {
    fn policy_bytes(&self) -> Option<Vec<u8>> {
        self.policy.as_ref().map(|p| p.bytes().to_vec())
    }
}

/// Who is admitted (see the module docs).
#[derive(Debug)]
pub struct Gate(Option<Closed>);

/// Why a peer is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// It did not prove its membership within [`ADMISSION_TIMEOUT`].
    NotProven,
    /// Its credential was refused ([`REFUSAL_GRACE`] ago).
    Refused,
    /// Its credential expired.
    Expired,
    /// Its credential is on a CRL.
    Revoked,
}

impl std::fmt::Display for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotProven => "it did not prove its membership in time",
            Self::Refused => "its credential was refused",
            Self::Expired => "its credential expired",
            Self::Revoked => "its credential was revoked",
        })
    }
}

/// What to do with a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connected {
    /// The peer is ready (open site).
    Ready,
    /// Send it this, and wait for its own.
    Send(Admit),
    /// Wait for its [`Admit`] (a tracker, which has no credential).
    Wait,
}

impl Gate {
    /// Everyone is ready at once.
    pub fn open() -> Self {
        Self(None)
    }

    /// Members of the sites in `cas` only; `own` is this process's
    /// credential, which trackers lack.
    pub fn closed(cas: SiteCas, own: Option<Vec<u8>>) -> Self {
        let site = own.as_deref().and_then(|c| proto::credential::site_named(c).ok());
        let role = own.as_deref().and_then(|c| proto::credential::role_named(c).ok());
        let peers = HashMap::new();
        Self(Some(Closed { cas, own, site, role, peers, policy: None, news: News::default() }))
    }

    /// Whether credentials are checked.
    pub fn is_closed(&self) -> bool {
        self.0.is_some()
    }

    /// The site CAs and the CRLs held, in a closed site.
    pub fn cas(&self) -> Option<&SiteCas> {
        self.0.as_ref().map(|c| &c.cas)
    }

    /// This process's [`Admit`], with the newest CRLs; `None` in an open
    /// site or without a credential.
    pub fn admit(&self) -> Option<Admit> {
        let c = self.0.as_ref()?;
        Some(Admit { credential: c.own.clone()?, crls: c.cas.crls(), policy: c.policy_bytes() })
    }

    /// The site policy held.
    pub fn policy(&self) -> Option<&VerifiedPolicy> {
        self.0.as_ref()?.policy.as_ref()
    }

    /// Offers a signed site policy at `at`: `Ok(true)` when it verified and
    /// is newer than the one held, which it replaces, and
    /// [`Gate::take_news`] will say so. A tracker takes none.
    pub fn offer_policy(&mut self, bytes: &[u8], at: Timestamp) -> Result<bool, proto::Error> {
        let Some(c) = &mut self.0 else { return Ok(false) };
        let Some(site) = &c.site else { return Ok(false) };
        let p = verify_policy(bytes, &c.cas, site, at)?;
        if !p.supersedes(c.policy.as_ref()) {
            return Ok(false);
        }
        tracing::info!(version = p.policy().version, signer = p.signer().peer, "newer site policy taken");
        c.policy = Some(p.clone());
        c.news.policy = Some(p);
        Ok(true)
    }

    fn take_policy(&mut self, bytes: Option<&[u8]>, at: Timestamp) {
        if let Some(b) = bytes
            && let Err(e) = self.offer_policy(b, at)
        {
            tracing::info!(error = %e, "a site policy from a peer was not taken");
        }
    }

    /// A first connection to `peer` at `now`.
    pub fn connected(&mut self, peer: PeerId, now: Instant) -> Connected {
        let Some(c) = &mut self.0 else { return Connected::Ready };
        c.peers.insert(peer, Entry { since: now, refused: None, credential: None, accepted: c.own.is_none() });
        self.admit().map_or(Connected::Wait, Connected::Send)
    }

    /// The last connection to `peer` closed.
    pub fn disconnected(&mut self, peer: &PeerId) {
        if let Some(c) = &mut self.0 {
            c.peers.remove(peer);
        }
    }

    /// Offers a CRL (PEM or DER): `Ok(true)` when it is newer and taken,
    /// and [`Gate::take_crls_changed`] will say so.
    pub fn offer_crl(&mut self, crl: &[u8]) -> Result<bool, proto::Error> {
        let Some(c) = &mut self.0 else { return Ok(false) };
        let taken = c.cas.offer_crl(crl)?;
        if taken {
            tracing::info!(crls = ?c.cas.crl_numbers(), "newer site CRL taken");
            c.news.crls = true;
        }
        Ok(taken)
    }

    /// Takes the CRLs a peer passed on.
    fn take_crls(&mut self, crls: &[Vec<u8>]) {
        for crl in crls.iter().take(MAX_CRLS) {
            if let Err(e) = self.offer_crl(crl) {
                tracing::debug!(error = %e, "a CRL from a peer was not taken");
            }
        }
    }

    /// A peer's [`Admit`] at time `at`: the answer to send, and whether the
    /// peer became ready with it.
    pub fn on_admit(&mut self, peer: PeerId, admit: &Admit, now: Instant, at: Timestamp) -> (Admission, bool) {
        self.take_crls(&admit.crls);
        self.take_policy(admit.policy.as_deref(), at);
        let Some(c) = &mut self.0 else { return (Admission::Admitted { crls: Vec::new(), policy: None }, false) };
        let Some(entry) = c.peers.get_mut(&peer) else {
            return (Admission::Refused("not connected".into()), false);
        };
        let Some(key) = ed25519_key(&peer) else {
            return (Admission::Refused("the peer id names no Ed25519 key".into()), false);
        };
        match c.cas.verify(&admit.credential, &key, at) {
            Ok(cred) if cred.peer != peer.to_string() => {
                (entry.credential, entry.refused) = (None, Some(now));
                (Admission::Refused("the credential names another peer id".into()), false)
            }
            Ok(cred)
                if c.site.as_ref().is_some_and(|s| *s != cred.site)
                    && !(cred.role.crosses_sites() && c.role.is_some_and(Role::crosses_sites)) =>
            {
                (entry.credential, entry.refused) = (None, Some(now));
                (Admission::Refused("between sites only gateways and masters meet".into()), false)
            }
            Ok(cred) => {
                let was = entry.credential.is_some() && entry.accepted;
                tracing::debug!(%peer, site = cred.site, role = ?cred.role, "peer admitted");
                entry.credential = Some(cred);
                let ready = !was && entry.accepted;
                (Admission::Admitted { crls: c.cas.crls(), policy: c.policy_bytes() }, ready)
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "peer's credential refused");
                (entry.credential, entry.refused) = (None, Some(now));
                (Admission::Refused(e.to_string()), false)
            }
        }
    }

    /// A peer's answer to this node's [`Admit`]: `Ok(true)` when the peer
    /// became ready with it, `Err` with its reason when it refused.
    pub fn on_admission(&mut self, peer: PeerId, answer: Admission, at: Timestamp) -> Result<bool, String> {
        let (crls, policy) = match answer {
            Admission::Admitted { crls, policy } => (crls, policy),
            Admission::Refused(why) => return Err(why),
        };
        self.take_crls(&crls);
        self.take_policy(policy.as_deref(), at);
        let Some(entry) = self.0.as_mut().and_then(|c| c.peers.get_mut(&peer)) else { return Ok(false) };
        let became = !entry.accepted && entry.credential.is_some();
        entry.accepted = true;
        Ok(became)
    }

    /// Whether `peer` may be served and spoken to.
    pub fn is_ready(&self, peer: &PeerId) -> bool {
        match &self.0 {
            None => true,
            Some(c) => c.peers.get(peer).is_some_and(|e| e.accepted && e.credential.is_some()),
        }
    }

    /// The verified credential of an admitted peer (closed sites only).
    pub fn credential(&self, peer: &PeerId) -> Option<&Credential> {
        self.0.as_ref()?.peers.get(peer)?.credential.as_ref()
    }

    /// What was taken since the last call.
    pub fn take_news(&mut self) -> News {
        self.0.as_mut().map(|c| std::mem::take(&mut c.news)).unwrap_or_default()
    }

    /// Forgets and names every peer to disconnect at `now` (time `at`).
    pub fn overdue(&mut self, now: Instant, at: Timestamp) -> Vec<(PeerId, CutOff)> {
        let Some(c) = &mut self.0 else { return Vec::new() };
        let mut out = Vec::new();
        for (peer, e) in &c.peers {
            let why = match &e.credential {
                None if e.refused.is_some_and(|t| now.saturating_duration_since(t) >= REFUSAL_GRACE) => CutOff::Refused,
                None if now.saturating_duration_since(e.since) >= ADMISSION_TIMEOUT => CutOff::NotProven,
                None => continue,
                Some(cred) if cred.expires < at => CutOff::Expired,
                Some(cred) if c.cas.is_revoked(cred) => CutOff::Revoked,
                Some(_) => continue,
            };
            out.push((*peer, why));
        }
        for (p, _) in &out {
            c.peers.remove(p);
        }
        out
    }
}
