//! `kill -9` of a real `imageswarm update` at several points, including
//! mid-download: the store must stay consistent (every chunk marked present
//! is on disk with the recorded hash, nothing unverified is installed) and
//! the next run must resume without fetching verified chunks again.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::os::unix::fs::FileExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Img, Lab, bytes, ts};
use node::store::{ImageState, NewImages, Store};
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

/// Waits (bounded) until `done` holds, polling.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Every chunk marked present is on disk with the recorded hash, which is
/// the hash of the true image's chunk. Returns how many are present.
fn check_consistent(lab: &Lab, img: &Img) -> u32 {
    let store = Store::open(&lab.data).expect("the store opens after a kill");
    let Some(rec) = store.image(img.id).unwrap() else {
        // Killed before the list was accepted: no record, and no data either.
        assert!(common::list_dir(&lab.data.join("images")).is_empty());
        assert!(store.subscription(common::LIST_ID).unwrap().unwrap().current.is_none());
        return 0;
    };
    let chunks = rec.chunk_count();
    let have = store.have(img.id, chunks).unwrap();
    let hashes = store.chunk_hashes(img.id, chunks).unwrap();
    if rec.state == ImageState::Available {
        assert_eq!(
            std::fs::read(lab.image_path(img.id)).unwrap(),
            img.bytes,
            "an installed image must be the true image"
        );
        return chunks;
    }
    assert!(!lab.image_path(img.id).exists(), "nothing is installed before it is verified");
    let partial = lab.data.join("images").join(format!("{}.partial", img.id));
    let file = std::fs::File::open(&partial).ok();
    for i in 0..chunks {
        if !have.get(i) {
            continue;
        }
        let start = u64::from(i) * CHUNK;
        let len = (img.bytes.len() as u64 - start).min(CHUNK) as usize;
        let mut buf = vec![0u8; len];
        file.as_ref().expect("bits are set, so the partial file exists").read_exact_at(&mut buf, start).unwrap();
        let truth = *blake3::hash(&img.bytes[start as usize..start as usize + len]).as_bytes();
        assert_eq!(*blake3::hash(&buf).as_bytes(), truth, "chunk {i} is marked present but its data is wrong");
        assert_eq!(hashes[i as usize], Some(truth), "chunk {i}: recorded hash");
    }
    have.count()
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
        check_consistent(&lab, &img);
    }

    // Kills mid-download, after a quarter and then after two thirds of the
    // bytes were sent.
    let mut present = 0;
    for fraction in [0.25, 0.66] {
        let mut child = spawn_update(&lab);
        let target = (SIZE as f64 * fraction) as u64;
        assert!(
            wait_until(Duration::from_secs(60), || server.bytes_sent("/img") >= target),
            "the download did not progress"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let now_present = check_consistent(&lab, &img);
        assert!(now_present >= present, "verified chunks were lost");
        present = now_present;
    }
    assert!(present > 0, "no chunk was recorded before the kills");

    // The last run completes, starting after the chunks already verified.
    server.set_behaviour("/img", Behaviour::Honest);
    let mut child = spawn_update(&lab);
    assert!(wait_until(Duration::from_secs(60), || child.try_wait().unwrap().is_some()), "the final update hung");
    assert!(child.wait().unwrap().success());
    assert_eq!(check_consistent(&lab, &img), (SIZE as u64).div_ceil(CHUNK) as u32);
    // Chunks are fetched in order, so the verified ones form a prefix and
    // the restart asks for exactly what follows it.
    let last = server.requests().into_iter().rfind(|r| r.path == "/img").unwrap();
    assert_eq!(last.range_start, Some(u64::from(present) * CHUNK), "the restart fetched verified chunks again");
}
