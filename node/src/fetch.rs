//! Fetching lists and image data over `http`, `https` and `file` URLs.
//!
//! # Contract
//! * Transport is not trusted: everything fetched is checked afterwards
//!   (lists by signature, images by hash). TLS still verifies the server
//!   against the platform's roots (rustls' platform verifier; on Linux the
//!   system bundle, or `SSL_CERT_FILE`), loaded at the first handshake.
//! * A list is read up to [`proto::smime::MAX_MESSAGE_BYTES`]; one byte more
//!   aborts the fetch.
//! * [`Fetcher::open`] starts an image body at an offset (HTTP `Range`, or a
//!   seek for files). A server that ignores `Range` is read from the start;
//!   [`Source::start`] says where the bytes begin.
//! * Each read waits at most [`Timeouts::read`]; [`RateGuard`] catches
//!   servers that trickle bytes just fast enough to dodge it.
//! * URLs in messages and logs have their credentials removed ([`redact`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::blocking::Client;
use reqwest::header::{HeaderValue, RANGE};

use crate::{Error, Result};

/// Network timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// Any one read.
    pub read: Duration,
    /// The minimum average rate, bytes per second, over `rate_window`.
    pub min_rate: u64,
    /// The window over which `min_rate` is enforced.
    pub rate_window: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
            min_rate: 16 << 10,
            rate_window: Duration::from_secs(60),
        }
    }
}

/// An image body, positioned at [`Source::start`].
pub struct Source {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// The offset of the first byte `reader` yields.
    pub start: u64,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("start", &self.start).finish_non_exhaustive()
    }
}

/// Fetches lists and images.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: Client,
    timeouts: Timeouts,
}

impl Fetcher {
    /// A fetcher with these timeouts.
    pub fn new(timeouts: Timeouts) -> Result<Self> {
        // reqwest takes rustls' process-wide provider; ring is the one libp2p
        // already links. Another caller may have installed one first.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.read)
            .user_agent(concat!("imageswarm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Fetch { url: String::new(), reason: format!("HTTP client: {e}") })?;
        Ok(Self { client, timeouts })
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// A list from `source`: fetched when it is a URL (`scheme://...`), read
    /// when it is a file's path; more than the list size cap is refused
    /// either way.
    pub fn get_list_or_file(&self, source: &str) -> Result<Vec<u8>> {
        if source.contains("://") {
            return self.get_list(source);
        }
        let path = std::path::Path::new(source);
        let len = std::fs::metadata(path).map_err(Error::io("reading", path))?.len();
        if len > proto::smime::MAX_MESSAGE_BYTES as u64 {
            return Err(Error::Invalid(format!("{source}: {len} bytes, more than a list may have")));
        }
        crate::fsutil::read(path)
    }

    /// Fetches a signed list, refusing more than the list size cap.
    pub fn get_list(&self, url: &str) -> Result<Vec<u8>> {
        let cap = proto::smime::MAX_MESSAGE_BYTES as u64;
        let source = self.open(url, 0)?;
        let mut out = Vec::new();
        source
            .reader
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::Fetch { url: redact(url), reason: format!("reading: {e}") })?;
        if out.len() as u64 > cap {
            return Err(Error::Fetch { url: redact(url), reason: format!("larger than the {cap}-byte cap for lists") });
        }
        Ok(out)
    }

    /// Opens `url` at byte `offset`.
    pub fn open(&self, url: &str, offset: u64) -> Result<Source> {
        let fail = |reason: String| Error::Fetch { url: redact(url), reason };
        let parsed = Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed.to_file_path().map_err(|()| fail("not a local file path".into()))?;
                let mut f = File::open(&path).map_err(|e| fail(e.to_string()))?;
                f.seek(SeekFrom::Start(offset)).map_err(|e| fail(e.to_string()))?;
                Ok(Source { reader: Box::new(f), start: offset })
            }
            "http" | "https" => {
                let mut req = self.client.get(parsed);
                if offset > 0 {
                    let range = HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|e| fail(e.to_string()))?;
                    req = req.header(RANGE, range);
                }
                let resp = req.send().map_err(|e| fail(error_chain(&e)))?;
                let status = resp.status();
                let start = match status.as_u16() {
                    206 if offset > 0 => offset,
                    200 => 0,
                    _ => return Err(fail(format!("HTTP status {status}"))),
                };
                Ok(Source { reader: Box::new(resp), start })
            }
            other => Err(fail(format!("unsupported scheme `{other}` (use https, http or file)"))),
        }
    }
}

/// Aborts a transfer whose average rate over a window falls below a floor.
#[derive(Debug)]
pub struct RateGuard {
    min_rate: u64,
    window: Duration,
    window_start: Instant,
    window_bytes: u64,
}

impl RateGuard {
    /// A guard for these timeouts.
    pub fn new(t: &Timeouts) -> Self {
        Self { min_rate: t.min_rate, window: t.rate_window, window_start: Instant::now(), window_bytes: 0 }
    }

    /// Counts `n` more bytes; fails when a full window was too slow.
    pub fn progress(&mut self, n: u64) -> Result<(), String> {
        self.window_bytes += n;
        let elapsed = self.window_start.elapsed();
        if elapsed < self.window {
            return Ok(());
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        if rate < self.min_rate as f64 {
            return Err(format!("too slow: {rate:.0} B/s over {:.0?}, below the {} B/s floor", elapsed, self.min_rate));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

/// `url` without user name and password.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(redact("https://TOKEN:x-oauth-basic@vmcaster.example/store/l"), "https://vmcaster.example/store/l");
        assert_eq!(redact("file:///tmp/l"), "file:///tmp/l");
    }

    #[test]
    fn rate_guard_trips_only_after_a_full_slow_window() {
        let t = Timeouts { min_rate: 1000, rate_window: Duration::from_millis(30), ..Timeouts::default() };
        let mut g = RateGuard::new(&t);
        assert!(g.progress(1).is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert!(g.progress(1).is_err());
        let mut fast = RateGuard::new(&t);
        std::thread::sleep(Duration::from_millis(40));
        assert!(fast.progress(1 << 20).is_ok());
    }
}
