//! `imageswarm`: the command line. Parsing and printing live here; the work
//! is done by the `node` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            cli::report_error(&e);
            ExitCode::from(2)
        }
    }
}
