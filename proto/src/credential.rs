//! Site credentials: who may join a site's swarm, as what.
//!
//! A site's authority is a CA certificate whose subject names the site in
//! `O=`. It issues each node a credential: an X.509 certificate whose
//! subject is `CN=<peer id>, OU=<role>, O=<site>` and whose public key is the
//! node's own Ed25519 libp2p key. The transport's Noise handshake proves
//! that a peer holds the key its peer id names, so a credential is bound to
//! that handshake: one copied from another node names a key that is not the
//! copier's. Revocations travel as the authority's CRLs.
//!
//! X.509 because the grid already runs on it: the same openssl that checks
//! endorsers' lists checks credentials, and an operator reads one with
//! `openssl x509 -text` and a revocation list with `openssl crl -text`.
//!
//! # Contract
//! * [`SiteCas::verify`] is the only way to a [`Credential`]. It checks, in
//!   order, at the time it is given, and fails with [`Error::Credential`]
//!   naming the first check that did not hold:
//!   1. `format`: a PEM or DER certificate.
//!   2. `issuer`: signed directly by one of the site CAs (no intermediate).
//!   3. `validity`: the credential and that CA are valid at the given time.
//!   4. `key`: the credential's key is the connection's Ed25519 key.
//!   5. `subject`: exactly one `CN`, `OU` and `O`; `OU` is `worker`, `master`
//!      or `gateway`; `O` is the issuing CA's own site, so a site's CA
//!      vouches for its own members only.
//!   6. `revoked`: the serial is not on the newest CRL held from that CA.
//! * [`sign_document`] and [`open_signed`] carry what a member signs (a site
//!   policy, an attestation) with the member's credential; opening one
//!   verifies the credential and the signature together.
//! * [`SiteCas::offer_crl`] keeps a CRL only if one of the CAs signed it and
//!   its CRL number is higher than the one held from that CA. Revocation
//!   only grows: the newest CRL stands until a newer one arrives, whatever
//!   its `nextUpdate`, so withholding updates never un-revokes anyone.

use std::collections::HashMap;
use std::sync::Arc;

use openssl::asn1::{Asn1IntegerRef, Asn1Time};
use openssl::bn::BigNum;
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::sign::Verifier;
use openssl::x509::{CrlNumber, CrlStatus, X509, X509Crl, X509CrlRef, X509NameRef, X509Ref, X509VerifyResult};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::smime::first_reason;
use crate::swarm::Role;
use crate::wire::{Limit, decode, encode};
use crate::{Error, Timestamp};

fn fail(check: &'static str, detail: impl Into<String>) -> Error {
    Error::Credential { check, detail: detail.into() }
}

/// A role's name in a credential.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Worker => "worker",
        Role::Gateway => "gateway",
        Role::Master => "master",
    }
}

/// The role a credential names.
pub fn parse_role(name: &str) -> Option<Role> {
    match name {
        "worker" => Some(Role::Worker),
        "gateway" => Some(Role::Gateway),
        "master" => Some(Role::Master),
        _ => None,
    }
}

/// A document signed by a member: its encoded body, the member's
/// credential and its key's Ed25519 signature of the body.
#[derive(Debug, Serialize, Deserialize)]
struct Signed {
    body: Vec<u8>,
    credential: Vec<u8>,
    signature: Vec<u8>,
}

/// Signs `doc` as the holder of `credential`, whose key `sign` signs with;
/// returns the bytes [`open_signed`] takes.
pub fn sign_document<T: Serialize>(
    doc: &T,
    credential: &[u8],
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let body = encode(doc)?;
    let signature = sign(&body);
    encode(&Signed { body, credential: credential.to_vec(), signature })
}

/// Opens a document [`sign_document`] made: decodes it within
/// [`Limit::Control`] and verifies its signer at `at`
/// ([`SiteCas::verify_signed`]). What the signer may sign is the caller's
/// to check.
pub fn open_signed<T: DeserializeOwned>(bytes: &[u8], cas: &SiteCas, at: Timestamp) -> Result<(T, Credential), Error> {
    let signed: Signed = decode(bytes, Limit::Control)?;
    let signer = cas.verify_signed(&signed.credential, &signed.body, &signed.signature, at)?;
    Ok((decode(&signed.body, Limit::Control)?, signer))
}

/// A serial number as the CLI and CRL bookkeeping write it: hex.
pub fn serial_hex(serial: &Asn1IntegerRef) -> Option<String> {
    Some(serial.to_bn().ok()?.to_hex_str().ok()?.to_string())
}

/// A CRL's number, which orders a CA's CRLs.
pub fn crl_number(crl: &X509CrlRef) -> Option<u64> {
    let (_, n) = crl.extension::<CrlNumber>().ok()??;
    n.to_bn().ok()?.to_dec_str().ok()?.parse().ok()
}

