//! Installed images checked again: a file changed on disk after it was
//! installed is taken out of service.
//!
//! # Contract
//! [`Cache::reverify`] hashes an available image's file in full, outside
//! the site's turn. When its size or SHA-512 is no longer the list's, it
//! moves the file to `expired/` (where GC ages it out, and from where it is
//! never restored, its bytes being wrong), records the image as not
//! complete here with the reason, so that it is fetched again, and fires
//! the expiry hooks, all in the turn and only if the record still says the
//! image is available with those bytes. Nothing unverified stays in
//! service, and nothing else changes.

use std::fs;

use proto::Timestamp;

use super::{Cache, expired_target, holds_bytes, sync_dir, take_turn};
use crate::Result;
use crate::hooks::Event;
use crate::store::{ImageRecord, ImageState};

/// What checking an installed image found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Its bytes are still the list's.
    Intact,
    /// Its file no longer held the list's bytes: moved to this name in
    /// `expired/`.
    Changed(String),
}

impl Cache<'_> {
    /// Checks `rec`'s installed file against the list (see the module
    /// docs); an image that is not available is left alone.
    pub fn reverify(&self, rec: &mut ImageRecord, now: Timestamp) -> Result<Checked> {
        if rec.state != ImageState::Available {
            return Ok(Checked::Intact);
        }
        let paths = self.store.paths();
        let image = paths.image(rec.uuid);
        // A file that cannot be read now (EIO, no descriptors) is an error,
        // not a change: only bytes read and found wrong, or a wrong size or
        // a missing file, take the image out of service.
        if holds_bytes(&image, rec)? {
            return Ok(Checked::Intact);
        }
        let _turn = take_turn(self.turn);
        let Some(mut fresh) =
            self.store.image(rec.uuid)?.filter(|f| f.state == ImageState::Available && f.sha512 == rec.sha512)
        else {
            return Ok(Checked::Intact);
        };
        let (name, target) = expired_target(&paths.expired, rec.uuid, now);
        self.fire(Event::ExpirePrefix, &fresh, Some(&rec.uuid.to_string()));
        if image.exists() {
            fs::rename(&image, &target).map_err(crate::Error::io("taking out of service", &image))?;
            sync_dir(&paths.images)?;
            sync_dir(&paths.expired)?;
        }
        fresh.state = fresh.derived_state(false);
        fresh.data_for = None;
        fresh.last_error = Some(format!("the installed file no longer held the list's bytes: moved to expired/{name}"));
        self.store.put_image(&fresh)?;
        self.fire(Event::ExpirePostfix, &fresh, Some(&name));
        tracing::warn!(image = %rec.uuid, to = %target.display(), "an installed image changed on disk: taken out of service, to be fetched again");
        *rec = fresh;
        Ok(Checked::Changed(name))
    }
}
