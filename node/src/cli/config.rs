//! `imageswarm config show`: what a data directory holds of a host's setup.

use std::io::Write;
use std::process::ExitCode;

use ::node::fetch::redact;
use ::node::site::Site;
use ::node::units::count;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the host's setup: trust (CAs, CRLs, revocation checking),
    /// endorsers, subscriptions and their modes, and the cache settings.
    Show,
}

/// Runs a `config` command on `site`.
pub(crate) fn run(site: &Site, out: &mut dyn Write, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Show = cmd;
    let c = site.config();
    writeln!(out, "data directory {}", site.store().paths().root.display())?;
    writeln!(out, "trust")?;
    if let Some(f) = &c.ca_file {
        writeln!(out, "  CA file {}", f.display())?;
    }
    if let Some(d) = &c.ca_dir {
        writeln!(out, "  CA directory {}", d.display())?;
    }
    for f in &c.crls {
        writeln!(out, "  CRL file {}", f.display())?;
    }
    let loaded = site.trust().map(|t| t.anchors.counts());
    let revocation = if c.crl_check { "revocation checked" } else { "revocation NOT checked" };
    match loaded {
        Ok((cas, crls)) => {
            writeln!(out, "  {}, {} now; {revocation}", count(cas, "CA certificate"), count(crls, "CRL"))?
        }
        Err(e) => writeln!(out, "  does not load now: {e}; {revocation}")?,
    }
    writeln!(out, "endorsers")?;
    for e in site.store().endorsers()? {
        writeln!(out, "  {}  issued by {}", e.dn, e.ca.as_deref().unwrap_or("any CA"))?;
    }
    writeln!(out, "subscriptions")?;
    for s in site.store().subscriptions()? {
        let state = if s.enabled { "enabled" } else { "disabled" };
        let version = s.current.as_ref().map_or("none", |v| v.version.as_str());
        let (id, url, mode) = (s.identifier, redact(&s.url), s.new_images.name());
        writeln!(out, "  {id}  {url}  new-images {mode}  {state}  version {version}")?;
    }
    writeln!(out, "cache")?;
    writeln!(out, "  hook {}", c.hook.as_deref().unwrap_or("none"))?;
    writeln!(out, "  hook timeout {} s, download attempts {}", c.hook_timeout_secs, c.download_attempts)?;
    writeln!(
        out,
        "  expired images kept {} days, and while free space stays above {} %",
        c.expired_max_age_days, c.min_free_percent
    )?;
    match c.expired_max_bytes {
        Some(max) => writeln!(out, "  expired images take at most {}", ::node::units::format_size(max))?,
        None => writeln!(out, "  expired images take as many bytes as the rules above leave")?,
    }
    writeln!(out, "  strict SHA-512 {}", if c.strict_sha512 { "on" } else { "off" })?;
    Ok(ExitCode::SUCCESS)
}
