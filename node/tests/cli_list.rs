//! The endorser's command line, end to end: `imageswarm list ...` as a
//! user runs it, checked against the contract in docs/CLI.md.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{CA_DN, ENDORSER_DN, Pki};

fn pki() -> &'static Pki {
    Pki::shared(env!("CARGO_TARGET_TMPDIR"))
}

fn imageswarm(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imageswarm")).args(args).current_dir(cwd).output().expect("running imageswarm")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pki_arg(name: &str) -> String {
    pki().path(name).display().to_string()
}

const IMAGE_ID: &str = "488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d";

/// `list add-image list.json disk.img` with fixed metadata, image version
/// `version`, and `extra` arguments.
fn add_image(dir: &Path, version: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "list",
        "add-image",
        "list.json",
        "disk.img",
        "--uri",
        "https://img.example.org/disk.img",
        "--title",
        "Disk",
        "--image-version",
        version,
        "--os",
        "Linux",
        "--osversion",
        "12",
        "--arch",
        "x86_64",
    ];
    args.extend_from_slice(extra);
    imageswarm(&args, dir)
}

/// `list new -o list.json` endorsed by the test endorser.
fn new_list(dir: &Path) -> Output {
    let cert = pki_arg("endorser.pem");
    let args =
        ["list", "new", "-o", "list.json", "--cert", &cert, "--title", "T", "--description", "D", "--source", "S"];
    imageswarm(&[&args[..], &["--uri", "https://lists.example.org/l"]].concat(), dir)
}

/// A work directory with a new list holding one image.
fn listed(size: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, (0..size).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
    ok(&new_list(dir.path()));
    ok(&add_image(dir.path(), "1.0", &["--identifier", IMAGE_ID, "--chunk-size", "65536"]));
    (dir, image)
}

fn sign(dir: &Path, signer: &str) -> Output {
    imageswarm(
        &[
            "list",
            "sign",
            "list.json",
            "--cert",
            &pki_arg(&format!("{signer}.pem")),
            "--key",
            &pki_arg(&format!("{signer}.key")),
            "-o",
            "list.smime",
        ],
        dir,
    )
}

fn list_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("list.json")).unwrap()).unwrap()
}

#[test]
fn new_takes_the_endorser_from_the_certificate() {
    let (dir, _) = listed(1000);
    let v = list_json(dir.path());
    let e = &v["hv:imagelist"]["hv:endorser"]["hv:x509"];
    assert_eq!(e["hv:dn"], ENDORSER_DN);
    assert_eq!(e["hv:ca"], CA_DN);
    assert_eq!(e["dc:creator"], "Alice Endorser");
    assert_eq!(e["hv:email"], "alice@example.org");
    // Never overwrites.
    let again = new_list(dir.path());
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(list_json(dir.path()), v);
}

#[test]
fn add_image_records_size_sha512_and_manifest_root() {
    let size = 200_000;
    let (dir, image) = listed(size);
    let bytes = std::fs::read(&image).unwrap();
    let img = &list_json(dir.path())["hv:imagelist"]["hv:images"][0]["hv:image"];
    assert_eq!(img["hv:size"], size as u64);
    let sha = testkit::openssl(&["dgst".into(), "-sha512".into(), "-r".into()], &bytes).unwrap();
    assert_eq!(img["sl:checksum:sha512"], String::from_utf8_lossy(&sha[..128]).into_owned());
    assert_eq!(img["imageswarm:chunk_size"], 65536);
    let mut b = proto::manifest::ManifestBuilder::new(proto::manifest::ChunkSize::new(65536).unwrap());
    b.update(&bytes);
    assert_eq!(img["imageswarm:manifest_root"], b.finish().root().to_string());

    // The same identifier replaces the entry instead of adding one.
    std::fs::write(&image, b"new contents").unwrap();
    ok(&add_image(dir.path(), "2.0", &["--identifier", IMAGE_ID]));
    let images = &list_json(dir.path())["hv:imagelist"]["hv:images"];
    assert_eq!(images.as_array().unwrap().len(), 1);
    assert_eq!(images[0]["hv:image"]["hv:size"], 12);
    // Without --chunk-size the size follows the image's (a small one: 128 KiB).
    assert_eq!(images[0]["hv:image"]["imageswarm:chunk_size"], 128 << 10);

    let bad = add_image(dir.path(), "3.0", &["--chunk-size", "3000"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("power of two"));
}

#[test]
fn sign_bumps_the_version_and_openssl_verifies_the_output() {
    let (dir, _) = listed(5000);
    let out = ok(&sign(dir.path(), "endorser"));
    assert!(out.contains("version 0.0.1"), "{out}");
    assert_eq!(list_json(dir.path())["hv:imagelist"]["hv:version"], "0.0.1");
    ok(&sign(dir.path(), "endorser"));
    assert_eq!(list_json(dir.path())["hv:imagelist"]["hv:version"], "0.0.2");
    let smime = dir.path().join("list.smime").display().to_string();
    let args: Vec<String> =
        ["smime", "-verify", "-in", &smime, "-CAfile", &pki_arg("ca.pem")].iter().map(|s| s.to_string()).collect();
    let content = testkit::openssl(&args, b"").expect("openssl smime -verify");
    let listed: serde_json::Value = serde_json::from_slice(&content).unwrap();
    assert_eq!(listed, list_json(dir.path()));
}

#[test]
fn sign_refuses_a_certificate_that_is_not_the_endorser() {
    let (dir, _) = listed(100);
    let before = std::fs::read(dir.path().join("list.json")).unwrap();
    let out = sign(dir.path(), "bob");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("list's endorser"));
    assert_eq!(std::fs::read(dir.path().join("list.json")).unwrap(), before, "the list must be untouched");
    assert!(!dir.path().join("list.smime").exists());
}

