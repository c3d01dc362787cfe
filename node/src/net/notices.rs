//! Swarm notices (bitfields, haves, cancels) on one long-lived stream per
//! peer and direction.
//!
//! # Contract
//! * [`Notices::send`] queues a notice for a connected peer. The first
//!   notice for a connection opens its stream ([`NOTICE_PROTOCOL`]); every
//!   later one follows on the same stream, in order. Whatever waits while a
//!   frame is being written goes out together in the next
//!   [`NoticeFrame`]: under load a node sends fewer, larger frames, and no
//!   notice waits for an answer.
//! * Each peer's queue is bounded ([`QUEUE`]). A full queue means the peer
//!   has not read its notices for that long; `send` reports it and the
//!   event loop drops the connection (a new one starts over with hellos).
//! * Notices are advice: they steer which peer is asked for what, never
//!   what is accepted (every chunk is checked against the manifest). A
//!   stream that breaks, or cannot be opened for any reason but the peer
//!   not speaking the protocol, is reported as [`Inbound::Broken`]. What
//!   was queued on it is lost, so the event loop calls [`Notices::reopen`]
//!   and sends the peer a fresh bitfield of every image (a bitfield replaces
//!   what the peer knew), or drops the connection after [`STREAMS`] broken
//!   streams. A peer that does not speak the protocol hears no notices.
//!   [`Notices::forget`] ends a closed connection's queue.
//! * Inbound, each stream a peer opens is read by a task of its own, at most
//!   [`READERS`] at once and [`READERS_PER_PEER`] from one peer (more are
//!   dropped unread); frames reach the event loop through one bounded
//!   channel ([`INBOX`]), so a peer that floods waits on its own stream's
//!   flow control. A frame that is over [`Limit::Control`] or does not
//!   decode ends that stream.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::{Control, OpenStreamError};
use p2p::codec::{read_frame, write_frame};
use p2p::transport::NOTICE_PROTOCOL;
use proto::wire::{Limit, Notice, NoticeFrame};
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

/// Notices waiting for one peer at most.
pub(super) const QUEUE: usize = 4096;

/// Received frames waiting for the event loop at most.
pub(super) const INBOX: usize = 256;

/// Inbound notice streams read at once at most (one per connected peer is
/// the norm).
pub(super) const READERS: usize = 1024;

/// Inbound notice streams read at once from one peer at most: one, and one
/// that replaces it after a break (the old one may not have ended yet).
pub(super) const READERS_PER_PEER: usize = 2;

/// Notice streams one connection may break before it is dropped.
pub(super) const STREAMS: u32 = 3;

/// A frame's encoded size stays under this, well within [`Limit::Control`].
const FRAME_BYTES: usize = 1 << 20;

/// A bound on one notice's encoded size with its image.
fn encoded_bound(n: &Notice) -> usize {
    32 + match n {
        Notice::Bitfield(b) => b.bytes.len(),
        Notice::Have(_) | Notice::Cancel(_) => 0,
    }
}

/// The peer's queue is full: it has not read its notices for too long.
#[derive(Debug)]
pub(super) struct Full;

/// What reaches the event loop.
#[derive(Debug)]
pub(super) enum Inbound {
    /// Notices from a peer, oldest first.
    Frame(PeerId, NoticeFrame),
    /// The stream to the connection with this handle broke, and the notices
    /// queued on it are lost.
    Broken(u64),
}

/// What became of a broken stream's queue.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reopened {
    /// A new stream takes the notices sent from now on.
    Yes,
    /// The connection broke [`STREAMS`] streams already.
    TooOften,
    /// The connection is gone.
    Gone,
}

/// One connection's queue.
struct Queue {
    peer: PeerId,
    tx: mpsc::Sender<(Uuid, Notice)>,
    /// Streams opened for this connection.
    streams: u32,
}

/// The outbound side: one queue and writer task per connection.
pub(super) struct Notices {
    control: Control,
    /// By the event loop's peer handle, which is new for every connection.
    queues: HashMap<u64, Queue>,
    /// Where writers report broken streams.
    inbox: mpsc::Sender<Inbound>,
}

