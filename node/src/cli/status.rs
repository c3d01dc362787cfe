//! `imageswarm status`: what a running node does, read through its control
//! socket, and `imageswarm update` inside a running node.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use ::node::net::{Client, ImageStatus};
use ::node::site::{ImageOutcome, ListOutcome, Site, UpdateReport};
use ::node::units::{count, format_size};
use clap::Args;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Show this image only (its dc:identifier).
    uuid: Option<Uuid>,
    /// Print JSON, for scripts.
    #[arg(long)]
    json: bool,
}

/// What `status` shows (and `--json` prints).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) peer_id: Option<String>,
    /// Connected nodes, trackers left out.
    pub(crate) connected: usize,
    /// Connected trackers.
    #[serde(default)]
    pub(crate) trackers: usize,
    pub(crate) bans: u64,
    pub(crate) chunks_failed: u64,
    /// Bytes free on the data directory's file system.
    pub(crate) disk_free: Option<u64>,
    pub(crate) last_update_error: Option<String>,
    /// The trusted CAs and their CRLs, when revocation is checked.
    #[serde(default)]
    pub(crate) cas: Vec<Ca>,
    pub(crate) images: Vec<Image>,
    pub(crate) lists: Vec<List>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Image {
    pub(crate) uuid: Uuid,
    pub(crate) title: String,
    pub(crate) state: String,
    /// Whether the node swarms on it now.
    pub(crate) swarming: bool,
    pub(crate) size: u64,
    pub(crate) chunks: u32,
    pub(crate) chunks_held: u32,
    pub(crate) bytes_per_sec_in: u64,
    pub(crate) bytes_per_sec_out: u64,
    pub(crate) peers: usize,
    /// Seconds to completion at the current rate in, when it moves.
    pub(crate) eta_secs: Option<u64>,
    /// While the node downloads it from its source (hv:uri): how far the
    /// download got, in bytes from the image's start.
    pub(crate) from_source: Option<u64>,
    pub(crate) list: Uuid,
    pub(crate) list_version: Option<String>,
    /// Why it is not available here, when it is not and something is in
    /// the way.
    pub(crate) why: Option<String>,
    pub(crate) last_error: Option<String>,
}

/// A trusted CA and its CRL. Without a current CRL, the lists whose
/// signer chains to it are invalid (and only those).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ca {
    pub(crate) subject: String,
    /// When its latest CRL is due to be replaced.
    pub(crate) crl_next_update: Option<String>,
    /// `current`, `expired` or `missing`.
    pub(crate) crl: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct List {
    pub(crate) identifier: Uuid,
    pub(crate) url: String,
    pub(crate) enabled: bool,
    pub(crate) valid: bool,
    pub(crate) version: Option<String>,
    pub(crate) expires: Option<String>,
    pub(crate) last_update: Option<String>,
    pub(crate) last_error: Option<String>,
}

