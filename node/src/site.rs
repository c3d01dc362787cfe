//! A host's subscriptions and cache, driven through one update cycle.
//!
//! # Contract
//! [`Site::update`] runs one cycle at one fixed time (`now`, read once by the
//! caller):
//! 1. Refuse to run when the clock is more than [`CLOCK_TOLERANCE_SECS`]
//!    behind the latest time a command ran at (T11).
//! 2. For each enabled subscription: fetch the list, verify it
//!    ([`proto::trust::verify_list`] with the site's CAs, CRLs and approved
//!    endorsers), require the pinned `dc:identifier` (T13) and a higher
//!    `hv:version` than the one in force (T8; identical content is a no-op,
//!    the same version with other content is refused, T9), then accept it in
//!    one transaction. A failure leaves the list in force untouched (T17).
//! 3. Re-check every list in force against the current trust and time
//!    (T14): a list that expired or no longer verifies stops endorsing its
//!    images. So do disabled subscriptions and image entries whose own
//!    `dc:date:expires` passed.
//! 4. Settle every image: what is no longer endorsed, approved or current
//!    leaves the cache; approved, endorsed images to be cached are
//!    downloaded (at most `download_attempts` failures per list version).
//! 5. Garbage-collect `expired/`.
//!
//! Policy changes ([`Site::decide`], [`Site::add_endorser`], ...) re-run
//! steps 3 and 4 without fetching or downloading; so does a site policy
//! from a master ([`Site::apply_policy`], in `policy`), which a list's new
//! images also follow when it names them.
//!
//! Steps 2 to 4 up to the downloads, [`Site::offer_list`], [`Site::settle`],
//! subscribing and the policy changes take turns within a process (a
//! running node also runs host commands): each reads the lists and images
//! in force and then writes, so two at once could, say, store an older list
//! version over a newer one, undo a subscription's disabling, or accept two
//! subscriptions to one list. The lists are fetched before the turn is
//! taken, and checked and applied in it to the subscriptions as they are
//! then, so a hanging list source never keeps an install or a list from a
//! peer waiting.
//!
//! Downloads run outside the turn, so the record they started from may be
//! stale by the time they end. They write only the fields they own, each
//! in one atomic change ([`Store::update_image`]), and an image becomes
//! available in the turn, only if its record then still endorses, approves
//! and caches the bytes that were verified ([`Cache::install`]): a list
//! that withdraws an image during its download is never undone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use proto::Timestamp;
use proto::imagelist::ImageList;
use proto::manifest::ChunkSize;
use proto::trust::{CrlPolicy, EndorserPolicy, Succession, Trust, VerifiedList, succession, verify_list};
use uuid::Uuid;

use crate::cache::partial::Writers;
use crate::cache::{Cache, GcReport};
use crate::fetch::{Fetcher, Timeouts, redact};
use crate::hooks::{Event, Hooks, Subject};
use crate::store::{Decision, ImageRecord, ImageState, ListRef, NewImages, SiteConfig, Store, Subscription};
use crate::trustfiles::TrustSources;
use crate::{Error, Result};

pub mod attest;
pub mod declared;
mod policy;
mod update;

/// How far the clock may lag the latest time seen before updates stop.
pub const CLOCK_TOLERANCE_SECS: i64 = 300;

/// One host's store, fetcher and hooks.
#[derive(Debug)]
pub struct Site {
    store: Store,
    fetcher: Fetcher,
    hooks: Hooks,
    config: SiteConfig,
    /// Taken to apply lists and settle images (see the module docs).
    turn: Mutex<()>,
    /// Who writes which partial file.
    writers: Writers,
    restore_misses: crate::cache::Misses,
}

/// What happened to one subscription in an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListOutcome {
    /// The list in force is current.
    Unchanged,
    /// A new version was accepted.
    Accepted(String),
    /// The update failed; the list in force stays.
    Failed(String),
    /// The subscription is disabled.
    Disabled,
}

/// What happened to one image in an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOutcome {
    /// Downloaded and verified.
    Downloaded,
    /// Brought back from `expired/`, its SHA-512 checked again.
    Restored,
    /// The download failed.
    Failed(String),
    /// Too many failed attempts for this list version.
    GaveUp(String),
    /// Left to a download of it already under way in this process (a
    /// running node's own update cycle, say).
    InProgress,
    /// Moved out of the cache.
    Expired,
}

