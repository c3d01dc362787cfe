//! Trust: from signed bytes to a [`VerifiedList`].
//!
//! # Contract
//! [`verify_list`] is the only way to obtain a [`VerifiedList`]. It runs these
//! checks in order, at the time it is given (never the clock), and fails with
//! an [`Error`] naming the first check that did not hold:
//!
//! 1. `smime`: a detached `multipart/signed` message ([`SignedMessage`]).
//! 2. `signers`: exactly one signer.
//! 3. `chain` / `validity` / `purpose` / `revocation` / `crl`: the signer's
//!    certificate chains to a CA in [`TrustAnchors`], every certificate is
//!    valid at the given time, fit for S/MIME signing, and, unless the caller
//!    chose [`CrlPolicy::NotChecked`], every certificate on the path has a
//!    current CRL from its issuer that does not list it.
//! 4. `signature`: the signature covers the canonical content.
//! 5. `format`: the content is an image list.
//! 6. `endorser-dn` / `endorser-ca`: the list's `hv:dn` and `hv:ca` equal the
//!    signer's subject and issuer (OpenSSL one-line form, exact strings).
//! 7. `endorser-approval`: with [`EndorserPolicy::Approved`], the signer is
//!    one of the approved endorsers.
//! 8. `created` / `expires`: `dc:date:created` is not after the given time and
//!    the list has not expired (`at <= dc:date:expires`).
//!
//! Every certificate in [`TrustAnchors`] is a trust anchor, self-signed or
//! not (OpenSSL's `PARTIAL_CHAIN`): a site may pin an intermediate CA, or a
//! single endorser certificate, and the path stops there. Revocation of a
//! pinned certificate still needs its issuer's CRL unless checking is off.
//!
//! No code path sets `NOVERIFY`, `NO_SIGNER_CERT_VERIFY` or the purpose
//! "any"; a workspace test fails if one appears.
//!
//! [`VerifiedList::succeeds`] then decides whether a verified list may replace
//! one accepted earlier (`identifier`, `version` checks).

use std::cmp::Ordering;
use std::sync::Arc;

use openssl::pkcs7::Pkcs7Flags;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509Crl, X509PurposeId, X509Ref, X509StoreContext};
use sha2::{Digest, Sha512};

use crate::error::ChainCheck;
use crate::imagelist::{ImageList, version};
use crate::smime::{SignedMessage, empty_stack, first_reason};
use crate::{Error, Timestamp, ffi};

/// CA certificates and CRLs a site trusts.
#[derive(Clone, Default)]
pub struct TrustAnchors {
    cas: Vec<X509>,
    crls: Vec<Arc<X509Crl>>,
    /// The DER of every certificate and CRL above, so that each counts once.
    seen: std::collections::HashSet<Vec<u8>>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors").field("cas", &self.cas.len()).field("crls", &self.crls.len()).finish()
    }
}

impl TrustAnchors {
    /// No anchors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every certificate in a PEM bundle that is not here yet (an IGTF
    /// directory holds each CA twice, as `<hash>.0` and as `NAME.pem`);
    /// returns how many were new.
    pub fn add_ca_pem(&mut self, pem: &[u8]) -> Result<usize, Error> {
        let certs =
            X509::stack_from_pem(pem).map_err(|e| Error::TrustStore(format!("CA file: {}", first_reason(&e))))?;
        if certs.is_empty() {
            return Err(Error::TrustStore("CA file holds no PEM certificate".into()));
        }
        let before = self.cas.len();
        for cert in certs {
            let der = cert.to_der().map_err(|e| Error::TrustStore(first_reason(&e)))?;
            if self.seen.insert(der) {
                self.cas.push(cert);
            }
        }
        Ok(self.cas.len() - before)
    }

    /// Adds a CRL, PEM or DER, unless it is here already.
    pub fn add_crl(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let crl = X509Crl::from_pem(bytes)
            .or_else(|_| X509Crl::from_der(bytes))
            .map_err(|e| Error::TrustStore(format!("CRL: {}", first_reason(&e))))?;
        let der = crl.to_der().map_err(|e| Error::TrustStore(first_reason(&e)))?;
        if self.seen.insert(der) {
            self.crls.push(Arc::new(crl));
        }
        Ok(())
    }

