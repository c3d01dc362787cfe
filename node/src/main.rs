//! `imageswarm`: the command line. Parsing and printing live here; the work
//! is done by the `node` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    match cli::run(args, &raw) {
        Ok(code) => code,
        Err(e) => {
            cli::report_error(&e);
            ExitCode::from(2)
        }
    }
}
