//! A whole swarm site in one process on 127.0.0.1: the endorser's HTTP
//! source, a tracker, a master and workers (each a real node with its own
//! data directory), and a lying peer.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use node::demo::Demo;
use node::net::{self, BehaviourEvent, Client, ImageStatus, Membership, NodeConfig};
use p2p::tracker::{Tracker, TrackerConfig};
use proto::manifest::ChunkSize;
use proto::swarm::Role;
use proto::wire::{Admission, Admit, Announce, Hello, Notice, Refusal, Request, Response, WireBitfield};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub(crate) mod federation;

/// Upper bound on any wait in these tests.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// A running node.
pub(crate) struct Running {
    pub(crate) client: Client,
    /// The host's store and cache, shared with the node (as its control
    /// socket shares them).
    host: Option<std::sync::Arc<node::site::Site>>,
    pub(crate) task: JoinHandle<node::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The site holds a blocking HTTP client, which must not be dropped
        // on a runtime thread.
        if let Some(host) = self.host.take() {
            std::thread::spawn(move || drop(host));
        }
    }
}

/// Publishes the demo's list again without imageswarm's fields, signed
/// with `openssl smime -sign` by the demo's endorser.
fn publish_plain(demo: &Demo) -> anyhow::Result<()> {
    let pki = demo.root.join("pki");
    let mut list: serde_json::Value = serde_json::from_slice(&std::fs::read(pki.join("list.json"))?)?;
    for entry in list["hv:imagelist"]["hv:images"].as_array_mut().context("no images")? {
        let image = entry["hv:image"].as_object_mut().context("not an image")?;
        image.retain(|k, _| !k.starts_with("imageswarm:"));
    }
    let args: Vec<String> = ["smime", "-sign", "-signer", "endorser.pem", "-inkey", "endorser.key"]
        .iter()
        .map(|a| {
            if a.ends_with(".pem") || a.ends_with(".key") { pki.join(a).display().to_string() } else { (*a).to_owned() }
        })
        .collect();
    let signed = testkit::openssl(&args, &serde_json::to_vec_pretty(&list)?)?;
    std::fs::write(demo.www.join("list.smime"), signed)?;
    Ok(())
}

/// Whether a site is closed, and how its workers are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    No,
    Yes,
    BareWorkers,
    /// Closed, with a list of plain HEPiX fields (no manifest root) signed
    /// by the `openssl smime` command, as other tools make them.
    PlainList,
}

/// A site on loopback.
pub(crate) struct Site {
    pub(crate) demo: Demo,
    /// The HTTP source's base URL (`http://127.0.0.1:PORT`), serving
    /// `demo.www`.
    pub(crate) source: String,
    pub(crate) tracker: Vec<Multiaddr>,
    tracker_task: Option<JoinHandle<()>>,
    pub(crate) nodes: Vec<Option<Running>>,
    /// Each node's membership of the closed site (`None`: an open site).
    pub(crate) members: Option<Vec<Membership>>,
    _dir: tempfile::TempDir,
}

impl Site {
    /// Prepares a master and `workers` workers for an image of `size` bytes
    /// in chunks of `chunk` bytes, and starts the tracker (nodes start with
    /// [`Site::start`]).
    pub(crate) async fn new(workers: usize, size: u64, chunk: u64) -> anyhow::Result<Self> {
        Self::build(workers, size, chunk, Closed::No).await
    }

    /// [`Site::new`] for a closed site: the tracker and every node admit
    /// only holders of the demo site's credentials.
    pub(crate) async fn closed(workers: usize, size: u64, chunk: u64) -> anyhow::Result<Self> {
        Self::build(workers, size, chunk, Closed::Yes).await
    }

    /// [`Site::closed`] with workers that only trust the CA: they take
    /// their endorsers and subscriptions from the site policy.
    pub(crate) async fn closed_bare(workers: usize, size: u64, chunk: u64) -> anyhow::Result<Self> {
        Self::build(workers, size, chunk, Closed::BareWorkers).await
    }

    /// [`Site::closed`] whose list carries plain HEPiX fields only, signed
    /// by the `openssl smime` command: the master attests to the root.
    pub(crate) async fn closed_plain(workers: usize, size: u64, chunk: u64) -> anyhow::Result<Self> {
        Self::build(workers, size, chunk, Closed::PlainList).await
    }

