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

/// Starts `imageswarm node` as `cmd` says, its log going to `log`; returns
/// it and the first line it printed (`listening on ...`).
fn start_node(cmd: &mut Command, log: std::process::Stdio) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut node = cmd.stdout(std::process::Stdio::piped()).stderr(log).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(node.stdout.take().unwrap()).read_line(&mut first).unwrap();
    (node, first)
}

/// A fresh host subscribed (new images cached) to a list of one 9,000-byte
/// image, updated: the image is available.
fn host_with_one_image() -> (Lab, Img) {
    let lab = fresh_host();
    let a = Img::new(1, &lab.file_url("a.img", &bytes(9_000, 1)), bytes(9_000, 1));
    lab.publish("0.0.1", std::slice::from_ref(&a));
    ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    ok(run(&lab, &["update"]));
    (lab, a)
}

/// Starts a node of an open site on `lab`'s data directory, with `extra`
/// flags; returns it and its first line.
fn start_open_node(lab: &Lab, extra: &[&str], log: std::process::Stdio) -> (std::process::Child, String) {
    let args = ["node", "--listen", "/ip4/127.0.0.1/tcp/0", "--site", "test", "--open-site"];
    start_node(
        Command::new(env!("CARGO_BIN_EXE_imageswarm")).arg("--data-dir").arg(&lab.data).args(args).args(extra),
        log,
    )
}

/// `status --json` of the node running on `lab`.
fn status(lab: &Lab) -> serde_json::Value {
    serde_json::from_str(&ok(run(lab, &["status", "--json"]))).unwrap()
}

/// Waits up to 30 s for `done`.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Sends SIGHUP to `node`, then waits up to 30 s for `done`.
fn sighup_until(node: &std::process::Child, what: &str, done: impl FnMut() -> bool) {
    // SAFETY: signals a child process the test started and still holds.
    assert_eq!(unsafe { libc::kill(node.id() as libc::pid_t, libc::SIGHUP) }, 0);
    until(&format!("after SIGHUP, {what}"), done);
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
    // `images` says what is in the way.
    let table = ok(run(&lab, &["images"]));
    assert!(table.contains("revoked by this site") && table.contains("waiting for approval"), "{table}");
    let why = |id: &str| images(&lab).iter().find(|i| i["uuid"] == id).unwrap()["why"].clone();
    assert!(why(&idb).as_str().is_some_and(|w| w.contains("image approve")), "{:?}", why(&idb));
    // Approved again, it comes back from expired/ at once: its source is
    // gone.
    std::fs::remove_file(lab.dir.path().join("a.img")).unwrap();
    let out = ok(run(&lab, &["image", "approve", &ida]));
    assert_eq!(out, format!("image {ida}: available\n"));

    lab.publish("0.0.2", std::slice::from_ref(&b));
    ok(run(&lab, &["update"]));
    assert_eq!(state_of(&lab, &ida), "expired");
    assert_eq!(why(&ida), "no longer endorsed: withdrawn from its list, or the list expired or no longer verifies");
    ok(run(&lab, &["image", "approve", &idb]));
    ok(run(&lab, &["update"]));
    assert_eq!(state_of(&lab, &idb), "available");
    assert_eq!(why(&idb), serde_json::Value::Null, "available: nothing in the way");

    // `subscription list` says why a list in force is invalid.
    ok(run(&lab, &["endorser", "remove", "--dn", ENDORSER_DN, "--issuer", CA_DN]));
    let subs = ok(run(&lab, &["subscription", "list"]));
    assert!(subs.contains("invalid: endorser-approval"), "{subs}");
    for i in images(&lab) {
        let s = i["state"].as_str().unwrap();
        assert!(["available", "partial", "expired", "refused", "revoked"].contains(&s), "{s}");
    }
}

