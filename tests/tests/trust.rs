//! Signed-list trust: rows T1, T3–T10, T15 and T16 of the attack checklist
//! (`shared/reference/trust-and-attacks.md` §7), plus interoperability with
//! the `openssl smime` command line. T2 is `no_insecure_flags.rs`.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // a failed unwrap is a failed test; stderr is the test log

use proto::smime;
use proto::trust::{ApprovedEndorser, CrlPolicy, EndorserPolicy, Succession, Trust, TrustAnchors, verify_list};
use proto::{Error, Timestamp};
use testkit::{BOB_DN, CA_DN, CERT_DAYS, ENDORSER_DN, Pki, list_json};

const DAY: i64 = 86_400;

fn pki() -> &'static Pki {
    Pki::shared(env!("CARGO_TARGET_TMPDIR"))
}

fn at(unix: i64) -> Timestamp {
    Timestamp::from_unix(unix).unwrap()
}

fn now() -> i64 {
    pki().generated_at()
}

/// Trust in the test CA with the given CRL files.
fn trust_with(crls: &[&str], crl: CrlPolicy) -> Trust {
    let mut anchors = TrustAnchors::new();
    anchors.add_ca_pem(&pki().read("ca.pem")).unwrap();
    for c in crls {
        anchors.add_crl(&pki().read(c)).unwrap();
    }
    Trust { anchors, crl, endorsers: EndorserPolicy::AnyTrustedSigner }
}

fn trust() -> Trust {
    trust_with(&["crl.pem"], CrlPolicy::Required)
}

/// A list naming `dn` as endorser, valid for a week from now, signed by `signer`.
fn signed_by(signer: &str, dn: &str, version: &str) -> Vec<u8> {
    sign(signer, &list_json(dn, CA_DN, version, now(), now() + 7 * DAY))
}

fn sign(signer: &str, content: &[u8]) -> Vec<u8> {
    let cert = openssl::x509::X509::from_pem(&pki().read(&format!("{signer}.pem"))).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&pki().read(&format!("{signer}.key"))).unwrap();
    smime::sign(content, &cert, &key).unwrap()
}

fn check_of(r: Result<proto::trust::VerifiedList, Error>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => {
            eprintln!("rejected: {e}");
            e.check()
        }
    }
}

#[test]
fn our_signature_verifies_and_names_the_signer() {
    let v = verify_list(&signed_by("endorser", ENDORSER_DN, "1"), &trust(), at(now())).unwrap();
    assert_eq!(v.signer().dn, ENDORSER_DN);
    assert_eq!(v.signer().ca, CA_DN);
    assert_eq!(v.list().version, "1");
    assert_eq!(v.list().extra["x:unknown"], serde_json::json!({"kept": true}));
}

#[test]
fn our_output_is_sha256_multipart_and_verifies_with_openssl_cli() {
    let msg = signed_by("endorser", ENDORSER_DN, "1");
    let text = String::from_utf8_lossy(&msg);
    assert!(text.contains("multipart/signed"), "{text}");
    assert!(text.contains("micalg=\"sha-256\""), "{text}");
    let path = pki().path("cli-check.smime");
    std::fs::write(&path, &msg).unwrap();
    let args: Vec<String> = ["smime", "-verify", "-in", &path.display().to_string(), "-CAfile"]
        .iter()
        .map(|s| s.to_string())
        .chain([pki().path("ca.pem").display().to_string()])
        .collect();
    let out = testkit::openssl(&args, b"").expect("openssl smime -verify rejected our signature");
    assert_eq!(out, smime::canonicalize(&list_json(ENDORSER_DN, CA_DN, "1", now(), now() + 7 * DAY)));
}

#[test]
fn lists_signed_by_openssl_cli_verify() {
    let content = list_json(ENDORSER_DN, CA_DN, "1", now(), now() + 7 * DAY);
    let msg = pki().openssl_sign(&content, &["endorser"], &[]);
    assert_eq!(check_of(verify_list(&msg, &trust(), at(now()))), "accepted");
    let sha1 = pki().openssl_sign(&content, &["endorser"], &["-md", "sha1"]);
    assert_eq!(check_of(verify_list(&sha1, &trust(), at(now()))), "accepted", "legacy SHA-1 lists verify");
}

