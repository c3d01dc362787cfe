//! A host's setup as a node's config file declares it: the endorsers it
//! approves and the lists it subscribes to.
//!
//! # Contract
//! [`Site::bring_in_step`] makes the store hold what is declared, as the
//! host commands would (`endorser add`, `subscribe`), so it may run any
//! number of times: at every start and reload of the node. It adds and
//! changes; it takes nothing away: an endorser or subscription the store
//! holds and the file does not name is left as it is, with a warning, since
//! taking it away expires images. One declaration that fails (a DN that is
//! no DN, a list source that does not answer yet) is logged and the rest
//! are still brought in step; the count of those that failed is returned.

use proto::Timestamp;
use serde::Deserialize;

use super::{Site, Subscribed};
use crate::store::NewImages;
use crate::{Result, dn};

/// An endorser the config file approves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredEndorser {
    /// Subject DN, in any form [`dn::parse`] reads.
    pub dn: String,
    /// Issuer DN, the same.
    pub issuer: String,
}

/// A list the config file subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeclaredSubscription {
    /// The list's URL.
    pub url: String,
    /// What to do with images the node has not seen before (`refuse`,
    /// `accept` or `cache`; `refuse` when not given).
    #[serde(default)]
    pub new_images: NewImages,
}

impl Site {
    /// Brings the store in step with `endorsers` and `subscriptions` (see
    /// the module docs); returns how many declarations failed.
    pub fn bring_in_step(
        &self,
        endorsers: &[DeclaredEndorser],
        subscriptions: &[DeclaredSubscription],
        now: Timestamp,
    ) -> Result<usize> {
        let mut failed = 0;
        let mut named = Vec::new();
        for e in endorsers {
            match dn::parse(&e.dn).and_then(|d| dn::parse(&e.issuer).map(|ca| (d, ca))) {
                Ok((d, ca)) => {
                    if self.add_endorser(&d, &ca, now)? {
                        tracing::info!(dn = %d, issuer = %ca, "endorser approved, as the config file declares");
                    }
                    named.push((d, ca));
                }
                Err(e) => {
                    tracing::error!(error = %e, "an endorser in the config file was not taken");
                    failed += 1;
                }
            }
        }
        if !endorsers.is_empty() {
            for e in self.store.endorsers()? {
                if !named.iter().any(|(d, ca)| *d == e.dn && e.ca.as_ref().is_none_or(|c| c == ca)) {
                    tracing::warn!(dn = %e.dn, "an approved endorser is not in the config file: `endorser remove` it if it should go");
                }
            }
        }
        for s in subscriptions {
            match self.subscribe(&s.url, s.new_images, now) {
                Ok(Subscribed::New(sub)) => {
                    tracing::info!(list = %sub.identifier, url = %crate::fetch::redact(&sub.url), "subscribed, as the config file declares");
                }
                Ok(Subscribed::ModeChanged(sub)) => {
                    tracing::info!(list = %sub.identifier, mode = ?sub.new_images, "new-images mode set, as the config file declares");
                }
                Ok(Subscribed::Already(_)) => {}
                Err(e) => {
                    tracing::error!(url = %crate::fetch::redact(&s.url), error = %e, "a subscription in the config file was not taken; tried again at the next start or reload");
                    failed += 1;
                }
            }
        }
        if !subscriptions.is_empty() {
            for sub in self.store.subscriptions()? {
                if !subscriptions.iter().any(|s| s.url == sub.url) {
                    tracing::warn!(list = %sub.identifier, url = %crate::fetch::redact(&sub.url), "a subscription is not in the config file: `subscription disable` it if it should go");
                }
            }
        }
        Ok(failed)
    }
}