/// The site a credential names (its subject's `O`), read without
/// verifying it: for defaults only, never to admit anyone.
pub fn site_named(bytes: &[u8]) -> Result<String, Error> {
    entry(parse_cert(bytes)?.subject_name(), Nid::ORGANIZATIONNAME).ok_or_else(|| fail("subject", "no single O (site)"))
}

/// The role a credential names (its subject's `OU`), read without
/// verifying it: for a process's own credential, which it checked at start.
pub fn role_named(bytes: &[u8]) -> Result<Role, Error> {
    entry(parse_cert(bytes)?.subject_name(), Nid::ORGANIZATIONALUNITNAME)
        .as_deref()
        .and_then(parse_role)
        .ok_or_else(|| fail("subject", "OU is not one of worker, master, gateway"))
}

/// A credential that [`SiteCas::verify`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The peer id it names, as text.
    pub peer: String,
    /// The site it belongs to.
    pub site: String,
    /// The role the site gave it.
    pub role: Role,
    /// When it expires.
    pub expires: Timestamp,
    /// Its serial number (hex), unique per issuing CA.
    pub serial: String,
    /// Which of the site CAs issued it (index into [`SiteCas`]).
    issuer: usize,
}

/// The newest CRL held from one CA.
#[derive(Clone)]
struct HeldCrl {
    number: u64,
    crl: Arc<X509Crl>,
    der: Vec<u8>,
}

/// The site CAs a node trusts, and the newest CRL held from each.
#[derive(Clone, Default)]
pub struct SiteCas {
    cas: Vec<(X509, String)>,
    crls: HashMap<usize, HeldCrl>,
}

impl std::fmt::Debug for SiteCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sites: Vec<&str> = self.cas.iter().map(|(_, s)| s.as_str()).collect();
        f.debug_struct("SiteCas").field("sites", &sites).field("crls", &self.crl_numbers()).finish()
    }
}

/// The single text entry of `nid` in `name`.
fn entry(name: &X509NameRef, nid: Nid) -> Option<String> {
    let mut it = name.entries_by_nid(nid);
    let e = it.next()?;
    if it.next().is_some() {
        return None;
    }
    e.data().to_string().ok()
}

fn parse_cert(bytes: &[u8]) -> Result<X509, Error> {
    X509::from_pem(bytes).or_else(|_| X509::from_der(bytes)).map_err(|e| fail("format", first_reason(&e)))
}

fn asn1_at(at: Timestamp) -> Result<Asn1Time, Error> {
    Asn1Time::from_unix(at.unix()).map_err(|e| fail("validity", first_reason(&e)))
}

fn valid_at(cert: &X509Ref, at: &Asn1Time) -> bool {
    cert.not_before() <= at && at <= cert.not_after()
}

fn unix_of(t: &openssl::asn1::Asn1TimeRef) -> Result<Timestamp, Error> {
    Timestamp::from_asn1(t).ok_or_else(|| fail("validity", format!("a date OpenSSL cannot read: {t}")))
}

/// The site a CA certificate speaks for: its subject's `O`.
pub fn authority_site(ca: &X509Ref) -> Result<String, Error> {
    entry(ca.subject_name(), Nid::ORGANIZATIONNAME)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| fail("authority", "the site CA's subject names no single site (O=)"))
}

impl SiteCas {
    /// No CAs: nothing verifies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a site CA certificate (PEM or DER); returns the site it names.
    pub fn add_ca(&mut self, bytes: &[u8]) -> Result<String, Error> {
        let ca = parse_cert(bytes)?;
        let site = authority_site(&ca)?;
        if !self.cas.iter().any(|(c, _)| c.to_der().ok() == ca.to_der().ok()) {
            self.cas.push((ca, site.clone()));
        }
        Ok(site)
    }

    /// The sites whose CAs are held, in the order they were added.
    pub fn sites(&self) -> impl Iterator<Item = &str> {
        self.cas.iter().map(|(_, s)| s.as_str())
    }