    /// Adds one file of an IGTF-style directory by its name: `<hash>.N` is a
    /// CA certificate, `<hash>.rN` a CRL, `*.pem` a CA bundle; other names
    /// (`.signing_policy`, `.namespaces`, `.info`, ...) are ignored. Returns
    /// whether the file was used.
    pub fn add_igtf_file(&mut self, name: &str, bytes: &[u8]) -> Result<bool, Error> {
        let Some((stem, ext)) = name.rsplit_once('.') else {
            return Ok(false);
        };
        let hashed = stem.len() == 8 && stem.bytes().all(|b| b.is_ascii_hexdigit());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if hashed && digits(ext) {
            self.add_ca_pem(bytes).map(|_| true)
        } else if hashed && ext.strip_prefix('r').is_some_and(digits) {
            self.add_crl(bytes).map(|()| true)
        } else if ext == "pem" {
            self.add_ca_pem(bytes).map(|_| true)
        } else {
            Ok(false)
        }
    }

    /// Each CA certificate's subject and the `nextUpdate` of the latest CRL
    /// it issued that is loaded (`None`: no CRL from it).
    pub fn crl_next_updates(&self) -> Vec<(String, Option<Timestamp>)> {
        self.cas
            .iter()
            .map(|ca| {
                let subject = ffi::name_oneline(ca.subject_name());
                let next = self
                    .crls
                    .iter()
                    .filter(|c| ffi::name_oneline(c.issuer_name()) == subject)
                    .filter_map(|c| c.next_update().and_then(Timestamp::from_asn1))
                    .max();
                (subject, next)
            })
            .collect()
    }

    /// How many distinct CA certificates and CRLs are loaded.
    pub fn counts(&self) -> (usize, usize) {
        (self.cas.len(), self.crls.len())
    }
}

/// Whether revocation is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrlPolicy {
    /// Every certificate on the path needs a current CRL from its issuer
    /// (vmcatcher's rule). A missing or expired CRL fails closed.
    #[default]
    Required,
    /// Revocation is not checked. Only by explicit choice.
    NotChecked,
}

/// Which signers a site accepts, beyond chaining to a trusted CA.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EndorserPolicy {
    /// Any signer whose certificate chains to a trusted CA.
    #[default]
    AnyTrustedSigner,
    /// Only these endorsers.
    Approved(Vec<ApprovedEndorser>),
}

/// An endorser the site approved: a subject DN, optionally pinned to an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedEndorser {
    /// The subject, OpenSSL one-line form.
    pub dn: String,
    /// The issuer, same form; `None` accepts any trusted issuer.
    pub ca: Option<String>,
}

impl EndorserPolicy {
    fn admits(&self, signer: &Signer) -> bool {
        match self {
            Self::AnyTrustedSigner => true,
            Self::Approved(list) => {
                list.iter().any(|e| e.dn == signer.dn && e.ca.as_ref().is_none_or(|ca| *ca == signer.ca))
            }
        }
    }
}

/// The trust configuration that verification runs against.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The CAs and CRLs.
    pub anchors: TrustAnchors,
    /// Whether revocation is checked.
    pub crl: CrlPolicy,
    /// Which endorsers are accepted.
    pub endorsers: EndorserPolicy,
}

/// The signer of a verified list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Subject, OpenSSL one-line form.
    pub dn: String,
    /// Issuer, OpenSSL one-line form.
    pub ca: String,
    /// The signer certificate's serial number, in hex.
    pub serial: String,
    /// The certificate's notAfter, as OpenSSL prints it.
    pub not_after: String,
}

impl Signer {
    /// Subject, issuer and serial of a certificate.
    pub fn of(cert: &X509Ref) -> Self {
        Self {
            dn: ffi::name_oneline(cert.subject_name()),
            ca: ffi::name_oneline(cert.issuer_name()),
            serial: cert
                .serial_number()
                .to_bn()
                .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
                .unwrap_or_default(),
            not_after: cert.not_after().to_string(),
        }
    }
}

/// An image list whose signature, chain, endorser and dates held at the
/// time it was verified. Only [`verify_list`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedList {
    list: ImageList,
    signer: Signer,
    message: Vec<u8>,
    content_sha512: [u8; 64],
    verified_at: Timestamp,
}

impl VerifiedList {
    /// The decoded list.
    pub fn list(&self) -> &ImageList {
        &self.list
    }

    /// Who signed it.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The signed message exactly as received.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// SHA-512 of the canonical signed content: the identity of this list
    /// version, unchanged by CRLF conversion in transit.
    pub fn content_sha512(&self) -> [u8; 64] {
        self.content_sha512
    }

