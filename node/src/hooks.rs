//! Event hooks with vmcatcher's contract, so existing site integrations
//! (glancepush, OpenNebula and OpenStack glue) work unchanged.
//!
//! # Contract
//! * The configured command runs through `sh -c` with the parent's
//!   environment plus `VMCATCHER_EVENT_TYPE` and the `VMCATCHER_EVENT_*`
//!   variables of reference §6, each set only when its source field is
//!   present and non-empty, and always `VMCATCHER_CACHE_DIR_CACHE`,
//!   `_DOWNLOAD`, `_EXPIRE`, `VMCATCHER_RDBMS` and
//!   `VMCATCHER_EVENT_UUID_SESSION` (one per process).
//! * Event names: `ProcessPrefix`, `ProcessPostfix`, `AvailablePrefix`,
//!   `AvailablePostfix`, `ExpirePrefix`, `ExpirePostfix`,
//!   `SubscriptionImageNew`.
//! * A hook runs in its own process group under a time limit; when the limit
//!   passes the whole group is killed. A non-zero exit or a kill is logged.
//!   Events are not retried and a hook's failure never fails the operation.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

/// A cache or subscription event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Start of a cache run.
    ProcessPrefix,
    /// End of a cache run.
    ProcessPostfix,
    /// An image is downloaded and verified, not yet in the cache.
    AvailablePrefix,
    /// An image is in the cache.
    AvailablePostfix,
    /// An image is about to leave the cache.
    ExpirePrefix,
    /// An image was moved to the expired directory.
    ExpirePostfix,
    /// A list names an image this node did not know.
    SubscriptionImageNew,
}

impl Event {
    /// The `VMCATCHER_EVENT_TYPE` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::ProcessPrefix => "ProcessPrefix",
            Self::ProcessPostfix => "ProcessPostfix",
            Self::AvailablePrefix => "AvailablePrefix",
            Self::AvailablePostfix => "AvailablePostfix",
            Self::ExpirePrefix => "ExpirePrefix",
            Self::ExpirePostfix => "ExpirePostfix",
            Self::SubscriptionImageNew => "SubscriptionImageNew",
        }
    }
}

/// The image an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The `hv:image` entry.
    pub entry: &'a Value,
    /// The list's `dc:identifier`.
    pub list: Uuid,
    /// The list's `ad:vo`.
    pub vo: Option<&'a str>,
    /// The file name inside its directory.
    pub filename: Option<&'a str>,
}

