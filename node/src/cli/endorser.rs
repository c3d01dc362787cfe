//! `imageswarm endorser`: the endorsers whose lists this site accepts, named
//! by DN, by their certificate, or by a list they signed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ::node::site::Site;
use clap::{Args, Subcommand};
use proto::trust::Signer;

#[derive(Debug, Subcommand)]
pub(crate) enum EndorserCommand {
    /// Approve an endorser: lists signed by this subject, issued by this CA,
    /// are accepted. Running it again for an approved endorser changes
    /// nothing and exits 0.
    Add(EndorserArgs),
    /// Withdraw an approval; the endorser's lists stop endorsing their images at once.
    Remove(EndorserArgs),
    /// List the approved endorsers.
    List,
}

/// Who the endorser is: DNs, a certificate, or a list it signed.
#[derive(Debug, Args)]
pub(crate) struct EndorserArgs {
    /// Subject DN: /DC=org/.../CN=Name, or as OpenSSL 3 prints it
    /// (DC = org, ..., CN = Name) or RFC 2253 writes it (CN=Name,...,DC=org);
    /// stored in the first form, as image lists name endorsers.
    #[arg(long, value_parser = dn, requires = "issuer", required_unless_present_any = ["cert", "from_list"])]
    dn: Option<String>,
    /// Issuer DN of the endorser's certificate, in any of those forms.
    #[arg(long, value_parser = dn, requires = "dn")]
    issuer: Option<String>,
    /// Take the subject and issuer from the endorser's certificate (PEM or
    /// DER).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dn", "from_list"])]
    cert: Option<PathBuf>,
    /// Take them from the signer of a signed list (a URL or a file), which
    /// must verify under this host's trust (chain, revocation, dates). Shows
    /// the signer and the list; approves only with --yes.
    #[arg(long, value_name = "URL_OR_FILE", conflicts_with = "dn")]
    from_list: Option<String>,
    /// With --from-list: approve the signer shown.
    #[arg(long, requires = "from_list")]
    yes: bool,
}

fn dn(s: &str) -> Result<String, String> {
    ::node::dn::parse(s).map_err(|e| e.to_string())
}

impl EndorserArgs {
    /// The subject and issuer named; `None` when a list's signer was only
    /// shown (no --yes).
    fn named(&self, site: &Site, out: &mut dyn Write) -> anyhow::Result<Option<(String, String)>> {
        if let (Some(dn), Some(issuer)) = (&self.dn, &self.issuer) {
            return Ok(Some((dn.clone(), issuer.clone())));
        }
        if let Some(path) = &self.cert {
            let bytes = ::node::fsutil::read(path)?;
            let cert = openssl::x509::X509::from_pem(&bytes)
                .or_else(|_| openssl::x509::X509::from_der(&bytes))
                .map_err(|e| anyhow::anyhow!("{}: not a certificate (PEM or DER): {e}", path.display()))?;
            let s = Signer::of(&cert);
            return Ok(Some((s.dn, s.ca)));
        }
        let Some(source) = &self.from_list else {
            anyhow::bail!("name the endorser: --dn and --issuer, --cert or --from-list")
        };
        let verified = site.list_for_approval(source, ::node::now())?;
        let (s, list) = (verified.signer(), verified.list());
        writeln!(
            out,
            "list {} version {} ({}): verified under this host's trust",
            list.identifier, list.version, list.title
        )?;
        writeln!(out, "signed by {}\n  issued by {}\n  serial {}, valid until {}", s.dn, s.ca, s.serial, s.not_after)?;
        if !self.yes {
            writeln!(out, "nothing changed: run again with --yes to act on this signer")?;
            return Ok(None);
        }
        Ok(Some((s.dn.clone(), s.ca.clone())))
    }
}

/// Runs an `endorser` command on `site`.
pub(crate) fn run(site: &Site, out: &mut dyn Write, cmd: EndorserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EndorserCommand::Add(e) => {
            let Some((dn, issuer)) = e.named(site, out)? else { return Ok(ExitCode::from(1)) };
            let new = site.add_endorser(&dn, &issuer, ::node::now())?;
            let done = if new { "approved" } else { "already approved:" };
            writeln!(out, "{done} endorser {dn} (issued by {issuer})")?;
        }
        EndorserCommand::Remove(e) => {
            let Some((dn, issuer)) = e.named(site, out)? else { return Ok(ExitCode::from(1)) };
            if !site.remove_endorser(&dn, &issuer, ::node::now())? {
                anyhow::bail!("{dn} (issued by {issuer}) was not an approved endorser");
            }
            writeln!(out, "removed endorser {dn} (issued by {issuer})")?;
        }
        EndorserCommand::List => {
            for e in site.store().endorsers()? {
                writeln!(out, "{}\t{}", e.dn, e.ca.unwrap_or_default())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
