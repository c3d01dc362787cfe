//! The host's commands: trust set-up, endorsers, subscriptions, updates and
//! images. They work on the store in `--data-dir` directly; only one command
//! at a time may hold it.
#![allow(clippy::print_stdout)] // the CLI's job is printing

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar};
use node::fetch::Timeouts;
use node::site::{Site, Subscribed};
use node::store::{Decision, ImageRecord, NewImages, SiteConfig};
use node::trustfiles::TrustSources;
use node::units::count;
use serde_json::json;
use uuid::Uuid;

use super::list::progress_bar;

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Trusted CA certificates, a PEM bundle.
    #[arg(long, value_name = "FILE", required_unless_present = "ca_dir")]
    ca_file: Option<PathBuf>,
    /// Trusted CAs in IGTF layout (<hash>.0 certificates, <hash>.r0 CRLs), as
    /// fetch-crl keeps /etc/grid-security/certificates. Read afresh on every
    /// update, so CRL refreshes take effect.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// A CRL file (PEM or DER); repeat for several. Read afresh on every update.
    #[arg(long, value_name = "FILE")]
    crl: Vec<PathBuf>,
    /// Do not check revocation (by default a missing or expired CRL makes a
    /// list invalid, and its images expire).
    #[arg(long)]
    no_crl_check: bool,
    /// A shell command run on every cache event, with vmcatcher's
    /// VMCATCHER_EVENT_* environment (existing event handlers work as they are).
    #[arg(long, value_name = "CMD")]
    hook: Option<String>,
    /// Seconds a hook may run before it is killed.
    #[arg(long, value_name = "SECS")]
    hook_timeout: Option<u64>,
    /// Failed downloads allowed per image and list version.
    #[arg(long, value_name = "N")]
    download_attempts: Option<u32>,
    /// Delete expired images after this many days.
    #[arg(long, value_name = "DAYS")]
    expired_max_age_days: Option<u32>,
    /// Delete expired images, oldest first, while free space is below this percentage.
    #[arg(long, value_name = "PERCENT")]
    min_free_percent: Option<u8>,
    /// Delete expired images, oldest first, while they take more than this
    /// together, e.g. 200GiB (0: no cap, the default).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    expired_max_bytes: Option<u64>,
    /// Re-hash every complete image with SHA-512 before installing it (by
    /// default the BLAKE3 manifest root, checked over every chunk as it
    /// arrives, is what binds the bytes to the list).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    strict_sha512: Option<bool>,
}

impl InitArgs {
    fn sources(&self) -> TrustSources {
        TrustSources { ca_file: self.ca_file.clone(), ca_dir: self.ca_dir.clone(), crls: self.crl.clone() }
    }

    /// Sets what the options name; the rest stays as it is.
    fn edit(&self, c: &mut SiteConfig) {
        if self.hook.is_some() {
            c.hook.clone_from(&self.hook);
        }
        c.hook_timeout_secs = self.hook_timeout.unwrap_or(c.hook_timeout_secs);
        c.download_attempts = self.download_attempts.unwrap_or(c.download_attempts);
        c.expired_max_age_days = self.expired_max_age_days.unwrap_or(c.expired_max_age_days);
        c.min_free_percent = self.min_free_percent.unwrap_or(c.min_free_percent);
        if let Some(max) = self.expired_max_bytes {
            c.expired_max_bytes = (max > 0).then_some(max);
        }
        c.strict_sha512 = self.strict_sha512.unwrap_or(c.strict_sha512);
    }
}