#[test]
fn igtf_directory_layout_loads_ca_and_crl() {
    let mut anchors = TrustAnchors::new();
    for entry in std::fs::read_dir(pki().path("igtf")).unwrap() {
        let entry = entry.unwrap();
        anchors.add_igtf_file(&entry.file_name().to_string_lossy(), &std::fs::read(entry.path()).unwrap()).unwrap();
    }
    assert_eq!(anchors.counts(), (1, 1));
    let t = Trust { anchors, ..Trust::default() };
    assert_eq!(check_of(verify_list(&signed_by("endorser", ENDORSER_DN, "1"), &t, at(now()))), "accepted");
    assert_eq!(check_of(verify_list(&signed_by("revoked", testkit::REVOKED_DN, "1"), &t, at(now()))), "revocation");
}

#[test]
fn fixture_2011_signature_integrity() {
    // Its CA is not public, and its certificate expired (2011-02-04) before
    // the list's creation date (2011-03-10): no instant makes it valid. Pin
    // the signer certificate and check while it was valid: chain and
    // signature pass, and the first check to fail is `created`.
    let msg = include_bytes!("../../proto/tests/fixtures/hepixvmitrust-readme-example-2011.smime");
    let parsed = smime::SignedMessage::parse(msg).unwrap();
    let signer = &parsed.claimed_signers().unwrap()[0];
    let mut anchors = TrustAnchors::new();
    anchors.add_ca_pem(&signer.to_pem().unwrap()).unwrap();
    let t = Trust { anchors, crl: CrlPolicy::NotChecked, endorsers: EndorserPolicy::AnyTrustedSigner };
    let while_valid = Timestamp::parse("2011-02-01T00:00:00Z").unwrap();
    assert_eq!(check_of(verify_list(msg, &t, while_valid)), "created");

    let report = proto::trust::check_integrity(msg).unwrap();
    assert_eq!(report.signer.dn, "/C=DE/O=GermanGrid/OU=DESY/CN=Owen Synge");
    assert_eq!(report.signer.ca, "/C=DE/O=GermanGrid/CN=GridKa-CA");
    assert_eq!(report.list.identifier.to_string(), "4e186b44-2c64-40ea-97d5-e9e5c0bce059");
    assert_eq!(report.checked_at.to_string(), "2010-01-05T15:19:22Z");

    // One changed byte in the signed JSON breaks it.
    let tampered = String::from_utf8_lossy(msg).replace("README example VM", "README exbmple VM");
    assert_eq!(proto::trust::check_integrity(tampered.as_bytes()).unwrap_err().check(), "signature");
    assert_eq!(check_of(verify_list(tampered.as_bytes(), &t, while_valid)), "signature");
    // Against the site's real trust, its unknown CA is refused.
    assert_eq!(check_of(verify_list(msg, &trust(), while_valid)), "chain");
}

#[test]
fn t1_self_signed_impostor_with_the_endorsers_dn() {
    let msg = signed_by("impostor", ENDORSER_DN, "1");
    assert_eq!(check_of(verify_list(&msg, &trust(), at(now()))), "chain");
    assert_eq!(check_of(verify_list(&msg, &trust_with(&[], CrlPolicy::NotChecked), at(now()))), "chain");
}

#[test]
fn t3_endorser_binding_and_approval() {
    // Valid chain, list names the signer, but the site approved only Alice.
    let mut t = trust();
    t.endorsers = EndorserPolicy::Approved(vec![ApprovedEndorser { dn: ENDORSER_DN.into(), ca: Some(CA_DN.into()) }]);
    assert_eq!(check_of(verify_list(&signed_by("bob", BOB_DN, "1"), &t, at(now()))), "endorser-approval");
    assert_eq!(check_of(verify_list(&signed_by("endorser", ENDORSER_DN, "1"), &t, at(now()))), "accepted");
    // Approval pinned to another issuer does not admit Alice.
    t.endorsers =
        EndorserPolicy::Approved(vec![ApprovedEndorser { dn: ENDORSER_DN.into(), ca: Some("/CN=Other".into()) }]);
    assert_eq!(check_of(verify_list(&signed_by("endorser", ENDORSER_DN, "1"), &t, at(now()))), "endorser-approval");
    // Bob signs a list that names Alice.
    assert_eq!(check_of(verify_list(&signed_by("bob", ENDORSER_DN, "1"), &trust(), at(now()))), "endorser-dn");
    // Alice signs a list whose hv:ca names another CA.
    let wrong_ca = list_json(ENDORSER_DN, "/DC=org/DC=elsewhere/CN=Other Test CA", "1", now(), now() + DAY);
    assert_eq!(check_of(verify_list(&sign("endorser", &wrong_ca), &trust(), at(now()))), "endorser-ca");
}