/// What [`Site::subscribe`] did. Subscribing again to a list at the URL it
/// is subscribed at changes nothing but the mode, so that a host's setup may
/// run any number of times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribed {
    /// A new subscription.
    New(Subscription),
    /// Subscribed already, in this mode.
    Already(Subscription),
    /// Subscribed already; the mode for images the list brings from now on
    /// is the one asked for.
    ModeChanged(Subscription),
}

impl Subscribed {
    /// The subscription as it now stands.
    pub fn subscription(&self) -> &Subscription {
        match self {
            Self::New(s) | Self::Already(s) | Self::ModeChanged(s) => s,
        }
    }
}

/// The result of [`Site::update`].
#[derive(Debug, Clone, Default)]
pub struct UpdateReport {
    /// Per subscription: list id, URL and outcome.
    pub lists: Vec<(Uuid, String, ListOutcome)>,
    /// Per image touched.
    pub images: Vec<(Uuid, ImageOutcome)>,
    /// What garbage collection removed.
    pub gc: GcReport,
}

impl UpdateReport {
    /// Whether anything failed (the command then exits non-zero).
    pub fn failed(&self) -> bool {
        self.lists.iter().any(|(_, _, o)| matches!(o, ListOutcome::Failed(_)))
            || self.images.iter().any(|(_, o)| matches!(o, ImageOutcome::Failed(_) | ImageOutcome::GaveUp(_)))
    }
}

impl Site {
    /// Sets up (or changes) a data directory's trust configuration. The
    /// sources must load; every other setting is kept.
    pub fn init(
        data_dir: &Path,
        sources: &TrustSources,
        crl_check: bool,
        edit: impl FnOnce(&mut SiteConfig),
    ) -> Result<SiteConfig> {
        let store = Store::open(data_dir)?;
        let config = Self::configured(store.site_config()?.unwrap_or_default(), sources, crl_check, edit)?;
        store.set_site_config(&config)?;
        Ok(config)
    }

    /// The configuration [`Site::init`] makes of `config` (checking that the
    /// trust sources load), without storing it.
    pub fn configured(
        mut config: SiteConfig,
        sources: &TrustSources,
        crl_check: bool,
        edit: impl FnOnce(&mut SiteConfig),
    ) -> Result<SiteConfig> {
        sources.load()?;
        let absolute = |p: &Path| std::fs::canonicalize(p).map_err(Error::io("resolving", p));
        config.ca_file = sources.ca_file.as_deref().map(absolute).transpose()?;
        config.ca_dir = sources.ca_dir.as_deref().map(absolute).transpose()?;
        config.crls = sources.crls.iter().map(|p| absolute(p)).collect::<Result<_>>()?;
        config.crl_check = crl_check;
        edit(&mut config);
        Ok(config)
    }

