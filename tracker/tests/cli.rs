//! `imageswarm-tracker` from the command line, as docs/CLI.md states it.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn tracker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imageswarm-tracker"))
}

/// Starts an open tracker on loopback with `args` besides; returns it and
/// the first line it printed (its address).
fn running(args: &[&str]) -> (std::process::Child, String) {
    let mut t = tracker()
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--open-site"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(t.stdout.take().unwrap()).read_line(&mut first).unwrap();
    (t, first)
}

/// `--print-peer-id` makes the key once, prints its id without starting,
/// and the tracker started on that key has that id.
#[test]
fn print_peer_id_names_the_tracker_that_runs_on_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let print = || {
        let out = tracker().arg("--print-peer-id").arg("--key-file").arg(&key).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let id = print();
    assert!(id.starts_with("12D3KooW"), "{id}");
    assert_eq!(print(), id, "the key made the first time is kept");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    let (mut t, first) = running(&["--key-file", key.to_str().unwrap()]);
    t.kill().unwrap();
    t.wait().unwrap();
    assert!(first.trim().ends_with(&format!("/p2p/{id}")), "{first}");

    let without_key = tracker().arg("--print-peer-id").output().unwrap();
    assert_eq!(without_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without_key.stderr).contains("--key-file"), "{without_key:?}");
}

/// `--metrics` serves the tracker's counters from the start.
#[test]
fn metrics_are_served_from_the_start() {
    use std::io::{Read, Write};
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (mut t, _) = running(&["--metrics", &addr.to_string()]);
    let mut body = String::new();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    s.read_to_string(&mut body).unwrap();
    t.kill().unwrap();
    t.wait().unwrap();
    for line in ["imageswarm_tracker_announces_total 0", "imageswarm_tracker_announces_refused_total 0"] {
        assert!(body.lines().any(|l| l == line), "{line} in:\n{body}");
    }
}

/// Every synopsis docs/CLI.md shows for `imageswarm-tracker` names only flags
/// its `--help` lists.
#[test]
fn the_documented_synopses_match_the_binary() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CLI.md")).unwrap();
    let synopses = testkit::synopses(&doc, "imageswarm-tracker");
    assert_eq!(synopses.len(), 2, "{synopses:?}");
    let help = String::from_utf8(tracker().arg("--help").output().unwrap().stdout).unwrap();
    for flag in synopses.into_iter().flat_map(|(_, flags)| flags) {
        assert!(testkit::lists_flag(&help, &flag), "docs/CLI.md shows {flag}, which --help does not list:\n{help}");
    }
}