    async fn build(workers: usize, size: u64, chunk: u64, closed: Closed) -> anyhow::Result<Self> {
        trace_from_env();
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        let (demo, source) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Demo, String)> {
            let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("{e}"))?;
            let port = server.server_addr().to_ip().context("address")?.port();
            let base = format!("http://127.0.0.1:{port}");
            let demo = Demo::prepare(&root, workers, size, ChunkSize::new(chunk)?, &base)?;
            demo.serve_source(server)?;
            if closed == Closed::PlainList {
                publish_plain(&demo)?;
            }
            demo.init_hosts_with(&format!("{base}/list.smime"), closed == Closed::BareWorkers)?;
            Ok((demo, base))
        })
        .await??;
        let mut tcfg = TrackerConfig::loopback(Duration::from_secs(30));
        let members = if closed != Closed::No {
            tcfg.site_cas = Some(demo.site_cas()?);
            Some((0..=workers).map(|i| demo.membership(i)).collect::<node::Result<Vec<_>>>()?)
        } else {
            None
        };
        let mut t = Tracker::new(tcfg)?;
        let tracker = t.listen_addrs().await;
        let tracker_task = Some(tokio::spawn(t.run()));
        let nodes = (0..=workers).map(|_| None).collect();
        Ok(Self { demo, source, tracker, tracker_task, nodes, members, _dir: dir })
    }

    /// The configuration node `i` (0 is the master) starts with.
    pub(crate) fn config(&self, i: usize) -> NodeConfig {
        let mut c = NodeConfig::new(self.demo.data_dirs[i].clone(), "loop".into());
        if let Some(m) = &self.members {
            c.site = node::demo::SITE.into();
            c.membership = m[i].clone();
        }
        c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        c.trackers.clone_from(&self.tracker);
        c.master = i == 0;
        c.announce_interval = Duration::from_secs(1);
        c
    }

    /// Starts node `i` with `cfg`.
    pub(crate) async fn start_with(&mut self, i: usize, cfg: NodeConfig) -> anyhow::Result<()> {
        let dir = cfg.data_dir.clone();
        let host = tokio::task::spawn_blocking(move || node::site::Site::open(&dir, node::fetch::Timeouts::default()))
            .await??;
        let host = std::sync::Arc::new(host);
        let (client, task) = net::start_on(cfg, host.clone()).await?;
        self.nodes[i] = Some(Running { client, host: Some(host), task });
        Ok(())
    }

    /// Node `i`'s store and cache.
    pub(crate) fn host(&self, i: usize) -> &node::site::Site {
        self.nodes[i].as_ref().and_then(|r| r.host.as_deref()).expect("node running")
    }

    /// Starts every node (the master first) with its default configuration.
    pub(crate) async fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i).await?;
        }
        Ok(())
    }

    /// Node `i`'s configuration, admitting also the members of the site
    /// whose authority is `other`.
    pub(crate) fn config_trusting(&self, i: usize, other: &node::authority::SiteDir) -> anyhow::Result<NodeConfig> {
        let mut c = self.config(i);
        if let Membership::Closed { cas, .. } = &mut c.membership {
            cas.add_ca(&std::fs::read(other.ca())?)?;
        }
        Ok(c)
    }

    /// Starts node `i` with its default configuration.
    pub(crate) async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_with(i, self.config(i)).await
    }

    /// Stops node `i`.
    pub(crate) async fn stop(&mut self, i: usize) {
        if let Some(mut r) = self.nodes[i].take() {
            r.client.shutdown().await;
            let _ = (&mut r.task).await;
        }
    }

    /// Kills node `i` abruptly, as `kill -9` would: its connections drop
    /// with no goodbye, whatever it was sending.
    pub(crate) async fn kill(&mut self, i: usize) {
        if let Some(mut r) = self.nodes[i].take() {
            r.task.abort();
            let _ = (&mut r.task).await;
        }
    }

    /// Points node `i`'s subscription at `url` (the node is not running).
    pub(crate) async fn set_list_url(&self, i: usize, url: &str) -> anyhow::Result<()> {
        let (dir, url) = (self.demo.data_dirs[i].clone(), url.to_owned());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let store = node::store::Store::open(&dir)?;
            let mut sub = store.subscriptions()?.remove(0);
            sub.url = url;
            store.put_subscription(&sub)?;
            Ok(())
        })
        .await?
    }

    /// Kills the tracker.
    pub(crate) async fn kill_tracker(&mut self) {
        if let Some(t) = self.tracker_task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// The `hv:uuid` of the demo's list.
    pub(crate) fn list_identifier(&self) -> Uuid {
        let json = std::fs::read(self.demo.root.join("pki/list.json")).unwrap();
        proto::imagelist::ImageList::from_json(&json).unwrap().identifier
    }

    /// The image's name on the wire ([`proto::wire::content_id`]).
    pub(crate) fn wire_image(&self) -> Uuid {
        proto::wire::content_id(self.demo.image, &self.demo.manifest_root)
    }

    /// Node `i`'s client.
    pub(crate) fn client(&self, i: usize) -> &Client {
        &self.nodes[i].as_ref().expect("node running").client
    }

    /// Node `i`'s view of the image, if it swarms on it.
    pub(crate) fn image(&self, i: usize) -> Option<ImageStatus> {
        self.client(i).status().images.into_iter().find(|m| m.uuid == self.demo.image)
    }

    /// Waits until `done` holds or [`PATIENCE`] runs out.
    pub(crate) async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) -> anyhow::Result<()> {
        let started = Instant::now();
        while !done(self) {
            if started.elapsed() > PATIENCE {
                bail!("gave up waiting for {what} after {PATIENCE:?}: {}", self.describe());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until every running worker holds the image.
    pub(crate) async fn until_workers_complete(&self) -> anyhow::Result<()> {
        self.until("every worker to complete", |s| {
            (1..s.nodes.len()).all(|i| s.nodes[i].is_none() || s.image(i).is_some_and(|m| m.available))
        })
        .await
    }

    /// Where node `i` keeps the complete image.
    pub(crate) fn image_path(&self, i: usize) -> PathBuf {
        node::store::Paths::new(&self.demo.data_dirs[i]).image(self.demo.image)
    }

    /// Whether node `i` holds the image with the list's SHA-512.
    pub(crate) fn holds_verified(&self, i: usize) -> bool {
        node::cache::sha512_file(&self.image_path(i)).is_ok_and(|h| hex::encode(h) == self.demo.sha512)
    }

    fn describe(&self) -> String {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .map(|i| match self.image(i) {
                Some(m) => format!("node {i}: {}/{} chunks, {} peers", m.have, m.chunks, m.peers),
                None => format!("node {i}: not swarming"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Logs what `RUST_LOG` asks for to the test's output (shown when it fails).
pub(crate) fn trace_from_env() {
    let filter = tracing_subscriber::EnvFilter::from_default_env();
    // Another test in the same binary may have set it up already.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// The body of `GET /metrics` at `addr`.
pub(crate) fn http_get(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The sum over the lines of metric `metric` (with labels) served at
/// `addr`, of those whose labels contain `label` when one is given.
pub(crate) fn metric(addr: std::net::SocketAddr, metric: &str, label: Option<&str>) -> anyhow::Result<u64> {
    Ok(http_get(addr)?
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| label.is_none_or(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// How the lying peer lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lie {
    /// Answer chunk requests with bytes of the right length that are not
    /// the chunk.
    CorruptChunks,
    /// The same, and the peer's bitfield overtakes its hello: it goes out on
    /// the notice stream as soon as a node connects, and the node's hello
    /// is answered 300 ms later with a hello that names no image (as a
    /// peer's hello from before it swarmed on the image would).
    BitfieldBeforeHello,
    /// Never finish sending a chunk: each request is held open and never
    /// answered, as by a peer that trickles slower than any floor.
    Silent,
}

/// A peer that claims to hold every chunk of `image` (named `wire` on the
/// wire) and lies about them.
/// Returns its address and a task that runs it.
pub(crate) async fn liar(
    image: Uuid,
    wire: Uuid,
    chunks: u32,
    chunk_len: usize,
    tracker: Vec<Multiaddr>,
    lie: Lie,
) -> anyhow::Result<(PeerId, JoinHandle<u64>)> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = net::build_swarm(key, false, net::Limits::default(), false)?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let me = *swarm.local_peer_id();
    while swarm.listeners().next().is_none() {
        swarm.select_next_some().await;
    }
    let addrs: Vec<Vec<u8>> = swarm.listeners().map(|a| a.to_vec()).collect();
    let full = WireBitfield::new(&proto::bitfield::Bitfield::full(chunks));
    let early = lie == Lie::BitfieldBeforeHello;
    let images = if early { vec![] } else { vec![(wire, full.clone())] };
    let hello = Hello { site: "loop".into(), role: Role::Worker, images, lists: vec![] };
    let control = swarm.behaviour().notices.new_control();
    let task = tokio::spawn(async move {
        let mut served = 0u64;
        let mut next_announce = Instant::now();
        let mut hellos_due: Vec<(Instant, request_response::ResponseChannel<Response>)> = Vec::new();
        // Held open: a dropped channel would end the stream at once.
        let mut never_answered = Vec::new();
        loop {
            let now = Instant::now();
            let due;
            (due, hellos_due) = std::mem::take(&mut hellos_due).into_iter().partition(|(t, _)| *t <= now);
            for (_, ch) in due {
                let _ = swarm.behaviour_mut().peer.send_response(ch, Response::Hello(hello.clone()));
            }
            if Instant::now() >= next_announce {
                next_announce = Instant::now() + Duration::from_millis(500);
                for a in &tracker {
                    let p = net::peer_of(a).unwrap();
                    swarm.add_peer_address(p, a.clone());
                    let ann = Announce {
                        image,
                        site: "loop".into(),
                        role: Role::Worker,
                        complete: true,
                        addrs: addrs.clone(),
                        want: 0,
                    };
                    swarm.behaviour_mut().tracker.send_request(&p, ann);
                }
            }
            let ev = tokio::time::timeout(Duration::from_millis(100), swarm.select_next_some()).await;
            if let Ok(SwarmEvent::ConnectionEstablished { peer_id, .. }) = ev
                && early
            {
                let (mut control, frame) = (control.clone(), vec![(wire, Notice::Bitfield(full.clone()))]);
                tokio::spawn(async move {
                    let Ok(mut stream) = control.open_stream(peer_id, p2p::transport::NOTICE_PROTOCOL).await else {
                        return;
                    };
                    let _ = p2p::codec::write_frame(&mut stream, &frame).await;
                    // Open for as long as the test runs.
                    std::future::pending::<()>().await;
                });
                continue;
            }
            let Ok(SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            }))) = ev
            else {
                continue;
            };
            let resp = match request {
                Request::Hello(_) if early => {
                    hellos_due.push((Instant::now() + Duration::from_millis(300), channel));
                    continue;
                }
                Request::Hello(_) => Response::Hello(hello.clone()),
                Request::Manifest { .. } | Request::Attestation { .. } | Request::List { .. } => {
                    Response::Refused(Refusal::NotHeld)
                }
                Request::Chunk { .. } if lie == Lie::Silent => {
                    never_answered.push(channel);
                    continue;
                }
                Request::Chunk { index, .. } => {
                    served += 1;
                    Response::Chunk(vec![(index as u8) ^ 0x5a; chunk_len].into())
                }
            };
            let _ = swarm.behaviour_mut().peer.send_response(channel, resp);
            if served > 10_000 {
                return served;
            }
        }
    });
    Ok((me, task))
}

/// Sends `req` to the node at `addr` from a fresh peer and returns the answer.
pub(crate) async fn ask(addr: Multiaddr, req: Request) -> anyhow::Result<Response> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = net::build_swarm(key, false, net::Limits::default(), false)?;
    let peer = net::peer_of(&addr).context("address without /p2p")?;
    swarm.add_peer_address(peer, addr);
    let id = swarm.behaviour_mut().peer.send_request(&peer, req);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ev = tokio::time::timeout(Duration::from_millis(200), swarm.select_next_some()).await;
        match ev {
            Ok(SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            }))) if request_id == id => return Ok(response),
            Ok(SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::Message {
                message: request_response::Message::Request { request: Request::Hello(_), channel, .. },
                ..
            }))) => {
                let hello = Hello { site: "elsewhere".into(), role: Role::Worker, images: vec![], lists: vec![] };
                let _ = swarm.behaviour_mut().peer.send_response(channel, Response::Hello(hello));
            }
            Ok(SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::OutboundFailure {
                error, ..
            }))) => bail!("request failed: {error}"),
            _ => {}
        }
    }
    bail!("no answer within 20 s")
}

