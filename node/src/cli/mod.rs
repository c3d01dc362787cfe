//! Command-line definitions and dispatch.
//!
//! Exit codes: 0 success; 1 a check failed (for example `list verify` found
//! the list invalid); 2 the command could not run (bad arguments, unreadable
//! files, ...). Errors are one line on stderr.

mod authority;
mod config;
mod demo;
mod endorser;
mod list;
mod node;
mod site;
mod status;
mod wait;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use ::node::fetch::Timeouts;
use ::node::site::Site;
use clap::{Parser, Subcommand};

/// imageswarm distributes endorsed virtual machine images to every host of a
/// site through a verified peer-to-peer swarm. The signed HEPiX image list is
/// the one authoritative index: nothing that is not on a currently valid list
/// is stored, served or run.
#[derive(Debug, Parser)]
#[command(name = "imageswarm", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// The node's state directory (store, images, configuration).
    #[arg(long, global = true, env = "IMAGESWARM_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG
    /// overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, extend, sign, verify and inspect image lists (the endorser's tools).
    #[command(subcommand)]
    List(list::ListCommand),
    /// Set up a host's trust: the CAs and CRLs that endorsers' certificates chain to.
    Init(site::InitArgs),
    /// Show what this host's data directory holds of its setup.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Approve, remove and list the endorsers whose lists this site accepts.
    #[command(subcommand)]
    Endorser(endorser::EndorserCommand),
    /// Subscribe to a signed image list.
    Subscribe(site::SubscribeArgs),
    /// List, disable, enable or reset subscriptions.
    #[command(subcommand)]
    Subscription(site::SubscriptionCommand),
    /// Fetch every list, verify it, then expire and download images.
    ///
    /// While a node runs on the data directory, asks it to run an update
    /// cycle now (as SIGHUP does) and reports that cycle. Exits 1 if any list
    /// or download failed (the rest is still done).
    Update(site::UpdateArgs),
    /// Show what the running node does: per image its state, chunks held,
    /// rates in and out, peers, ETA and list version; per list the version
    /// in force, its expiry and the last update; and disk free.
    ///
    /// Reads the node through its control socket (DATA_DIR/control.sock):
    /// fails if no node runs on the data directory.
    Status(status::StatusArgs),
    /// Show every image this host knows: uuid, state, version, list, title.
    ///
    /// States: available (verified, in the cache), partial (approved, not
    /// complete here), expired (no longer endorsed), refused (not approved by
    /// the site), revoked (revoked by the site).
    Images(site::ImagesArgs),
    /// Approve, refuse or revoke one image on this site.
    Image(site::ImageArgs),
    /// Check installed images against their lists again, in full.
    ///
    /// An image whose file changed on disk is taken out of service (moved
    /// to expired/, with the expiry hooks) and fetched again. Exits 1 if any
    /// had changed. A running node also does this at start and every
    /// --verify-interval.
    Verify(site::VerifyArgs),
    /// Run this host's swarm node: fetch lists, share verified chunks of
    /// endorsed images with peers, and keep the cache in step with the lists.
    ///
    /// A master downloads images from their source (hv:uri) and seeds; a
    /// worker fetches only from peers. Stop it with SIGINT or SIGTERM.
    Node(node::NodeArgs),
    /// Wait until an image is available and verified on this host.
    ///
    /// Exits 0 once it is, 1 on timeout, and 2 at once when it will not come
    /// (revoked, not approved, no longer endorsed, on no list in force) or
    /// the data directory is missing. Shows a progress bar on a terminal
    /// while a node runs.
    Wait(wait::WaitArgs),
    /// A site's authority: make it, issue node credentials, revoke them.
    ///
    /// A closed site admits only nodes with a credential from its
    /// authority; `node --credential F --site-ca CA` runs one.
    #[command(subcommand)]
    Site(authority::SiteCommand),
    /// Print this node's peer id (what `site issue --peer-id` needs),
    /// making its key (DATA_DIR/node.key) if missing.
    PeerId,
    /// Run a whole site on loopback: a test CA and endorser, a signed list
    /// of a random image, a tracker, one master and N workers, each capped
    /// at the given rate. Exits 0 only if every worker holds the verified
    /// image.
    Demo(demo::DemoArgs),
}

impl Cli {
    /// Whether the command runs a node (which logs more by default).
    pub(crate) fn runs_a_node(&self) -> bool {
        matches!(self.command, Command::Node(_))
    }
}

impl Command {
    /// Whether the command reads or changes a host's store (and so goes
    /// through the control socket while a node runs).
    fn is_host(&self) -> bool {
        matches!(
            self,
            Self::Init(_)
                | Self::Config(_)
                | Self::Endorser(_)
                | Self::Subscribe(_)
                | Self::Subscription(_)
                | Self::Update(_)
                | Self::Status(_)
                | Self::Images(_)
                | Self::Image(_)
                | Self::Verify(_)
        )
    }
}

