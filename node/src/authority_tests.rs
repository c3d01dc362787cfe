#![allow(clippy::unwrap_used)]

use std::process::Command;

use libp2p::identity::Keypair;
use proto::credential::SiteCas;

use super::*;

fn now() -> Timestamp {
    crate::now()
}

struct Peer {
    id: String,
    key: Vec<u8>,
}

fn peer() -> Peer {
    let k = Keypair::generate_ed25519();
    let key = k.public().try_into_ed25519().unwrap().to_bytes().to_vec();
    Peer { id: k.public().to_peer_id().to_string(), key }
}

fn site(name: &str) -> (tempfile::TempDir, SiteDir, SiteCas) {
    let t = tempfile::tempdir().unwrap();
    let dir = SiteDir::new(&t.path().join(name));
    init(&dir, name, CA_DAYS, now()).unwrap();
    let mut cas = SiteCas::new();
    assert_eq!(cas.add_ca(&fs::read(dir.ca()).unwrap()).unwrap(), name);
    assert!(cas.offer_crl(&fs::read(dir.crl()).unwrap()).unwrap());
    (t, dir, cas)
}

#[test]
fn a_credential_names_its_peer_site_and_role_and_fits_no_other_key() {
    let (_t, dir, cas) = site("alpha");
    let p = peer();
    let pem = issue(&dir, &p.id, &p.key, Role::Master, 30, now()).unwrap();
    let c = cas.verify(&pem, &p.key, now()).unwrap();
    assert_eq!((c.peer.as_str(), c.site.as_str(), c.role), (p.id.as_str(), "alpha", Role::Master));
    assert!(c.expires.unix() > now().unix() + 29 * 86_400);

    let thief = peer();
    assert_eq!(cas.verify(&pem, &thief.key, now()).unwrap_err().check(), "key");
    let later = now().add_seconds(31 * 86_400);
    assert_eq!(cas.verify(&pem, &p.key, later).unwrap_err().check(), "validity");
    assert_eq!(cas.verify(b"not a certificate", &p.key, now()).unwrap_err().check(), "format");

    let mode = fs::metadata(dir.key()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the CA key's mode");
    let err = init(&dir, "alpha", CA_DAYS, now()).unwrap_err().to_string();
    assert!(err.contains("refusing to replace"), "{err}");
}

#[test]
fn another_sites_credential_does_not_verify() {
    let (_t, _dir, cas) = site("alpha");
    let (_u, other, _) = site("beta");
    let p = peer();
    let pem = issue(&other, &p.id, &p.key, Role::Worker, 30, now()).unwrap();
    assert_eq!(cas.verify(&pem, &p.key, now()).unwrap_err().check(), "issuer");
    let mut both = cas.clone();
    both.add_ca(&fs::read(other.ca()).unwrap()).unwrap();
    assert_eq!(both.verify(&pem, &p.key, now()).unwrap().site, "beta");
}

#[test]
fn a_revocation_takes_effect_only_with_a_newer_crl_from_the_issuer() {
    let (_t, dir, mut cas) = site("alpha");
    let (p, q) = (peer(), peer());
    let first = issue(&dir, &p.id, &p.key, Role::Worker, 30, now()).unwrap();
    let second = issue(&dir, &p.id, &p.key, Role::Worker, 60, now()).unwrap();
    let other = issue(&dir, &q.id, &q.key, Role::Worker, 30, now()).unwrap();
    let c = cas.verify(&first, &p.key, now()).unwrap();
    let old_crl = fs::read(dir.crl()).unwrap();

    let r = revoke(&dir, &p.id, now()).unwrap();
    assert_eq!((r.serials.len(), r.crl_number), (2, 1));
    let new_crl = fs::read(dir.crl()).unwrap();
    assert!(cas.offer_crl(&new_crl).unwrap());
    assert!(!cas.offer_crl(&old_crl).unwrap(), "an older CRL is not taken");
    assert!(!cas.offer_crl(&new_crl).unwrap(), "the same CRL again changes nothing");
    assert_eq!(cas.crl_numbers(), vec![("alpha".to_owned(), 1)]);
    assert!(cas.is_revoked(&c));
    for pem in [&first, &second] {
        assert_eq!(cas.verify(pem, &p.key, now()).unwrap_err().check(), "revoked");
    }
    assert!(cas.verify(&other, &q.key, now()).is_ok(), "others stay admitted");
    let err = revoke(&dir, &p.id, now()).unwrap_err().to_string();
    assert!(err.contains("left to revoke"), "{err}");

    let r = revoke(&dir, &q.id, now()).unwrap();
    assert_eq!(r.crl_number, 2);
    assert!(cas.offer_crl(&fs::read(dir.crl()).unwrap()).unwrap());
    assert_eq!(cas.verify(&first, &p.key, now()).unwrap_err().check(), "revoked", "revocations accumulate");

    let (_u, beta, _) = site("beta");
    assert_eq!(cas.offer_crl(&fs::read(beta.crl()).unwrap()).unwrap_err().check(), "crl");
}

#[test]
fn the_openssl_command_reads_the_authority_as_a_standard_one() {
    let (t, dir, _) = site("alpha");
    let p = peer();
    let cred = t.path().join("cred.pem");
    fs::write(&cred, issue(&dir, &p.id, &p.key, Role::Gateway, 30, now()).unwrap()).unwrap();
    let verify = |crl: bool| {
        let mut c = Command::new("openssl");
        c.arg("verify").arg("-CAfile").arg(dir.ca());
        if crl {
            c.arg("-crl_check").arg("-CRLfile").arg(dir.crl());
        }
        c.arg(&cred).output().unwrap()
    };
    let out = verify(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    revoke(&dir, &p.id, now()).unwrap();
    let out = verify(true);
    assert!(!out.status.success(), "openssl still accepts a revoked credential");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("revoked"), "{said}");
}

#[test]
fn a_site_policy_verifies_only_as_its_sites_master_signed_it() {
    use proto::policy::{Policy, PolicyContent, PolicyEndorser, sign_policy, verify_policy};
    let (_t, dir, cas) = site("alpha");
    let (_u, beta, _) = site("beta");
    let signed_by = |dir: &SiteDir, role: Role, policy: &Policy| {
        let k = Keypair::generate_ed25519();
        let id = k.public().to_peer_id().to_string();
        let raw = k.public().try_into_ed25519().unwrap().to_bytes();
        let cred = issue(dir, &id, &raw, role, 30, now()).unwrap();
        sign_policy(policy, &cred, |body| k.sign(body).unwrap()).unwrap()
    };
    let endorsers = vec![PolicyEndorser { dn: "/CN=e".into(), ca: "/CN=ca".into() }];
    let content = PolicyContent { endorsers, ..PolicyContent::default() }.canonical();
    let policy = Policy { site: "alpha".into(), version: 2, content };

    let v = verify_policy(&signed_by(&dir, Role::Master, &policy), &cas, "alpha", now()).unwrap();
    assert_eq!(v.policy(), &policy);
    let older = Policy { version: 1, ..policy.clone() };
    let old = verify_policy(&signed_by(&dir, Role::Master, &older), &cas, "alpha", now()).unwrap();
    assert!(
        v.supersedes(Some(&old)) && !old.supersedes(Some(&v)) && !v.supersedes(Some(&v)),
        "a replay changes nothing"
    );

    let worker = verify_policy(&signed_by(&dir, Role::Worker, &policy), &cas, "alpha", now()).unwrap_err();
    assert_eq!(worker.check(), "policy", "{worker}");
    let foreign = verify_policy(&signed_by(&beta, Role::Master, &policy), &cas, "alpha", now()).unwrap_err();
    assert_eq!(foreign.check(), "issuer", "{foreign}");
    let elsewhere = Policy { site: "beta".into(), ..policy.clone() };
    let err = verify_policy(&signed_by(&dir, Role::Master, &elsewhere), &cas, "alpha", now()).unwrap_err();
    assert_eq!(err.check(), "policy", "a policy for another site: {err}");

    // Another master's signature under this credential.
    let k = Keypair::generate_ed25519();
    let id = k.public().to_peer_id().to_string();
    let cred = issue(&dir, &id, &k.public().try_into_ed25519().unwrap().to_bytes(), Role::Master, 30, now()).unwrap();
    let forged = sign_policy(&policy, &cred, |body| Keypair::generate_ed25519().sign(body).unwrap()).unwrap();
    assert_eq!(verify_policy(&forged, &cas, "alpha", now()).unwrap_err().check(), "signature");
}