#[test]
fn t4_revocation_and_crl_availability() {
    let revoked = signed_by("revoked", testkit::REVOKED_DN, "1");
    let good = signed_by("endorser", ENDORSER_DN, "1");
    let t = at(now());
    assert_eq!(check_of(verify_list(&revoked, &trust(), t)), "revocation");
    assert_eq!(check_of(verify_list(&good, &trust_with(&[], CrlPolicy::Required), t)), "crl", "missing CRL");
    assert_eq!(check_of(verify_list(&good, &trust_with(&["crl-expired.pem"], CrlPolicy::Required), t)), "crl");
    assert_eq!(check_of(verify_list(&good, &trust_with(&["other-crl.pem"], CrlPolicy::Required), t)), "crl");
    // The current CRL lapses after CRL_DAYS: the same list then fails closed.
    let long = sign("endorser", &list_json(ENDORSER_DN, CA_DN, "1", now(), now() + 90 * DAY));
    assert_eq!(check_of(verify_list(&long, &trust(), at(now() + (testkit::CRL_DAYS + 1) * DAY))), "crl");
    // Only the explicit switch turns revocation off.
    assert_eq!(check_of(verify_list(&revoked, &trust_with(&[], CrlPolicy::NotChecked), t)), "accepted");
}

#[test]
fn t5_signer_certificate_validity_at_the_pinned_time() {
    let t = trust_with(&[], CrlPolicy::NotChecked);
    let early = sign("endorser", &list_json(ENDORSER_DN, CA_DN, "1", now() - 3 * DAY, now() + DAY));
    assert_eq!(check_of(verify_list(&early, &t, at(now() - 2 * DAY))), "validity", "not yet valid");
    let late_at = now() + (CERT_DAYS + 1) * DAY;
    let late = sign("endorser", &list_json(ENDORSER_DN, CA_DN, "1", now(), late_at + DAY));
    assert_eq!(check_of(verify_list(&late, &t, at(late_at))), "validity", "expired");
    assert_eq!(check_of(verify_list(&late, &t, at(now()))), "accepted");
}

#[test]
fn wrong_purpose_certificate_is_refused() {
    let msg = signed_by("server", testkit::SERVER_DN, "1");
    assert_eq!(check_of(verify_list(&msg, &trust_with(&[], CrlPolicy::NotChecked), at(now()))), "purpose");
}

#[test]
fn t6_t7_exactly_one_signer() {
    let content = list_json(ENDORSER_DN, CA_DN, "1", now(), now() + DAY);
    let t = at(now());
    let one_untrusted = pki().openssl_sign(&content, &["endorser", "impostor"], &[]);
    assert_eq!(check_of(verify_list(&one_untrusted, &trust(), t)), "signers");
    let two_valid = pki().openssl_sign(&content, &["endorser", "bob"], &[]);
    assert_eq!(check_of(verify_list(&two_valid, &trust(), t)), "signers");
    // The same signer twice is still two signer infos, never "two endorsers".
    let twice = pki().openssl_sign(&content, &["endorser", "endorser"], &[]);
    assert_eq!(check_of(verify_list(&twice, &trust(), t)), "signers");
}

#[test]
fn t8_t9_version_succession() {
    let t = at(now());
    let v1 = verify_list(&signed_by("endorser", ENDORSER_DN, "0.0.9"), &trust(), t).unwrap();
    let v2 = verify_list(&signed_by("endorser", ENDORSER_DN, "0.0.10"), &trust(), t).unwrap();
    assert_eq!(v2.succeeds(&v1).unwrap(), Succession::Newer);
    let rollback = v1.succeeds(&v2).unwrap_err();
    assert_eq!(rollback.check(), "version");
    assert!(rollback.to_string().contains("rollback"), "{rollback}");

    // Same version, different bytes: rejected. Same bytes (even re-signed,
    // or CRLF-converted in transit): no-op.
    let other = list_json(ENDORSER_DN, CA_DN, "0.0.10", now(), now() + 8 * DAY);
    let v2b = verify_list(&sign("endorser", &other), &trust(), t).unwrap();
    assert!(matches!(v2b.succeeds(&v2), Err(Error::VersionReused(_))));
    let resigned = verify_list(&signed_by("endorser", ENDORSER_DN, "0.0.10"), &trust(), t).unwrap();
    assert_eq!(resigned.succeeds(&v2).unwrap(), Succession::Same);
    let crlf = String::from_utf8(v2.message().to_vec()).unwrap().replace("\r\n", "\n").replace('\n', "\r\n");
    let transit = verify_list(crlf.as_bytes(), &trust(), t).unwrap();
    assert_eq!(transit.succeeds(&v2).unwrap(), Succession::Same);

    // Another list's identifier never continues this one.
    let foreign = String::from_utf8(list_json(ENDORSER_DN, CA_DN, "9", now(), now() + DAY))
        .unwrap()
        .replace("4e186b44-2c64-40ea-97d5-e9e5c0bce059", "11111111-2222-4333-8444-555555555555");
    let f = verify_list(&sign("endorser", foreign.as_bytes()), &trust(), t).unwrap();
    assert_eq!(f.succeeds(&v2).unwrap_err().check(), "identifier");
}

