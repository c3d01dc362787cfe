//! The site authority's command line end to end: `site init`, `peer-id`,
//! `site issue`, `site revoke`, and a node that will not start without
//! saying who may join, as docs/CLI.md states them.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

fn imageswarm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imageswarm")).current_dir(dir).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    text
}

fn fails(out: &Output, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(says), "expected `{says}` in: {err}");
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl").current_dir(dir).args(args).output().unwrap()
}

#[test]
fn an_operator_makes_a_site_issues_credentials_and_revokes_one() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let out = ok(imageswarm(d, &["site", "init", "--name", "alpha", "-o", "site"]));
    assert!(out.contains("site alpha authority in site"), "{out}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.join("site/ca.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    fails(&imageswarm(d, &["site", "init", "--name", "alpha", "-o", "site"]), "refusing to replace");

    let id = ok(imageswarm(d, &["--data-dir", "host", "peer-id"])).trim().to_owned();
    assert_eq!(ok(imageswarm(d, &["--data-dir", "host", "peer-id"])).trim(), id, "the same key next time");
    let issue = |role: &str, out: &str| {
        imageswarm(d, &["site", "issue", "--site-dir", "site", "--peer-id", &id, "--role", role, "-o", out])
    };
    let out = ok(issue("worker", "host.cred"));
    assert!(out.contains(&format!("credential: host.cred (worker {id}, 365 days)")), "{out}");
    fails(&issue("master", "host.cred"), "already exists");
    fails(&issue("admiral", "other.cred"), "invalid value");
    let subject = ok(openssl(d, &["x509", "-in", "host.cred", "-noout", "-subject"]));
    assert!(subject.contains(&format!("O = alpha, OU = worker, CN = {id}")), "{subject}");
    ok(openssl(d, &["verify", "-CAfile", "site/ca.pem", "-crl_check", "-CRLfile", "site/crl.pem", "host.cred"]));

    // A node says who may join, or does not start.
    fails(&imageswarm(d, &["--data-dir", "host", "node", "--site", "alpha"]), "needs --site-ca");

    let out = ok(imageswarm(d, &["site", "revoke", "--site-dir", "site", "--peer-id", &id]));
    assert!(out.contains(&format!("revoked: {id} (1 credential(s))")), "the refused issue left no record: {out}");
    assert!(out.contains("number 1"), "{out}");
    let verify =
        openssl(d, &["verify", "-CAfile", "site/ca.pem", "-crl_check", "-CRLfile", "site/crl.pem", "host.cred"]);
    assert!(!verify.status.success(), "openssl still accepts the revoked credential");
    fails(&imageswarm(d, &["site", "revoke", "--site-dir", "site", "--peer-id", &id]), "left to revoke");
    fails(
        &imageswarm(d, &["site", "issue", "--site-dir", "nowhere", "--peer-id", &id, "--role", "worker", "-o", "x"]),
        "no site authority",
    );
}