impl Notices {
    /// Starts accepting peers' notice streams; their frames arrive on the
    /// returned receiver. Must run inside the tokio runtime.
    pub(super) fn start(mut control: Control) -> (Self, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(INBOX);
        let inbox = tx.clone();
        match control.accept(NOTICE_PROTOCOL) {
            Ok(incoming) => {
                let readers = Arc::new(Semaphore::new(READERS));
                let per_peer: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
                tokio::spawn(incoming.for_each(move |(peer, stream)| {
                    let Some(mine) = PeerReader::take(&per_peer, peer) else {
                        tracing::debug!(%peer, "too many notice streams from this peer: one dropped");
                        return std::future::ready(());
                    };
                    match readers.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                read(peer, stream, tx).await;
                                drop((permit, mine));
                            });
                        }
                        Err(_) => tracing::debug!(%peer, "too many notice streams: one dropped"),
                    }
                    std::future::ready(())
                }));
            }
            // Only one caller registers the protocol, once.
            Err(e) => tracing::error!(error = %e, "notice streams not accepted"),
        }
        (Self { control, queues: HashMap::new(), inbox }, rx)
    }

    /// Queues `notice` about `image` for connected peer `peer` (handle `h`).
    pub(super) fn send(&mut self, h: u64, peer: PeerId, image: Uuid, notice: Notice) -> Result<(), Full> {
        let queue = self.queues.entry(h).or_insert_with(|| Queue {
            peer,
            tx: writer(&self.control, &self.inbox, h, peer),
            streams: 1,
        });
        match queue.tx.try_send((image, notice)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Full),
            // The writer ended: the peer does not speak the protocol, or the
            // stream broke and the event loop hears of it.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Gives connection `h`, whose stream broke, a new stream for what is
    /// sent from now on.
    pub(super) fn reopen(&mut self, h: u64) -> Reopened {
        let Some(q) = self.queues.get_mut(&h) else { return Reopened::Gone };
        if q.streams >= STREAMS {
            return Reopened::TooOften;
        }
        q.tx = writer(&self.control, &self.inbox, h, q.peer);
        q.streams += 1;
        Reopened::Yes
    }

    /// Ends the queue of a connection that closed.
    pub(super) fn forget(&mut self, h: u64) {
        self.queues.remove(&h);
    }
}

/// A queue for connection `h` with a new writer task, which opens a stream
/// of its own and reports to `inbox` if it breaks.
fn writer(control: &Control, inbox: &mpsc::Sender<Inbound>, h: u64, peer: PeerId) -> mpsc::Sender<(Uuid, Notice)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(write(control.clone(), h, peer, rx, inbox.clone()));
    tx
}

/// Writes one connection's notices until its queue ends or the stream
/// breaks, which it reports.
async fn write(
    mut control: Control,
    h: u64,
    peer: PeerId,
    queue: mpsc::Receiver<(Uuid, Notice)>,
    inbox: mpsc::Sender<Inbound>,
) {
    let broke = match control.open_stream(peer, NOTICE_PROTOCOL).await {
        Ok(stream) => match write_all(stream, queue).await {
            Ok(()) => false,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "notice stream broke");
                true
            }
        },
        Err(OpenStreamError::UnsupportedProtocol(_)) => {
            tracing::debug!(%peer, "peer does not take notices");
            false
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "no notice stream to this peer");
            true
        }
    };
    if broke {
        let _ = inbox.send(Inbound::Broken(h)).await;
    }
}

/// Writes what the queue holds, in frames, until it ends.
async fn write_all(mut stream: Stream, mut queue: mpsc::Receiver<(Uuid, Notice)>) -> io::Result<()> {
    let mut frame = NoticeFrame::new();
    let mut next = queue.recv().await;
    while let Some(first) = next.take() {
        let mut bytes = encoded_bound(&first.1);
        frame.push(first);
        while let Ok(n) = queue.try_recv() {
            bytes += encoded_bound(&n.1);
            if bytes > FRAME_BYTES {
                next = Some(n);
                break;
            }
            frame.push(n);
        }
        write_frame(&mut stream, &frame).await?;
        frame.clear();
        if next.is_none() {
            next = queue.recv().await;
        }
    }
    stream.close().await
}

