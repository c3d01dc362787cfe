//! `imageswarm`: the command line. Parsing and printing live here; the work
//! is done by the `node` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    few_malloc_arenas();
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

/// Chunk buffers (4 MiB by default, one per request in flight and one per
/// upload) are allocated on several threads, and glibc gives each thread an
/// arena of its own that keeps what was freed in it: with 8 requests per
/// peer, a worker's peak RSS reached 89–102 MiB on a 1 GiB image with the
/// default arenas, 64 MiB with one and 65–81 MiB with two (bench/pair.sh),
/// which keep lock contention low. `MALLOC_ARENA_MAX`, when set, wins.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator settings, and runs before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
