//! Uploads as the node's transport carries them (`p2p::transport`).
//!
//! # Model
//! * A pair of nodes shares one connection. Within a site it carries their
//!   uploads one after another, as a node starts a peer's next upload only
//!   once it counts the one before as sent
//!   ([`proto::swarm::UploadPolicy::per_peer`]), when that one's last bytes
//!   are already in the socket: an upload that starts while another to the
//!   same peer is on the wire waits behind it, holding its slot, and flows
//!   once that one has left. Uploads to another site are not held to
//!   `per_peer`, and run side by side as the connection's streams do.
//! * The node learns that an upload is sent, and frees its slot
//!   ([`proto::transfer::Host::handle_upload_done`]), once all but
//!   [`UNSENT_BYTES`] of it have left: the socket takes that much beyond
//!   what is on the wire. A chunk no larger counts as sent as it starts to
//!   flow; a larger one when its flow reaches its mark
//!   ([`crate::flows::Flows::set_mark`]).
//! * An upload that is aborted before it counted as sent (a broken link,
//!   a peer gone) counts as sent then, and so does every upload waiting
//!   behind it.

use proto::swarm::UNSENT_BYTES;

use super::{IMAGE, Sim};
use crate::flows::FlowId;

/// An upload waiting for the connection to its peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    to: u32,
    chunk: u32,
    bytes: u64,
}

impl Sim<'_> {
    /// Node `from` starts uploading `chunk` (`bytes` long) to `to`.
    pub(super) fn upload(&mut self, from: u32, to: u32, chunk: u32, bytes: u64) {
        // An upload waits only behind a flow to the same peer: when a flow
        // ends or is aborted, the uploads behind it go on or are dropped.
        if self.crossing(from, to).is_none() && self.flows.between(from, to) {
            self.nodes[from as usize].waiting.push(Waiting { to, chunk, bytes });
        } else {
            self.send_upload(from, Waiting { to, chunk, bytes });
        }
    }

    /// Puts an upload on the wire.
    fn send_upload(&mut self, from: u32, w: Waiting) {
        let cross = self.crossing(from, w.to);
        let id = self.flows.start(self.t, from, w.to, w.chunk, w.bytes, cross);
        if w.bytes <= u64::from(UNSENT_BYTES) {
            self.upload_sent(from, w.to, w.chunk);
        } else {
            self.flows.set_mark(self.t, id, u64::from(UNSENT_BYTES));
        }
    }

    /// The node learns that its upload of `chunk` to `to` is sent.
    fn upload_sent(&mut self, from: u32, to: u32, chunk: u32) {
        let now = self.now_us();
        self.nodes[from as usize].host.handle_upload_done(now, u64::from(to), IMAGE, chunk);
        self.dirty.push(from);
    }

    /// If flow `id` is due at its mark, the node counts its upload sent and
    /// this returns `true`; `false` means the flow is due at its end.
    pub(super) fn at_mark(&mut self, id: FlowId) -> bool {
        if !self.flows.pass_mark(self.t, id) {
            return false;
        }
        if let Some(f) = self.flows.get(id) {
            let (from, to, chunk) = (f.from, f.to, f.chunk);
            self.upload_sent(from, to, chunk);
        }
        true
    }

    /// The flow from `from` to `to` ended: the next upload waiting for
    /// that connection goes on the wire, unless a partition drops it (then
    /// it counts as sent, as a blocked upload does, and the next one goes).
    pub(super) fn next_upload(&mut self, from: u32, to: u32) {
        while let Some(i) = self.nodes[from as usize].waiting.iter().position(|w| w.to == to) {
            let w = self.nodes[from as usize].waiting.remove(i);
            if !self.serve_blocked(from, to) {
                return self.send_upload(from, w);
            }
            self.upload_sent(from, to, w.chunk);
        }
    }

    /// The flow from `from` to `to` was aborted, with the chunk it carried
    /// if that did not count as sent yet: every upload on the connection
    /// counts as sent.
    pub(super) fn drop_uploads(&mut self, from: u32, to: u32, aborted: Option<u32>) {
        if !self.presence[from as usize].alive {
            self.nodes[from as usize].waiting.retain(|w| w.to != to);
            return;
        }
        if let Some(chunk) = aborted {
            self.upload_sent(from, to, chunk);
        }
        let waiting = &mut self.nodes[from as usize].waiting;
        let dropped: Vec<u32> = waiting.iter().filter(|w| w.to == to).map(|w| w.chunk).collect();
        waiting.retain(|w| w.to != to);
        for chunk in dropped {
            self.upload_sent(from, to, chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::scenario::Scenario;
    use crate::sim::Options;

    /// One site: a master and `hosts` hosts, every link at 1 Gbit/s.
    fn scenario(hosts: u32) -> Scenario {
        Scenario::parse(&format!(
            r#"
name = "t"
seed = 1
image_size = "4MiB"
chunk_size = "1MiB"
[[site]]
name = "a"
hosts = {hosts}
host_up_gbit = 1.0
host_down_gbit = 1.0
masters = 1
master_up_gbit = 1.0
"#
        ))
        .unwrap()
    }

    /// What the flows do, in order: `(chunk, at its mark)` for each time one
    /// is due, delivering each that ends.
    fn drive(sim: &mut Sim<'_>) -> Vec<(u32, bool)> {
        let mut seen = Vec::new();
        while let Some((t, id)) = sim.flows.next_due() {
            sim.t = t;
            let chunk = sim.flows.get(id).unwrap().chunk;
            let mark = sim.at_mark(id);
            if !mark {
                sim.flow_done(id);
            }
            seen.push((chunk, mark));
        }
        seen
    }

    #[test]
    fn uploads_to_one_peer_go_one_after_another_and_count_as_sent_from_the_socket() {
        let s = scenario(2);
        let mut sim = Sim::build(&s, Options::default(), 1.0).unwrap();
        let (master, a, b) = (0, 1, 2);
        assert_eq!(sim.nodes[master].info.role, proto::swarm::Role::Master);
        let small = u64::from(UNSENT_BYTES);
        sim.upload(0, a, 0, 1 << 20);
        sim.upload(0, a, 1, 1 << 20);
        sim.upload(0, b, 2, small);
        // One flow per peer; the second chunk for `a` waits for the first.
        assert!(sim.flows.between(0, a) && sim.flows.between(0, b));
        assert_eq!(sim.flows.active(), 2);
        assert_eq!(sim.nodes[master].waiting.len(), 1);
        // A chunk the socket takes whole has no mark: it counted as sent
        // when it started. A larger one counts as sent at its mark, and the
        // next for the same peer flows only once it has arrived.
        assert_eq!(drive(&mut sim), [(2, false), (0, true), (0, false), (1, true), (1, false)]);
        assert!(sim.nodes[master].waiting.is_empty());
    }

    #[test]
    fn an_aborted_flow_takes_the_uploads_waiting_behind_it() {
        let s = scenario(1);
        let mut sim = Sim::build(&s, Options::default(), 1.0).unwrap();
        sim.upload(0, 1, 0, 1 << 20);
        sim.upload(0, 1, 1, 1 << 20);
        sim.abort_flows_between(0, 1);
        assert_eq!(sim.flows.active(), 0);
        assert!(sim.nodes[0].waiting.is_empty());
        assert!(drive(&mut sim).is_empty());
    }
}