/// Runs the parsed command; `args` is the command line it was parsed from.
/// Host commands go to the running node through its control socket when one
/// listens, and work on the store directly otherwise.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn run(cli: Cli, args: &[String]) -> anyhow::Result<ExitCode> {
    let d = cli.data_dir.as_deref();
    if cli.command.is_host()
        && let Some(dir) = d
        && let Some(reply) = ::node::control::call(dir, args)?
    {
        print!("{}", reply.stdout);
        if !reply.stderr.is_empty() {
            eprintln!("{}", reply.stderr);
        }
        return Ok(ExitCode::from(reply.code));
    }
    match cli.command {
        Command::List(cmd) => list::run(cmd),
        Command::Init(a) => site::init(d, a),
        Command::Update(a) => site::update(d, a),
        Command::Node(a) => node::run_node(d, a),
        Command::Wait(a) => wait::wait(d, a),
        Command::Demo(a) => demo::run(a),
        Command::Status(_) => anyhow::bail!(
            "no node runs on {}: `status` reads a running node (`imageswarm images` shows what the store holds)",
            site::data_dir(d)?.display()
        ),
        Command::Site(c) => authority::run(&mut std::io::stdout().lock(), c),
        Command::PeerId => authority::peer_id(site::data_dir(d)?, &mut std::io::stdout().lock()),
        other => {
            let site = Site::open(site::data_dir(d)?, Timeouts::default())?;
            on_site(&site, &mut std::io::stdout().lock(), other)
        }
    }
}

/// The host commands that run on an open site, here or inside the node.
fn on_site(site: &Site, out: &mut dyn Write, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Endorser(c) => endorser::run(site, out, c),
        Command::Config(c) => config::run(site, out, c),
        Command::Subscribe(a) => site::subscribe(site, out, a),
        Command::Subscription(c) => site::subscription(site, out, c),
        Command::Images(a) => site::images(site, out, a),
        Command::Image(a) => site::image(site, out, a),
        Command::Verify(a) => site::verify(site, out, a),
        Command::Init(a) => site::init_in_node(site, out, &a),
        _ => anyhow::bail!("not a host command"),
    }
}

/// A running node, as the control socket's handler sees it.
pub(crate) struct InNode {
    pub(crate) site: std::sync::Arc<Site>,
    pub(crate) client: ::node::net::Client,
    /// Commands that change the store run one at a time.
    pub(crate) turn: std::sync::Mutex<()>,
}

/// Runs a host command line (`args`, without the program name) inside the
/// running node: the control socket's handler. `status` and `update` do not
/// wait for other commands' turn.
pub(crate) fn run_in_node(node: &InNode, args: Vec<String>) -> ::node::control::Reply {
    use ::node::control::Reply;
    let cli = match Cli::try_parse_from(std::iter::once("imageswarm".to_owned()).chain(args)) {
        Ok(c) => c,
        Err(e) => return Reply { code: 2, stdout: String::new(), stderr: e.to_string() },
    };
    let mut out = Vec::new();
    let mut note = String::new();
    let result = match cli.command {
        Command::Status(a) => status::status(&node.site, &node.client, &mut out, a),
        Command::Update(a) => {
            if a.sets_timeouts() {
                note = "note: the running node's update cycle uses its own timeouts; \
                        --read-timeout, --min-rate and --rate-window apply without a node"
                    .to_owned();
            }
            status::update(&node.client, &mut out)
        }
        // Hashing every image takes long: it takes the site's turn only to
        // take a changed file out of service.
        Command::Verify(a) => {
            let r = site::verify(&node.site, &mut out, a);
            node.client.request_sync();
            r
        }
        other => {
            let _turn = node.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let r = on_site(&node.site, &mut out, other);
            node.client.request_sync();
            r
        }
    };
    let stdout = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(code) => Reply { code: u8::from(code != ExitCode::SUCCESS), stdout, stderr: note },
        Err(e) => {
            let error = format!("error: {e:#}");
            let stderr = if note.is_empty() { error } else { format!("{note}\n{error}") };
            Reply { code: 2, stdout, stderr }
        }
    }
}

/// Logs go to stderr; stdout carries only the command's output. A node
/// logs at info by default, so that its journal tells what it did (lists
/// taken or refused, images available, expired or failing, each once); the
/// other commands only warn.
pub(crate) fn init_logging(verbose: u8, node: bool) {
    // Nodes publish each list they take; one that gossip brought first is
    // already published, which gossipsub reports as a warning.
    let quiet = "libp2p_gossipsub::behaviour=error";
    let default = match (verbose, node) {
        (0, false) => format!("warn,{quiet}"),
        (0, true) => format!("warn,node=info,p2p=info,imageswarm=info,{quiet}"),
        (1, _) => "info".to_owned(),
        (2, _) => "debug".to_owned(),
        _ => "trace".to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Prints an error and its causes on one line.
#[allow(clippy::print_stderr)]
pub(crate) fn report_error(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
}
