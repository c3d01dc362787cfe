//! `kill -9` of a real `imageswarm update` at several points, including
//! mid-download: the store must stay consistent (every chunk marked present
//! is on disk with the recorded hash, nothing unverified is installed) and
//! the next run must resume without fetching verified chunks again.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::{Img, Lab, bytes, check_consistent, eventually, ts};
use node::store::NewImages;
use testkit::http::{Behaviour, HttpServer};

const SIZE: usize = 6 << 20;
const CHUNK: u64 = 256 << 10;

fn spawn_update(lab: &Lab) -> Child {
    Command::new(env!("CARGO_BIN_EXE_imageswarm"))
        .args(["--data-dir", &lab.data.display().to_string(), "update", "--min-rate", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_at_any_point_leaves_a_consistent_store_and_the_restart_resumes() {
    let server = HttpServer::start();
    let data = bytes(SIZE, 3);
    // 2 MiB/s: a full download takes about three seconds.
    let url = server.serve("/img", data.clone(), Behaviour::Slow(2 << 20));
    let mut img = Img::new(1, &url, data);
    img.chunk_size = CHUNK;
    let lab = Lab::new();
    lab.publish("0.0.1", std::slice::from_ref(&img));
    lab.site().subscribe(&lab.url(), NewImages::Cache, ts(lab.now)).unwrap();

    // Early kills: while the list is fetched, verified and accepted.
    for delay_ms in [5, 30, 80] {
        let mut child = spawn_update(&lab);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        check_consistent(&lab.data, &img);
    }

    // Kills mid-download, after a quarter and then after two thirds of the
    // bytes were sent.
    let mut present = 0;
    for fraction in [0.25, 0.66] {
        let mut child = spawn_update(&lab);
        let target = (SIZE as f64 * fraction) as u64;
        assert!(
            eventually(Duration::from_secs(60), || server.bytes_sent("/img") >= target),
            "the download did not progress"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let now_present = check_consistent(&lab.data, &img);
        assert!(now_present >= present, "verified chunks were lost");
        present = now_present;
    }
    assert!(present > 0, "no chunk was recorded before the kills");

    // The last run completes, starting after the chunks already verified.
    server.set_behaviour("/img", Behaviour::Honest);
    let mut child = spawn_update(&lab);
    assert!(eventually(Duration::from_secs(60), || child.try_wait().unwrap().is_some()), "the final update hung");
    assert!(child.wait().unwrap().success());
    assert_eq!(check_consistent(&lab.data, &img), (SIZE as u64).div_ceil(CHUNK) as u32);
    // Chunks are fetched in order, so the verified ones form a prefix and
    // the restart asks for exactly what follows it.
    let last = server.requests().into_iter().rfind(|r| r.path == "/img").unwrap();
    assert_eq!(last.range_start, Some(u64::from(present) * CHUNK), "the restart fetched verified chunks again");
}
