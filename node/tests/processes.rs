//! Real `imageswarm node` processes on loopback, an open site of one master
//! and a few workers finding each other through `--bootstrap`:
//!
//! - `kill -9` of random workers and of the master during a distribution:
//!   the restarted nodes resume, everyone completes, and every store is
//!   consistent afterwards (every chunk marked present holds the true bytes,
//!   and only the true image is installed).
//! - A clock stepped back on a running worker: it refuses updates and says
//!   why, keeps serving what it holds, and takes the update once the clock
//!   is right again. The step is made with libfaketime (`.ci/run` installs
//!   it); without it that test says so and does nothing.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Img, Lab, bytes, eventually};
use uuid::Uuid;

const CHUNK: u64 = 256 << 10;
/// Every node's upload cap, in Mbit/s: slow enough that a distribution lasts
/// seconds, so kills land in the middle of it.
const UPLOAD_MBIT: &str = "24";
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// One host: its data directory, its address, and its process while it runs.
struct Host {
    data: PathBuf,
    addr: String,
    master: bool,
    /// Environment for the process (libfaketime's).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Host {
    fn new(data: PathBuf, master: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let peer = String::from_utf8(cli(&data, &["peer-id"]).output().unwrap().stdout).unwrap();
        let addr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", peer.trim());
        Self { data, addr, master, env: Vec::new(), child: None }
    }

