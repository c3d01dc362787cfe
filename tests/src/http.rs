//! A local HTTP server for data-plane tests, on 127.0.0.1 only.
//!
//! Each path serves fixed bytes with a [`Behaviour`]; every request is
//! recorded with its `Range` header and the bytes sent. The server stops when
//! the [`HttpServer`] is dropped.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Response, Server, StatusCode};

/// How a path misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Serves the bytes, honouring `Range`.
    Honest,
    /// Flips one byte in the middle.
    Corrupt,
    /// Stops halfway (and says so in Content-Length).
    Short,
    /// Appends extra bytes.
    Oversized(usize),
    /// Honours `Range` but sends at most this many bytes per second.
    Slow(usize),
    /// Ignores `Range` and always sends everything from the start.
    IgnoreRange,
    /// Honours `Range`, sends this many bytes of the body, then holds the
    /// rest until [`HttpServer::release`], or for [`HOLD_LIMIT`].
    Held(usize),
}

/// The longest a [`Behaviour::Held`] body waits for its release: longer than
/// the tests' read timeouts, so that a client that was not released times
/// out.
pub const HOLD_LIMIT: Duration = Duration::from_secs(8);

/// Opened once by [`HttpServer::release`].
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    /// Waits until the gate is open, or until `deadline`.
    fn wait(&self, deadline: std::time::Instant) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else { return };
            open = self.opened.wait_timeout(open, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path.
    pub path: String,
    /// The first byte asked for with `Range: bytes=N-`.
    pub range_start: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, (Vec<u8>, Behaviour)>,
    log: Vec<Request>,
    sent: HashMap<String, u64>,
    gate: Arc<Gate>,
}

/// A running server.
#[derive(Debug)]
pub struct HttpServer {
    base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts a server on an ephemeral loopback port.
    pub fn start() -> Self {
        Self::run(Server::http("127.0.0.1:0").expect("binding 127.0.0.1"), "http://127.0.0.1")
    }

    /// Starts an HTTPS server on an ephemeral loopback port, with this
    /// certificate and key (PEM). Its URLs name `localhost`.
    pub fn start_tls(certificate: Vec<u8>, private_key: Vec<u8>) -> Self {
        let tls = tiny_http::SslConfig { certificate, private_key };
        Self::run(Server::https("127.0.0.1:0", tls).expect("binding 127.0.0.1 with TLS"), "https://localhost")
    }

    /// Serves on `server`, whose URLs start with `origin` and its port.
    fn run(server: Server, origin: &str) -> Self {
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let base = format!("{origin}:{port}");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(50)) {
                    Ok(Some(req)) => {
                        let st = st.clone();
                        std::thread::spawn(move || answer(req, &st));
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        });
        Self { base, state, stop, thread: Some(thread) }
    }

    /// Serves `bytes` at `path` with `behaviour`; returns the URL.
    pub fn serve(&self, path: &str, bytes: Vec<u8>, behaviour: Behaviour) -> String {
        self.lock().routes.insert(path.to_owned(), (bytes, behaviour));
        format!("{}{path}", self.base)
    }

    /// Changes how `path` behaves from now on.
    pub fn set_behaviour(&self, path: &str, behaviour: Behaviour) {
        if let Some(route) = self.lock().routes.get_mut(path) {
            route.1 = behaviour;
        }
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().log.clone()
    }

    /// Lets every [`Behaviour::Held`] body, now and from now on, send the
    /// rest.
    pub fn release(&self) {
        let gate = self.lock().gate.clone();
        *gate.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        gate.opened.notify_all();
    }

    /// Body bytes sent for `path` so far.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.lock().sent.get(path).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(req: tiny_http::Request, state: &Arc<Mutex<State>>) {
    let path = req.url().to_owned();
    let range_start = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .and_then(|h| h.value.as_str().strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok());
    let route = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.log.push(Request { path: path.clone(), range_start });
        st.routes.get(&path).cloned()
    };
    let Some((bytes, behaviour)) = route else {
        let _ = req.respond(Response::empty(StatusCode(404)));
        return;
    };
    let (status, body, rate) = match behaviour {
        Behaviour::Honest | Behaviour::Slow(_) | Behaviour::Held(_) => {
            let rate = if let Behaviour::Slow(r) = behaviour { Some(r) } else { None };
            match range_start {
                Some(s) if (s as usize) < bytes.len() => (206, bytes[s as usize..].to_vec(), rate),
                _ => (200, bytes, rate),
            }
        }
        Behaviour::IgnoreRange => (200, bytes, None),
        Behaviour::Corrupt => {
            let mut b = bytes;
            let mid = b.len() / 2;
            if let Some(x) = b.get_mut(mid) {
                *x ^= 0xff;
            }
            (200, b, None)
        }
        Behaviour::Short => {
            let half = bytes.len() / 2;
            (200, bytes[..half].to_vec(), None)
        }
        Behaviour::Oversized(extra) => {
            let mut b = bytes;
            b.extend(std::iter::repeat_n(0x5a, extra));
            (200, b, None)
        }
    };
    let len = body.len();
    let hold = match behaviour {
        Behaviour::Held(head) => Some((head as u64, state.lock().unwrap_or_else(|p| p.into_inner()).gate.clone())),
        _ => None,
    };
    let reader = Counted {
        inner: io::Cursor::new(body),
        rate,
        hold,
        started: std::time::Instant::now(),
        sent: 0,
        path: path.clone(),
        state: state.clone(),
    };
    let mut headers: Vec<Header> = Header::from_bytes("Accept-Ranges", "bytes").into_iter().collect();
    if status == 206 {
        let s = range_start.unwrap_or(0);
        let total = s as usize + len;
        let value = format!("bytes {s}-{}/{total}", total.saturating_sub(1));
        headers.extend(Header::from_bytes("Content-Range", value));
    }
    let resp = Response::new(StatusCode(status), headers, reader, Some(len), None);
    let _ = req.respond(resp);
}

/// A body that counts what it sends, and can pace itself to a byte rate or
/// hold what follows its first bytes behind a gate.
struct Counted {
    inner: io::Cursor<Vec<u8>>,
    rate: Option<usize>,
    hold: Option<(u64, Arc<Gate>)>,
    started: std::time::Instant,
    sent: u64,
    path: String,
    state: Arc<Mutex<State>>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = buf;
        if let Some((head, gate)) = &self.hold {
            if self.sent >= *head {
                gate.wait(self.started + HOLD_LIMIT);
                self.hold = None;
            } else {
                let room = usize::try_from(head - self.sent).unwrap_or(usize::MAX).min(buf.len());
                buf = &mut buf[..room];
            }
        }
        let n = match self.rate {
            Some(rate) => {
                // Never get ahead of `rate` bytes per second since the start.
                let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                    std::thread::sleep(wait);
                }
                let slice = (rate / 50).max(1).min(buf.len());
                self.inner.read(&mut buf[..slice])?
            }
            None => self.inner.read(buf)?,
        };
        self.sent += n as u64;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *st.sent.entry(self.path.clone()).or_default() += n as u64;
        Ok(n)
    }
}
