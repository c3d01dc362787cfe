//! Manifest hashing throughput against `sha512sum`, on the same file in the
//! same run.
//!
//! `cargo bench -p imageswarm-proto --bench manifest` writes a 1 GiB file of
//! pseudo-random bytes (IMAGESWARM_BENCH_BYTES overrides the size), reads it
//! once to warm the page cache, then times `sha512sum FILE` and a streaming
//! [`ManifestBuilder`] over the file (4 MiB reads, 4 MiB chunks), each three
//! times, and reports the best of each and their ratio. Goal: ratio ≥ 4.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use proto::manifest::{ChunkSize, ManifestBuilder};

const RUNS: usize = 3;

fn main() {
    let bytes: u64 = std::env::var("IMAGESWARM_BENCH_BYTES").ok().and_then(|s| s.parse().ok()).unwrap_or(1 << 30);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("image.raw");
    write_file(&path, bytes);
    read_all(&path);

    let sha = best(|| {
        let out = Command::new("sha512sum").arg(&path).output().expect("running sha512sum");
        assert!(out.status.success());
    });
    let mut root = None;
    let ours = best(|| {
        let mut b = ManifestBuilder::new(ChunkSize::DEFAULT);
        let mut f = File::open(&path).unwrap();
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            b.update(&buf[..n]);
        }
        root = Some(b.finish().root());
    });
    let rate = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    println!("file: {} MiB, best of {RUNS} runs each", bytes >> 20);
    println!("sha512sum:                     {:8.0} MB/s", rate(sha));
    println!("manifest (BLAKE3, 4 MiB):      {:8.0} MB/s  root {}", rate(ours), root.unwrap());
    println!("ratio manifest / sha512sum:    {:8.2}x  (goal >= 4)", sha.as_secs_f64() / ours.as_secs_f64());
}

fn best(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn write_file(path: &Path, bytes: u64) {
    let mut f = File::create(path).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.copy_from_slice(&state.to_le_bytes()[..w.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
}

fn read_all(path: &Path) {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf).unwrap() > 0 {}
}
