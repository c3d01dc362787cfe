//! Trust anchors from an IGTF-style CA directory (`node::trustfiles`).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::pki;
use node::trustfiles::TrustSources;

/// An IGTF directory as fetch-crl keeps it: each CA as `<hash>.0` and as
/// `NAME.pem`, its CRL as `<hash>.r0`, and here a file caught mid-write.
#[test]
fn a_ca_directory_counts_each_ca_once_and_skips_a_file_that_does_not_parse() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.path("ca.pem"), dir.path().join("0a1b2c3d.0")).unwrap();
    std::fs::copy(pki.path("ca.pem"), dir.path().join("Test-CA.pem")).unwrap();
    std::fs::copy(pki.path("crl.pem"), dir.path().join("0a1b2c3d.r0")).unwrap();
    std::fs::write(dir.path().join("deadbeef.0"), b"-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    std::fs::write(dir.path().join("0a1b2c3d.signing_policy"), b"access_id_CA X509 '/CN=x'").unwrap();
    let sources = TrustSources { ca_dir: Some(dir.path().into()), ..TrustSources::default() };
    assert_eq!(sources.load().unwrap().counts(), (1, 1));

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("deadbeef.0"), b"garbage").unwrap();
    let sources = TrustSources { ca_dir: Some(empty.path().into()), ..TrustSources::default() };
    assert!(sources.load().unwrap_err().to_string().contains("no CA certificates found"));
}
