//! A site's authority: its CA, the credentials it issues and its CRL, kept
//! in one directory (the format is [`proto::credential`]'s).
//!
//! # Contract
//! * A site directory holds `ca.pem` (the CA certificate, to hand to every
//!   node as `--site-ca`), `ca.key` (its key, mode 0600, never leaves the
//!   directory), `crl.pem` (the newest CRL, to hand to the masters) and
//!   `issued/<serial>.pem` (every credential issued, so that a peer's
//!   credentials can all be revoked by peer id).
//! * [`init`] never replaces an existing authority: a site directory that
//!   holds a key is refused.
//! * Every file is written under a temporary name, synced and renamed: a
//!   crash leaves the old file or the new one.
//! * [`revoke`] writes a CRL numbered one above the previous one, listing
//!   everything revoked so far and every credential issued to the peer.
//! * The CA key is EC P-256 and signs with SHA-256: small certificates and
//!   CRLs, and understood by every openssl a grid site runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1IntegerRef, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use openssl::x509::extension::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{
    X509, X509Builder, X509Crl, X509CrlBuilder, X509Extension, X509NameBuilder, X509NameRef, X509Ref,
    X509RevokedBuilder,
};
use proto::Timestamp;
use proto::credential::{role_name, serial_hex};
use proto::swarm::Role;

use crate::{Error, Result, fsutil};

/// How long a site CA is valid by default.
pub const CA_DAYS: u32 = 3650;
/// How long a credential is valid by default.
pub const CREDENTIAL_DAYS: u32 = 365;
/// Tools other than imageswarm read a CRL's `nextUpdate`; imageswarm keeps
/// the newest CRL by number regardless.
const CRL_NEXT_UPDATE_DAYS: i64 = 365;

/// The files of a site directory.
#[derive(Debug, Clone)]
pub struct SiteDir(PathBuf);

impl SiteDir {
    /// The site directory at `dir`.
    pub fn new(dir: &Path) -> Self {
        Self(dir.to_path_buf())
    }
    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    /// The CA key.
    pub fn key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    /// The newest CRL.
    pub fn crl(&self) -> PathBuf {
        self.0.join("crl.pem")
    }
    fn issued(&self) -> PathBuf {
        self.0.join("issued")
    }
}

fn ssl(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> Error {
    move |e| Error::Invalid(format!("{what}: {e}"))
}

fn random_serial() -> Result<Asn1Integer> {
    let mut bn = BigNum::new().map_err(ssl("serial"))?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false).map_err(ssl("serial"))?;
    bn.to_asn1_integer().map_err(ssl("serial"))
}

fn time(at: i64) -> Result<Asn1Time> {
    Asn1Time::from_unix(at).map_err(ssl("time"))
}

/// Makes a site authority for `site` in `dir` (created if missing), valid
/// for `days` from `now`.
pub fn init(dir: &SiteDir, site: &str, days: u32, now: Timestamp) -> Result<()> {
    if site.is_empty() || site.contains(['/', '\n']) {
        return Err(Error::Invalid(format!("`{site}` is not a usable site name")));
    }
    if dir.key().exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a site authority; refusing to replace its key",
            dir.0.display()
        )));
    }
    fs::create_dir_all(dir.issued()).map_err(Error::io("creating", &dir.issued()))?;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ssl("key"))?;
    let key = PKey::from_ec_key(EcKey::generate(&group).map_err(ssl("key"))?).map_err(ssl("key"))?;
    let mut name = X509NameBuilder::new().map_err(ssl("name"))?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, site).map_err(ssl("name"))?;
    name.append_entry_by_nid(Nid::COMMONNAME, "imageswarm site authority").map_err(ssl("name"))?;
    let name = name.build();
    let mut b = certificate(&name, &name, &key, &*random_serial()?, now, days)?;
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build().map_err(ssl("extension"))?)
        .map_err(ssl("extension"))?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().map_err(ssl("extension"))?)
        .map_err(ssl("extension"))?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).map_err(ssl("extension"))?;
    b.append_extension(ski).map_err(ssl("extension"))?;
    b.sign(&key, MessageDigest::sha256()).map_err(ssl("signing"))?;
    let ca = b.build();
    write_private(&dir.key(), &key.private_key_to_pem_pkcs8().map_err(ssl("key"))?)?;
    fsutil::write_atomic(&dir.ca(), &ca.to_pem().map_err(ssl("certificate"))?)?;
    let crl = build_crl(&ca, &key, 0, &[], now)?;
    fsutil::write_atomic(&dir.crl(), &crl.to_pem().map_err(ssl("crl"))?)
}