    /// Opens an initialised data directory.
    pub fn open(data_dir: &Path, timeouts: Timeouts) -> Result<Self> {
        let store = Store::open(data_dir)?;
        let config = store.site_config()?.ok_or_else(|| {
            Error::Invalid(format!(
                "{} is not initialised: run `imageswarm --data-dir {0} init` first",
                data_dir.display()
            ))
        })?;
        let hooks = Hooks::new(config.hook.clone(), Duration::from_secs(config.hook_timeout_secs), store.paths());
        Ok(Self {
            fetcher: Fetcher::new(timeouts)?,
            hooks,
            config,
            store,
            turn: Mutex::new(()),
            writers: Writers::default(),
            restore_misses: Default::default(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The site configuration.
    pub fn config(&self) -> &SiteConfig {
        &self.config
    }

    /// The trust in force: the configured CAs and CRLs, and only the approved
    /// endorsers.
    pub fn trust(&self) -> Result<Trust> {
        let sources = TrustSources {
            ca_file: self.config.ca_file.clone(),
            ca_dir: self.config.ca_dir.clone(),
            crls: self.config.crls.clone(),
        };
        Ok(Trust {
            anchors: sources.load()?,
            crl: if self.config.crl_check { CrlPolicy::Required } else { CrlPolicy::NotChecked },
            endorsers: EndorserPolicy::Approved(self.store.endorsers()?),
        })
    }

    /// Subscribes to the list at `url`: fetches and verifies it now and pins
    /// its identifier. Its images are recorded by the next update.
    pub fn subscribe(&self, url: &str, new_images: NewImages, now: Timestamp) -> Result<Subscribed> {
        let bytes = self.fetcher.get_list(url)?;
        let verified = verify_list(&bytes, &self.trust()?, now)?;
        let id = verified.list().identifier;
        // Fetched and verified outside the turn; checked and stored in it.
        let _turn = self.take_turn();
        if let Some(mut existing) = self.store.subscription(id)? {
            if existing.url != url {
                return Err(Error::Invalid(format!(
                    "already subscribed to list {id} at {}; `subscription disable` it first to move it",
                    redact(&existing.url)
                )));
            }
            if existing.new_images == new_images {
                return Ok(Subscribed::Already(existing));
            }
            existing.new_images = new_images;
            self.store.put_subscription(&existing)?;
            return Ok(Subscribed::ModeChanged(existing));
        }
        let sub = Subscription {
            url: url.to_owned(),
            identifier: id,
            new_images,
            enabled: true,
            current: None,
            next_seq: 0,
            list_valid: true,
            last_error: None,
            updated: None,
        };
        self.store.put_subscription(&sub)?;
        Ok(Subscribed::New(sub))
    }

    /// Finds a subscription by list UUID or URL.
    pub fn find_subscription(&self, key: &str) -> Result<Subscription> {
        let subs = self.store.subscriptions()?;
        let id = Uuid::try_parse(key).ok();
        subs.into_iter()
            .find(|s| Some(s.identifier) == id || s.url == key)
            .ok_or_else(|| Error::Invalid(format!("no subscription `{key}`")))
    }

    /// Enables or disables a subscription, then settles the cache.
    pub fn set_enabled(&self, key: &str, enabled: bool, now: Timestamp) -> Result<Subscription> {
        let _turn = self.take_turn();
        let mut sub = self.find_subscription(key)?;
        sub.enabled = enabled;
        self.store.put_subscription(&sub)?;
        self.settle_in_turn(now)?;
        Ok(sub)
    }

    /// Forgets the version in force so that any valid version is accepted
    /// next: recovery from a fast-forward attack after the compromised key
    /// was revoked (T12). History is kept.
    pub fn reset_version(&self, key: &str) -> Result<Subscription> {
        let _turn = self.take_turn();
        let mut sub = self.find_subscription(key)?;
        sub.current = None;
        self.store.put_subscription(&sub)?;
        Ok(sub)
    }

    /// Approves an endorser, then re-checks the lists in force.
    pub fn add_endorser(&self, dn: &str, ca: &str, now: Timestamp) -> Result<bool> {
        let _turn = self.take_turn();
        let new = self.store.add_endorser(dn, ca)?;
        self.settle_in_turn(now)?;
        Ok(new)
    }

    /// The signed list at `source` (a URL, or a file's path), verified
    /// under this host's trust except that its signer need not be approved
    /// yet: chain to a trusted CA, revocation and dates hold. What `endorser
    /// add --from-list` shows before it approves the signer.
    pub fn list_for_approval(&self, source: &str, now: Timestamp) -> Result<VerifiedList> {
        let bytes = self.fetcher.get_list_or_file(source)?;
        let trust = Trust { endorsers: EndorserPolicy::AnyTrustedSigner, ..self.trust()? };
        Ok(verify_list(&bytes, &trust, now)?)
    }

    /// Withdraws an endorser's approval, then re-checks the lists in force:
    /// their images expire.
    pub fn remove_endorser(&self, dn: &str, ca: &str, now: Timestamp) -> Result<bool> {
        let _turn = self.take_turn();
        let old = self.store.remove_endorser(dn, ca)?;
        self.settle_in_turn(now)?;
        Ok(old)
    }

    /// Records the site's decision about an image, then settles the cache.
    /// Approving also marks the image for caching on this host, and brings
    /// its bytes back from `expired/` at once when a file there holds them
    /// (before a running node starts fetching them again).
    pub fn decide(&self, uuid: Uuid, decision: Decision, now: Timestamp) -> Result<ImageRecord> {
        let turn = self.take_turn();
        let mut rec = self.store.image(uuid)?.ok_or_else(|| Error::Invalid(format!("no image {uuid} is known")))?;
        rec.decision = decision;
        rec.cache = decision == Decision::Approved;
        rec.attempts = 0;
        self.store.put_image(&rec)?;
        self.settle_in_turn(now)?;
        let mut rec = self.store.image(uuid)?.ok_or_else(|| Error::Store(format!("image {uuid} vanished")))?;
        drop(turn);
        if let Err(e) = self.cache().restore_expired(&mut rec) {
            tracing::warn!(image = %uuid, error = %e, "restoring the image from expired/ failed");
        }
        Ok(rec)
    }

    /// Checks the installed file of every available image (or of `uuid`)
    /// against its list, in full, and takes one that changed on disk out of
    /// service ([`Cache::reverify`]).
    pub fn verify(&self, uuid: Option<Uuid>, now: Timestamp) -> Result<Vec<(Uuid, crate::cache::Checked)>> {
        let mut out = Vec::new();
        for mut rec in self.store.images()? {
            if uuid.is_some_and(|u| u != rec.uuid) || rec.state != ImageState::Available {
                continue;
            }
            let checked = self.cache().reverify(&mut rec, now)?;
            out.push((rec.uuid, checked));
        }
        Ok(out)
    }

    /// Waits for the turn to apply lists and settle images.
    fn take_turn(&self) -> MutexGuard<'_, ()> {
        crate::cache::take_turn(&self.turn)
    }

    fn check_clock(&self, now: Timestamp) -> Result<()> {
        if let Some(last) = self.store.last_seen_time()?
            && last.unix() - now.unix() > CLOCK_TOLERANCE_SECS
        {
            return Err(Error::Refused(format!(
                "the system clock stepped back: a command ran at {last}, and now it is {now}; \
                 correct the clock before updating (expired lists could otherwise look valid)"
            )));
        }
        self.store.note_time(now)
    }

    /// A signed list that reached this host some other way than its
    /// subscription URL (a peer forwarded it). It must be the list of an
    /// enabled subscription, and passes exactly the checks of a fetched one
    /// (step 2 of the module docs); when accepted, the images are settled as
    /// in an update, without downloading.
    pub fn offer_list(&self, bytes: &[u8], now: Timestamp) -> Result<ListOutcome> {
        let _turn = self.take_turn();
        self.check_clock(now)?;
        let trust = self.trust()?;
        let verified = verify_list(bytes, &trust, now)?;
        let id = verified.list().identifier;
        let mut sub = self
            .store
            .subscription(id)?
            .filter(|s| s.enabled)
            .ok_or_else(|| Error::Refused(format!("list {id} is not subscribed here")))?;
        let outcome = self.apply_list(&mut sub, &verified, bytes, now)?;
        if matches!(outcome, ListOutcome::Accepted(_)) {
            self.recheck(&trust, now)?;
            self.settle_with(now)?;
        }
        Ok(outcome)
    }

    /// Takes `verified` (whose signed form is `bytes`) as the next version of
    /// `sub`'s list, if it is one.
    fn apply_list(
        &self,
        sub: &mut Subscription,
        verified: &VerifiedList,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<ListOutcome> {
        let list = verified.list();
        if list.uri != sub.url && list.uri != redact(&sub.url) {
            tracing::warn!(list = %list.identifier, uri = %list.uri, subscribed = %redact(&sub.url), "the list's hv:uri differs from the subscribed URL; the subscribed URL stays in use");
        }
        if list.identifier != sub.identifier {
            return Err(proto::Error::IdentifierChanged { expected: sub.identifier, got: list.identifier }.into());
        }
        let hash = hex::encode(verified.content_sha512());
        if let Some(cur) = &sub.current {
            let mut cur_hash = [0u8; 64];
            hex::decode_to_slice(&cur.content_sha512, &mut cur_hash).map_err(|e| Error::Store(e.to_string()))?;
            let same = succession(
                (list.identifier, &list.version, &verified.content_sha512()),
                (sub.identifier, &cur.version, &cur_hash),
            )?;
            if same == Succession::Same {
                sub.updated = Some(now);
                sub.last_error = None;
                self.store.put_subscription(sub)?;
                return Ok(ListOutcome::Unchanged);
            }
        }
        self.accept(sub, verified, bytes, hash, now)?;
        Ok(ListOutcome::Accepted(list.version.clone()))
    }

    /// Stores a verified list version with the image records it implies.
    fn accept(
        &self,
        sub: &mut Subscription,
        v: &VerifiedList,
        bytes: &[u8],
        hash: String,
        now: Timestamp,
    ) -> Result<()> {
        let list = v.list();
        let existing: HashMap<Uuid, ImageRecord> = self.store.images()?.into_iter().map(|r| (r.uuid, r)).collect();
        let policy = self.store.policy()?;
        let mut records = Vec::new();
        let mut new_images = Vec::new();
        for image in &list.images {
            let entry = image.to_value();
            // Without a root, the chunk size a master attests to.
            let chunking = image.chunking.map_or_else(|| ChunkSize::for_image(image.size), |c| c.chunk_size);
            if let Err(e) = chunking.check_count(image.size) {
                tracing::warn!(image = %image.identifier, list = %list.identifier, error = %e, "image refused: peers could never exchange it");
                continue;
            }
            let chunk_size = chunking.get();
            let root = image.chunking.map(|c| c.root.to_string());
            let mut rec = match existing.get(&image.identifier) {
                Some(r) if r.list != list.identifier => {
                    tracing::warn!(image = %image.identifier, other = %r.list, "image UUID already belongs to another list; ignoring it here");
                    continue;
                }
                Some(r) => r.clone(),
                None => {
                    let decided = policy.as_ref().and_then(|p| p.policy.content.image(image.identifier));
                    let (decision, cache) = match (decided, sub.new_images) {
                        (Some(d), _) => (d.decision, d.cache),
                        (None, NewImages::Refuse) => (Decision::Refused, false),
                        (None, NewImages::Accept) => (Decision::Approved, false),
                        (None, NewImages::Cache) => (Decision::Approved, true),
                    };
                    new_images.push(image.identifier);
                    ImageRecord {
                        uuid: image.identifier,
                        list: list.identifier,
                        title: String::new(),
                        version: String::new(),
                        size: 0,
                        sha512: String::new(),
                        chunk_size,
                        root: None,
                        attestation: None,
                        uri: String::new(),
                        entry: serde_json::Value::Null,
                        vo: None,
                        list_content: String::new(),
                        endorsed: true,
                        decision,
                        cache,
                        state: ImageState::Partial,
                        attempts: 0,
                        last_error: None,
                        data_for: None,
                    }
                }
            };
            rec.title.clone_from(&image.title);
            rec.version.clone_from(&image.version);
            rec.size = image.size;
            rec.sha512 = image.sha512.to_string();
            rec.chunk_size = chunk_size;
            // An attestation names the list version: a new version needs a
            // new one.
            rec.root = root;
            rec.attestation = None;
            rec.uri.clone_from(&image.uri);
            rec.entry = entry;
            rec.vo = list.vo().map(str::to_owned);
            rec.list_content.clone_from(&hash);
            rec.attempts = 0;
            rec.endorsed = true;
            records.push(rec);
        }
        sub.current = Some(ListRef { seq: sub.next_seq, version: list.version.clone(), content_sha512: hash });
        sub.next_seq += 1;
        sub.list_valid = true;
        sub.last_error = None;
        sub.updated = Some(now);
        self.store.accept_list(sub, now, bytes, &records)?;
        tracing::info!(list = %list.identifier, version = %list.version, images = list.images.len(), "list accepted");
        for uuid in new_images {
            if let Some(rec) = records.iter().find(|r| r.uuid == uuid) {
                let subject = Subject { entry: &rec.entry, list: rec.list, vo: rec.vo.as_deref(), filename: None };
                self.hooks.fire(Event::SubscriptionImageNew, Some(subject));
            }
        }
        Ok(())
    }

    /// Re-verifies every list in force against `trust` at `now` and sets
    /// which images are endorsed (T14).
    fn recheck(&self, trust: &Trust, now: Timestamp) -> Result<()> {
        let mut in_force: HashMap<Uuid, Option<String>> = HashMap::new();
        for mut sub in self.store.subscriptions()? {
            let Some(cur) = sub.current.clone() else {
                in_force.insert(sub.identifier, None);
                continue;
            };
            let valid = match self.store.list_message(sub.identifier, cur.seq)? {
                Some(msg) => match verify_list(&msg, trust, now) {
                    Ok(_) => true,
                    Err(e) if sub.list_valid => {
                        tracing::warn!(list = %sub.identifier, error = %e, "the list in force no longer verifies; its images expire");
                        false
                    }
                    Err(_) => false,
                },
                None => false,
            };
            if valid && !sub.list_valid {
                tracing::info!(list = %sub.identifier, "the list in force verifies again");
            }
            if valid != sub.list_valid {
                sub.list_valid = valid;
                self.store.put_subscription(&sub)?;
            }
            let endorsing = (valid && sub.enabled).then_some(cur.content_sha512);
            in_force.insert(sub.identifier, endorsing);
        }
        for mut rec in self.store.images()? {
            let image_expired = rec
                .entry
                .get("dc:date:expires")
                .and_then(|v| v.as_str())
                .and_then(|s| Timestamp::parse(s).ok())
                .is_some_and(|t| now > t);
            let endorsed = !image_expired
                && in_force.get(&rec.list).and_then(Option::as_ref).is_some_and(|h| *h == rec.list_content);
            if endorsed != rec.endorsed {
                rec.endorsed = endorsed;
                self.store.put_image(&rec)?;
            }
        }
        Ok(())
    }

    /// Every subscription, with its list in force if it has one, each list
    /// read from the store once.
    pub fn lists_in_force(&self) -> Result<Vec<(Subscription, Option<ImageList>)>> {
        self.store
            .subscriptions()?
            .into_iter()
            .map(|sub| {
                let list = self.list_in_force(&sub)?.map(|(_, list)| list);
                Ok((sub, list))
            })
            .collect()
    }

    /// The earliest expiry date, not yet passed at `now`, of a list in force
    /// of an enabled subscription or of an image entry of one (a list is
    /// expired once the time is past its date), of `lists` as
    /// [`Site::lists_in_force`] gives them: a running node settles again
    /// then, without waiting for its next update.
    pub fn next_expiry(lists: &[(Subscription, Option<ImageList>)], now: Timestamp) -> Option<Timestamp> {
        lists
            .iter()
            .filter(|(sub, _)| sub.enabled)
            .filter_map(|(_, list)| list.as_ref())
            .flat_map(|list| std::iter::once(list.expires).chain(list.images.iter().filter_map(|i| i.expires)))
            .filter(|t| *t >= now)
            .min()
    }

    /// Why the list in force of `sub` does not verify at `now` (the check
    /// that fails, as `list verify` names it); `None` when it does.
    pub fn why_invalid(&self, sub: &Subscription, now: Timestamp) -> Result<Option<String>> {
        let Some(cur) = &sub.current else { return Ok(Some("no version in force yet".into())) };
        let Some(msg) = self.store.list_message(sub.identifier, cur.seq)? else {
            return Ok(Some("the list in force is missing from the store".into()));
        };
        Ok(verify_list(&msg, &self.trust()?, now).err().map(|e| e.to_string()))
    }

    /// Re-checks trust and takes out of the cache what must go.
    pub fn settle(&self, now: Timestamp) -> Result<Vec<(Uuid, ImageOutcome)>> {
        let _turn = self.take_turn();
        self.settle_in_turn(now)
    }

    /// [`Site::settle`] by a caller that has the turn.
    fn settle_in_turn(&self, now: Timestamp) -> Result<Vec<(Uuid, ImageOutcome)>> {
        self.recheck(&self.trust()?, now)?;
        self.settle_with(now)
    }

    fn settle_with(&self, now: Timestamp) -> Result<Vec<(Uuid, ImageOutcome)>> {
        let cache = self.cache();
        let mut out = Vec::new();
        for mut rec in self.store.images()? {
            cache.reconcile(&mut rec)?;
            let complete = rec.state == ImageState::Available;
            let stale = rec.data_for.as_ref().is_some_and(|d| *d != rec.sha512);
            let keeps_data = rec.wants_data() && !stale;
            let has_data = complete || self.store.paths().partial(rec.uuid).exists();
            if has_data && !keeps_data {
                cache.expire(&mut rec, now)?;
                out.push((rec.uuid, ImageOutcome::Expired));
            }
            let state = rec.derived_state(rec.state == ImageState::Available);
            if state != rec.state {
                rec.state = state;
                self.store.put_image(&rec)?;
            }
        }
        Ok(out)
    }

    /// The cache of this site's store.
    pub fn cache(&self) -> Cache<'_> {
        Cache {
            store: &self.store,
            hooks: &self.hooks,
            fetcher: &self.fetcher,
            config: &self.config,
            turn: &self.turn,
            writers: &self.writers,
            misses: &self.restore_misses,
        }
    }
}
