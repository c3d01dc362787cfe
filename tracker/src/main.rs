//! `imageswarm-tracker`: peer discovery hints for an imageswarm site.

use std::process::ExitCode;

use clap::Parser;

/// Peer discovery hints for an imageswarm site.
///
/// The tracker service is not available in this version of imageswarm: this
/// binary only reserves the name and exits with status 2.
#[derive(Debug, Parser)]
#[command(name = "imageswarm-tracker", version)]
struct Cli {}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("error: the tracker service is not available in this version of imageswarm");
    ExitCode::from(2)
}
