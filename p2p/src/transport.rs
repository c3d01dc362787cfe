//! The libp2p transport every imageswarm process uses, and the protocol
//! names it speaks.
//!
//! # Contract
//! * TCP + Noise + Yamux always; QUIC in addition when asked.
//! * Over TCP, data waits in the sending process, not in socket buffers:
//!   yamux 0.13 (libp2p's default; any setter on `yamux::Config` selects
//!   0.12, which queues without limit) writes to the socket only when it can
//!   take more, and on Linux each TCP socket holds at most [`UNSENT_BYTES`]
//!   not yet sent. So a response counts as sent about when it has left the
//!   host, and a node's upload slots decide who gets its uplink. (QUIC
//!   keeps its own send buffers.) Otherwise the kernel buffers several MiB
//!   per connection, an upload counts as sent while most of it still waits
//!   there, and a master starts dozens of chunks at once, each at a sliver
//!   of its link (docs/BENCHMARKS.md has the measurements).
//! * Every process refuses new connections while its memory is above a
//!   limit ([`memory_limit`]).
//! * Dialling or accepting a TCP connection, with its Noise handshake and
//!   yamux set-up, gives up after [`UPGRADE_TIMEOUT`].
//! * A process keeps its key (and so its peer id) in one file across
//!   restarts: [`load_or_create_key`]. The file is created readable by its
//!   owner only, and is complete on disk before it takes its name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use libp2p::core::Transport;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, identify, kad, noise, tcp};

use crate::{Error, Result};

/// Chunks, manifests and hellos between nodes.
pub const PEER_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/peer/2");
/// Swarm notices between nodes: one long-lived stream each way per peer.
pub const NOTICE_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/notice/1");
/// Credentials, first on every connection in a closed site.
pub const ADMIT_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/admit/1");
/// Announcements to trackers.
pub const TRACKER_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/tracker/1");
/// Kademlia on a DHT of imageswarm processes only.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/kad/1");
/// What identify reports.
pub const AGENT: &str = concat!("imageswarm/", env!("CARGO_PKG_VERSION"));

/// The most bytes a TCP socket holds that it has not sent yet
/// (`TCP_NOTSENT_LOWAT`); on top of them, only what is in flight. The
/// swarm's own figure ([`proto::swarm::UNSENT_BYTES`]), which netsim models.
pub const UNSENT_BYTES: u32 = proto::swarm::UNSENT_BYTES;

/// How long a new TCP connection may take to be ready for streams.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Caps the unsent bytes a socket holds. Where the option is missing (other
/// systems, or refused) the connection works with the kernel's buffers.
fn limit_unsent(stream: &tcp::tokio::TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(&stream.0).set_tcp_notsent_lowat(UNSENT_BYTES) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// Denies new connections, both ways, while the process holds more than
/// `max_bytes` of memory, so that a flood of peers cannot take a host's
/// memory: the connections it has keep working.
pub fn memory_limit(max_bytes: usize) -> libp2p::memory_connection_limits::Behaviour {
    libp2p::memory_connection_limits::Behaviour::with_max_bytes(max_bytes)
}

/// identify as every imageswarm process runs it.
pub fn identify(key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new("/imageswarm/1".into(), key.public()).with_agent_version(AGENT.into()),
    )
}

/// The Kademlia behaviour every imageswarm process runs, in server mode;
/// nodes bootstrap periodically, trackers (which start alone) do not.
pub fn kademlia(key: &Keypair, bootstrap: bool) -> kad::Behaviour<kad::store::MemoryStore> {
    let id = key.public().to_peer_id();
    let mut cfg = kad::Config::new(KAD_PROTOCOL);
    cfg.set_provider_publication_interval(Some(Duration::from_secs(60)));
    cfg.set_periodic_bootstrap_interval(bootstrap.then_some(Duration::from_secs(60)));
    let mut kad = kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), cfg);
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// Builds a swarm running `behaviour` on TCP + Noise + Yamux (and QUIC when
/// `quic`).
pub fn build_swarm<B: NetworkBehaviour>(
    key: Keypair,
    quic: bool,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<libp2p::Swarm<B>> {
    let net = |e: &dyn std::fmt::Display| Error::Net(format!("building the transport: {e}"));
    let tcp = |key: &Keypair| -> std::result::Result<_, Box<dyn std::error::Error + Send + Sync>> {
        Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .map(|stream, _| {
                limit_unsent(&stream);
                stream
            })
            .upgrade(Version::V1Lazy)
            .authenticate(noise::Config::new(key)?)
            .multiplex(crate::coalesce::Yamux::default())
            .timeout(UPGRADE_TIMEOUT))
    };
    let builder = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    let swarm = if quic {
        let b = builder.with_quic().with_other_transport(tcp).map_err(|e| net(&e))?;
        b.with_behaviour(|k| behaviour(k)).map_err(|e| net(&e))?.with_swarm_config(idle).build()
    } else {
        let b = builder.with_other_transport(tcp).map_err(|e| net(&e))?;
        b.with_behaviour(|k| behaviour(k)).map_err(|e| net(&e))?.with_swarm_config(idle).build()
    };
    Ok(swarm)
}

/// Loads a key from `path` (libp2p protobuf encoding), creating it when
/// missing. A key that others than its owner may read is used, with a
/// warning: anyone who reads it can act as this peer.
pub fn load_or_create_key(path: &Path) -> Result<Keypair> {
    match File::open(path) {
        Ok(mut f) => {
            let mode = f.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by others than its owner (mode {:o}); `chmod 600` it",
                    path.display(),
                    mode & 0o777
                );
            }
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map_err(|e| Error::Key(format!("reading {}: {e}", path.display())))?;
            Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| Error::Key(format!("{}: not a libp2p key: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| Error::Key(e.to_string()))?;
            write_private(path, &bytes).map_err(|e| Error::Key(format!("writing {}: {e}", path.display())))?;
            Ok(key)
        }
        Err(e) => Err(Error::Key(format!("reading {}: {e}", path.display()))),
    }
}

/// Writes a new file of mode 0600 under a temporary name, syncs it, and
/// renames it to `path`, syncing the directory: a crash leaves no key or
/// the whole key, never an empty file that would stop the next start.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Inbound connections in their handshake at once: beyond, new ones are
/// refused until some finish (a flood of half-open connections holds no
/// more).
pub const MAX_PENDING_INCOMING: u32 = 128;

/// The IP address an address starts with, if any.
pub fn ip_of(addr: &libp2p::Multiaddr) -> Option<std::net::IpAddr> {
    match addr.iter().next()? {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// The first `/p2p/<id>` in an address.
pub fn peer_of(addr: &libp2p::Multiaddr) -> Option<libp2p::PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn tcp_sockets_hold_little_unsent_data() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (dialed, _accepted) = (tcp::tokio::TcpStream(dialed.unwrap()), accepted.unwrap());
        let sock = socket2::SockRef::from(&dialed.0);
        sock.set_tcp_notsent_lowat(u32::MAX).unwrap();
        limit_unsent(&dialed);
        assert_eq!(sock.tcp_notsent_lowat().unwrap(), UNSENT_BYTES);
    }

    #[test]
    fn a_new_key_is_private_and_the_same_on_the_next_start() {
        let dir = std::env::temp_dir().join(format!("imageswarm-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let first = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file's mode");
        assert!(!path.with_extension("tmp").exists(), "no temporary file is left");
        let again = load_or_create_key(&path).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        std::fs::write(&path, b"not a key").unwrap();
        let err = load_or_create_key(&path).unwrap_err().to_string();
        assert!(err.contains("not a libp2p key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
