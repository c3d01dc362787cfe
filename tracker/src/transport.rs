//! The libp2p transport every imageswarm process uses, and the protocol
//! names it speaks.
//!
//! # Contract
//! * TCP + Noise + Yamux always; QUIC in addition when asked. Yamux's
//!   receive window holds a whole chunk, so a 4 MiB response does not stall
//!   on window updates every 256 KiB.
//! * A process keeps its key (and so its peer id) in one file across
//!   restarts: [`load_or_create_key`].

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, identify, noise, tcp, yamux};

use crate::{Error, Result};

/// Chunks, manifests, hellos and swarm notices between nodes.
pub const PEER_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/peer/1");
/// Announcements to trackers.
pub const TRACKER_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/tracker/1");
/// Kademlia on a DHT of imageswarm processes only.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/imageswarm/kad/1");
/// What identify reports.
pub const AGENT: &str = concat!("imageswarm/", env!("CARGO_PKG_VERSION"));

/// Yamux tuned for bulk data.
pub fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    #[allow(deprecated)]
    {
        c.set_receive_window_size(16 << 20);
        c.set_max_buffer_size(16 << 20);
    }
    c.set_max_num_streams(512);
    c
}

/// identify as every imageswarm process runs it.
pub fn identify(key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new("/imageswarm/1".into(), key.public()).with_agent_version(AGENT.into()),
    )
}

/// Builds a swarm running `behaviour` on TCP + Noise + Yamux (and QUIC when
/// `quic`).
pub fn build_swarm<B: NetworkBehaviour>(
    key: Keypair,
    quic: bool,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<libp2p::Swarm<B>> {
    let net = |e: &dyn std::fmt::Display| Error::Net(format!("building the transport: {e}"));
    let builder = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux_config)
        .map_err(|e| net(&e))?;
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(120));
    let swarm = if quic {
        builder.with_quic().with_behaviour(|k| behaviour(k)).map_err(|e| net(&e))?.with_swarm_config(idle).build()
    } else {
        builder.with_behaviour(|k| behaviour(k)).map_err(|e| net(&e))?.with_swarm_config(idle).build()
    };
    Ok(swarm)
}

/// Loads a key from `path` (libp2p protobuf encoding), creating it when
/// missing.
pub fn load_or_create_key(path: &std::path::Path) -> Result<Keypair> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| Error::Key(format!("{}: not a libp2p key: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| Error::Key(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| Error::Key(format!("writing {}: {e}", path.display())))?;
            Ok(key)
        }
        Err(e) => Err(Error::Key(format!("reading {}: {e}", path.display()))),
    }
}