/// A site authority of its own, "elsewhere", in a directory that lives as
/// long as the returned guard.
pub(crate) fn another_site() -> anyhow::Result<(tempfile::TempDir, node::authority::SiteDir)> {
    let dir = tempfile::tempdir()?;
    let other = node::authority::SiteDir::new(dir.path());
    node::authority::init(&other, "elsewhere", 30, node::now())?;
    Ok((dir, other))
}

/// A fresh key and its admit, with a credential of `role` from the site
/// authority at `dir`.
pub(crate) fn credentialed(dir: &node::authority::SiteDir, role: Role) -> (libp2p::identity::Keypair, Admit) {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let raw = p2p::admission::ed25519_key(&peer).expect("an Ed25519 key");
    let credential = node::authority::issue(dir, &peer.to_string(), &raw, role, 1, node::now()).expect("issued");
    (key, Admit { credential, crls: vec![], policy: None })
}

/// What a probing peer got from a node or a tracker.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    /// The answer to its admit.
    pub(crate) admission: Option<Admission>,
    /// Answers to its peer requests.
    pub(crate) answers: Vec<Response>,
    /// Peers a tracker named to it.
    pub(crate) peers: usize,
    /// How long after connecting the other side closed the connection.
    pub(crate) closed_after: Option<Duration>,
}