#[test]
fn t10_list_dates_at_a_fixed_cycle_time() {
    let created = now() + 60;
    let expires = now() + DAY;
    let msg = sign("endorser", &list_json(ENDORSER_DN, CA_DN, "1", created, expires));
    // The decision depends only on the time passed in: a cycle that started
    // before expiry accepts the list even if the clock has moved on since.
    assert_eq!(check_of(verify_list(&msg, &trust(), at(expires))), "accepted");
    assert_eq!(check_of(verify_list(&msg, &trust(), at(expires + 1))), "expires");
    assert_eq!(check_of(verify_list(&msg, &trust(), at(created - 1))), "created");
}

#[test]
fn t15_golden_vectors() {
    let lf = list_json(ENDORSER_DN, CA_DN, "1", now(), now() + DAY);
    let crlf = String::from_utf8(lf.clone()).unwrap().replace('\n', "\r\n").into_bytes();
    let t = at(now());
    let identity = |m: &[u8]| verify_list(m, &trust(), t).map(|v| v.content_sha512());

    let text_lf = pki().openssl_sign(&lf, &["endorser"], &[]);
    let text_crlf = pki().openssl_sign(&crlf, &["endorser"], &[]);
    let ours = sign("endorser", &lf);
    let id = identity(&text_lf).expect("text mode, LF content");
    assert_eq!(identity(&text_crlf).expect("text mode, CRLF content"), id);
    assert_eq!(identity(&ours).expect("our signature"), id);

    // The whole message converted to CRLF in transit still verifies, with
    // the same identity.
    let transit = String::from_utf8(text_lf.clone()).unwrap().replace("\r\n", "\n").replace('\n', "\r\n");
    assert_eq!(identity(transit.as_bytes()).expect("CRLF transit"), id);
    // And converted to LF only.
    let lf_only = String::from_utf8(text_lf).unwrap().replace("\r\n", "\n");
    assert_eq!(identity(lf_only.as_bytes()).expect("LF transit"), id);

    // Binary-mode signatures cover LF bytes, which text-mode consumers
    // (vmcatcher, openssl smime -verify) canonicalise away: refused.
    let binary = pki().openssl_sign(&lf, &["endorser"], &["-binary"]);
    assert_eq!(check_of(verify_list(&binary, &trust(), t)), "signature");
    // Opaque (attached) signatures: refused, vmcatcher cannot read them.
    let opaque = pki().openssl_sign(&lf, &["endorser"], &["-nodetach"]);
    assert_eq!(check_of(verify_list(&opaque, &trust(), t)), "smime");
    // A bare PKCS#7 blob or plain JSON is not a signed list.
    assert_eq!(check_of(verify_list(&lf, &trust(), t)), "smime");
}

#[test]
fn t16_content_is_covered_and_strictly_parsed() {
    let t = at(now());
    let msg = String::from_utf8(signed_by("endorser", ENDORSER_DN, "1")).unwrap();
    // Unknown fields are covered by the signature.
    let tampered = msg.replace("\"kept\": true", "\"kept\": fals");
    assert_ne!(tampered, msg);
    assert_eq!(check_of(verify_list(tampered.as_bytes(), &trust(), t)), "signature");

    let base = String::from_utf8(list_json(ENDORSER_DN, CA_DN, "1", now(), now() + DAY)).unwrap();
    let variants = [
        base.replacen("\"dc:title\": \"test list\"", "\"dc:title\": \"a\", \"dc:title\": \"b\"", 1),
        base.replace("\"hv:size\": 1024", "\"hv:size\": 123456789012345678901234567890"),
        base.replace("488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d", "../../../../etc/cron.d/evil"),
        base.replace("\"hv:size\": 1024", "\"hv:size\": 1e3"),
    ];
    for v in variants {
        assert_ne!(v, base);
        assert_eq!(check_of(verify_list(&sign("endorser", v.as_bytes()), &trust(), t)), "format", "{v}");
    }
}

#[test]
fn oversized_messages_are_refused_before_parsing() {
    let huge = vec![b'a'; smime::MAX_MESSAGE_BYTES + 1];
    let e = verify_list(&huge, &trust(), at(now())).unwrap_err();
    assert_eq!(e.check(), "smime");
    assert!(e.to_string().contains("cap"), "{e}");
}
