//! The control socket: host commands reach a running node through it.
//!
//! # Contract
//! * A running node listens on `<data>/control.sock`, a Unix socket of mode
//!   0600 from the moment it appears (it is bound in a private directory
//!   and moved into place), and serves only clients of its own user or
//!   root, as the kernel reports the connecting process's uid. A client
//!   sends one request, the command line's arguments as a JSON array of
//!   strings on one line, and reads one [`Reply`] as a JSON line; then the
//!   connection closes.
//! * Requests are bounded ([`MAX_REQUEST`]) and each client has
//!   [`CLIENT_TIMEOUT`] to send its request and to take the reply, on a
//!   thread of its own (at most [`MAX_CLIENTS`] at once; more are turned
//!   away), so an idle or stuck client holds up no other. The handler runs
//!   on the client's thread: what must run one at a time, it serialises.
//! * [`call`] answers `None` when no node listens (no socket, or a stale one
//!   left by a node that died), so the command then works on the store
//!   directly.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// The longest request accepted.
pub const MAX_REQUEST: u64 = 64 << 10;

/// How long a client has to send its request, and to take each part of
/// the reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;

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
pub fn serve(data_dir: &Path, handle: impl Fn(Vec<String>) -> Reply + Send + Sync + 'static) -> Result<()> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing the stale socket", &path)(e)),
    }
    let listener = bind_private(data_dir, &path)?;
    let handle = Arc::new(handle);
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "control connection failed");
                        continue;
                    }
                };
                if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("{MAX_CLIENTS} control clients at once: one more turned away");
                    continue;
                }
                let (handle, clients) = (handle.clone(), clients.clone());
                let served = std::thread::Builder::new().name("control client".into()).spawn(move || {
                    if let Err(e) = one(conn, &*handle) {
                        tracing::debug!(error = %e, "control client went away");
                    }
                    clients.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = served {
                    tracing::warn!(error = %e, "no thread for a control client");
                }
            }
        })
        .map_err(|e| Error::Net(format!("control thread: {e}")))?;
    Ok(())
}

/// Binds the socket at `path` owner-only: in a private directory (mode
/// 0700) first, then moved into place, so that no one else can connect in
/// between.
fn bind_private(data_dir: &Path, path: &Path) -> Result<UnixListener> {
    let private = tempfile::Builder::new()
        .prefix(".control-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(data_dir)
        .map_err(Error::io("creating a directory in", data_dir))?;
    let bound = private.path().join(SOCKET);
    let listener = UnixListener::bind(&bound).map_err(Error::io("listening on", &bound))?;
    std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("restricting", &bound))?;
    std::fs::rename(&bound, path).map_err(Error::io("moving the socket to", path))?;
    Ok(listener)
}

/// Whether the process at the other end of `conn` runs as this process's
/// user or as root.
fn same_user(conn: &UnixStream) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the descriptor is open for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &raw mut len)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getuid cannot fail.
    let own = unsafe { libc::getuid() };
    Ok(cred.uid == own || cred.uid == 0)
}

fn one(conn: UnixStream, handle: &impl Fn(Vec<String>) -> Reply) -> std::io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let reply = if same_user(&conn)? {
        let mut line = String::new();
        BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)?;
        match serde_json::from_str::<Vec<String>>(&line) {
            Ok(args) => handle(args),
            Err(e) => Reply { code: 2, stdout: String::new(), stderr: format!("malformed control request: {e}") },
        }
    } else {
        tracing::warn!("a control client of another user was refused");
        Reply { code: 2, stdout: String::new(), stderr: "the node serves its own user's commands only".into() }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc;

    use super::*;

    fn echo(dir: &Path) {
        serve(dir, |args| Reply { code: 0, stdout: args.join(" "), stderr: String::new() }).unwrap();
    }

    #[test]
    fn the_socket_is_its_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        echo(dir.path());
        let mode = std::fs::metadata(socket_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [SOCKET], "the private directory it was bound in is gone");
    }

    #[test]
    fn an_idle_client_holds_up_no_other() {
        let dir = tempfile::tempdir().unwrap();
        echo(dir.path());
        // A client that connects and says nothing.
        let _idle = UnixStream::connect(socket_path(dir.path())).unwrap();
        let (tx, rx) = mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(call(&path, &["images".into()]).unwrap());
        });
        let reply = rx.recv_timeout(Duration::from_secs(2)).expect("answered while the idle client waits");
        assert_eq!(reply.map(|r| r.stdout), Some("images".into()));
    }

    #[test]
    fn a_client_that_never_sends_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        echo(dir.path());
        let idle = UnixStream::connect(socket_path(dir.path())).unwrap();
        idle.set_read_timeout(Some(CLIENT_TIMEOUT * 3)).unwrap();
        let started = std::time::Instant::now();
        let mut got = String::new();
        // The node gives up on the request and answers what it read: nothing.
        BufReader::new(&idle).read_line(&mut got).unwrap();
        assert!(started.elapsed() < CLIENT_TIMEOUT * 2, "let go after {:?}", started.elapsed());
    }
}
