//! Images that come back: one that expired here and is wanted again with the
//! same bytes (approved again after a revoke, or endorsed again) is restored
//! from `expired/` instead of being fetched again.
//!
//! # Contract
//! [`Cache::restore_expired`] takes the newest file of the image in
//! `expired/` whose size and SHA-512, hashed in full, are the ones the list
//! in force names (the endorser's own check of the bytes), and moves it back
//! as the installed image, read-only. It does so in the site's turn, only if
//! the record still wants those bytes, and only while no writer (a download
//! from the source, the swarm) works on the image; otherwise it changes
//! nothing. A file found not to hold the bytes is remembered, and not
//! hashed again for the same bytes.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use super::{Cache, holds_bytes, parse_expired_name, sync_dir, take_turn};
use crate::Result;
use crate::hooks::Event;
use crate::store::{ImageRecord, ImageState};

/// Expired files known not to hold some bytes: (file, SHA-512 wanted).
pub(crate) type Misses = Mutex<HashSet<(PathBuf, String)>>;

impl Cache<'_> {
    /// Restores `rec` from `expired/` if a file there holds the bytes it
    /// wants (see the module docs); whether it did.
    pub fn restore_expired(&self, rec: &mut ImageRecord) -> Result<bool> {
        if rec.state != ImageState::Partial || !rec.cache || self.is_written(rec.uuid) {
            return Ok(false);
        }
        let paths = self.store.paths();
        let prefix = format!("{}.", rec.uuid);
        let mut found: Vec<_> = match fs::read_dir(&paths.expired) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let at = parse_expired_name(&name).filter(|_| name.starts_with(&prefix))?;
                    Some((at, e.path()))
                })
                .collect(),
            Err(_) => return Ok(false),
        };
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        let misses = self.misses.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(file) = found.into_iter().map(|(_, p)| p).find(|p| {
            let key = (p.clone(), rec.sha512.clone());
            if misses.contains(&key) {
                return false;
            }
            let held = holds_bytes(p, rec).unwrap_or(false);
            if !held {
                self.misses.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
            }
            held
        }) else {
            return Ok(false);
        };
        let turn = take_turn(self.turn);
        let Some(mut fresh) = self.store.image(rec.uuid)?.filter(|f| {
            f.wants_data() && f.state == ImageState::Partial && f.sha512 == rec.sha512 && !self.is_written(f.uuid)
        }) else {
            return Ok(false);
        };
        self.fire(Event::AvailablePrefix, &fresh, file.file_name().and_then(|n| n.to_str()));
        let target = paths.image(rec.uuid);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o444))
            .map_err(crate::Error::io("making read-only", &file))?;
        fs::rename(&file, &target).map_err(crate::Error::io("restoring", &target))?;
        sync_dir(&paths.images)?;
        sync_dir(&paths.expired)?;
        // Only once the bytes stand installed does the partial data go.
        self.discard(&mut fresh)?;
        self.record_available(fresh, turn, rec)?;
        tracing::info!(image = %rec.uuid, from = %file.display(), "image restored from expired/, its SHA-512 checked again");
        Ok(true)
    }
}