/// A version 3 certificate of `subject` with `key`, issued by `issuer`,
/// valid from five minutes before `now` (clocks differ a little) for
/// `days`; extensions and signature are the caller's.
fn certificate<T: HasPublic>(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKeyRef<T>,
    serial: &Asn1IntegerRef,
    now: Timestamp,
    days: u32,
) -> Result<X509Builder> {
    let e = ssl("certificate");
    let mut b = X509Builder::new().map_err(&e)?;
    b.set_version(2).map_err(&e)?;
    b.set_serial_number(serial).map_err(&e)?;
    b.set_subject_name(subject).map_err(&e)?;
    b.set_issuer_name(issuer).map_err(&e)?;
    b.set_pubkey(key).map_err(&e)?;
    b.set_not_before(&*time(now.unix() - 300)?).map_err(&e)?;
    b.set_not_after(&*time(now.unix() + i64::from(days) * 86_400)?).map_err(&e)?;
    Ok(b)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    fsutil::write_atomic(path, bytes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(Error::io("protecting", path))
}

fn load(dir: &SiteDir) -> Result<(X509, PKey<Private>)> {
    let ca = crate::endorse::load_certificate(&dir.ca())?;
    let key = crate::endorse::load_key(&dir.key())?;
    Ok((ca, key))
}

/// Issues a credential to the peer `peer_id` whose Ed25519 public key is
/// `peer_key`, valid for `days` from `now`; returns it as PEM.
pub fn issue(dir: &SiteDir, peer_id: &str, peer_key: &[u8], role: Role, days: u32, now: Timestamp) -> Result<Vec<u8>> {
    let (ca, ca_key) = load(dir)?;
    let site = proto::credential::authority_site(&ca)?;
    let key = PKey::public_key_from_raw_bytes(peer_key, Id::ED25519).map_err(ssl("peer key"))?;
    let mut name = X509NameBuilder::new().map_err(ssl("name"))?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, &site).map_err(ssl("name"))?;
    name.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, role_name(role)).map_err(ssl("name"))?;
    name.append_entry_by_nid(Nid::COMMONNAME, peer_id).map_err(ssl("name"))?;
    let serial = random_serial()?;
    let mut b = certificate(&name.build(), ca.subject_name(), &key, &serial, now, days)?;
    b.append_extension(BasicConstraints::new().critical().build().map_err(ssl("extension"))?)
        .map_err(ssl("extension"))?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build().map_err(ssl("extension"))?)
        .map_err(ssl("extension"))?;
    let aki = AuthorityKeyIdentifier::new().keyid(true).build(&b.x509v3_context(Some(&ca), None));
    b.append_extension(aki.map_err(ssl("extension"))?).map_err(ssl("extension"))?;
    b.sign(&ca_key, MessageDigest::sha256()).map_err(ssl("signing"))?;
    let pem = b.build().to_pem().map_err(ssl("certificate"))?;
    let hex = serial_hex(&serial).ok_or_else(|| Error::Invalid("an unreadable serial number".into()))?;
    fsutil::write_new(&dir.issued().join(format!("{hex}.pem")), &pem)?;
    Ok(pem)
}

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The serials newly revoked (hex).
    pub serials: Vec<String>,
    /// The new CRL's number.
    pub crl_number: u64,
}