/// One peer's share of the readers, given back when dropped.
struct PeerReader {
    counts: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl PeerReader {
    /// A reader for `peer`, unless it has [`READERS_PER_PEER`] already.
    fn take(counts: &Arc<Mutex<HashMap<PeerId, usize>>>, peer: PeerId) -> Option<Self> {
        let mut c = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = c.entry(peer).or_default();
        if *n >= READERS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(Self { counts: counts.clone(), peer })
    }
}

impl Drop for PeerReader {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = c.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.peer);
            }
        }
    }
}

/// Reads one peer's notice stream into the event loop's inbox.
async fn read(peer: PeerId, mut stream: Stream, inbox: mpsc::Sender<Inbound>) {
    loop {
        match read_frame::<_, NoticeFrame>(&mut stream, Limit::Control).await {
            Ok(frame) => {
                if inbox.send(Inbound::Frame(peer, frame)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "notice stream from this peer ended");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use libp2p::Swarm;
    use libp2p::identity::Keypair;
    use libp2p::swarm::SwarmEvent;

    use super::*;
    use crate::net::{Behaviour, Limits, build_swarm};

    /// Two nodes' swarms, connected over loopback, then polled in the
    /// background. Returns the first one's control, the second's, and the
    /// second's peer id.
    async fn pair() -> (Control, Control, PeerId) {
        let mut a = build_swarm(Keypair::generate_ed25519(), false, Limits::default(), false).unwrap();
        let mut b = build_swarm(Keypair::generate_ed25519(), false, Limits::default(), false).unwrap();
        b.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                break address;
            }
        };
        let (ca, cb, pb) =
            (a.behaviour().notices.new_control(), b.behaviour().notices.new_control(), *b.local_peer_id());
        a.dial(addr).unwrap();
        let (mut up_a, mut up_b) = (false, false);
        while !(up_a && up_b) {
            tokio::select! {
                e = a.select_next_some() => up_a |= matches!(e, SwarmEvent::ConnectionEstablished { .. }),
                e = b.select_next_some() => up_b |= matches!(e, SwarmEvent::ConnectionEstablished { .. }),
            }
        }
        let poll = |mut s: Swarm<Behaviour>| async move {
            loop {
                s.select_next_some().await;
            }
        };
        tokio::spawn(poll(a));
        tokio::spawn(poll(b));
        (ca, cb, pb)
    }

    async fn next_frame(rx: &mut mpsc::Receiver<Inbound>) -> NoticeFrame {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap() {
            Inbound::Frame(_, frame) => frame,
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[tokio::test]
    async fn notices_arrive_in_order_and_what_waits_goes_out_together() {
        let (ca, cb, pb) = pair().await;
        let (mut out, _) = Notices::start(ca);
        let (_b, mut inbox) = Notices::start(cb);
        let image = Uuid::from_u128(7);
        // Queued before the writer task first runs: one stream, few frames.
        for i in 0..3000 {
            out.send(1, pb, image, Notice::Have(i)).unwrap();
        }
        let mut got = Vec::new();
        let mut frames = 0;
        while got.len() < 3000 {
            got.extend(next_frame(&mut inbox).await);
            frames += 1;
        }
        let want: NoticeFrame = (0..3000).map(|i| (image, Notice::Have(i))).collect();
        assert_eq!(got, want);
        assert!(frames < 10, "3000 waiting notices took {frames} frames");
        // Later notices follow on the same stream.
        out.send(1, pb, image, Notice::Cancel(5)).unwrap();
        assert_eq!(next_frame(&mut inbox).await, vec![(image, Notice::Cancel(5))]);
    }

    #[tokio::test]
    async fn one_peer_gets_two_readers_at_most() {
        let (mut ca, cb, pb) = pair().await;
        let (_b, mut inbox) = Notices::start(cb);
        let image = Uuid::from_u128(7);
        let mut streams = Vec::new();
        for i in 0..4u32 {
            let mut s = ca.open_stream(pb, NOTICE_PROTOCOL).await.unwrap();
            // A stream over the limit is dropped: writing to it may fail.
            let _ = write_frame(&mut s, &vec![(image, Notice::Have(i))]).await;
            streams.push(s);
        }
        let mut got = Vec::new();
        while let Ok(Some(Inbound::Frame(_, f))) = tokio::time::timeout(Duration::from_millis(500), inbox.recv()).await
        {
            got.extend(f);
        }
        got.sort_by_key(|(_, n)| if let Notice::Have(i) = n { *i } else { u32::MAX });
        assert_eq!(got, vec![(image, Notice::Have(0)), (image, Notice::Have(1))], "the third and fourth go unread");
        // When one ends, the peer may open another.
        drop(streams.remove(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut s = ca.open_stream(pb, NOTICE_PROTOCOL).await.unwrap();
        write_frame(&mut s, &vec![(image, Notice::Have(9))]).await.unwrap();
        assert_eq!(next_frame(&mut inbox).await, vec![(image, Notice::Have(9))]);
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_fills_its_queue() {
        let (ca, cb, pb) = pair().await;
        let (mut out, _) = Notices::start(ca);
        // The peer accepts the stream but its event loop never takes a frame.
        let (_b, _inbox) = Notices::start(cb);
        let image = Uuid::from_u128(7);
        let mut sent = 0u32;
        let full = loop {
            if out.send(1, pb, image, Notice::Have(sent)).is_err() {
                break true;
            }
            sent += 1;
            if sent > 2_000_000 {
                break false;
            }
            // One notice per frame: let the writer take each.
            tokio::task::yield_now().await;
        };
        assert!(full, "the queue never filled");
        assert!(sent as usize >= QUEUE, "full after only {sent} notices");
    }

    #[tokio::test]
    async fn a_peer_without_notice_streams_is_left_alone() {
        let (ca, _cb, pb) = pair().await;
        let (mut out, mut events) = Notices::start(ca);
        let image = Uuid::from_u128(7);
        out.send(1, pb, image, Notice::Have(0)).unwrap();
        // The stream cannot open; later notices to the peer are dropped
        // without complaint, and nothing is reported broken.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 1..(QUEUE as u32 * 2) {
            out.send(1, pb, image, Notice::Have(i)).unwrap();
        }
        assert!(events.try_recv().is_err(), "a peer without the protocol is not a broken stream");
    }

    #[tokio::test]
    async fn a_broken_stream_is_reported_and_the_next_one_carries_on() {
        let (ca, mut cb, pb) = pair().await;
        let (mut out, mut events) = Notices::start(ca);
        let mut incoming = cb.accept(NOTICE_PROTOCOL).unwrap();
        let image = Uuid::from_u128(7);
        out.send(1, pb, image, Notice::Have(0)).unwrap();
        // The peer takes the first stream and drops it, as libp2p-stream
        // does with a stream nobody is there to accept.
        let (_, first) = tokio::time::timeout(Duration::from_secs(10), incoming.next()).await.unwrap().unwrap();
        drop(first);
        let mut reported = false;
        for i in 1..200 {
            out.send(1, pb, image, Notice::Have(i)).unwrap();
            if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(20), events.recv()).await {
                assert!(matches!(e, Inbound::Broken(1)), "{e:?}");
                reported = true;
                break;
            }
        }
        assert!(reported, "the broken stream was never reported");
        assert_eq!(out.reopen(1), Reopened::Yes);
        out.send(1, pb, image, Notice::Cancel(9)).unwrap();
        let (_, mut second) = tokio::time::timeout(Duration::from_secs(10), incoming.next()).await.unwrap().unwrap();
        let frame: NoticeFrame = read_frame(&mut second, Limit::Control).await.unwrap();
        assert_eq!(
            frame,
            vec![(image, Notice::Cancel(9))],
            "the new stream starts with what was sent after the reopen"
        );
        // Three streams for one connection at most; none for one that closed.
        assert_eq!(out.reopen(1), Reopened::Yes);
        assert_eq!(out.reopen(1), Reopened::TooOften);
        out.forget(1);
        assert_eq!(out.reopen(1), Reopened::Gone);
    }
}
