//! A site policy ([`proto::policy`]) derived from a policy holder's store,
//! and followed by a member's.
//!
//! # Contract
//! * [`Site::policy_content`] is what this host's store decides: its
//!   approved endorsers, its subscriptions and its decision about every
//!   image it knows, in canonical form.
//! * [`Site::apply_policy`] makes this host's store follow a verified
//!   policy, in one turn: the approved endorsers become exactly the
//!   policy's; each subscription it names is created (pinned to the
//!   policy's list identifier, fetched at the next update) or updated, and
//!   those it does not name are disabled; every image the store knows that
//!   the policy decides on takes its decision; the policy is stored, and
//!   images a list brings later take the policy's decision when it names
//!   them. Then the cache is settled: a revoked image leaves it.
//! * [`Site::keep_policy`] stores a master's own policy, so that its next
//!   version, after a restart too, is above every version it signed.
//! * Trust is untouched: every list is still verified with this host's own
//!   CAs and CRLs, which a policy cannot name.

use std::collections::HashSet;

use proto::Timestamp;
use proto::policy::{PolicyContent, PolicyEndorser, PolicyImage, PolicySubscription, VerifiedPolicy};

use super::Site;
use crate::Result;
use crate::store::{StoredPolicy, Subscription};

impl Site {
    /// What this host's store decides, as a policy's content.
    pub fn policy_content(&self) -> Result<PolicyContent> {
        let endorsers = (self.store.endorsers()?.into_iter())
            .filter_map(|e| Some(PolicyEndorser { dn: e.dn, ca: e.ca? }))
            .collect();
        let subscriptions = (self.store.subscriptions()?.into_iter())
            .map(|s| PolicySubscription {
                identifier: s.identifier,
                url: s.url,
                new_images: s.new_images,
                enabled: s.enabled,
            })
            .collect();
        let images = (self.store.images()?.into_iter())
            .map(|r| PolicyImage { uuid: r.uuid, decision: r.decision, cache: r.cache })
            .collect();
        Ok(PolicyContent { endorsers, subscriptions, images }.canonical())
    }

    /// Makes this host's store follow `policy` (see the module docs).
    pub fn apply_policy(&self, policy: &VerifiedPolicy, now: Timestamp) -> Result<()> {
        let _turn = self.take_turn();
        let content = &policy.policy().content;
        let approved: HashSet<(&str, &str)> = content.endorsers.iter().map(|e| (&*e.dn, &*e.ca)).collect();
        for e in self.store.endorsers()? {
            if !e.ca.as_deref().is_some_and(|ca| approved.contains(&(&*e.dn, ca))) {
                self.store.remove_endorser(&e.dn, e.ca.as_deref().unwrap_or_default())?;
            }
        }
        for e in &content.endorsers {
            self.store.add_endorser(&e.dn, &e.ca)?;
        }
        let held = self.store.subscriptions()?;
        for p in &content.subscriptions {
            let old = held.iter().find(|s| s.identifier == p.identifier);
            let new = match old {
                Some(s) => {
                    Subscription { url: p.url.clone(), new_images: p.new_images, enabled: p.enabled, ..s.clone() }
                }
                None => Subscription {
                    url: p.url.clone(),
                    identifier: p.identifier,
                    new_images: p.new_images,
                    enabled: p.enabled,
                    current: None,
                    next_seq: 0,
                    list_valid: true,
                    last_error: None,
                    updated: None,
                },
            };
            if old != Some(&new) {
                self.store.put_subscription(&new)?;
            }
        }
        for mut s in held {
            if s.enabled && !content.subscriptions.iter().any(|p| p.identifier == s.identifier) {
                s.enabled = false;
                self.store.put_subscription(&s)?;
            }
        }
        for mut rec in self.store.images()? {
            if let Some(d) = content.image(rec.uuid)
                && (rec.decision, rec.cache) != (d.decision, d.cache)
            {
                (rec.decision, rec.cache, rec.attempts) = (d.decision, d.cache, 0);
                self.store.put_image(&rec)?;
            }
        }
        self.keep_policy(policy)?;
        tracing::info!(version = policy.policy().version, "site policy applied");
        self.settle_in_turn(now).map(drop)
    }

    /// Stores `policy` as the one this host follows, without applying it: a
    /// master's own, which its store already decides. A restarted master
    /// then signs its next version above it, and members take it.
    pub fn keep_policy(&self, policy: &VerifiedPolicy) -> Result<()> {
        self.store.set_policy(&StoredPolicy { policy: policy.policy().clone(), signed: hex::encode(policy.bytes()) })
    }
}