/// `imageswarm status` inside the running node whose handle is `client`.
pub(crate) fn status(site: &Site, client: &Client, out: &mut dyn Write, a: StatusArgs) -> anyhow::Result<ExitCode> {
    let live = client.status();
    let store = site.store();
    let versions: HashMap<Uuid, String> =
        store.subscriptions()?.into_iter().filter_map(|s| Some((s.identifier, s.current?.version))).collect();
    let swarming: HashMap<Uuid, &ImageStatus> = live.images.iter().map(|i| (i.uuid, i)).collect();
    let mut recs = store.images()?;
    if let Some(u) = a.uuid {
        recs.retain(|r| r.uuid == u);
        anyhow::ensure!(!recs.is_empty(), "no image {u} on this host (see `imageswarm images`)");
    }
    recs.sort_by(|a, b| (a.list, &a.title).cmp(&(b.list, &b.title)));
    let mut images = Vec::new();
    for r in recs {
        let chunks = r.chunk_count();
        let s = swarming.get(&r.uuid);
        let held = match s {
            Some(s) => s.have,
            None => store.chunks_held(&r)?,
        };
        let (rate_in, rate_out) = s.map_or((0, 0), |s| (s.rate_in, s.rate_out));
        let left = r.size.saturating_sub(u64::from(held) * r.chunk_size);
        let why = s.and_then(|s| s.stalled_by_bans()).or_else(|| r.why_not_moving(site.config().download_attempts));
        images.push(Image {
            uuid: r.uuid,
            title: r.title,
            state: r.state.name().to_owned(),
            swarming: s.is_some(),
            size: r.size,
            chunks,
            chunks_held: held,
            bytes_per_sec_in: rate_in,
            bytes_per_sec_out: rate_out,
            peers: s.map_or(0, |s| s.peers),
            eta_secs: (held < chunks && rate_in > 0).then(|| left.div_ceil(rate_in)),
            from_source: live.downloads.iter().find(|d| d.0 == r.uuid).map(|d| d.1),
            list: r.list,
            list_version: versions.get(&r.list).cloned(),
            why,
            last_error: r.last_error,
        });
    }
    // Only the whole report shows the lists, and only their expiry dates
    // need each list parsed, which costs what a waiting script asking
    // about one image should not.
    let mut lists = Vec::new();
    if a.uuid.is_none() {
        for (s, in_force) in site.lists_in_force()? {
            lists.push(List {
                expires: in_force.map(|l| l.expires.to_string()),
                identifier: s.identifier,
                url: ::node::fetch::redact(&s.url),
                enabled: s.enabled,
                valid: s.list_valid,
                version: s.current.map(|c| c.version),
                last_update: s.updated.map(|t| t.to_string()),
                last_error: s.last_error,
            });
        }
    }
    let now = ::node::now();
    let cas = if site.config().crl_check {
        live.crls
            .iter()
            .cloned()
            .map(|(subject, next)| Ca {
                subject,
                crl: match next {
                    Some(t) if t > now => "current",
                    Some(_) => "expired",
                    None => "missing",
                }
                .to_owned(),
                crl_next_update: next.map(|t| t.to_string()),
            })
            .collect()
    } else {
        Vec::new()
    };
    let report = Report {
        peer_id: live.peer_id.map(|p| p.to_string()),
        connected: live.connected,
        trackers: live.trackers,
        bans: live.bans,
        chunks_failed: live.chunks_failed,
        disk_free: fs4::available_space(&site.store().paths().root).ok(),
        last_update_error: live.last_error,
        cas,
        images,
        lists,
    };
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_report(out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(out: &mut dyn Write, r: &Report) -> std::io::Result<()> {
    writeln!(out, "node {}", r.peer_id.as_deref().unwrap_or("(starting)"))?;
    let free = r.disk_free.map_or_else(|| "unknown".to_owned(), format_size);
    writeln!(
        out,
        "  peers {}  trackers {}  banned {}  chunks failed {}  disk free {free}",
        r.connected, r.trackers, r.bans, r.chunks_failed
    )?;
    if let Some(e) = &r.last_update_error {
        writeln!(out, "  last update failed: {e}")?;
    }
    for ca in &r.cas {
        let next = ca.crl_next_update.as_deref().unwrap_or("-");
        match ca.crl.as_str() {
            "current" => writeln!(out, "CA {}  CRL current, next update {next}", ca.subject)?,
            "expired" => writeln!(out, "CA {}  CRL EXPIRED at {next}: lists signed under it are invalid", ca.subject)?,
            _ => writeln!(out, "CA {}  NO CRL: lists signed under it are invalid", ca.subject)?,
        }
    }
    for i in &r.images {
        writeln!(out, "image {}  {}", i.uuid, i.title)?;
        let pct = if i.chunks == 0 { 100.0 } else { 100.0 * f64::from(i.chunks_held) / f64::from(i.chunks) };
        let eta = i.eta_secs.map_or_else(String::new, |s| format!("  eta {}", format_secs(s)));
        let live = if i.swarming {
            format!(
                "  in {}/s  out {}/s  peers {}{eta}",
                format_size(i.bytes_per_sec_in),
                format_size(i.bytes_per_sec_out),
                i.peers
            )
        } else {
            String::new()
        };
        writeln!(out, "  {}  {}/{} chunks ({pct:.0}%){live}", i.state, i.chunks_held, i.chunks)?;
        if let Some(at) = i.from_source {
            writeln!(out, "  downloading from its source: {} of {}", format_size(at), format_size(i.size))?;
        }
        let version = i.list_version.as_deref().unwrap_or("none in force");
        writeln!(out, "  list {} version {version}", i.list)?;
        if let Some(why) = &i.why {
            writeln!(out, "  {why}")?;
        }
    }
    for l in &r.lists {
        let state = match (l.enabled, l.valid) {
            (false, _) => "disabled",
            (true, true) => "valid",
            (true, false) => "INVALID",
        };
        writeln!(out, "list {}  {}  {state}", l.identifier, l.url)?;
        writeln!(
            out,
            "  version {}  expires {}  last update {}",
            l.version.as_deref().unwrap_or("none"),
            l.expires.as_deref().unwrap_or("-"),
            l.last_update.as_deref().unwrap_or("never")
        )?;
        if let Some(e) = &l.last_error {
            writeln!(out, "  last error: {e}")?;
        }
    }
    Ok(())
}

/// `90` as `1m30s`.
fn format_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The status of the node running on `dir`, read through its control
/// socket, of `image` only (without lists) when one is given; `None` when
/// no node answers, or it knows no such image.
pub(crate) fn of_running(dir: &std::path::Path, image: Option<Uuid>) -> Option<Report> {
    let args: Vec<String> =
        ["status".to_owned()].into_iter().chain(image.map(|u| u.to_string())).chain(["--json".to_owned()]).collect();
    let reply = ::node::control::call(dir, &args).ok()??;
    if reply.code != 0 {
        return None;
    }
    serde_json::from_str(&reply.stdout).ok()
}

/// `imageswarm update` inside the running node: a cycle that starts after
/// the request, and its report.
pub(crate) fn update(client: &Client, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let report = client.update_now_blocking()?;
    print_update(out, &report)?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// An update cycle's report, one line per list and image.
pub(crate) fn print_update(out: &mut dyn Write, report: &UpdateReport) -> std::io::Result<()> {
    for (id, url, outcome) in &report.lists {
        let what = match outcome {
            ListOutcome::Unchanged => "unchanged".to_owned(),
            ListOutcome::Accepted(v) => format!("accepted version {v}"),
            ListOutcome::Failed(e) => format!("FAILED: {e}"),
            ListOutcome::Disabled => "disabled".to_owned(),
        };
        writeln!(out, "list {id} ({url}): {what}")?;
    }
    for (id, outcome) in &report.images {
        let what = match outcome {
            ImageOutcome::Downloaded => "downloaded and verified".to_owned(),
            ImageOutcome::Restored => "restored from expired/ and verified".to_owned(),
            ImageOutcome::Expired => "expired".to_owned(),
            ImageOutcome::InProgress => "already being downloaded by another update on this host".to_owned(),
            ImageOutcome::Failed(e) | ImageOutcome::GaveUp(e) => format!("FAILED: {e}"),
        };
        writeln!(out, "image {id}: {what}")?;
    }
    if !report.gc.removed.is_empty() {
        let removed = count(report.gc.removed.len(), "expired image");
        writeln!(out, "gc: removed {removed} ({})", format_size(report.gc.bytes))?;
    }
    Ok(())
}
