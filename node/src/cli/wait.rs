//! `imageswarm wait`: until an image is available and verified on this
//! host.

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use uuid::Uuid;

/// `imageswarm wait`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// The image's dc:identifier.
    uuid: Uuid,
    /// Give up after this many seconds (exit 1).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
}

/// How often a running node is asked how the image does while a progress
/// bar shows it on a terminal.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// How often it is asked off a terminal, where only an image that will
/// never come is looked for: a node serving a status report to every
/// waiting script of a busy host takes CPU from its swarm.
const LOOK_EVERY_UNSEEN: Duration = Duration::from_secs(2);

/// How often the image's file is looked for when the images directory
/// cannot be watched.
const STAT_EVERY: Duration = Duration::from_millis(10);

/// Waits until the image is installed: a complete image is moved into
/// `images/<uuid>` only after it verified, so its presence is the signal.
/// The images directory is watched (inotify), so the install is seen at
/// once and nothing runs in between. While a node runs, it is asked how
/// the image does: a bar shows the progress on a terminal, and an image
/// that will not come (not on any list in force once every list was
/// fetched, revoked, refused or expired) fails within [`LOOK_EVERY_UNSEEN`].
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn wait(data_dir: Option<&Path>, a: WaitArgs) -> anyhow::Result<ExitCode> {
    let dir = super::site::data_dir(data_dir)?;
    let paths = node::store::Paths::new(dir);
    if !paths.meta.is_dir() {
        bail!("{} is no data directory (set one up with `imageswarm init`)", dir.display());
    }
    let path = paths.image(a.uuid);
    let started = Instant::now();
    let deadline = a.timeout.map(|t| started + Duration::from_secs_f64(t));
    let look_every = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { LOOK_EVERY } else { LOOK_EVERY_UNSEEN };
    // Watching starts before the first look, so an install in between
    // still wakes the loop.
    let mut installs = watch(&paths.images);
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut next_look = started;
    loop {
        if path.is_file() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            println!("available: {} {}", a.uuid, path.display());
            return Ok(ExitCode::SUCCESS);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            eprintln!("error: image {} is not available after {:.0} s", a.uuid, started.elapsed().as_secs_f64());
            return Ok(ExitCode::from(1));
        }
        if now >= next_look {
            next_look = now + look_every;
            // The image's own report while the node knows it (the whole one
            // parses every list), the whole one while it does not.
            let report = super::status::of_running(dir, Some(a.uuid)).or_else(|| super::status::of_running(dir, None));
            if let Some(report) = report {
                if let Some(why) = never(&report, a.uuid) {
                    bail!("image {}: {why}", a.uuid);
                }
                if let Some(i) = report.images.iter().find(|i| i.uuid == a.uuid) {
                    let b = bar.get_or_insert_with(|| super::list::progress_bar(i.size, "fetching"));
                    b.set_position(i.size * u64::from(i.chunks_held) / u64::from(i.chunks.max(1)));
                }
            }
        }
        let until = deadline.map_or(next_look, |d| d.min(next_look));
        match &installs {
            Some(rx) => match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => installs = None,
            },
            None => std::thread::sleep(STAT_EVERY),
        }
    }
}

/// Wakes whoever holds the receiver when a file is created in, or moved
/// into, `dir`; `None` when `dir` cannot be watched. One wake-up stands for
/// any number of events: the waiter looks at the file itself.
fn watch(dir: &Path) -> Option<mpsc::Receiver<()>> {
    let mut inotify = inotify::Inotify::init().ok()?;
    inotify.watches().add(dir, inotify::WatchMask::CREATE | inotify::WatchMask::MOVED_TO).ok()?;
    let (tx, rx) = mpsc::sync_channel(1);
    let mut buf = [0u8; 4096];
    std::thread::Builder::new()
        .name("watch images".into())
        .spawn(move || {
            while inotify.read_events_blocking(&mut buf).is_ok() {
                if let Err(mpsc::TrySendError::Disconnected(())) = tx.try_send(()) {
                    break;
                }
            }
        })
        .ok()?;
    Some(rx)
}

/// Why the image will not become available here, as the running node
/// reports: `None` while it may.
fn never(report: &super::status::Report, uuid: Uuid) -> Option<String> {
    match report.images.iter().find(|i| i.uuid == uuid) {
        Some(i) => match i.state.as_str() {
            "revoked" => Some("revoked on this host (`imageswarm image approve` approves it again)".into()),
            "refused" => Some("not approved on this host (`imageswarm image approve` approves it)".into()),
            "expired" => Some("no longer endorsed by a list in force on this host".into()),
            _ => None,
        },
        // Unknown is final only once every enabled list has a version in force.
        None => {
            let enabled: Vec<_> = report.lists.iter().filter(|l| l.enabled).collect();
            (!enabled.is_empty() && enabled.iter().all(|l| l.version.is_some()))
                .then(|| "on no list in force on this host (see `imageswarm images`)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn watching_wakes_on_a_file_moved_in_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let rx = watch(&images).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_millis(200)), Err(mpsc::RecvTimeoutError::Timeout));
        // Written elsewhere, then renamed into place, as an install does.
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"image").unwrap();
        std::fs::rename(&staged, images.join("x")).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(()));
    }

    #[test]
    fn a_directory_that_cannot_be_watched_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(watch(&dir.path().join("missing")).is_none());
    }
}
