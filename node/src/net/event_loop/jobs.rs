//! Work the event loop hands off, and what comes back of it.
//!
//! # Contract
//! * Every job is owned by the loop ([`Jobs`], a `JoinSet`): none is
//!   detached, and all end with the loop.
//! * Disk jobs (chunk reads, writes, commits, installs) run on blocking
//!   threads, at most [`DISK_THREADS`] at once; the rest wait their turn.
//!   Their number is bounded by the transfer machine (its upload slots,
//!   requests in flight and one commit and install per image), and
//!   [`MAX_JOBS`] caps it whatever happens: a job beyond it fails at once.
//! * Control jobs (the store's re-check at start, update cycles, lists
//!   offered by peers, the opening of images, checks of installed images)
//!   do not take disk permits, since an update may download for minutes:
//!   one update, one check and one batch of opens run at a time, and at
//!   most [`MAX_OFFERS`] offers.
//! * Blocking work that panics comes back as an error, never as silence;
//!   a job whose own code panics is logged and its report is lost.

use std::future::Future;
use std::sync::Arc;

use libp2p::PeerId;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::EventLoop;
use super::disk::Disk;
use super::lists::Carrier;
use super::sync::Opened;
use crate::site::ListOutcome;
use crate::{Error, Result};

/// Disk jobs running at once at most.
pub(super) const DISK_THREADS: usize = 4;

/// Jobs pending at most.
pub(super) const MAX_JOBS: usize = 4096;

/// Lists from peers being verified at once at most; more are ignored.
pub(super) const MAX_OFFERS: usize = 16;

/// What a job reports.
pub(super) enum IoDone {
    Disk(Disk),
    /// The store was re-checked locally, before the first update cycle.
    Settled(Result<()>),
    /// An update cycle ended, and what it found of the CAs' CRLs.
    Updated(Result<crate::site::UpdateReport>, Option<crate::net::CrlDates>),
    /// Installed images were checked again.
    Verified(Result<Vec<(Uuid, crate::cache::Checked)>>),
    Offered {
        carrier: Carrier,
        from: PeerId,
        result: Result<ListOutcome>,
    },
    /// Images to swarm on were opened (see [`super::sync`]).
    Opened(Result<Vec<Opened>>),
    /// A site policy was applied to the store.
    PolicyApplied(Result<()>),
    /// An attested root was made here (`from` is `None`) or offered by a
    /// peer, and checked.
    Attested {
        image: Uuid,
        from: Option<PeerId>,
        result: Result<crate::site::attest::Attested>,
    },
}

/// The loop's jobs.
pub(super) struct Jobs {
    set: JoinSet<IoDone>,
    disk: Arc<Semaphore>,
    pub(super) offers: usize,
}

impl Default for Jobs {
    fn default() -> Self {
        Self { set: JoinSet::new(), disk: Arc::new(Semaphore::new(DISK_THREADS)), offers: 0 }
    }
}

impl Jobs {
    /// The next job's report (pending forever while there are none).
    pub(super) async fn next(&mut self) -> IoDone {
        loop {
            match self.set.join_next().await {
                None => std::future::pending::<()>().await,
                Some(Ok(done)) => return done,
                // Jobs catch their work's panics; this is the job itself.
                Some(Err(e)) => tracing::error!(error = %e, "a job of the event loop failed"),
            }
        }
    }

    /// Starts a control job.
    pub(super) fn control(&mut self, job: impl Future<Output = IoDone> + Send + 'static) {
        self.set.spawn(job);
    }

    /// Starts a disk job: `job` gets a permit's worth of blocking work
    /// through [`Jobs::disk`]'s semaphore. `Err` (with the job dropped) when
    /// [`MAX_JOBS`] are pending.
    pub(super) fn disk<F>(&mut self, job: impl FnOnce(Arc<Semaphore>) -> F) -> std::result::Result<(), TooMany>
    where
        F: Future<Output = IoDone> + Send + 'static,
    {
        if self.set.len() >= MAX_JOBS {
            return Err(TooMany);
        }
        self.set.spawn(job(self.disk.clone()));
        Ok(())
    }
}

/// [`MAX_JOBS`] jobs are pending.
#[derive(Debug)]
pub(super) struct TooMany;

/// Runs `f` on a blocking thread; a panic there comes back as an error.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(Error::Net(e.to_string())))
}

/// [`blocking`], once one of the `disk` permits is free.
pub(super) async fn on_disk<T: Send + 'static>(
    disk: Arc<Semaphore>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // The semaphore is never closed.
    let _permit = disk.acquire_owned().await.map_err(|e| Error::Net(e.to_string()))?;
    blocking(f).await
}

impl EventLoop {
    pub(super) fn on_io(&mut self, done: IoDone) {
        match done {
            IoDone::Disk(d) => self.on_disk(d),
            IoDone::Opened(opened) => self.on_opened(opened),
            IoDone::Offered { carrier, from, result } => {
                self.jobs.offers -= 1;
                self.on_offered(carrier, from, result);
            }
            IoDone::Settled(r) => self.on_settled(r),
            IoDone::Attested { image, from, result } => self.on_attested(image, from, result),
            IoDone::PolicyApplied(r) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "applying the site policy failed");
                    self.last_error = Some(e.to_string());
                }
                self.sync_or_log();
                // Its subscriptions are fetched now, not at the next interval.
                self.updates.next = std::time::Instant::now();
            }
            IoDone::Updated(r, crls) => self.on_updated(r, crls),
            IoDone::Verified(r) => self.on_verified(r),
        }
    }
}