#[test]
fn verify_reports_valid_lists_and_names_the_failed_check() {
    let (dir, _) = listed(100);
    ok(&sign(dir.path(), "endorser"));
    let d = dir.path();
    let good = ok(&imageswarm(
        &["list", "verify", "list.smime", "--ca-file", &pki_arg("ca.pem"), "--crl", &pki_arg("crl.pem")],
        d,
    ));
    assert!(good.starts_with("valid: list "), "{good}");
    assert!(good.contains(ENDORSER_DN));
    ok(&imageswarm(&["list", "verify", "list.smime", "--ca-dir", &pki_arg("igtf"), "--endorser", ENDORSER_DN], d));

    let fails = |args: &[&str], check: &str| {
        let mut all = vec!["list", "verify", "list.smime"];
        all.extend_from_slice(args);
        let out = imageswarm(&all, d);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with(&format!("invalid: {check}: ")), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    };
    let ca = pki_arg("ca.pem");
    fails(&["--ca-file", &ca], "crl");
    fails(&["--ca-file", &ca, "--crl", &pki_arg("crl-expired.pem")], "crl");
    fails(&["--ca-file", &ca, "--no-crl-check", "--endorser", "/CN=somebody else"], "endorser-approval");
    fails(&["--ca-file", &ca, "--no-crl-check", "--at", "2099-01-01T00:00:00Z"], "validity");
    fails(&["--ca-file", &pki_arg("other/ca.pem"), "--no-crl-check"], "chain");

    // A list signed by the revoked endorser's certificate.
    let revoked = pki().openssl_sign(
        &testkit::list_json(testkit::REVOKED_DN, CA_DN, "1", testkit::now(), testkit::now() + 86_400),
        &["revoked"],
        &[],
    );
    std::fs::write(d.join("list.smime"), revoked).unwrap();
    fails(&["--ca-file", &ca, "--crl", &pki_arg("crl.pem")], "revocation");

    // Garbage is an invalid list, not a crash.
    std::fs::write(d.join("list.smime"), b"not a list").unwrap();
    fails(&["--ca-file", &ca], "smime");

    // Usage errors are exit code 2.
    assert_eq!(imageswarm(&["list", "verify", "list.smime"], d).status.code(), Some(2));
    assert_eq!(imageswarm(&["list", "verify", "missing.smime", "--ca-file", &ca], d).status.code(), Some(2));
}