/// A host's setup runs under Puppet or Ansible, again and again: `init`,
/// `endorser add`, `subscribe` and `image approve` run twice leave the same
/// state and exit 0. Subscribing again in another mode changes the mode.
#[test]
fn setup_commands_run_twice_leave_the_same_state() {
    let lab = fresh_host();
    let a = Img::new(1, &lab.file_url("a.img", &bytes(9_000, 1)), bytes(9_000, 1));
    lab.publish("0.0.1", std::slice::from_ref(&a));
    let ca = pki().path("ca.pem").display().to_string();
    let crl = pki().path("crl.pem").display().to_string();
    let setup: [&[&str]; 4] = [
        &["init", "--ca-file", &ca, "--crl", &crl],
        &["endorser", "add", "--dn", ENDORSER_DN, "--issuer", CA_DN],
        &["subscribe", &lab.url(), "--new-images", "refuse"],
        &["image", "approve", &a.id.to_string()],
    ];
    let state = |lab: &Lab| {
        let subs = ok(run(lab, &["subscription", "list"]));
        let endorsers = ok(run(lab, &["endorser", "list"]));
        (subs, endorsers, images(lab))
    };
    for args in &setup[..3] {
        ok(run(&lab, args));
    }
    ok(run(&lab, &["update"]));
    ok(run(&lab, setup[3]));
    let first = state(&lab);
    assert_eq!(first.2[0]["state"], "partial", "approved, not yet downloaded: {:?}", first.2);
    for args in setup {
        let out = ok(run(&lab, args));
        if args[0] == "subscribe" {
            assert!(out.contains("already subscribed"), "{out}");
        }
    }
    assert_eq!(state(&lab), first);

    // The same list at another URL is refused: moving it is a decision.
    let copy = lab.file_url("copy.smime", &std::fs::read(&lab.list).unwrap());
    let moved = run(&lab, &["subscribe", &copy]);
    assert_eq!(moved.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&moved.stderr).contains("already subscribed"), "{moved:?}");
    let out = ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    assert!(out.contains("new images it brings from now on: cache"), "{out}");
    assert_ne!(state(&lab).0, first.0, "the mode shows in `subscription list`");
}

