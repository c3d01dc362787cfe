//! Installed images checked again, in full, off the loop's thread: once
//! after the first update cycle's local re-check, then every
//! `NodeConfig::verify_interval`.
//!
//! # Contract
//! One check runs at a time, as a control job ([`crate::site::Site::verify`]);
//! an image found changed on disk is out of service when it ends, the loop
//! recomputes what it serves at once, and an update cycle follows.

use std::time::Instant;

use uuid::Uuid;

use super::EventLoop;
use super::jobs::{self, IoDone};
use crate::Result;
use crate::cache::Checked;

impl EventLoop {
    /// Starts a check if one is due and none runs.
    pub(super) fn verify_if_due(&mut self) {
        let due = self.verify_next.is_some_and(|t| Instant::now() >= t);
        if !due || self.verifying {
            return;
        }
        self.verifying = true;
        self.verify_next = None;
        let site = self.site.clone();
        self.jobs
            .control(async move { IoDone::Verified(jobs::blocking(move || site.verify(None, crate::now())).await) });
    }

    /// A check ended.
    pub(super) fn on_verified(&mut self, r: Result<Vec<(Uuid, Checked)>>) {
        self.verifying = false;
        self.verify_next = self.cfg.verify_interval.map(|i| Instant::now() + i);
        match r {
            Ok(checked) => {
                let changed = checked.iter().filter(|(_, c)| *c != Checked::Intact).count();
                tracing::info!(images = checked.len(), changed, "installed images checked against their lists");
                if changed > 0 {
                    self.sync_or_log();
                    // Fetched again from the source by a master at once, not
                    // at the next interval; the swarm fetches it anyway.
                    self.updates.next = Instant::now();
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking installed images failed"),
        }
    }
}