#[test]
fn show_reads_signed_and_unsigned_lists() {
    let (dir, _) = listed(100);
    let d = dir.path();
    let unsigned = ok(&imageswarm(&["list", "show", "list.json"], d));
    assert!(unsigned.contains("(unsigned)"), "{unsigned}");
    assert!(unsigned.contains("488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d"));
    ok(&sign(d, "endorser"));
    let signed = ok(&imageswarm(&["list", "show", "list.smime"], d));
    for want in ["version:     0.0.1", ENDORSER_DN, CA_DN, "not verified here", "Disk", "UUID"] {
        assert!(signed.contains(want), "missing {want}:\n{signed}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&imageswarm(&["list", "show", "list.smime", "--json"], d))).unwrap();
    assert_eq!(json, list_json(d));
    let url = format!("file://{}", d.join("list.smime").display());
    assert_eq!(ok(&imageswarm(&["list", "show", &url], d)), signed, "a URL reads as the file does");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/tests/fixtures/hepixvmitrust-readme-example-2011.smime");
    let old = ok(&imageswarm(&["list", "show", &fixture.display().to_string()], d));
    assert!(old.contains("/C=DE/O=GermanGrid/OU=DESY/CN=Owen Synge"), "{old}");
}

#[test]
fn integrity_only_accepts_the_2011_fixture_and_says_what_it_did_not_check() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/tests/fixtures/hepixvmitrust-readme-example-2011.smime");
    let out = ok(&imageswarm(&["list", "verify", &fixture.display().to_string(), "--integrity-only"], Path::new(".")));
    assert!(out.starts_with("intact: list 4e186b44-2c64-40ea-97d5-e9e5c0bce059"), "{out}");
    assert!(out.contains("NOT verified"), "{out}");
}

/// The fields EGI's subscribers require (atrope refuses an image without
/// `ad:group`, `ad:mpuri`, `ad:user:*`, `hv:format`, `sl:comments` and
/// `sl:osname`) can be set, survive a replacement and a signature, and a
/// field that has a flag of its own is refused.
#[test]
fn further_fields_reach_the_signed_list() {
    let (dir, _) = listed(1000);
    let d = dir.path();
    let fields = [
        "--field",
        "ad:group=biomed",
        "--field",
        "ad:mpuri=https://appdb.example.org/store/vm/image/1",
        "--field",
        "ad:user:fullname=Jo Doe",
        "--field",
        "sl:osname=Ubuntu",
        "--format",
        "qcow2",
        "--comments",
        "built nightly",
    ];
    ok(&add_image(d, "2.0", &[&["--identifier", IMAGE_ID], &fields[..]].concat()));
    // Replaced without them: the fields it had stay.
    ok(&add_image(d, "3.0", &["--identifier", IMAGE_ID, "--field", "ad:group=atlas"]));
    ok(&sign(d, "endorser"));
    let shown = imageswarm(&["list", "show", "list.smime", "--json"], d);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let img = &v["hv:imagelist"]["hv:images"][0]["hv:image"];
    assert_eq!(img["ad:group"], "atlas", "the newer value wins");
    assert_eq!(img["ad:user:fullname"], "Jo Doe");
    assert_eq!(img["sl:osname"], "Ubuntu");
    assert_eq!(img["ad:mpuri"], "https://appdb.example.org/store/vm/image/1");

    for (bad, says) in [
        ("dc:title=x", "its own flag"),
        ("hv:size=1", "its own flag"),
        ("group=x", "prefix:name"),
        ("ad:group", "KEY=VALUE"),
    ] {
        let out = add_image(d, "4.0", &["--field", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let other = tempfile::tempdir().unwrap();
    let cert = pki_arg("endorser.pem");
    let args =
        ["list", "new", "-o", "list.json", "--cert", &cert, "--title", "T", "--description", "D", "--source", "S"];
    let more = ["--uri", "https://lists.example.org/l", "--field", "ad:vo=biomed"];
    ok(&imageswarm(&[&args[..], &more[..]].concat(), other.path()));
    assert_eq!(list_json(other.path())["hv:imagelist"]["ad:vo"], "biomed");
    std::fs::remove_file(other.path().join("list.json")).unwrap();
    let refused = imageswarm(&[&args[..], &["--uri", "u", "--field", "hv:uri=x"][..]].concat(), other.path());
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("its own flag"));
    assert!(!other.path().join("list.json").exists(), "nothing written");
}

#[test]
fn add_image_refuses_more_chunks_than_a_manifest_may_have_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    ok(&new_list(dir.path()));
    let before = std::fs::read(dir.path().join("list.json")).unwrap();
    // Sparse: a GiB and a byte that take no room.
    let image = std::fs::File::create(dir.path().join("disk.img")).unwrap();
    image.set_len((proto::manifest::MAX_CHUNKS << 10) + 1).unwrap();
    let out = add_image(dir.path(), "1.0", &["--chunk-size", "1024"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than the 1048576") && err.contains("chunks of 2048 bytes or more"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("list.json")).unwrap(), before, "the list is untouched");
}

#[test]
fn remove_image_withdraws_an_entry_and_names_one_that_is_not_there() {
    let (dir, _) = listed(100);
    let d = dir.path();
    let out = ok(&imageswarm(&["list", "remove-image", "list.json", IMAGE_ID], d));
    assert!(out.contains(&format!("removed image {IMAGE_ID}")), "{out}");
    assert_eq!(list_json(d)["hv:imagelist"]["hv:images"].as_array().map(Vec::len), Some(0));
    let again = imageswarm(&["list", "remove-image", "list.json", IMAGE_ID], d);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no image"), "{again:?}");
}

/// The endorser's walk-through runs as installed (the script with pki.sh
/// beside it, outside any checkout, with the binary it is given) and leaves
/// nothing behind.
#[test]
fn the_walkthrough_runs_installed_and_cleans_up_after_itself() {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let installed = tempfile::tempdir().unwrap();
    for (from, to) in [("scripts/walkthrough.sh", "walkthrough.sh"), ("tests/src/pki.sh", "pki.sh")] {
        std::fs::copy(checkout.join(from), installed.path().join(to)).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(installed.path().join("walkthrough.sh"))
        .arg("1")
        .env("IMAGESWARM", env!("CARGO_BIN_EXE_imageswarm"))
        .env("TMPDIR", tmp.path())
        .current_dir(installed.path())
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.contains("walk-through complete"), "{text}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "its work directory is gone");
}

/// Every synopsis docs/CLI.md shows for `imageswarm` names a subcommand the
/// binary has, and only flags its `--help` lists.
#[test]
fn the_documented_synopses_match_the_binary() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CLI.md")).unwrap();
    let synopses = testkit::synopses(&doc, "imageswarm");
    assert!(synopses.len() >= 25, "{synopses:?}");
    for (words, flags) in synopses {
        let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
        args.push("--help");
        let help = ok(&imageswarm(&args, Path::new(".")));
        for flag in flags {
            assert!(
                testkit::lists_flag(&help, &flag),
                "docs/CLI.md shows `imageswarm {} {flag}`, which --help does not list:\n{help}",
                words.join(" ")
            );
        }
    }
}