    /// Starts the node, bootstrapping from every other host (whether it runs
    /// or not), its log in `<data>.log`.
    fn start(&mut self, others: &[String]) {
        assert!(self.child.is_none(), "{} runs already", self.data.display());
        let listen = self.addr.split("/p2p/").next().unwrap();
        let mut cmd = cli(&self.data, &["node", "--listen", listen, "--site", "lab", "--open-site"]);
        cmd.args(["--update-interval", "1", "--upload-limit", UPLOAD_MBIT]);
        cmd.args(["--master", if self.master { "true" } else { "false" }]);
        for other in others.iter().filter(|a| **a != self.addr) {
            cmd.args(["--bootstrap", other]);
        }
        let log = std::fs::File::options().create(true).append(true).open(self.data.with_extension("log")).unwrap();
        cmd.envs(self.env.iter().cloned()).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().unwrap());
    }

    /// SIGKILL: nothing is flushed, nothing is said goodbye to.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The node's `status --json`, while it answers.
    fn status(&self) -> Option<serde_json::Value> {
        let out = cli(&self.data, &["status", "--json"]).output().unwrap();
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Verified chunks of `image` the running node holds (0 when it does not
    /// answer).
    fn held(&self, image: Uuid) -> u64 {
        self.image(image).and_then(|i| i["chunks_held"].as_u64()).unwrap_or(0)
    }

    fn image(&self, image: Uuid) -> Option<serde_json::Value> {
        let status = self.status()?;
        status["images"].as_array()?.iter().find(|i| i["uuid"] == image.to_string()).cloned()
    }

    /// `imageswarm wait IMAGE --timeout SECS` succeeded.
    fn wait(&self, image: Uuid, secs: u64) -> bool {
        cli(&self.data, &["wait", &image.to_string(), "--timeout", &secs.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn cli(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imageswarm"));
    cmd.arg("--data-dir").arg(data).args(args);
    cmd
}

/// A site of a master and `workers` workers over the lab's list.
fn site(lab: &Lab, workers: usize) -> Vec<Host> {
    (0..=workers).map(|i| Host::new(lab.another_host(&format!("host{i}")), i == 0)).collect()
}

fn addrs(hosts: &[Host]) -> Vec<String> {
    hosts.iter().map(|h| h.addr.clone()).collect()
}

/// A small deterministic generator for the kill schedule (splitmix64).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

#[test]
fn kill_9_of_random_workers_and_the_master_mid_distribution_leaves_consistent_stores_that_complete() {
    let seed = std::env::var("IMAGESWARM_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos().into()
    });
    eprintln!("kill schedule seed {seed} (IMAGESWARM_TEST_SEED={seed} replays it)");
    let mut dice = Dice(seed);
    let lab = Lab::new();
    let mut img = Img::new(1, "", bytes(12 << 20, 7));
    img.uri = lab.file_url("image.img", &img.bytes);
    img.chunk_size = CHUNK;
    lab.publish("1.0.0", std::slice::from_ref(&img));
    let chunks = img.bytes.len().div_ceil(CHUNK as usize) as u64;

    let mut hosts = site(&lab, 5);
    let all = addrs(&hosts);
    for h in &mut hosts {
        h.start(&all);
    }
    // Mid-distribution: some worker holds a quarter of the chunks.
    assert!(
        eventually(Duration::from_secs(60), || hosts[1..].iter().any(|h| h.held(img.id) >= chunks / 4)),
        "the distribution did not start"
    );
    // Two random workers and the master, killed at once.
    let mut victims = vec![0];
    while victims.len() < 3 {
        let w = 1 + dice.below(hosts.len() - 1);
        if !victims.contains(&w) {
            victims.push(w);
        }
    }
    eprintln!("killing hosts {victims:?}");
    for &v in &victims {
        hosts[v].kill9();
    }
    // The survivors go on among themselves for a while; then the killed
    // workers come back, and one of them is killed again soon after its
    // restart, while it takes up its store and fetches.
    std::thread::sleep(Duration::from_millis(500 + 100 * dice.below(10) as u64));
    for &v in &victims[1..] {
        hosts[v].start(&all);
    }
    std::thread::sleep(Duration::from_millis(200 + 100 * dice.below(10) as u64));
    let again = victims[1 + dice.below(2)];
    eprintln!("killing host {again} again");
    hosts[again].kill9();
    hosts[again].start(&all);
    // The master last, once the workers have had time to trade what they hold.
    std::thread::sleep(Duration::from_secs(1));
    hosts[0].start(&all);

    for (i, h) in hosts.iter().enumerate().skip(1) {
        assert!(h.wait(img.id, 120), "worker {i} did not complete; its log:\n{}", h.log());
    }
    for h in &mut hosts {
        h.kill9();
    }
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(common::check_consistent(&h.data, &img), chunks as u32, "host {i}");
    }
}

#[test]
fn a_clock_stepped_back_on_a_running_worker_stops_its_updates_but_not_its_serving() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("skipped: {LIBFAKETIME} is missing (apt-get install libfaketime; .ci/run does)");
        return;
    }
    let lab = Lab::new();
    let mut first = Img::new(1, "", bytes(4 << 20, 1));
    first.uri = lab.file_url("first.img", &first.bytes);
    first.chunk_size = CHUNK;
    let mut second = Img::new(2, "", bytes(4 << 20, 2));
    second.uri = lab.file_url("second.img", &second.bytes);
    second.chunk_size = CHUNK;
    lab.publish("1.0.0", std::slice::from_ref(&first));

    let mut hosts = site(&lab, 2);
    let all = addrs(&hosts);
    // Worker 1's clock: the offset libfaketime reads from this file (read
    // again every second), monotonic time left alone.
    let offset = hosts[1].data.with_extension("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    hosts[1].env = vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME_TIMESTAMP_FILE".into(), offset.display().to_string()),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    hosts[0].start(&all);
    hosts[1].start(&all);
    assert!(hosts[1].wait(first.id, 60), "worker 1 did not complete; its log:\n{}", hosts[1].log());

    // A day back, then a new version of the list with a second image.
    std::fs::write(&offset, "-1d\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lab.publish("1.0.1", &[first.clone(), second.clone()]);
    // `wait` gives up at once on an image of no list in force.
    assert!(eventually(Duration::from_secs(20), || hosts[0].image(second.id).is_some()), "no update at the master");
    assert!(hosts[0].wait(second.id, 60), "the master did not fetch the second image");
    let refused = || {
        hosts[1].status().is_some_and(|s| {
            let error = s["last_update_error"].as_str().unwrap_or_default();
            error.contains("clock stepped back")
        })
    };
    assert!(eventually(Duration::from_secs(20), refused), "no clock error; worker 1's log:\n{}", hosts[1].log());
    assert!(hosts[1].image(second.id).is_none(), "the stepped-back worker took the update");

    // Still serving: with the master gone, worker 2 gets the first image
    // from worker 1 alone.
    hosts[0].kill9();
    hosts[2].start(&all);
    assert!(hosts[2].wait(first.id, 60), "worker 2 did not get the first image from worker 1");

    // The clock put right: worker 1 takes the update and the second image.
    std::fs::write(&offset, "+0\n").unwrap();
    hosts[0].start(&all);
    assert!(eventually(Duration::from_secs(20), || hosts[1].image(second.id).is_some()), "no update at worker 1");
    for (i, h) in hosts.iter().enumerate().skip(1) {
        assert!(h.wait(second.id, 60), "worker {i} did not take the update; its log:\n{}", h.log());
    }
    for h in &mut hosts {
        h.kill9();
    }
    for h in &hosts {
        assert_eq!(common::check_consistent(&h.data, &second), 16);
    }
}
