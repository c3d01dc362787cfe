//! A worker whose data directory is on a file system too small for the
//! image, a tmpfs the test mounts: the node stays up, says why it cannot
//! take the image, tries again by itself (with back-off: 5 s, doubling),
//! and completes once there is room, without a restart and with its store
//! intact. Mounting needs
//! root (as the network-namespace benchmarks do); without it the test says
//! so and does nothing.
#![allow(clippy::unwrap_used)]

mod loopback;

use loopback::Site;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A tmpfs mounted for the test, unmounted when dropped, and the
/// temporary directory it is mounted in (removed after).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}M"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { path, _dir: dir })
    }

    fn resize(&self, size_mib: u64) {
        let s =
            Command::new("mount").args(["-o", &format!("remount,size={size_mib}M")]).arg(&self.path).status().unwrap();
        assert!(s.success(), "remount {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The bytes a directory's files take.
fn used(dir: &Path) -> u64 {
    walk(dir).iter().map(|p| p.metadata().map_or(0, |m| m.len())).sum()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_survived_without_a_restart() -> anyhow::Result<()> {
    let size = 16 * MIB;
    let mut site = Site::new(2, size, 256 << 10).await?;
    let src = site.demo.data_dirs[2].clone();
    // Room for the store as `init` left it and a few MiB, not for the image.
    let room = used(&src).div_ceil(MIB) + 4;
    let Some(tmpfs) = Tmpfs::mount(room) else {
        eprintln!("a_full_disk_is_reported_and_survived_without_a_restart: not run, mounting a tmpfs needs root");
        return Ok(());
    };
    let status = Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&tmpfs.path).status()?;
    assert!(status.success());
    site.demo.data_dirs[2] = tmpfs.path.clone();
    site.start_all().await?;

    site.until("worker 1 to hold the image", |s| s.holds_verified(1)).await?;
    site.until("worker 2 to say why it cannot take the image", |s| {
        s.client(2).status().last_error.is_some_and(|e| e.contains("not enough space"))
    })
    .await?;
    assert!(site.image(2).is_none(), "nothing taken up without room for it");
    assert!(!site.nodes[2].as_ref().unwrap().task.is_finished(), "the node stays up");

    // Room again: it takes the image up at its next try, without a restart.
    tmpfs.resize(room + 2 * size / MIB);
    site.until("worker 2 to hold the image", |s| s.holds_verified(2)).await?;
    site.stop(2).await;
    let dir = tmpfs.path.clone();
    let uuid = site.demo.image;
    let rec = tokio::task::spawn_blocking(move || node::store::Store::open(&dir)?.image(uuid)).await??;
    assert_eq!(rec.map(|r| r.state), Some(node::store::ImageState::Available), "the store records it available");
    Ok(())
}
