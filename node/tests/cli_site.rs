//! The host's command line end to end: `init`, `endorser add`, `subscribe`,
//! `update`, `images [--json]` and `image approve|refuse|revoke`, as the
//! contract in docs/CLI.md states them.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::{Command, Output};

use common::{Img, Lab, bytes, pki};
use testkit::{CA_DN, ENDORSER_DN};

fn run(lab: &Lab, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imageswarm")).arg("--data-dir").arg(&lab.data).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    text
}

fn images(lab: &Lab) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(run(lab, &["images", "--json"]))).unwrap()
}

fn state_of(lab: &Lab, id: &str) -> String {
    images(lab).iter().find(|i| i["uuid"] == id).unwrap()["state"].as_str().unwrap().to_owned()
}

/// A fresh data directory, set up the way the contract says: `init` with the
/// test CA and its CRL, and the endorser approved.
fn fresh_host() -> Lab {
    let lab = Lab::new();
    std::fs::remove_dir_all(&lab.data).unwrap();
    let ca = pki().path("ca.pem").display().to_string();
    let crl = pki().path("crl.pem").display().to_string();
    ok(run(&lab, &["init", "--ca-file", &ca, "--crl", &crl]));
    ok(run(&lab, &["endorser", "add", "--dn", ENDORSER_DN, "--issuer", CA_DN]));
    lab
}

#[test]
fn a_host_subscribes_updates_and_decides_from_the_command_line() {
    let lab = fresh_host();
    let a = Img::new(1, &lab.file_url("a.img", &bytes(70_000, 1)), bytes(70_000, 1));
    let b = Img::new(2, &lab.file_url("b.img", &bytes(9_000, 2)), bytes(9_000, 2));
    lab.publish("0.0.1", &[a.clone(), b.clone()]);
    ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    let out = ok(run(&lab, &["update"]));
    assert!(out.contains("accepted version 0.0.1"), "{out}");

    let listed = images(&lab);
    assert_eq!(listed.len(), 2);
    for i in &listed {
        assert_eq!(i["state"], "available", "{i}");
        assert_eq!(i["list"], common::LIST_ID.to_string());
    }
    let (ida, idb) = (a.id.to_string(), b.id.to_string());
    let table = ok(run(&lab, &["images"]));
    assert!(table.contains(&ida) && table.contains("available"), "{table}");

    ok(run(&lab, &["image", "revoke", &ida]));
    assert_eq!(state_of(&lab, &ida), "revoked");
    ok(run(&lab, &["image", "refuse", &idb]));
    assert_eq!(state_of(&lab, &idb), "refused");
    ok(run(&lab, &["image", "approve", &ida]));
    assert_eq!(state_of(&lab, &ida), "partial");
    ok(run(&lab, &["update"]));
    assert_eq!(state_of(&lab, &ida), "available");

    lab.publish("0.0.2", std::slice::from_ref(&b));
    ok(run(&lab, &["update"]));
    assert_eq!(state_of(&lab, &ida), "expired");
    for i in images(&lab) {
        let s = i["state"].as_str().unwrap();
        assert!(["available", "partial", "expired", "refused", "revoked"].contains(&s), "{s}");
    }
}

#[test]
fn failures_are_clear_and_exit_non_zero() {
    let lab = Lab::new();
    let none = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imageswarm"))
        .args(["--data-dir", &none.path().join("x").display().to_string(), "update"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not initialised"), "{out:?}");

    // A list from an endorser the site did not approve.
    std::fs::write(
        &lab.list,
        pki().openssl_sign(&testkit::list_json(testkit::BOB_DN, CA_DN, "1", lab.now, lab.now + 86_400), &["bob"], &[]),
    )
    .unwrap();
    let out = run(&lab, &["subscribe", &lab.url()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("endorser-approval"), "{out:?}");

    // An update whose list fails exits 1 and says why.
    lab.publish("0.0.1", &[]);
    ok(run(&lab, &["subscribe", &lab.url()]));
    std::fs::write(&lab.list, b"garbage").unwrap();
    let out = run(&lab, &["update"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED: smime"), "{out:?}");
}

/// While a node runs it holds the store; host commands then go through its
/// control socket, and work on the store directly again once it is gone.
#[test]
fn host_commands_reach_a_running_node_through_its_control_socket() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let lab = fresh_host();
    let a = Img::new(1, &lab.file_url("a.img", &bytes(70_000, 1)), bytes(70_000, 1));
    lab.publish("0.0.1", std::slice::from_ref(&a));
    ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    ok(run(&lab, &["update"]));

    let mut node = Command::new(env!("CARGO_BIN_EXE_imageswarm"))
        .arg("--data-dir")
        .arg(&lab.data)
        .args([
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--site",
            "test",
            "--open-site",
            "--update-interval",
            "3600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(node.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("listening on /ip4/127.0.0.1/tcp/"), "{first}");

    let id = a.id.to_string();
    assert_eq!(state_of(&lab, &id), "available", "answered by the node while it holds the store");
    ok(run(&lab, &["image", "revoke", &id]));
    assert_eq!(state_of(&lab, &id), "revoked");
    let update = run(&lab, &["update"]);
    assert_eq!(update.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&update.stderr).contains("runs its own update cycles"));

    node.kill().unwrap();
    node.wait().unwrap();
    // The socket file is left behind; nobody listens, so the store is used.
    assert!(lab.data.join("control.sock").exists());
    assert_eq!(state_of(&lab, &id), "revoked");
}