/// `init` while the node runs: what it asks for holds already, or it is
/// refused (the node reads its trust settings at start).
pub(crate) fn init_in_node(site: &Site, out: &mut dyn Write, a: &InitArgs) -> anyhow::Result<ExitCode> {
    let want = Site::configured(site.config().clone(), &a.sources(), !a.no_crl_check, |c| a.edit(c))?;
    anyhow::ensure!(
        want == *site.config(),
        "the node is running on this data directory: stop it before `init` changes its settings"
    );
    writeln!(out, "initialised {} already, as asked", site.store().paths().root.display())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum NewImagesArg {
    /// Record new images as refused until `image approve`.
    Refuse,
    /// Approve new images without caching them on this host.
    Accept,
    /// Approve and cache new images.
    Cache,
}

#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// The list's URL (https, http or file). Credentials in the URL are kept
    /// in the store and never printed.
    url: String,
    /// What to do with images this node has not seen before.
    #[arg(long, value_enum, default_value = "refuse")]
    new_images: NewImagesArg,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionCommand {
    /// List subscriptions.
    List,
    /// Stop trusting a subscription: its images expire at once.
    Disable(SubscriptionKey),
    /// Trust a disabled subscription again.
    Enable(SubscriptionKey),
    /// Forget the version in force so that the next valid list is accepted
    /// whatever its version (recovery after a compromised key published a
    /// huge version and was revoked).
    ResetVersion(SubscriptionKey),
}

#[derive(Debug, Args)]
pub(crate) struct SubscriptionKey {
    /// The list's UUID or URL.
    key: String,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// Seconds any one read from a list or image server may wait
    /// [default: 60]. Not for a running node, whose cycle uses its own.
    #[arg(long, value_name = "SECS")]
    read_timeout: Option<u64>,
    /// Abort a download whose rate stays below this many bytes per second
    /// over --rate-window [default: 16384].
    #[arg(long, value_name = "BYTES")]
    min_rate: Option<u64>,
    /// The window, in seconds, for --min-rate [default: 60].
    #[arg(long, value_name = "SECS")]
    rate_window: Option<u64>,
}

impl UpdateArgs {
    fn timeouts(&self) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            read: self.read_timeout.map_or(d.read, Duration::from_secs),
            min_rate: self.min_rate.unwrap_or(d.min_rate),
            rate_window: self.rate_window.map_or(d.rate_window, Duration::from_secs),
            ..d
        }
    }

    /// Whether any timeout was given, which a running node does not take.
    pub(crate) fn sets_timeouts(&self) -> bool {
        self.read_timeout.is_some() || self.min_rate.is_some() || self.rate_window.is_some()
    }
}

#[derive(Debug, Args)]
pub(crate) struct ImagesArgs {
    /// Print a JSON array of objects (uuid, title, version, state, list, ...).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DecisionArg {
    /// Approve the image (and cache it on this host).
    Approve,
    /// Refuse the image: it is not kept or run here.
    Refuse,
    /// Revoke the image: it leaves the cache at once and stays out until approved.
    Revoke,
}

#[derive(Debug, Args)]
pub(crate) struct ImageArgs {
    /// What to decide.
    #[arg(value_enum)]
    decision: DecisionArg,
    /// The image's UUID.
    uuid: Uuid,
}

pub(crate) fn data_dir(d: Option<&Path>) -> anyhow::Result<&Path> {
    d.context("--data-dir DIR (or IMAGESWARM_DATA_DIR) is required for this command")
}

fn size(s: &str) -> Result<u64, String> {
    node::units::parse_size(s).map_err(|e| e.to_string())
}

fn open(d: Option<&Path>) -> anyhow::Result<Site> {
    Ok(Site::open(data_dir(d)?, Timeouts::default())?)
}

