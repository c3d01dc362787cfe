//! The update cycle ([`Site::update`]): lists fetched outside the turn,
//! checked and applied in it, then images restored from `expired/` or
//! downloaded from their sources outside it, then garbage collection. See
//! the module docs of [`crate::site`].

use std::collections::HashMap;

use proto::Timestamp;
use proto::trust::verify_list;
use uuid::Uuid;

use super::{ImageOutcome, ListOutcome, Site, UpdateReport};
use crate::fetch::redact;
use crate::hooks::Event;
use crate::store::{ImageRecord, ImageState};
use crate::{Error, Result};

impl Site {
    /// One update cycle at time `now`; see the module docs.
    pub fn update(&self, now: Timestamp, progress: &mut dyn FnMut(&ImageRecord, u64)) -> Result<UpdateReport> {
        self.update_with(now, true, progress)
    }

    /// [`Site::update`], downloading images from their source only when
    /// `back_to_source` (a swarm node that is not a master leaves the images
    /// partial for the swarm to fill).
    pub fn update_with(
        &self,
        now: Timestamp,
        back_to_source: bool,
        progress: &mut dyn FnMut(&ImageRecord, u64),
    ) -> Result<UpdateReport> {
        self.check_clock(now)?;
        self.hooks.fire(Event::ProcessPrefix, None);
        // Fetched outside the turn, which a hanging source would otherwise
        // hold for as long as the fetch's timeouts allow.
        let mut fetched: HashMap<Uuid, (String, Result<Vec<u8>>)> = HashMap::new();
        for sub in self.store.subscriptions()?.into_iter().filter(|s| s.enabled) {
            let bytes = self.fetcher.get_list(&sub.url);
            fetched.insert(sub.identifier, (sub.url, bytes));
        }
        let turn = self.take_turn();
        let trust = self.trust()?;
        let mut report = UpdateReport::default();
        // Checked and applied to the subscriptions as they are now.
        for mut sub in self.store.subscriptions()? {
            let outcome = match fetched.remove(&sub.identifier) {
                _ if !sub.enabled => ListOutcome::Disabled,
                // Subscribed to, or moved to another URL, during the fetches.
                None => continue,
                Some((url, _)) if url != sub.url => continue,
                Some((_, bytes)) => {
                    let applied = bytes.and_then(|b| {
                        let verified = verify_list(&b, &trust, now)?;
                        self.apply_list(&mut sub, &verified, &b, now)
                    });
                    match applied {
                        Ok(o) => {
                            if sub.last_error.is_some() {
                                tracing::info!(list = %sub.identifier, "the list is fetched and verified again");
                            }
                            o
                        }
                        Err(e) => {
                            let e = e.to_string();
                            // Logged when the condition starts or changes, not
                            // at every cycle while it lasts.
                            if sub.last_error.as_ref() == Some(&e) {
                                tracing::debug!(list = %sub.identifier, error = %e, "list update failed again");
                            } else {
                                tracing::warn!(list = %sub.identifier, error = %e, "list update failed");
                            }
                            sub.last_error = Some(e.clone());
                            self.store.put_subscription(&sub)?;
                            ListOutcome::Failed(e)
                        }
                    }
                }
            };
            report.lists.push((sub.identifier, redact(&sub.url), outcome));
        }
        self.recheck(&trust, now)?;
        report.images.extend(self.settle_with(now)?);
        drop(turn);
        for mut rec in self.store.images()? {
            match self.cache().restore_expired(&mut rec) {
                Ok(true) => {
                    report.images.push((rec.uuid, ImageOutcome::Restored));
                    continue;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(image = %rec.uuid, error = %e, "restoring the image from expired/ failed"),
            }
            if rec.state != ImageState::Partial || !rec.cache || !back_to_source {
                continue;
            }
            if rec.attempts >= self.config.download_attempts {
                let why = format!(
                    "gave up after {} for this list version",
                    crate::units::count(rec.attempts as usize, "failed attempt")
                );
                report.images.push((rec.uuid, ImageOutcome::GaveUp(why)));
                continue;
            }
            let cache = self.cache();
            let view = rec.clone();
            match cache.download(&mut rec, &mut |done| progress(&view, done)) {
                Ok(()) => report.images.push((rec.uuid, ImageOutcome::Downloaded)),
                Err(e) if !self.store.image(rec.uuid)?.is_some_and(|r| r.wants_data() && r.sha512 == view.sha512) => {
                    // Withdrawn (or changed) in the turn meanwhile: not a
                    // failure, and settling has reported it.
                    tracing::info!(image = %rec.uuid, reason = %e, "download dropped: the image is no longer wanted");
                }
                Err(Error::Superseded(reason)) => {
                    tracing::info!(image = %rec.uuid, %reason, "download left to the one under way");
                    report.images.push((rec.uuid, ImageOutcome::InProgress));
                }
                Err(e) => {
                    tracing::warn!(image = %rec.uuid, error = %e, "download failed");
                    // Only the fields this owns: the record may have changed
                    // in the turn since `rec` was read.
                    self.store.update_image(rec.uuid, |r| {
                        r.attempts += 1;
                        r.last_error = Some(e.to_string());
                    })?;
                    report.images.push((rec.uuid, ImageOutcome::Failed(e.to_string())));
                }
            }
        }
        report.gc = self.cache().gc(now)?;
        self.hooks.fire(Event::ProcessPostfix, None);
        Ok(report)
    }
}