/// Revokes every credential issued to `peer_id`, writing a new CRL.
pub fn revoke(dir: &SiteDir, peer_id: &str, now: Timestamp) -> Result<Revoked> {
    let (ca, key) = load(dir)?;
    let old = X509Crl::from_pem(&fsutil::read(&dir.crl())?).map_err(ssl("reading the CRL"))?;
    let number = proto::credential::crl_number(&old)
        .ok_or_else(|| Error::Invalid(format!("{}: no CRL number", dir.crl().display())))?;
    let mut serials: Vec<String> =
        old.get_revoked().into_iter().flatten().filter_map(|r| serial_hex(r.serial_number())).collect();
    let issued = dir.issued();
    let mut fresh = Vec::new();
    for entry in fs::read_dir(&issued).map_err(Error::io("reading", &issued))? {
        let path = entry.map_err(Error::io("reading", &issued))?.path();
        let cert = X509::from_pem(&fsutil::read(&path)?).map_err(ssl("reading an issued credential"))?;
        let cn = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next().and_then(|e| e.data().to_string().ok());
        if cn.is_some_and(|cn| cn == peer_id) {
            let s = serial_hex(cert.serial_number())
                .ok_or_else(|| Error::Invalid(format!("{}: an unreadable serial number", path.display())))?;
            if !serials.contains(&s) {
                fresh.push(s);
            }
        }
    }
    if fresh.is_empty() {
        return Err(Error::Invalid(format!(
            "no credential issued to {peer_id} in {} is left to revoke",
            dir.0.display()
        )));
    }
    serials.extend(fresh.iter().cloned());
    let crl = build_crl(&ca, &key, number + 1, &serials, now)?;
    fsutil::write_atomic(&dir.crl(), &crl.to_pem().map_err(ssl("crl"))?)?;
    Ok(Revoked { serials: fresh, crl_number: number + 1 })
}

fn build_crl(ca: &X509Ref, key: &PKey<Private>, number: u64, serials: &[String], now: Timestamp) -> Result<X509Crl> {
    let e = ssl("building the CRL");
    let mut b = X509CrlBuilder::new().map_err(&e)?;
    b.set_issuer_name(ca.subject_name()).map_err(&e)?;
    b.set_last_update(&*time(now.unix())?).map_err(&e)?;
    b.set_next_update(&*time(now.unix() + CRL_NEXT_UPDATE_DAYS * 86_400)?).map_err(&e)?;
    for s in serials {
        let mut r = X509RevokedBuilder::new().map_err(&e)?;
        let serial = BigNum::from_hex_str(s).and_then(|b| b.to_asn1_integer()).map_err(&e)?;
        r.set_serial_number(&serial).map_err(&e)?;
        r.set_revocation_date(&*time(now.unix())?).map_err(&e)?;
        b.add_revoked(r.build()).map_err(&e)?;
    }
    b.sort().map_err(&e)?;
    let mut ctx_builder = X509Builder::new().map_err(&e)?;
    ctx_builder.set_subject_name(ca.subject_name()).map_err(&e)?;
    let aki = AuthorityKeyIdentifier::new().keyid(true).build(&ctx_builder.x509v3_context(Some(ca), None));
    b.append_extension(aki.map_err(&e)?).map_err(&e)?;
    let crl_number = X509Extension::new_from_der(
        &*openssl::asn1::Asn1Object::from_str("2.5.29.20").map_err(&e)?,
        false,
        &*openssl::asn1::Asn1OctetString::new_from_bytes(&der_integer(number)).map_err(&e)?,
    )
    .map_err(&e)?;
    b.append_extension(crl_number).map_err(&e)?;
    b.sign(key, MessageDigest::sha256()).map_err(&e)?;
    b.build().map_err(&e)
}

/// The DER encoding of a non-negative INTEGER.
fn der_integer(n: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    let mut der = vec![0x02, bytes.len() as u8];
    der.extend(bytes);
    der
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
