//! What `/proc` says of a process, for the load benchmarks: CPU seconds,
//! resident memory, open descriptors and threads.

use anyhow::Context;

/// One reading of a process's use of the machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// VmRSS, in MiB.
    pub rss_mib: f64,
    /// Open file descriptors (sockets included).
    pub fds: usize,
    /// Threads.
    pub threads: usize,
}

/// Reads `pid`'s usage now.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    let fields: Vec<&str> = stat.rsplit_once(") ").context("stat")?.1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let value = status.lines().find_map(|l| l.strip_prefix(name)).with_context(|| name.to_string())?;
        Ok(value.split_whitespace().next().context(name.to_string())?.parse()?)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    // Clock ticks are 100 per second on every Linux this runs on.
    Ok(Usage { cpu_secs: ticks / 100.0, rss_mib: field("VmRSS:")? / 1024.0, fds, threads: field("Threads:")? as usize })
}
