//! The control socket: host commands reach a running node through it.
//!
//! # Contract
//! * A running node listens on `<data>/control.sock` (a Unix socket, mode
//!   0600 under the data directory's own permissions). A client sends one
//!   request, the command line's arguments as a JSON array of strings on one
//!   line, and reads one [`Reply`] as a JSON line; then the connection
//!   closes. Requests are bounded ([`MAX_REQUEST`]) and served one at a
//!   time, in the order they arrive.
//! * [`call`] answers `None` when no node listens (no socket, or a stale one
//!   left by a node that died), so the command then works on the store
//!   directly.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// The longest request accepted.
pub const MAX_REQUEST: u64 = 64 << 10;

/// What a command run inside the node produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The exit status.
    pub code: u8,
    /// What it printed.
    pub stdout: String,
    /// Its error line, if it failed.
    pub stderr: String,
}

/// The socket of the node storing in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Serves the control socket of `data_dir` from a background thread until
/// the process exits; `handle` runs each request's arguments.
pub fn serve(data_dir: &Path, handle: impl Fn(Vec<String>) -> Reply + Send + 'static) -> Result<()> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing the stale socket", &path)(e)),
    }
    let listener = UnixListener::bind(&path).map_err(Error::io("listening on", &path))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let reply = match conn {
                    Ok(c) => one(c, &handle),
                    Err(e) => Err(e),
                };
                if let Err(e) = reply {
                    tracing::debug!(error = %e, "control client went away");
                }
            }
        })
        .map_err(|e| Error::Net(format!("control thread: {e}")))?;
    Ok(())
}

fn one(conn: UnixStream, handle: &impl Fn(Vec<String>) -> Reply) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Vec<String>>(&line) {
        Ok(args) => handle(args),
        Err(e) => Reply { code: 2, stdout: String::new(), stderr: format!("malformed control request: {e}") },
    };
    let mut w = &conn;
    serde_json::to_writer(&mut w, &reply)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// Runs `args` in the node storing in `data_dir`, if one listens.
pub fn call(data_dir: &Path, args: &[String]) -> Result<Option<Reply>> {
    let path = socket_path(data_dir);
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(Error::io("connecting to", &path)(e)),
    };
    let mut w = &conn;
    let req = serde_json::to_string(args).map_err(|e| Error::Invalid(e.to_string()))?;
    w.write_all(req.as_bytes()).and_then(|()| w.write_all(b"\n")).map_err(Error::io("writing to", &path))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).map_err(Error::io("reading from", &path))?;
    serde_json::from_str(&line).map(Some).map_err(|e| Error::Net(format!("the node's reply: {e}")))
}
