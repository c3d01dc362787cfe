//! `imageswarm site ...` (the site authority) and `imageswarm peer-id`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use libp2p::PeerId;
use node::authority::{self, SiteDir};
use proto::swarm::Role;

/// The site authority's commands.
#[derive(Debug, Subcommand)]
pub(crate) enum SiteCommand {
    /// Make a site authority: a CA key (SITE_DIR/ca.key, mode 0600, never
    /// copied elsewhere), its certificate (SITE_DIR/ca.pem, given to every
    /// node as --site-ca) and an empty revocation list (SITE_DIR/crl.pem,
    /// given to the masters as --site-crl).
    Init(SiteInitArgs),
    /// Issue a node its credential: a certificate binding its peer id (from
    /// `imageswarm peer-id` on that host), the site, its role and an expiry.
    /// The node runs with it as --credential.
    Issue(IssueArgs),
    /// Revoke every credential issued to a peer: SITE_DIR/crl.pem gets a new,
    /// higher-numbered CRL. Masters started with --site-crl on that file
    /// read it within seconds and pass it to every node and tracker, which
    /// cut the peer off.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SiteInitArgs {
    /// The site's name, as nodes give it with --site.
    #[arg(long, value_name = "SITE")]
    name: String,
    /// The site directory to create.
    #[arg(short = 'o', long = "out", value_name = "SITE_DIR")]
    out: PathBuf,
    /// How long the site CA is valid, in days.
    #[arg(long, default_value_t = authority::CA_DAYS, value_name = "N")]
    days: u32,
}

/// A node's role, as a credential names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RoleArg {
    /// A worker host: fetches from peers of its site and shares.
    Worker,
    /// A master: fetches from the source, seeds, holds the site's policy.
    Master,
    /// A gateway: fetches from other sites for its site.
    Gateway,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Worker => Self::Worker,
            RoleArg::Master => Self::Master,
            RoleArg::Gateway => Self::Gateway,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The site directory (from `site init`).
    #[arg(long, value_name = "SITE_DIR")]
    site_dir: PathBuf,
    /// The node's peer id (`imageswarm --data-dir D peer-id` on its host).
    #[arg(long, value_name = "ID")]
    peer_id: PeerId,
    /// The role the node runs as.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// How long the credential is valid, in days.
    #[arg(long, default_value_t = authority::CREDENTIAL_DAYS, value_name = "N")]
    days: u32,
    /// Where to write the credential (PEM); refuses to overwrite a file.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The site directory (from `site init`).
    #[arg(long, value_name = "SITE_DIR")]
    site_dir: PathBuf,
    /// The peer whose credentials to revoke.
    #[arg(long, value_name = "ID")]
    peer_id: PeerId,
}

fn site_dir(p: &Path) -> anyhow::Result<SiteDir> {
    let d = SiteDir::new(p);
    if !d.key().exists() {
        bail!("{} holds no site authority (make one with `imageswarm site init`)", p.display());
    }
    Ok(d)
}

pub(crate) fn run(out: &mut dyn Write, cmd: SiteCommand) -> anyhow::Result<ExitCode> {
    let now = node::now();
    match cmd {
        SiteCommand::Init(a) => {
            authority::init(&SiteDir::new(&a.out), &a.name, a.days, now)?;
            let d = SiteDir::new(&a.out);
            writeln!(out, "site {} authority in {}", a.name, a.out.display())?;
            writeln!(out, "ca: {} (give to every node: --site-ca)", d.ca().display())?;
            writeln!(out, "crl: {} (give to the masters: --site-crl)", d.crl().display())?;
        }
        SiteCommand::Issue(a) => {
            let d = site_dir(&a.site_dir)?;
            // Checked first, so that no credential is issued that nobody gets.
            if a.out.exists() {
                bail!("{} already exists; refusing to overwrite it", a.out.display());
            }
            let key = p2p::admission::ed25519_key(&a.peer_id)
                .with_context(|| format!("{} is not the peer id of an Ed25519 key", a.peer_id))?;
            let pem = authority::issue(&d, &a.peer_id.to_string(), &key, a.role.into(), a.days, now)?;
            node::fsutil::write_new(&a.out, &pem)?;
            let role = proto::credential::role_name(a.role.into());
            writeln!(
                out,
                "credential: {} ({role} {}, {})",
                a.out.display(),
                a.peer_id,
                node::units::count(a.days as usize, "day")
            )?;
        }
        SiteCommand::Revoke(a) => {
            let d = site_dir(&a.site_dir)?;
            let r = authority::revoke(&d, &a.peer_id.to_string(), now)?;
            writeln!(out, "revoked: {} ({} credential(s))", a.peer_id, r.serials.len())?;
            writeln!(out, "crl: {} number {}", d.crl().display(), r.crl_number)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `imageswarm peer-id`: the node's peer id, its key made if missing.
pub(crate) fn peer_id(data_dir: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let key = node::net::load_or_create_key(&data_dir.join("node.key"))?;
    writeln!(out, "{}", key.public().to_peer_id())?;
    Ok(ExitCode::SUCCESS)
}