pub(crate) fn init(d: Option<&Path>, a: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(d)?;
    let config = Site::init(dir, &a.sources(), !a.no_crl_check, |c| a.edit(c))?;
    let site = open(d)?;
    site.settle(node::now())?;
    let (cas, crls) = site.trust()?.anchors.counts();
    println!(
        "initialised {}: {}, {}, revocation {}",
        dir.display(),
        count(cas, "CA certificate"),
        count(crls, "CRL"),
        if config.crl_check { "checked" } else { "NOT checked" }
    );
    if site.store().endorsers()?.is_empty() {
        println!(
            "next: approve an endorser with `imageswarm --data-dir {} endorser add --dn DN --issuer DN`",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn subscribe(site: &Site, out: &mut dyn Write, a: SubscribeArgs) -> anyhow::Result<ExitCode> {
    let mode = match a.new_images {
        NewImagesArg::Refuse => NewImages::Refuse,
        NewImagesArg::Accept => NewImages::Accept,
        NewImagesArg::Cache => NewImages::Cache,
    };
    let done = site.subscribe(&a.url, mode, node::now())?;
    let sub = done.subscription();
    let (id, url) = (sub.identifier, node::fetch::redact(&sub.url));
    match &done {
        Subscribed::New(_) => writeln!(out, "subscribed to list {id} at {url}")?,
        Subscribed::Already(_) => writeln!(out, "already subscribed to list {id} at {url}")?,
        Subscribed::ModeChanged(_) => writeln!(
            out,
            "already subscribed to list {id} at {url}; new images it brings from now on: {}",
            mode.name()
        )?,
    }
    if !sub.enabled {
        writeln!(out, "the subscription is disabled: `subscription enable {id}` enables it")?;
    }
    writeln!(
        out,
        "next: `imageswarm --data-dir {} update` fetches it and its images",
        site.store().paths().root.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn subscription(site: &Site, out: &mut dyn Write, cmd: SubscriptionCommand) -> anyhow::Result<ExitCode> {
    let now = node::now();
    let sub = match cmd {
        SubscriptionCommand::List => {
            for s in site.store().subscriptions()? {
                let version = s.current.as_ref().map_or("-", |c| c.version.as_str()).to_owned();
                let state = match (s.enabled, s.list_valid, &s.last_error) {
                    (false, _, _) => "disabled".to_owned(),
                    (true, false, _) => match site.why_invalid(&s, node::now())? {
                        Some(why) => format!("invalid: {why}"),
                        None => "invalid until the next update re-checks it".to_owned(),
                    },
                    (true, true, Some(e)) => format!("last update failed: {e}"),
                    (true, true, None) => "ok".to_owned(),
                };
                let (url, mode) = (node::fetch::redact(&s.url), s.new_images.name());
                writeln!(out, "{}  version {version}  {url}  new-images {mode}  {state}", s.identifier)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        SubscriptionCommand::Disable(k) => site.set_enabled(&k.key, false, now)?,
        SubscriptionCommand::Enable(k) => site.set_enabled(&k.key, true, now)?,
        SubscriptionCommand::ResetVersion(k) => site.reset_version(&k.key)?,
    };
    let version = sub.current.as_ref().map_or("none", |c| c.version.as_str()).to_owned();
    writeln!(
        out,
        "list {}: {}, version in force {version}",
        sub.identifier,
        if sub.enabled { "enabled" } else { "disabled" }
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn update(d: Option<&Path>, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let site = Site::open(data_dir(d)?, a.timeouts())?;
    let bars = MultiProgress::new();
    let mut current: HashMap<Uuid, ProgressBar> = HashMap::new();
    let report = site.update(node::now(), &mut |rec: &ImageRecord, done| {
        let bar = current.entry(rec.uuid).or_insert_with(|| {
            let b = bars.add(progress_bar(rec.size, "download"));
            b.set_message(format!("{} {}", rec.uuid, rec.title));
            b
        });
        bar.set_position(done);
    })?;
    for b in current.values() {
        b.finish_and_clear();
    }
    super::status::print_update(&mut std::io::stdout().lock(), &report)?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub(crate) fn images(site: &Site, out: &mut dyn Write, a: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = site.store();
    let attempts = site.config().download_attempts;
    let mut recs = store.images()?;
    recs.sort_by(|a, b| (a.list, &a.title).cmp(&(b.list, &b.title)));
    if a.json {
        let mut rows = Vec::new();
        for r in &recs {
            let chunks = r.chunk_count();
            let have = store.chunks_held(r)?;
            rows.push(json!({
                "uuid": r.uuid, "title": r.title, "version": r.version, "state": r.state.name(), "list": r.list,
                "size": r.size, "sha512": r.sha512, "endorsed": r.endorsed, "decision": r.decision, "cache": r.cache,
                "chunks": chunks, "chunks_present": have, "last_error": r.last_error,
                "why": r.why_not_moving(attempts),
            }));
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{:<36}  {:<10}  {:<12}  {:<36}  TITLE", "UUID", "STATE", "VERSION", "LIST")?;
    for r in &recs {
        writeln!(out, "{:<36}  {:<10}  {:<12}  {:<36}  {}", r.uuid, r.state.name(), r.version, r.list, r.title)?;
        if let Some(why) = r.why_not_moving(attempts) {
            writeln!(out, "{:<36}  {why}", "")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn image(site: &Site, out: &mut dyn Write, a: ImageArgs) -> anyhow::Result<ExitCode> {
    let decision = match a.decision {
        DecisionArg::Approve => Decision::Approved,
        DecisionArg::Refuse => Decision::Refused,
        DecisionArg::Revoke => Decision::Revoked,
    };
    let rec = site.decide(a.uuid, decision, node::now())?;
    writeln!(out, "image {}: {}", rec.uuid, rec.state.name())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Check only this image (its dc:identifier).
    uuid: Option<Uuid>,
}

pub(crate) fn verify(site: &Site, out: &mut dyn Write, a: VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(u) = a.uuid {
        let known = site.store().image(u)?;
        anyhow::ensure!(known.is_some(), "no image {u} on this host (see `imageswarm images`)");
        anyhow::ensure!(
            known.is_some_and(|r| r.state == node::store::ImageState::Available),
            "image {u} is not available here: nothing installed to check"
        );
    }
    let mut changed = false;
    for (uuid, checked) in site.verify(a.uuid, node::now())? {
        match checked {
            node::cache::Checked::Intact => writeln!(out, "image {uuid}: intact")?,
            node::cache::Checked::Changed(name) => {
                changed = true;
                writeln!(out, "image {uuid}: CHANGED ON DISK: moved to expired/{name}; it will be fetched again")?;
            }
        }
    }
    Ok(if changed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