/// Runs the configured hook command.
#[derive(Debug, Clone)]
pub struct Hooks {
    command: Option<String>,
    timeout: Duration,
    session: Uuid,
    dirs: [(&'static str, PathBuf); 3],
    rdbms: String,
}

const IMAGE_VARS: [(&str, &str); 14] = [
    ("VMCATCHER_EVENT_DC_IDENTIFIER", "dc:identifier"),
    ("VMCATCHER_EVENT_DC_TITLE", "dc:title"),
    ("VMCATCHER_EVENT_DC_DESCRIPTION", "dc:description"),
    ("VMCATCHER_EVENT_HV_URI", "hv:uri"),
    ("VMCATCHER_EVENT_HV_SIZE", "hv:size"),
    ("VMCATCHER_EVENT_HV_VERSION", "hv:version"),
    ("VMCATCHER_EVENT_HV_HYPERVISOR", "hv:hypervisor"),
    ("VMCATCHER_EVENT_HV_FORMAT", "hv:format"),
    ("VMCATCHER_EVENT_SL_ARCH", "sl:arch"),
    ("VMCATCHER_EVENT_SL_OS", "sl:os"),
    ("VMCATCHER_EVENT_SL_OSVERSION", "sl:osversion"),
    ("VMCATCHER_EVENT_SL_COMMENTS", "sl:comments"),
    ("VMCATCHER_EVENT_SL_CHECKSUM_SHA512", "sl:checksum:sha512"),
    ("VMCATCHER_EVENT_AD_MPURI", "ad:mpuri"),
];

impl Hooks {
    /// Hooks for a store at `paths`, running `command` (none: events are
    /// only logged).
    pub fn new(command: Option<String>, timeout: Duration, paths: &crate::store::Paths) -> Self {
        Self {
            command,
            timeout,
            session: Uuid::new_v4(),
            dirs: [
                ("VMCATCHER_CACHE_DIR_CACHE", paths.images.clone()),
                ("VMCATCHER_CACHE_DIR_DOWNLOAD", paths.images.clone()),
                ("VMCATCHER_CACHE_DIR_EXPIRE", paths.expired.clone()),
            ],
            rdbms: format!("sled://{}", paths.meta.display()),
        }
    }

    /// The environment an event's hook gets, beyond the parent's.
    pub fn environment(&self, event: Event, subject: Option<Subject<'_>>) -> Vec<(String, String)> {
        let mut env = vec![
            ("VMCATCHER_EVENT_TYPE".to_owned(), event.name().to_owned()),
            ("VMCATCHER_EVENT_UUID_SESSION".to_owned(), self.session.to_string()),
            ("VMCATCHER_RDBMS".to_owned(), self.rdbms.clone()),
        ];
        for (k, v) in &self.dirs {
            env.push(((*k).to_owned(), v.display().to_string()));
        }
        let Some(s) = subject else {
            return env;
        };
        for (var, key) in IMAGE_VARS {
            let value = match s.entry.get(key) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            if !value.is_empty() {
                env.push((var.to_owned(), value));
            }
        }
        env.push(("VMCATCHER_EVENT_IL_DC_IDENTIFIER".to_owned(), s.list.to_string()));
        if let Some(vo) = s.vo.filter(|v| !v.is_empty()) {
            env.push(("VMCATCHER_EVENT_VO".to_owned(), vo.to_owned()));
        }
        if let Some(f) = s.filename {
            env.push(("VMCATCHER_EVENT_FILENAME".to_owned(), f.to_owned()));
        }
        env
    }

    /// Runs the hook for `event`, waiting at most the time limit.
    pub fn fire(&self, event: Event, subject: Option<Subject<'_>>) {
        // Without a hook the stage is silent: what happened is logged where
        // it happens (an image available, expired, ...).
        let Some(command) = &self.command else {
            return;
        };
        let image = subject.and_then(|s| s.entry.get("dc:identifier")).and_then(Value::as_str).unwrap_or("");
        tracing::debug!(event = event.name(), image, "running the hook");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .envs(self.environment(event, subject))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(event = event.name(), error = %e, "hook could not start");
                return;
            }
        };
        let output = [child.stdout.take().map(capture), child.stderr.take().map(capture)];
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) | Err(_) => break None,
            }
        };
        match status {
            Some(s) if s.success() => tracing::debug!(event = event.name(), "hook succeeded"),
            Some(s) => {
                let out: Vec<String> = output.iter().flatten().map(|o| o.text()).collect();
                let out = out.join(" | ");
                tracing::warn!(event = event.name(), status = %s, output = %out, "hook failed");
            }
            None => {
                // SAFETY: kill(2) with a negative pid signals the process
                // group we created for this hook; no memory is involved.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.wait();
                tracing::warn!(event = event.name(), limit = ?self.timeout, "hook exceeded its time limit and was killed");
            }
        }
    }
}

/// The first 4 KiB a hook wrote to one of its pipes.
#[derive(Debug, Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let kept = self.0.lock().map(|k| k.clone()).unwrap_or_default();
        String::from_utf8_lossy(&kept).trim().to_owned()
    }
}

/// Reads a pipe in a detached thread, which ends when every holder of the
/// pipe (the hook and anything it left behind) has closed it. Nobody waits
/// for that thread, so a lingering grandchild cannot stall the node.
fn capture(mut r: impl Read + Send + 'static) -> Captured {
    let captured = Captured::default();
    let sink = captured.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut kept) = sink.0.lock() {
                let room = 4096usize.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    });
    captured
}
