//! Update cycles: every interval, when a list or entry in force expires,
//! and when an operator asks for one.
//!
//! # Contract
//! * One cycle runs at a time. The first re-checks the store locally
//!   (`Site::settle`) before any fetch; every later one is
//!   `Site::update_with` (lists, then images, then collection).
//! * An operator's request ([`super::super::Client::update_now`], behind
//!   `imageswarm update` and SIGHUP) is answered with the report of a cycle
//!   that *started after it*: a cycle already running when it arrives may
//!   have fetched the lists before the change the operator waits for, so
//!   the request starts the next one as soon as that ends. Requests that
//!   wait for the same cycle share it. At most [`MAX_ASKED`] wait; more are
//!   answered at once with an error.
//! * While a cycle downloads images from their sources, how far each got is
//!   in the status and the metrics, with the bytes downloaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::EventLoop;
use super::jobs::{self, IoDone};
use crate::Result;
use crate::net::CrlDates;
use crate::net::metrics::Metrics;
use crate::site::{ListOutcome, UpdateReport};
use crate::store::ImageRecord;

/// Operators' requests waiting at most: each holds one of the control
/// socket's clients (`crate::control::MAX_CLIENTS`) until its cycle ends,
/// which may take hours on a master, so most stay free for `status`.
pub(super) const MAX_ASKED: usize = 4;

/// Where an operator's request is answered.
pub(crate) type Answer = oneshot::Sender<std::result::Result<UpdateReport, String>>;

/// The state of update cycles.
#[derive(Debug)]
pub(super) struct Updates {
    /// A cycle runs.
    running: bool,
    /// The first cycle (the local re-check) has started.
    started: bool,
    /// When the next cycle is due.
    pub(super) next: Instant,
    /// Requests for the next cycle to start.
    asked: Vec<Answer>,
    /// Requests the running cycle answers.
    answering: Vec<Answer>,
}

impl Updates {
    pub(super) fn new(now: Instant) -> Self {
        Self { running: false, started: false, next: now, asked: Vec::new(), answering: Vec::new() }
    }
}

impl EventLoop {
    /// Starts a cycle if none runs and one is due (or `expired` says a
    /// list or entry in force just expired).
    pub(super) fn update_if_due(&mut self, expired: bool) {
        if !self.updates.running && (Instant::now() >= self.updates.next || expired || !self.updates.asked.is_empty()) {
            self.start_update();
        }
    }

    /// An operator asks for a cycle now.
    pub(super) fn ask_update(&mut self, answer: Answer) {
        if self.updates.asked.len() >= MAX_ASKED {
            let _ = answer.send(Err(format!("{MAX_ASKED} update requests wait already")));
            return;
        }
        self.updates.asked.push(answer);
        self.update_if_due(false);
    }

    fn start_update(&mut self) {
        self.updates.running = true;
        let site = self.site.clone();
        if !std::mem::replace(&mut self.updates.started, true) {
            // The store is re-checked locally first; the update follows
            // when that ends, so that the two never write the store at once.
            return self.jobs.control(async move {
                IoDone::Settled(jobs::blocking(move || site.settle(crate::now()).map(drop)).await)
            });
        }
        self.updates.answering.append(&mut self.updates.asked);
        let back_to_source = self.cfg.master || self.cfg.back_to_source;
        let (metrics, downloads) = (self.metrics.clone(), self.downloads.clone());
        self.jobs.control(async move {
            let cycle = jobs::blocking(move || {
                let mut progress = SourceProgress { metrics, downloads, at: HashMap::new() };
                let report = site.update_with(crate::now(), back_to_source, &mut |rec, pos| progress.at(rec, pos));
                // The CAs' CRL dates, read here, off the loop's thread, since
                // a CA directory may be large; the status and the metrics
                // show them until the next cycle. Trust files that do not
                // load now leave them as they were: the report says why.
                let crls = site.trust().ok().map(|t| t.anchors.crl_next_updates());
                if let Some(c) = &crls {
                    progress.metrics.set_crls(c);
                }
                Ok((report, crls))
            })
            .await;
            match cycle {
                Ok((report, crls)) => IoDone::Updated(report, crls),
                Err(e) => IoDone::Updated(Err(e), None),
            }
        });
    }

    /// The first cycle's local re-check ended: the update proper follows,
    /// and the first check of the installed images is due.
    pub(super) fn on_settled(&mut self, r: Result<()>) {
        self.verify_next = self.cfg.verify_interval.map(|_| Instant::now());
        match r.and_then(|()| self.sync_images()) {
            Ok(()) => {
                self.publish_lists();
                self.publish_policy();
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-checking the store at start failed; waiting for the update");
                self.last_error = Some(e.to_string());
            }
        }
        self.start_update();
    }

    /// A cycle ended.
    pub(super) fn on_updated(&mut self, r: Result<UpdateReport>, crls: Option<CrlDates>) {
        self.updates.running = false;
        if let Some(c) = crls {
            self.crls = c;
        }
        lock(&self.downloads).clear();
        self.updates.next = Instant::now() + self.cfg.update_interval;
        self.last_error = match &r {
            Ok(report) => first_list_failure(report),
            Err(e) => Some(e.to_string()),
        };
        if let Ok(report) = &r {
            for (id, url, outcome) in &report.lists {
                tracing::debug!(list = %id, url, ?outcome, "list update");
            }
        }
        // Who was waiting for this cycle reads a status that shows it.
        self.publish_status();
        let answer = r.map_err(|e| e.to_string());
        for a in self.updates.answering.drain(..) {
            let _ = a.send(answer.clone());
        }
        self.sync_or_log();
        self.publish_lists();
        // Requests that came in while it ran get a cycle of their own.
        self.update_if_due(false);
    }
}

/// Downloads from the images' sources under way, by image: how far each
/// got and the image's size. Shared with the cycle's blocking thread.
pub(super) type Downloads = Arc<Mutex<HashMap<Uuid, (u64, u64)>>>;

pub(super) fn lock(d: &Downloads) -> std::sync::MutexGuard<'_, HashMap<Uuid, (u64, u64)>> {
    d.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts what a cycle's downloads bring, as they go.
struct SourceProgress {
    metrics: Metrics,
    downloads: Downloads,
    /// Where each download stood at its last report.
    at: HashMap<Uuid, u64>,
}

impl SourceProgress {
    /// The download of `rec` got to `pos` (its first report is where it
    /// starts).
    fn at(&mut self, rec: &ImageRecord, pos: u64) {
        let label = Metrics::image(rec.uuid);
        if let Some(before) = self.at.insert(rec.uuid, pos) {
            self.metrics.source_bytes.get_or_create(&label).inc_by(pos.saturating_sub(before));
        }
        self.metrics.source_position.get_or_create(&label).set(i64::try_from(pos).unwrap_or(i64::MAX));
        // A download that got to the end is no longer under way.
        if pos >= rec.size {
            lock(&self.downloads).remove(&rec.uuid);
        } else {
            lock(&self.downloads).insert(rec.uuid, (pos, rec.size));
        }
    }
}

/// The first list that failed to update, as a status shows it.
fn first_list_failure(report: &UpdateReport) -> Option<String> {
    report.lists.iter().find_map(|(_, url, o)| match o {
        ListOutcome::Failed(e) => Some(format!("{url}: {e}")),
        _ => None,
    })
}