    /// Verifies `bytes` as the credential of the peer whose Ed25519 public
    /// key is `peer_key`, at `at` (see the module docs).
    pub fn verify(&self, bytes: &[u8], peer_key: &[u8], at: Timestamp) -> Result<Credential, Error> {
        let cert = parse_cert(bytes)?;
        let issuer = self
            .cas
            .iter()
            .position(|(ca, _)| {
                ca.issued(&cert) == X509VerifyResult::OK
                    && ca.public_key().and_then(|k| cert.verify(&k)).unwrap_or(false)
            })
            .ok_or_else(|| fail("issuer", "not issued by a site CA this node trusts"))?;
        let (ca, ca_site) = &self.cas[issuer];
        let now = asn1_at(at)?;
        if !valid_at(ca, &now) {
            return Err(fail("validity", format!("the CA of site {ca_site} is not valid at {at}")));
        }
        if !valid_at(&cert, &now) {
            return Err(fail("validity", format!("not valid at {at} (expires {})", cert.not_after())));
        }
        let key = cert.public_key().map_err(|e| fail("key", first_reason(&e)))?;
        if key.id() != Id::ED25519 || key.raw_public_key().ok().as_deref() != Some(peer_key) {
            return Err(fail("key", "the credential's key is not the key of the peer that showed it"));
        }
        let subject = cert.subject_name();
        let peer = entry(subject, Nid::COMMONNAME).ok_or_else(|| fail("subject", "no single CN (peer id)"))?;
        let role = entry(subject, Nid::ORGANIZATIONALUNITNAME)
            .as_deref()
            .and_then(parse_role)
            .ok_or_else(|| fail("subject", "OU is not one of worker, master, gateway"))?;
        let site = entry(subject, Nid::ORGANIZATIONNAME).ok_or_else(|| fail("subject", "no single O (site)"))?;
        if site != *ca_site {
            return Err(fail("subject", format!("names site {site} but was issued by the CA of site {ca_site}")));
        }
        let serial = serial_hex(cert.serial_number()).ok_or_else(|| fail("format", "an unreadable serial number"))?;
        let c = Credential { peer, site, role, expires: unix_of(cert.not_after())?, serial, issuer };
        if let Some(held) = self.crls.get(&issuer)
            && let CrlStatus::Revoked(_) = held.crl.get_by_serial(cert.serial_number())
        {
            return Err(fail("revoked", format!("serial {} is on CRL {} of site {}", c.serial, held.number, c.site)));
        }
        Ok(c)
    }

    /// Verifies `credential` as the signer of `message`: the credential
    /// verifies (as [`SiteCas::verify`] with its own key) and `signature`
    /// is its key's Ed25519 signature of `message`.
    pub fn verify_signed(
        &self,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
        at: Timestamp,
    ) -> Result<Credential, Error> {
        let key = parse_cert(credential)?.public_key().map_err(|e| fail("key", first_reason(&e)))?;
        let raw = key.raw_public_key().map_err(|_| fail("key", "not an Ed25519 key"))?;
        let c = self.verify(credential, &raw, at)?;
        let ok = Verifier::new_without_digest(&key)
            .and_then(|mut v| v.verify_oneshot(signature, message))
            .map_err(|e| fail("signature", first_reason(&e)))?;
        if !ok {
            return Err(fail("signature", "the signature does not match the credential's key"));
        }
        Ok(c)
    }

    /// Whether `c` is on the newest CRL held from its issuer (a CRL that
    /// arrived after it was verified).
    pub fn is_revoked(&self, c: &Credential) -> bool {
        let Some(held) = self.crls.get(&c.issuer) else { return false };
        BigNum::from_hex_str(&c.serial)
            .and_then(|b| b.to_asn1_integer())
            .is_ok_and(|serial| matches!(held.crl.get_by_serial(&serial), CrlStatus::Revoked(_)))
    }

    /// Offers a CRL (PEM or DER). Returns `Ok(true)` when it is kept: signed
    /// by one of the CAs and newer than the one held from it; `Ok(false)`
    /// when it is not newer.
    pub fn offer_crl(&mut self, bytes: &[u8]) -> Result<bool, Error> {
        let crl = X509Crl::from_pem(bytes)
            .or_else(|_| X509Crl::from_der(bytes))
            .map_err(|e| fail("crl", first_reason(&e)))?;
        let issuer = self
            .cas
            .iter()
            .position(|(ca, _)| {
                ca.subject_name().try_cmp(crl.issuer_name()).is_ok_and(|o| o.is_eq())
                    && ca.public_key().and_then(|k| crl.verify(&k)).unwrap_or(false)
            })
            .ok_or_else(|| fail("crl", "not signed by a site CA this node trusts"))?;
        let number = crl_number(&crl).ok_or_else(|| fail("crl", "no CRL number"))?;
        if self.crls.get(&issuer).is_some_and(|h| h.number >= number) {
            return Ok(false);
        }
        let der = crl.to_der().map_err(|e| fail("crl", first_reason(&e)))?;
        self.crls.insert(issuer, HeldCrl { number, crl: Arc::new(crl), der });
        Ok(true)
    }

    /// The newest CRL held from each CA, DER-encoded, to pass on.
    pub fn crls(&self) -> Vec<Vec<u8>> {
        self.crls.values().map(|h| h.der.clone()).collect()
    }

    /// The CRL number held per site, for status and logs.
    pub fn crl_numbers(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self.crls.iter().map(|(i, h)| (self.cas[*i].1.clone(), h.number)).collect();
        v.sort();
        v
    }
}
