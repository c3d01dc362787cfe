//! `imageswarm list ...`: the endorser's commands (parity with vmilisttool).
#![allow(clippy::print_stdout, clippy::print_stderr)] // the CLI's job is printing

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use node::endorse::{self, Added, ImageMeta, NewList};
use node::trustfiles::TrustSources;
use node::units::{format_size, parse_size};
use node::{fsutil, now};
use proto::Timestamp;
use proto::imagelist::ImageList;
use proto::manifest::ChunkSize;
use proto::smime::SignedMessage;
use proto::trust::{self, ApprovedEndorser, CrlPolicy, EndorserPolicy, Signer, Trust};
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub(crate) enum ListCommand {
    /// Start a new, empty image list endorsed by the holder of a certificate.
    ///
    /// hv:dn, hv:ca, dc:creator and hv:email are taken from the certificate
    /// (--creator and --email override the last two). The list starts at
    /// version 0.0.0; `list sign` makes it 0.0.1.
    New(NewArgs),
    /// Add an image file to a list: computes its size, SHA-512 and BLAKE3
    /// manifest root.
    ///
    /// An entry with the same --identifier is replaced, which is how a new
    /// version of an image is published. The list file is rewritten
    /// atomically.
    AddImage(AddImageArgs),
    /// Withdraw an image from a list: its entry goes, and the next signed
    /// version no longer endorses it (subscribers expire it).
    ///
    /// The list file is rewritten atomically.
    RemoveImage(RemoveImageArgs),
    /// Sign a list: bumps hv:version, sets dc:date:created and
    /// dc:date:expires, writes the list back, then writes the S/MIME message.
    ///
    /// The certificate must be the list's endorser (hv:dn and hv:ca). The
    /// output is a detached multipart/signed message (SHA-256) that
    /// `openssl smime -verify` and vmcatcher accept.
    Sign(SignArgs),
    /// Verify a signed list as a subscriber would.
    ///
    /// Checks, in order: S/MIME structure, exactly one signer, the signer's
    /// chain to a trusted CA with current CRLs, the signature, the list
    /// format, hv:dn/hv:ca against the signer, the approved endorsers
    /// (--endorser), and the list's dates. Exits 0 and prints a summary when
    /// the list is valid; otherwise exits 1 with one line naming the failed
    /// check, e.g. `invalid: revocation: certificate revoked (...)`.
    Verify(VerifyArgs),
    /// Show a list, signed or not: identity, dates, endorser, signer and a
    /// table of the images. A signature is not verified here.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// Where to write the new list (JSON). Refuses to overwrite.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The endorser's certificate (PEM).
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// dc:title of the list.
    #[arg(long)]
    title: String,
    /// dc:description of the list.
    #[arg(long)]
    description: String,
    /// dc:source: who or what produces the list, free text or a URL.
    #[arg(long)]
    source: String,
    /// hv:uri: the URL the signed list will be published at.
    #[arg(long)]
    uri: String,
    /// dc:identifier of the list (default: a random UUID).
    #[arg(long, value_name = "UUID")]
    identifier: Option<Uuid>,
    /// Days from signing to expiry.
    #[arg(long, default_value_t = 28, value_name = "DAYS")]
    lifetime_days: u32,
    /// dc:creator (default: the certificate's CN).
    #[arg(long)]
    creator: Option<String>,
    /// hv:email (default: the certificate's e-mail address).
    #[arg(long)]
    email: Option<String>,
    /// A further list field, as a string (repeatable), e.g.
    /// --field ad:vo=biomed. Fields with a flag of their own are refused.
    #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse_field)]
    fields: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub(crate) struct AddImageArgs {
    /// The list to extend (JSON, as written by `list new`).
    list: PathBuf,
    /// The image file.
    image_file: PathBuf,
    /// hv:uri: where masters download the image from.
    #[arg(long)]
    uri: String,
    /// dc:title of the image.
    #[arg(long)]
    title: String,
    /// hv:version of the image.
    #[arg(long, value_name = "V")]
    image_version: String,
    /// sl:os, e.g. Linux.
    #[arg(long)]
    os: String,
    /// sl:osversion, e.g. 9.4.
    #[arg(long)]
    osversion: String,
    /// sl:arch, e.g. x86_64.
    #[arg(long)]
    arch: String,
    /// hv:hypervisor.
    #[arg(long, default_value = "kvm")]
    hypervisor: String,
    /// hv:format, e.g. qcow2 or raw.
    #[arg(long)]
    format: Option<String>,
    /// dc:identifier of the image (default: a random UUID). An existing entry
    /// with this UUID is replaced.
    #[arg(long, value_name = "UUID")]
    identifier: Option<Uuid>,
    /// dc:description of the image.
    #[arg(long, default_value = "")]
    description: String,
    /// sl:comments.
    #[arg(long, default_value = "")]
    comments: String,
    /// Manifest chunk size: a power of two from 1KiB to 1GiB. By default the
    /// smallest from 128KiB to 4MiB that cuts the image into at most 512
    /// chunks (a 64MiB image gets 128KiB, 2GiB and up get 4MiB).
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<String>,
    /// A further image field, as a string (repeatable): the ad:* fields EGI's
    /// subscribers require, e.g. --field ad:group=biomed --field
    /// ad:mpuri=https://... --field ad:user:fullname='Jo Doe'. Fields with a
    /// flag of their own are refused.
    #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse_field)]
    fields: Vec<(String, String)>,
}

/// `KEY=VALUE`, split at the first `=`.
fn parse_field(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The list to sign (JSON). It is rewritten with the new version and dates.
    list: PathBuf,
    /// The endorser's certificate (PEM).
    #[arg(long, value_name = "PEM")]
    cert: PathBuf,
    /// The endorser's private key (unencrypted PEM).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// Where to write the signed list (S/MIME).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Days from now to expiry (default: the list's current lifetime).
    #[arg(long, value_name = "DAYS")]
    lifetime_days: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct TrustArgs {
    /// Trusted CA certificates, a PEM bundle. Every certificate in it is an
    /// anchor, so a single intermediate CA or endorser certificate may be pinned.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["ca_dir", "integrity_only"])]
    ca_file: Option<PathBuf>,
    /// Trusted CAs in IGTF layout: <hash>.0 certificates and <hash>.r0 CRLs,
    /// as fetch-crl maintains /etc/grid-security/certificates.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// A CRL file (PEM or DER); repeat for several.
    #[arg(long, value_name = "FILE")]
    crl: Vec<PathBuf>,
    /// Do not check revocation. By default every certificate on the path needs
    /// a current CRL, and a missing or expired one fails verification.
    #[arg(long)]
    no_crl_check: bool,
}

impl TrustArgs {
    fn trust(&self, endorsers: EndorserPolicy) -> anyhow::Result<Trust> {
        let sources =
            TrustSources { ca_file: self.ca_file.clone(), ca_dir: self.ca_dir.clone(), crls: self.crl.clone() };
        let crl = if self.no_crl_check { CrlPolicy::NotChecked } else { CrlPolicy::Required };
        Ok(Trust { anchors: sources.load()?, crl, endorsers })
    }
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The signed list (S/MIME), a file or a URL.
    #[arg(value_name = "FILE_OR_URL")]
    list: String,
    #[command(flatten)]
    trust: TrustArgs,
    /// An approved endorser's subject DN, OpenSSL one-line form
    /// (/DC=org/.../CN=Name). Repeat for several. Without it, any signer whose
    /// certificate chains to a trusted CA is accepted.
    #[arg(long, value_name = "DN")]
    endorser: Vec<String>,
    /// Verify as of this time instead of now (YYYY-MM-DDTHH:MM:SSZ).
    #[arg(long, value_name = "TIME")]
    at: Option<Timestamp>,
    /// Only check that the content is intact under the certificate the message
    /// carries (pinned, at its notBefore). Establishes no trust: for
    /// inspecting old lists whose CA is not at hand.
    #[arg(long, conflicts_with_all = ["ca_file", "ca_dir", "crl", "endorser", "at"])]
    integrity_only: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RemoveImageArgs {
    /// The list (JSON, as written by `list new`).
    list: PathBuf,
    /// The image's dc:identifier.
    uuid: Uuid,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// A list: signed (S/MIME) or unsigned (JSON), a file or a URL.
    #[arg(value_name = "FILE_OR_URL")]
    file: String,
    /// Print the list as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: ListCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ListCommand::New(a) => new(a),
        ListCommand::AddImage(a) => add_image(a),
        ListCommand::RemoveImage(a) => remove_image(a),
        ListCommand::Sign(a) => sign(a),
        ListCommand::Verify(a) => verify(a),
        ListCommand::Show(a) => show(a),
    }
}

fn new(a: NewArgs) -> anyhow::Result<ExitCode> {
    let cert = endorse::load_certificate(&a.cert)?;
    let opts = NewList {
        title: a.title,
        description: a.description,
        source: a.source,
        uri: a.uri,
        identifier: a.identifier,
        lifetime_days: a.lifetime_days,
        creator: a.creator,
        email: a.email,
        fields: a.fields,
    };
    let list = endorse::new_list(&cert, opts, now())?;
    fsutil::write_new(&a.output, &list.to_json())?;
    let e = &list.endorsers[0];
    println!("created list {} in {}", list.identifier, a.output.display());
    println!("endorser: {} (issued by {})", e.dn, e.ca);
    Ok(ExitCode::SUCCESS)
}

fn add_image(a: AddImageArgs) -> anyhow::Result<ExitCode> {
    let mut list = read_unsigned(&a.list)?;
    let total = std::fs::metadata(&a.image_file).with_context(|| format!("reading {}", a.image_file.display()))?.len();
    let chunk_size = match &a.chunk_size {
        Some(s) => ChunkSize::new(parse_size(s)?)?,
        None => ChunkSize::for_image(total),
    };
    chunk_size.check_count(total)?;
    let bar = progress_bar(total, "hashing");
    let digest = endorse::digest_file(&a.image_file, chunk_size, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    let meta = ImageMeta {
        identifier: a.identifier,
        title: a.title,
        description: a.description,
        uri: a.uri,
        version: a.image_version,
        os: a.os,
        osversion: a.osversion,
        arch: a.arch,
        hypervisor: a.hypervisor,
        format: a.format,
        comments: a.comments,
        fields: a.fields,
    };
    let added = endorse::add_image(&mut list, meta, &digest)?;
    fsutil::write_atomic(&a.list, &list.to_json())?;
    let (verb, id) = match added {
        Added::Inserted(id) => ("added", id),
        Added::Replaced(id) => ("replaced", id),
    };
    println!("{verb} image {id}: {} ({} bytes)", format_size(digest.size), digest.size);
    println!("sha512:        {}", digest.sha512);
    println!(
        "manifest root: {} ({} chunks of {})",
        digest.manifest.root(),
        digest.manifest.hashes().len(),
        format_size(chunk_size.get())
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let mut list = read_unsigned(&a.list)?;
    let cert = endorse::load_certificate(&a.cert)?;
    let key = endorse::load_key(&a.key)?;
    endorse::prepare_signing(&mut list, &cert, now(), a.lifetime_days)?;
    let message = endorse::sign(&list, &cert, &key)?;
    // The list file first: a crash between the two writes then costs a
    // version number, never a reused one.
    fsutil::write_atomic(&a.list, &list.to_json())?;
    fsutil::write_atomic(&a.output, &message)?;
    println!(
        "signed list {} version {} ({} images), valid until {} -> {}",
        list.identifier,
        list.version,
        list.images.len(),
        list.expires,
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A list from a file or a URL, for the endorser's tools.
fn read_source(source: &str) -> anyhow::Result<Vec<u8>> {
    Ok(node::fetch::Fetcher::new(node::fetch::Timeouts::default())?.get_list_or_file(source)?)
}

fn remove_image(a: RemoveImageArgs) -> anyhow::Result<ExitCode> {
    let mut list = read_unsigned(&a.list)?;
    let before = list.images.len();
    list.images.retain(|i| i.identifier != a.uuid);
    anyhow::ensure!(list.images.len() < before, "{}: no image {}", a.list.display(), a.uuid);
    fsutil::write_atomic(&a.list, &list.to_json())?;
    println!("removed image {} from {}; `list sign` publishes the list without it", a.uuid, a.list.display());
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let message = read_source(&a.list)?;
    if a.integrity_only {
        return Ok(match trust::check_integrity(&message) {
            Ok(r) => {
                println!("intact: list {} version {}", r.list.identifier, r.list.version);
                println!("signer:  {}", r.signer.dn);
                println!("issuer:  {}", r.signer.ca);
                println!(
                    "checked at {} against the message's own certificate; NOT verified against any CA, CRL or date",
                    r.checked_at
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("invalid: {e}");
                ExitCode::from(1)
            }
        });
    }
    let endorsers = if a.endorser.is_empty() {
        EndorserPolicy::AnyTrustedSigner
    } else {
        EndorserPolicy::Approved(a.endorser.iter().map(|dn| ApprovedEndorser { dn: dn.clone(), ca: None }).collect())
    };
    let trust = a.trust.trust(endorsers)?;
    let at = a.at.unwrap_or_else(now);
    Ok(match trust::verify_list(&message, &trust, at) {
        Ok(v) => {
            let l = v.list();
            println!("valid: list {} version {}", l.identifier, l.version);
            println!("title:   {}", l.title);
            println!("signer:  {}", v.signer().dn);
            println!("issuer:  {}", v.signer().ca);
            println!("created: {}", l.created);
            println!("expires: {}", l.expires);
            println!("images:  {}", l.images.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            ExitCode::from(1)
        }
    })
}

fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let bytes = read_source(&a.file)?;
    let (list, signer) = if looks_signed(&bytes) {
        let msg = SignedMessage::parse(&bytes)?;
        let signers = msg.claimed_signers()?;
        (ImageList::from_json(msg.content())?, Some(signers.iter().map(|c| Signer::of(c)).collect::<Vec<_>>()))
    } else {
        (ImageList::from_json(&bytes)?, None)
    };
    if a.json {
        print!("{}", String::from_utf8_lossy(&list.to_json()));
        return Ok(ExitCode::SUCCESS);
    }
    println!("list:        {}", list.identifier);
    println!("title:       {}", list.title);
    println!("version:     {}", list.version);
    println!("created:     {}", list.created);
    println!("expires:     {}", list.expires);
    println!("uri:         {}", list.uri);
    for e in &list.endorsers {
        println!("endorser:    {} <{}>", e.creator, e.email);
        println!("  dn:        {}", e.dn);
        println!("  ca:        {}", e.ca);
    }
    match signer {
        Some(signers) => {
            for s in &signers {
                println!("signed by:   {}", s.dn);
                println!("  issuer:    {}", s.ca);
                println!("  serial:    {}  not after: {}", s.serial, s.not_after);
            }
            println!("signature:   not verified here; use `imageswarm list verify`");
        }
        None => println!("signed by:   (unsigned)"),
    }
    println!("images:      {}", list.images.len());
    print_images(&list);
    for s in &list.skipped {
        println!("skipped:     hv:images[{}] lacks {} (consumers ignore it)", s.position, s.missing);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_images(list: &ImageList) {
    if list.images.is_empty() {
        return;
    }
    let rows: Vec<[String; 6]> = list
        .images
        .iter()
        .map(|i| {
            [
                i.identifier.to_string(),
                i.version.clone(),
                format_size(i.size),
                i.arch.clone(),
                format!("{} {}", i.os, i.osversion),
                i.title.clone(),
            ]
        })
        .collect();
    let header = ["UUID", "VERSION", "SIZE", "ARCH", "OS", "TITLE"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("  {s}");
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
}

fn looks_signed(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.contains("mime-version:") || text.contains("content-type:")
}

fn read_unsigned(path: &Path) -> anyhow::Result<ImageList> {
    let bytes = fsutil::read(path)?;
    if looks_signed(&bytes) {
        anyhow::bail!("{} is a signed message; give the JSON list that `list new` wrote", path.display());
    }
    ImageList::from_json(&bytes).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn progress_bar(total: u64, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < (64 << 20) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    bar
}