/// Connects to `target` as `key`, sends `admit` (if any) and admits the
/// target in turn, sends `requests` and `announce` (if any) a second later
/// whatever the answer, as an intruder would, and records what comes back
/// until everything is answered, the connection closes or 20 s pass.
pub(crate) async fn probe(
    target: Multiaddr,
    key: libp2p::identity::Keypair,
    admit: Option<Admit>,
    requests: Vec<Request>,
    announce: Option<Announce>,
) -> anyhow::Result<Probe> {
    probe_offering(target, key, admit, requests, announce, None).await
}

/// [`probe`] that also answers every request for an attestation with
/// `attestation`, and stays until the target closes the connection or 20 s
/// pass.
pub(crate) async fn probe_offering(
    target: Multiaddr,
    key: libp2p::identity::Keypair,
    admit: Option<Admit>,
    requests: Vec<Request>,
    announce: Option<Announce>,
    attestation: Option<Vec<u8>>,
) -> anyhow::Result<Probe> {
    let mut swarm = net::build_swarm(key, false, net::Limits::default(), false)?;
    let peer = net::peer_of(&target).context("address without /p2p")?;
    swarm.dial(target)?;
    let mut out = Probe::default();
    let mut connected: Option<Instant> = None;
    let mut asked = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tracker_answered = false;
    while Instant::now() < deadline {
        if asked
            && attestation.is_none()
            && out.answers.len() == requests.len()
            && (announce.is_none() || tracker_answered)
        {
            break;
        }
        if !asked && connected.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            asked = true;
            let b = swarm.behaviour_mut();
            for r in &requests {
                b.peer.send_request(&peer, r.clone());
            }
            if let Some(a) = announce.clone() {
                b.tracker.send_request(&peer, a);
            }
        }
        let Ok(ev) = tokio::time::timeout(Duration::from_millis(100), swarm.select_next_some()).await else { continue };
        match ev {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer && connected.is_none() => {
                connected = Some(Instant::now());
                if let Some(a) = admit.clone() {
                    swarm.behaviour_mut().admit.send_request(&peer, a);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Admit(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) if admit.is_some() => {
                let _ = swarm
                    .behaviour_mut()
                    .admit
                    .send_response(channel, Admission::Admitted { crls: vec![], policy: None });
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } if peer_id == peer => {
                out.closed_after = connected.map(|t| t.elapsed());
                break;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Admit(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => out.admission = Some(response),
            SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) => {
                let answer = match (request, &attestation) {
                    (Request::Attestation { .. }, Some(a)) => Response::Attestation(a.clone()),
                    (Request::Hello(_), _) => Response::Hello(Hello {
                        site: node::demo::SITE.into(),
                        role: Role::Master,
                        images: vec![],
                        lists: vec![],
                    }),
                    _ => Response::Refused(Refusal::NotHeld),
                };
                let _ = swarm.behaviour_mut().peer.send_response(channel, answer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => out.answers.push(response),
            SwarmEvent::Behaviour(BehaviourEvent::Tracker(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                tracker_answered = true;
                out.peers += response.peers.len();
            }
            _ => {}
        }
    }
    Ok(out)
}