/// An endorser is named by DN in the forms OpenSSL prints, by its
/// certificate, or by a list it signed (shown first, approved with --yes);
/// the store keeps the one-line form lists use.
#[test]
fn endorsers_are_named_by_dn_certificate_or_a_list_they_signed() {
    let lab = Lab::new();
    std::fs::remove_dir_all(&lab.data).unwrap();
    let ca = pki().path("ca.pem").display().to_string();
    ok(run(&lab, &["init", "--ca-file", &ca, "--no-crl-check"]));
    let listed = |lab: &Lab| ok(run(lab, &["endorser", "list"]));
    let both = format!("{ENDORSER_DN}\t{CA_DN}\n");
    // As OpenSSL 3 prints them.
    let openssl3 = |dn: &str| {
        dn.trim_start_matches('/').split('/').map(|r| r.replacen('=', " = ", 1)).collect::<Vec<_>>().join(", ")
    };
    let (dn3, ca3) = (format!("subject={}", openssl3(ENDORSER_DN)), openssl3(CA_DN));
    ok(run(&lab, &["endorser", "add", "--dn", &dn3, "--issuer", &ca3]));
    assert_eq!(listed(&lab), both);
    let cert = pki().path("endorser.pem").display().to_string();
    ok(run(&lab, &["endorser", "remove", "--cert", &cert]));
    assert_eq!(listed(&lab), "");

    lab.publish("0.0.1", &[]);
    let list = lab.list.display().to_string();
    let shown = run(&lab, &["endorser", "add", "--from-list", &list]);
    assert_eq!(shown.status.code(), Some(1), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(&format!("signed by {ENDORSER_DN}")) && text.contains("--yes"), "{text}");
    assert_eq!(listed(&lab), "", "shown, not approved");
    ok(run(&lab, &["endorser", "add", "--from-list", &lab.url(), "--yes"]));
    assert_eq!(listed(&lab), both);

    let bad = run(&lab, &["endorser", "add", "--dn", "Alice Endorser", "--issuer", CA_DN]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/DC=org/DC=example/CN=Name"), "{bad:?}");
}

/// One config file is a host's whole setup: it names the data directory
/// and declares the endorsers and subscriptions, which the node brings its
/// store in step with at start and again on SIGHUP. `config show` prints
/// what the data directory holds.
#[test]
fn a_node_brings_its_store_in_step_with_its_config_file() {
    let lab = Lab::new();
    std::fs::remove_dir_all(&lab.data).unwrap();
    let ca = pki().path("ca.pem").display().to_string();
    let crl = pki().path("crl.pem").display().to_string();
    ok(run(&lab, &["init", "--ca-file", &ca, "--crl", &crl]));
    let a = Img::new(1, &lab.file_url("a.img", &bytes(9_000, 1)), bytes(9_000, 1));
    lab.publish("0.0.1", std::slice::from_ref(&a));
    let config = lab.data.parent().unwrap().join("node.toml");
    let settings = format!(
        "data-dir = {:?}\nsite = \"test\"\nopen-site = true\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nupdate-interval = 3600\n\
         back-to-source = true\n\n[[endorser]]\ndn = \"subject=DC = org, DC = imageswarm-test, OU = Endorsers, CN = Alice Endorser\"\n\
         issuer = {CA_DN:?}\n",
        lab.data.display().to_string()
    );
    std::fs::write(&config, &settings).unwrap();

    let (mut node, first) = start_node(
        Command::new(env!("CARGO_BIN_EXE_imageswarm"))
            .args(["node", "--config"])
            .arg(&config)
            .env_remove("IMAGESWARM_DATA_DIR"),
        std::process::Stdio::null(),
    );
    assert!(first.starts_with("listening on"), "{first}");
    let approved = format!("{ENDORSER_DN}\t{CA_DN}\n");
    until("the declared endorser approved", || ok(run(&lab, &["endorser", "list"])) == approved);

    // A subscription added to the file is taken on SIGHUP, and its image
    // downloaded by the update that follows.
    let declared = format!("{settings}\n[[subscription]]\nurl = {:?}\nnew-images = \"cache\"\n", lab.url());
    std::fs::write(&config, declared).unwrap();
    sighup_until(&node, "the declared subscription's image available", || {
        images(&lab).first().is_some_and(|i| i["state"] == "available")
    });
    let shown = ok(run(&lab, &["config", "show"]));
    for want in [ENDORSER_DN, &lab.url(), "new-images cache", "revocation checked", &ca] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    node.kill().unwrap();
    node.wait().unwrap();
    assert_eq!(ok(run(&lab, &["config", "show"])), shown, "the same from the store directly");
}

/// A host that trusts the CAs of `cas` (test PKI files), with the test CA's
/// CRL in a file of its own that a test may replace, as `fetch-crl` does,
/// holding one image of an endorsed list. Returns the lab, the CRL file and
/// the image.
fn host_with_a_crl_file(cas: &[&str]) -> (Lab, std::path::PathBuf, Img) {
    let lab = Lab::new();
    std::fs::remove_dir_all(&lab.data).unwrap();
    let crl = lab.dir.path().join("ca.r0");
    std::fs::copy(pki().path("crl.pem"), &crl).unwrap();
    let bundle = lab.dir.path().join("cas.pem");
    std::fs::write(&bundle, cas.iter().map(|f| pki().read(f)).collect::<Vec<_>>().concat()).unwrap();
    let ca = bundle.display().to_string();
    ok(run(&lab, &["init", "--ca-file", &ca, "--crl", &crl.display().to_string()]));
    ok(run(&lab, &["endorser", "add", "--dn", ENDORSER_DN, "--issuer", CA_DN]));
    let a = Img::new(1, &lab.file_url("a.img", &bytes(9_000, 1)), bytes(9_000, 1));
    lab.publish("0.0.1", std::slice::from_ref(&a));
    ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    ok(run(&lab, &["update"]));
    (lab, crl, a)
}

/// A CRL that `fetch-crl` refreshes on disk is taken at the next update
/// cycle, with no restart; `status` says which CA's CRL is out of date, and
/// that its lists are invalid.
#[test]
fn a_crl_refreshed_on_disk_is_taken_at_the_next_cycle() {
    // A second CA, whose CRL the host lacks: its lists would be invalid,
    // and only its.
    let (lab, crl, _) = host_with_a_crl_file(&["ca.pem", "other/ca.pem"]);
    let (mut node, _) = start_open_node(&lab, &["--update-interval", "3600"], std::process::Stdio::null());
    // The CAs' CRLs show once the node's first update cycle read them.
    until("the CAs in status", || status(&lab)["cas"].as_array().is_some_and(|c| !c.is_empty()));
    let s = status(&lab);
    assert_eq!((&s["cas"][0]["subject"], &s["cas"][0]["crl"]), (&CA_DN.into(), &"current".into()), "{s}");
    assert_eq!(s["cas"][1]["crl"], "missing", "{s}");
    assert_eq!(s["lists"][0]["valid"], true, "the other CA's missing CRL does not touch this CA's list: {s}");

    std::fs::copy(pki().path("crl-expired.pem"), &crl).unwrap();
    let out = run(&lab, &["update"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let s = status(&lab);
    assert_eq!(s["cas"][0]["crl"], "expired", "{s}");
    assert_eq!(s["lists"][0]["valid"], false, "{s}");
    let text = ok(run(&lab, &["status"]));
    assert!(text.contains(&format!("CA {CA_DN}  CRL EXPIRED")), "{text}");

    std::fs::copy(pki().path("crl.pem"), &crl).unwrap();
    ok(run(&lab, &["update"]));
    let s = status(&lab);
    assert_eq!((&s["cas"][0]["crl"], &s["lists"][0]["valid"]), (&"current".into(), &true.into()), "{s}");
    assert_eq!(s["images"][0]["state"], "available", "{s}");
    node.kill().unwrap();
    node.wait().unwrap();
}

/// T14: a CRL that newly lists the endorser of a list in force, put in
/// place while the node runs, drops that list at the next check: the list
/// is invalid for revocation and its image is no longer available or
/// served.
#[test]
fn a_crl_that_newly_revokes_the_endorser_drops_its_lists_at_the_next_check() {
    let (lab, crl, a) = host_with_a_crl_file(&["ca.pem"]);
    let (mut node, _) = start_open_node(&lab, &["--update-interval", "3600"], std::process::Stdio::null());
    until("the image available", || status(&lab)["images"][0]["state"] == "available");

    std::fs::copy(pki().path("crl-endorser-revoked.pem"), &crl).unwrap();
    let out = run(&lab, &["update"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let s = status(&lab);
    assert_eq!(s["lists"][0]["valid"], false, "{s}");
    assert!(s["lists"][0]["last_error"].as_str().is_some_and(|e| e.contains("revocation")), "{s}");
    assert_ne!(s["images"][0]["state"], "available", "{s}");
    assert!(!lab.image_path(a.id).exists(), "the revoked endorser's image left the cache");
    node.kill().unwrap();
    node.wait().unwrap();
}

/// Bytes in `expired/` that are not the image's (changed on disk) are never
/// restored: the image is downloaded again.
#[test]
fn an_expired_file_that_does_not_hold_the_bytes_is_not_restored() {
    let (lab, a) = host_with_one_image();
    let id = a.id.to_string();
    ok(run(&lab, &["image", "revoke", &id]));
    let expired: Vec<_> = std::fs::read_dir(lab.data.join("expired")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    std::fs::remove_file(&expired[0]).unwrap();
    std::fs::write(&expired[0], bytes(9_000, 2)).unwrap();
    ok(run(&lab, &["image", "approve", &id]));
    let out = ok(run(&lab, &["update"]));
    assert!(out.contains(&format!("image {id}: downloaded and verified")), "{out}");
    assert_eq!(std::fs::read(lab.data.join("images").join(&id)).unwrap(), a.bytes, "the image's own bytes");
}

/// `--expired-max-bytes` caps what `expired/` keeps: the oldest go first.
#[test]
fn expired_images_are_capped_by_their_bytes() {
    let lab = Lab::new();
    std::fs::remove_dir_all(&lab.data).unwrap();
    let ca = pki().path("ca.pem").display().to_string();
    let crl = pki().path("crl.pem").display().to_string();
    ok(run(&lab, &["init", "--ca-file", &ca, "--crl", &crl, "--expired-max-bytes", "20000"]));
    assert!(ok(run(&lab, &["config", "show"])).contains("expired images take at most 19.53 KiB"));
    ok(run(&lab, &["endorser", "add", "--dn", ENDORSER_DN, "--issuer", CA_DN]));
    let img = |n: u8| Img::new(u128::from(n), &lab.file_url(&format!("{n}.img"), &bytes(9_000, n)), bytes(9_000, n));
    let (a, b, c) = (img(1), img(2), img(3));
    lab.publish("0.0.1", &[a.clone(), b.clone()]);
    ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    let first = ok(run(&lab, &["update"]));
    lab.publish("0.0.2", std::slice::from_ref(&c));
    let second = ok(run(&lab, &["update"]));
    assert_eq!(lab.expired_files().len(), 2, "18 000 bytes fit under the cap:\n{first}\n{second}");
    // A second later, c expires too: 27 000 bytes, over the cap.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    lab.publish("0.0.3", &[]);
    let out = ok(run(&lab, &["update"]));
    assert!(out.contains("gc: removed 1 expired image ("), "{out}");
    let left = lab.expired_files();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|n| n.starts_with(&c.id.to_string())), "the newest stays: {left:?}");
}

/// A master's download from the source shows in `status` as it goes.
#[test]
fn a_masters_download_from_the_source_shows_in_status() {
    use testkit::http::{Behaviour, HttpServer};
    let lab = fresh_host();
    let server = HttpServer::start();
    let body = bytes(300_000, 4);
    // The source sends a part, then holds the rest until released.
    let url = server.serve("/a.img", body.clone(), Behaviour::Held(131_072));
    let a = Img::new(1, &url, body);
    lab.publish("0.0.1", std::slice::from_ref(&a));
    ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    let (mut node, _) = start_open_node(&lab, &["--master"], std::process::Stdio::null());
    until("download progress in status", || !status(&lab)["images"][0]["from_source"].is_null());
    let text = ok(run(&lab, &["status"]));
    assert!(text.contains("downloading from its source: ") && text.contains(" of 292.97 KiB"), "{text}");
    server.release();
    until("the image available", || status(&lab)["images"][0]["state"] == "available");
    // The cycle ends just after the install: then no download is under way.
    until("no download under way", || status(&lab)["images"][0]["from_source"].is_null());
    node.kill().unwrap();
    node.wait().unwrap();
}

/// An installed image whose file changes on disk is found by `verify` (and
/// by a running node at start), taken out of service, and fetched again.
#[test]
fn an_installed_image_changed_on_disk_is_taken_out_of_service() {
    use std::os::unix::fs::PermissionsExt;
    let (lab, a) = host_with_one_image();
    let id = a.id.to_string();
    assert_eq!(ok(run(&lab, &["verify"])), format!("image {id}: intact\n"));
    let file = lab.data.join("images").join(&id);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o444, "installed read-only");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, bytes(9_000, 2)).unwrap();

    let out = run(&lab, &["verify", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHANGED ON DISK: moved to expired/"), "{out:?}");
    assert!(!file.exists(), "out of service");
    assert_eq!(state_of(&lab, &id), "partial");
    let why = images(&lab)[0]["why"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("no longer held the list's bytes"), "{why}");
    ok(run(&lab, &["update"]));
    assert_eq!(std::fs::read(&file).unwrap(), a.bytes, "fetched again, not restored from the changed file");

    // A running node checks at start, and a master fetches it again.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, bytes(9_000, 3)).unwrap();
    let (mut node, _) = start_open_node(&lab, &["--master"], std::process::Stdio::null());
    until("the node to find the changed file", || std::fs::read(&file).is_ok_and(|b| b == a.bytes));
    node.kill().unwrap();
    node.wait().unwrap();
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
/// `status` reads the running node, and `update` and SIGHUP make it run an
/// update cycle now.
#[test]
fn host_commands_reach_a_running_node_through_its_control_socket() {
    let lab = fresh_host();
    let log = lab.dir.path().join("node.log");
    let a = Img::new(1, &lab.file_url("a.img", &bytes(70_000, 1)), bytes(70_000, 1));
    lab.publish("0.0.1", std::slice::from_ref(&a));
    ok(run(&lab, &["subscribe", &lab.url(), "--new-images", "cache"]));
    ok(run(&lab, &["update"]));
    let stopped = run(&lab, &["status"]);
    assert_eq!(stopped.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&stopped.stderr).contains("no node runs on"), "{stopped:?}");

    let (mut node, first) = start_node(
        Command::new(env!("CARGO_BIN_EXE_imageswarm")).arg("--data-dir").arg(&lab.data).args([
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--site",
            "test",
            "--open-site",
            "--update-interval",
            "3600",
        ]),
        std::fs::File::create(&log).unwrap().into(),
    );
    assert!(first.starts_with("listening on /ip4/127.0.0.1/tcp/"), "{first}");

    let id = a.id.to_string();
    let s = status(&lab);
    assert_eq!(s["images"][0]["uuid"], id.as_str(), "{s}");
    assert_eq!(s["images"][0]["state"], "available", "{s}");
    assert_eq!(s["images"][0]["chunks_held"], s["images"][0]["chunks"], "{s}");
    assert_eq!(s["images"][0]["list_version"], "0.0.1", "{s}");
    assert_eq!(s["lists"][0]["identifier"], common::LIST_ID.to_string(), "{s}");
    assert_eq!(s["lists"][0]["version"], "0.0.1", "{s}");
    assert!(s["lists"][0]["expires"].as_str().is_some_and(|t| t.ends_with('Z')), "{s}");
    assert!(s["lists"][0]["last_update"].is_string(), "{s}");
    assert!(s["disk_free"].as_u64().is_some_and(|f| f > 0), "{s}");
    let text = ok(run(&lab, &["status", &id]));
    assert!(text.contains(&format!("image {id}")) && text.contains("available  2/2 chunks (100%)"), "{text}");
    let unknown = run(&lab, &["status", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no image"), "{unknown:?}");

    assert_eq!(state_of(&lab, &id), "available", "answered by the node while it holds the store");
    // The node runs the cycle with its own timeouts, and says so when given others.
    let updated = run(&lab, &["update", "--read-timeout", "5"]);
    assert_eq!(updated.status.code(), Some(0), "{updated:?}");
    assert!(String::from_utf8_lossy(&updated.stdout).contains("unchanged"), "{updated:?}");
    assert!(String::from_utf8_lossy(&updated.stderr).contains("uses its own timeouts"), "{updated:?}");
    // `init` as the host was set up holds already; anything else waits for
    // the node to stop.
    let ca = pki().path("ca.pem").display().to_string();
    let crl = pki().path("crl.pem").display().to_string();
    ok(run(&lab, &["init", "--ca-file", &ca, "--crl", &crl]));
    let changed = run(&lab, &["init", "--ca-file", &ca, "--crl", &crl, "--no-crl-check"]);
    assert_eq!(changed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&changed.stderr).contains("stop it before `init`"), "{changed:?}");
    let waited = ok(run(&lab, &["wait", &id, "--timeout", "10"]));
    assert!(waited.starts_with(&format!("available: {id}")), "{waited}");
    ok(run(&lab, &["image", "revoke", &id]));
    assert_eq!(state_of(&lab, &id), "revoked");
    // `wait` fails at once on what will not come, without waiting it out.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let none = lab.data.join("none");
    for (dir, args, why) in [
        (&lab.data, ["wait", &id, "--timeout", "60"], "revoked on this host"),
        (&lab.data, ["wait", unknown, "--timeout", "60"], "on no list in force"),
        (&none, ["wait", &id, "--timeout", "60"], "no data directory"),
    ] {
        let started = std::time::Instant::now();
        let out =
            Command::new(env!("CARGO_BIN_EXE_imageswarm")).arg("--data-dir").arg(dir).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{args:?}: {out:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{args:?} waited its timeout out");
    }

    // `update` waits for a cycle of the node's that starts after it.
    lab.publish("0.0.2", std::slice::from_ref(&a));
    let out = ok(run(&lab, &["update"]));
    assert!(out.contains("accepted version 0.0.2"), "{out}");
    assert_eq!(status(&lab)["lists"][0]["version"], "0.0.2");
    // SIGHUP runs one as well, without waiting.
    lab.publish("0.0.3", std::slice::from_ref(&a));
    sighup_until(&node, "version 0.0.3 taken", || status(&lab)["lists"][0]["version"] == "0.0.3");

    // The node's log (info by default) tells the story, each condition once.
    std::fs::write(&lab.list, b"garbage").unwrap();
    for _ in 0..2 {
        assert_eq!(run(&lab, &["update"]).status.code(), Some(1));
    }
    let told = std::fs::read_to_string(&log).unwrap();
    assert!(told.contains("list accepted") && told.contains("version=0.0.3"), "{told}");
    assert_eq!(told.matches("list update failed").count(), 1, "{told}");
    assert!(!told.contains(" event="), "stages without a hook log nothing: {told}");

    // Approved again while the node runs, it comes back from expired/
    // before the node would fetch it again.
    std::fs::remove_file(lab.dir.path().join("a.img")).unwrap();
    assert_eq!(ok(run(&lab, &["image", "approve", &id])), format!("image {id}: available\n"));

    node.kill().unwrap();
    node.wait().unwrap();
    // The socket file is left behind; nobody listens, so the store is used.
    assert!(lab.data.join("control.sock").exists());
    assert_eq!(state_of(&lab, &id), "available");
}
