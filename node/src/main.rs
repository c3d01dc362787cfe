//! `imageswarm`: the command line. Parsing and printing live here; the work
//! is done by the `node` library.
// Doc comments on the command-line types are its `--help` text, where
// `<hash>` and the like are placeholders, not HTML.
#![allow(rustdoc::invalid_html_tags)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_malloc();
    let raw: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.runs_a_node());
    match cli::run(args, &raw) {
        Ok(code) => code,
        Err(e) => {
            cli::report_error(&e);
            ExitCode::from(2)
        }
    }
}

/// Chunk buffers (4 MiB by default, one per request in flight and one per
/// upload) are allocated and freed many times a second, on several threads.
///
/// * glibc gives each thread an arena of its own that keeps what was freed
///   in it, so peak RSS grows with the threads that ever held a buffer. At
///   most two arenas bound it, and still keep lock contention low.
/// * By default glibc maps buffers of this size on their own and returns
///   freed memory at the top of a heap to the kernel, so the next buffer
///   lands on fresh pages, and each fresh page costs a fault and, in a
///   virtual machine whose host reclaims free memory, a fault on the host
///   too. Serving them from the heap and keeping up to 32 MiB free there
///   reuses pages that are already mapped, which spares most of those
///   faults for a few MiB more peak RSS.
///
/// bench/pair.sh measures both (docs/BENCHMARKS.md has the results).
///
/// `MALLOC_ARENA_MAX` and `GLIBC_TUNABLES`, when set, win.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const KEEP: libc::c_int = 32 << 20;
        let tunables = std::env::var_os("GLIBC_TUNABLES").is_some();
        // SAFETY: mallopt only changes allocator settings, and runs before
        // any other thread exists.
        unsafe {
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if !tunables {
                libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
                libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
            }
        }
    }
}