    /// The time the checks were made at.
    pub fn verified_at(&self) -> Timestamp {
        self.verified_at
    }

    /// Decides whether this list may replace `previous`, a list accepted
    /// earlier for the same subscription.
    pub fn succeeds(&self, previous: &Self) -> Result<Succession, Error> {
        succession(
            (self.list.identifier, &self.list.version, &self.content_sha512),
            (previous.list.identifier, &previous.list.version, &previous.content_sha512),
        )
    }
}

/// How a verified list relates to the one held before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// The same content: nothing to do.
    Same,
    /// A higher version: replace.
    Newer,
}

/// The succession rule on plain parts, shared by [`VerifiedList::succeeds`]
/// and stores that keep only a list's identity, version and content hash.
pub fn succession(new: (uuid::Uuid, &str, &[u8; 64]), old: (uuid::Uuid, &str, &[u8; 64])) -> Result<Succession, Error> {
    if new.0 != old.0 {
        return Err(Error::IdentifierChanged { expected: old.0, got: new.0 });
    }
    if new.2 == old.2 {
        return Ok(Succession::Same);
    }
    match version::compare(new.1, old.1) {
        Ordering::Greater => Ok(Succession::Newer),
        Ordering::Equal => Err(Error::VersionReused(new.1.to_owned())),
        Ordering::Less => Err(Error::Rollback { stored: old.1.to_owned(), offered: new.1.to_owned() }),
    }
}

/// Verifies a signed image list at time `at`. See the module docs for the
/// checks and their order.
pub fn verify_list(message: &[u8], trust: &Trust, at: Timestamp) -> Result<VerifiedList, Error> {
    let parsed = SignedMessage::parse(message)?;
    let signer_cert = verify_signature(&parsed, trust, at)?;
    let list = ImageList::from_json(parsed.content())?;
    let signer = Signer::of(&signer_cert);
    check_endorser(&list, &signer)?;
    if !trust.endorsers.admits(&signer) {
        return Err(Error::NotApproved { dn: signer.dn, ca: signer.ca });
    }
    if list.created > at {
        return Err(Error::CreatedInFuture { created: list.created, at });
    }
    if at > list.expires {
        return Err(Error::Expired { expires: list.expires, at });
    }
    let content_sha512 = Sha512::digest(parsed.content()).into();
    tracing::debug!(list = %list.identifier, version = %list.version, signer = %signer.dn, "image list verified");
    Ok(VerifiedList { list, signer, message: message.to_vec(), content_sha512, verified_at: at })
}

/// What an integrity check established, and no more.
#[derive(Debug, Clone)]
pub struct Integrity {
    /// The signer the message names; not checked against any CA.
    pub signer: Signer,
    /// The decoded list; not checked for dates, endorser or approval.
    pub list: ImageList,
    /// The time inside the signer certificate's validity the signature was
    /// checked at.
    pub checked_at: Timestamp,
}

/// Checks only that the content is intact under the signer certificate the
/// message carries: that certificate is pinned as its own anchor and the
/// signature is checked at its `notBefore`, revocation and list dates are not
/// checked. For inspecting old or foreign lists whose CA is not at hand; it
/// never yields a [`VerifiedList`].
pub fn check_integrity(message: &[u8]) -> Result<Integrity, Error> {
    let parsed = SignedMessage::parse(message)?;
    let signers = parsed.claimed_signers()?;
    let [cert] = signers.as_slice() else {
        return Err(Error::SignerCount(signers.len()));
    };
    let mut anchors = TrustAnchors::new();
    anchors.cas.push(cert.clone());
    let trust = Trust { anchors, crl: CrlPolicy::NotChecked, endorsers: EndorserPolicy::AnyTrustedSigner };
    let checked_at = not_before(cert)?;
    verify_signature(&parsed, &trust, checked_at)?;
    let list = ImageList::from_json(parsed.content())?;
    Ok(Integrity { signer: Signer::of(cert), list, checked_at })
}

/// Steps 2–4: one signer, a valid path, a signature over the content.
fn verify_signature(parsed: &SignedMessage, trust: &Trust, at: Timestamp) -> Result<X509, Error> {
    let signers = parsed.claimed_signers()?;
    let [signer_cert] = signers.as_slice() else {
        return Err(Error::SignerCount(signers.len()));
    };
    let store = build_store(trust, at)?;
    check_chain(&store, signer_cert, parsed)?;
    let no_extra = empty_stack()?;
    parsed
        .pkcs7()
        .verify(&no_extra, &store, Some(parsed.content()), None, Pkcs7Flags::empty())
        .map_err(|e| Error::Signature(first_reason(&e)))?;
    Ok(signer_cert.clone())
}

fn not_before(cert: &X509Ref) -> Result<Timestamp, Error> {
    Timestamp::from_asn1(cert.not_before())
        .ok_or_else(|| Error::TrustStore(format!("a notBefore OpenSSL cannot read: {}", cert.not_before())))
}

fn build_store(trust: &Trust, at: Timestamp) -> Result<X509Store, Error> {
    let err = |e: openssl::error::ErrorStack| Error::TrustStore(first_reason(&e));
    let mut builder = X509StoreBuilder::new().map_err(err)?;
    for ca in &trust.anchors.cas {
        builder.add_cert(ca.clone()).map_err(err)?;
    }
    for crl in &trust.anchors.crls {
        ffi::store_add_crl(&mut builder, crl).map_err(err)?;
    }
    let mut param = X509VerifyParam::new().map_err(err)?;
    param.set_time(at.unix());
    let mut flags = X509VerifyFlags::PARTIAL_CHAIN;
    if trust.crl == CrlPolicy::Required {
        flags |= X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL;
    }
    param.set_flags(flags).map_err(err)?;
    builder.set_param(&param).map_err(err)?;
    builder.set_purpose(X509PurposeId::SMIME_SIGN).map_err(err)?;
    Ok(builder.build())
}

/// Validates the signer's path on its own first, so that a failure names the
/// precise check; the signature verification that follows repeats the same
/// path validation with the same store.
fn check_chain(store: &X509Store, signer: &X509Ref, msg: &SignedMessage) -> Result<(), Error> {
    let untrusted = msg.embedded_certificates()?;
    let mut ctx = X509StoreContext::new().map_err(|e| Error::TrustStore(first_reason(&e)))?;
    let outcome = ctx
        .init(store, signer, &untrusted, |c| {
            let ok = c.verify_cert()?;
            let subject = c
                .chain()
                .and_then(|chain| chain.get(c.error_depth() as usize))
                .map(|cert| ffi::name_oneline(cert.subject_name()));
            Ok((ok, c.error(), c.error_depth(), subject))
        })
        .map_err(|e| Error::TrustStore(first_reason(&e)))?;
    let (ok, result, depth, subject) = outcome;
    if ok {
        return Ok(());
    }
    let code = result.as_raw();
    let check = match code {
        openssl_sys::X509_V_ERR_CERT_REVOKED => ChainCheck::Revocation,
        openssl_sys::X509_V_ERR_UNABLE_TO_GET_CRL
        | openssl_sys::X509_V_ERR_CRL_HAS_EXPIRED
        | openssl_sys::X509_V_ERR_CRL_NOT_YET_VALID
        | openssl_sys::X509_V_ERR_CRL_SIGNATURE_FAILURE
        | openssl_sys::X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE
        | openssl_sys::X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD
        | openssl_sys::X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD
        | openssl_sys::X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER
        | openssl_sys::X509_V_ERR_DIFFERENT_CRL_SCOPE
        | openssl_sys::X509_V_ERR_CRL_PATH_VALIDATION_ERROR
        | openssl_sys::X509_V_ERR_KEYUSAGE_NO_CRL_SIGN
        | openssl_sys::X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION => ChainCheck::Crl,
        openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED | openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID => ChainCheck::Validity,
        openssl_sys::X509_V_ERR_INVALID_PURPOSE => ChainCheck::Purpose,
        _ => ChainCheck::Chain,
    };
    let whom = subject.unwrap_or_else(|| ffi::name_oneline(signer.subject_name()));
    Err(Error::Chain { check, detail: format!("{} (certificate `{whom}`, depth {depth})", result.error_string()) })
}

fn check_endorser(list: &ImageList, signer: &Signer) -> Result<(), Error> {
    if list.endorsers.iter().any(|e| e.dn == signer.dn && e.ca == signer.ca) {
        return Ok(());
    }
    match list.endorsers.iter().find(|e| e.dn == signer.dn) {
        Some(e) => Err(Error::EndorserCa { list: e.ca.clone(), signer: signer.ca.clone() }),
        None => Err(Error::EndorserDn {
            list: list.endorsers.first().map(|e| e.dn.clone()).unwrap_or_default(),
            signer: signer.dn.clone(),
        }),
    }
}
