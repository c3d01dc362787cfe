//! The messages nodes and trackers exchange, and their one codec.
//!
//! # Contract
//! * A [`Request`] has exactly one [`Response`] (libp2p's request-response
//!   model). Swarm notices ([`Notice`]) need no answer: they travel in
//!   [`NoticeFrame`]s, in order, on one long-lived stream per peer.
//! * [`encode`] and [`decode`] are the only codec: bincode 2 (standard
//!   configuration) behind a byte limit per message kind. [`Message`] is
//!   that encoding too, split so that chunk bytes are neither copied into
//!   an encoded message nor out of a decoded one.
//! * [`decode`] never panics and never allocates more than its limit,
//!   whatever the bytes: a length field larger than the limit, trailing
//!   bytes, an unknown variant or a bitfield with stray bits is an
//!   [`Error::Wire`].
//! * Hellos, notices and chunk and manifest requests name an image by its
//!   [`content_id`] (UUID and manifest root); announcements, attestation
//!   requests and tracker answers by its UUID.
//! * Parse, don't validate: a decoded [`Notice::Bitfield`] is a
//!   [`Bitfield`] already checked against its length.
//!
//! Chunk data travels in [`Response::Chunk`]; the receiver checks it against
//! the manifest before it counts as anything (see `node`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;
use crate::bitfield::Bitfield;
use crate::swarm::Role;

/// The largest chunk size a node accepts on the wire.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Byte limits per message kind; a message over its limit is not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Requests, notices, hellos and tracker traffic.
    Control,
    /// Responses, which may carry a chunk or a manifest.
    Data,
}

impl Limit {
    /// The limit in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            // A hello names at most MAX_HELLO_IMAGES bitfields of up to
            // 2^20 chunks (128 KiB each).
            Self::Control => 4 << 20,
            Self::Data => MAX_CHUNK_BYTES + 4096,
        }
    }
}

/// An image's name on the wire: its UUID and the manifest root of its
/// content. Hellos, notices and chunk and manifest requests name images so,
/// so that two peers on two versions of a list that give one UUID other
/// bytes (in the middle of an update) never take one image for the other,
/// nor each other for liars.
pub fn content_id(image: Uuid, root: &crate::manifest::ManifestRoot) -> Uuid {
    let mut h = blake3::Hasher::new();
    h.update(b"imageswarm content ");
    h.update(image.as_bytes());
    h.update(&root.0);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

/// The most images one hello describes.
pub const MAX_HELLO_IMAGES: usize = 16;

/// The most signed lists one hello names.
pub const MAX_HELLO_LISTS: usize = 64;

/// The most peers a tracker returns in one answer.
pub const MAX_PEERS: usize = 200;

/// Who a node is, sent first on every connection (both ways).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The node's site name.
    pub site: String,
    /// The node's role.
    pub role: Role,
    /// The images the node swarms on ([`content_id`]), with the chunks it
    /// has of each.
    pub images: Vec<(Uuid, WireBitfield)>,
    /// The signed lists the node holds in force (at most
    /// [`MAX_HELLO_LISTS`]): a peer that holds an older version, or none,
    /// asks for the list ([`Request::List`]).
    pub lists: Vec<HeldList>,
}

/// A signed list a node holds in force: its `hv:uuid` and `hv:version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldList {
    /// The list's identifier.
    pub identifier: Uuid,
    /// Its version.
    pub version: String,
}

/// A bitfield as it travels: its length and its bytes. Use
/// [`WireBitfield::parse`] to turn it into a [`Bitfield`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBitfield {
    /// Number of chunks.
    pub len: u32,
    /// The encoding of [`Bitfield::as_bytes`].
    pub bytes: Vec<u8>,
}

impl WireBitfield {
    /// The bitfield's wire form.
    pub fn new(b: &Bitfield) -> Self {
        Self { len: b.len(), bytes: b.as_bytes().to_vec() }
    }

    /// The bitfield, if the bytes are a valid encoding for the length.
    pub fn parse(&self) -> Result<Bitfield, Error> {
        Bitfield::from_bytes(self.len, &self.bytes)
    }
}

/// A swarm message about one image that needs no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// Every chunk the sender has.
    Bitfield(WireBitfield),
    /// The sender now has this chunk.
    Have(u32),
    /// The sender no longer wants this chunk.
    Cancel(u32),
}

/// The notices a node sends one peer, as one message on its notice stream:
/// every notice that was waiting when the frame was written, oldest first,
/// each with its image. At most [`Limit::Control`] bytes.
pub type NoticeFrame = Vec<(Uuid, Notice)>;

/// A node-to-node request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Introduces the sender; answered with the receiver's hello.
    Hello(Hello),
    /// Asks for one chunk; answered with its data or a refusal.
    Chunk {
        /// The image.
        image: Uuid,
        /// The chunk.
        index: u32,
        /// Ask a master to serve even though it believes a copy exists
        /// elsewhere (see `swarm::Message::Insist`).
        insist: bool,
    },
    /// Asks for the image's chunk hashes; answered with them or a refusal.
    Manifest {
        /// The image.
        image: Uuid,
    },
    /// Asks for the site's attestation of the image's manifest root
    /// ([`crate::attestation`]), where the list names none, for the list
    /// version the asker holds; answered with it, or refused by a peer
    /// that holds none for that version (a peer in the middle of a list
    /// update is no liar).
    Attestation {
        /// The image.
        image: Uuid,
        /// The `hv:version` of the asker's list in force.
        list_version: String,
    },
    /// Asks for the signed list in force under this identifier; answered
    /// with its signed bytes, or refused by a peer that holds none.
    List {
        /// The list's `hv:uuid`.
        identifier: Uuid,
    },
}

/// Why a request was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The image is not on a list that is valid here and now.
    NotEndorsed,
    /// The node does not hold that chunk (or manifest) verified.
    NotHeld,
    /// The node is busy or leaves this chunk to others; ask elsewhere.
    Busy,
}

/// A node's answer. `B` holds a chunk's bytes: [`Bytes`], or while
/// [`Message::from_frame`] decodes, a slice of the received frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<B = Bytes> {
    /// The answer to a hello.
    Hello(Hello),
    /// The chunk's bytes (unverified until the receiver checks them).
    Chunk(B),
    /// The image's BLAKE3 chunk hashes, in order.
    Manifest(Vec<[u8; 32]>),
    /// The request was refused.
    Refused(Refusal),
    /// A signed attestation of the image's manifest root.
    Attestation(Vec<u8>),
    /// A signed list, as its endorser signed it (unverified until the
    /// receiver checks it).
    List(Vec<u8>),
}

/// One announcement to a tracker, which answers with peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The image.
    pub image: Uuid,
    /// The announcer's site name.
    pub site: String,
    /// The announcer's role.
    pub role: Role,
    /// Whether the announcer has every chunk.
    pub complete: bool,
    /// The announcer's listen addresses (multiaddr bytes).
    pub addrs: Vec<Vec<u8>>,
    /// How many peers the announcer wants back (capped at [`MAX_PEERS`]).
    pub want: u16,
}

/// A peer a tracker knows for an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHint {
    /// The peer's id (libp2p peer id bytes).
    pub peer: Vec<u8>,
    /// Its addresses (multiaddr bytes).
    pub addrs: Vec<Vec<u8>>,
    /// Its site name.
    pub site: String,
    /// Its role.
    pub role: Role,
    /// Whether it has every chunk.
    pub complete: bool,
}

/// A tracker's answer to an [`Announce`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    /// At most `want` peers, best first.
    pub peers: Vec<PeerHint>,
    /// How long the announcement stays on record, in seconds.
    pub ttl_secs: u32,
}

/// A node's credential ([`crate::credential`]), sent first on every
/// connection in a closed site, both ways and to trackers, and again when
/// the sender takes a newer CRL or site policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admit {
    /// The sender's credential (DER).
    pub credential: Vec<u8>,
    /// The newest CRL the sender holds from each site CA (DER), at most
    /// [`MAX_CRLS`].
    pub crls: Vec<Vec<u8>>,
    /// The newest site policy the sender holds ([`crate::policy`]).
    pub policy: Option<Vec<u8>>,
}

/// The most CRLs an [`Admit`] or an [`Admission`] carries.
pub const MAX_CRLS: usize = 16;

/// The answer to an [`Admit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// The credential verified; the newest CRLs and site policy the
    /// answerer holds follow.
    Admitted {
        /// DER, at most [`MAX_CRLS`].
        crls: Vec<Vec<u8>>,
        /// A signed site policy ([`crate::policy`]).
        policy: Option<Vec<u8>>,
    },
    /// The credential did not verify, and why.
    Refused(String),
}

/// Encodes a message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    bincode::serde::encode_to_vec(msg, bincode::config::standard()).map_err(|e| Error::Wire(e.to_string()))
}

/// Decodes exactly one message from `bytes`, refusing anything over `limit`.
/// The message may borrow from `bytes`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], limit: Limit) -> Result<T, Error> {
    if bytes.len() > limit.bytes() {
        return Err(Error::Wire(format!("{} bytes is over the limit of {}", bytes.len(), limit.bytes())));
    }
    // The byte limit also caps every length field bincode reads, so a short
    // message cannot make it allocate more than the message could hold.
    let cfg = bincode::config::standard().with_limit::<{ Limit::Data.bytes() }>();
    let (msg, used) = bincode::serde::borrow_decode_from_slice(bytes, cfg).map_err(|e| Error::Wire(e.to_string()))?;
    if used != bytes.len() {
        return Err(Error::Wire(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(msg)
}

/// A message as it goes on a stream: the encoding of [`encode`], which
/// [`decode`] reads, taken apart so that bulk bytes need no copy.
pub trait Message: Sized {
    /// The encoding, as a head and the bytes that follow it unchanged.
    fn to_parts(&self) -> Result<(Vec<u8>, &[u8]), Error>;

    /// Decodes exactly one message from the whole of `frame`, refusing
    /// anything over `limit`.
    fn from_frame(frame: Vec<u8>, limit: Limit) -> Result<Self, Error>;
}

/// Messages without bulk bytes: encoded and decoded whole.
macro_rules! whole_messages {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn to_parts(&self) -> Result<(Vec<u8>, &[u8]), Error> {
                Ok((encode(self)?, &[]))
            }

            fn from_frame(frame: Vec<u8>, limit: Limit) -> Result<Self, Error> {
                decode(&frame, limit)
            }
        }
    )*};
}

whole_messages!(Request, NoticeFrame, Announce, Peers, Admit, Admission);

/// The variant index of [`Response::Chunk`] in the encoding.
const CHUNK_VARIANT: u32 = 1;

impl Message for Response {
    /// A chunk's head is what bincode writes before the bytes of
    /// [`Response::Chunk`]: the variant index and the length, both varints.
    fn to_parts(&self) -> Result<(Vec<u8>, &[u8]), Error> {
        match self {
            Self::Chunk(data) => Ok((encode(&(CHUNK_VARIANT, data.len() as u64))?, data)),
            other => Ok((encode(other)?, &[])),
        }
    }

    /// A chunk's bytes stay where they are in `frame`.
    fn from_frame(frame: Vec<u8>, limit: Limit) -> Result<Self, Error> {
        let frame = Bytes::from(frame);
        Ok(match decode::<Response<&[u8]>>(&frame, limit)? {
            Response::Chunk(data) => Self::Chunk(frame.slice_ref(data)),
            Response::Hello(h) => Self::Hello(h),
            Response::Manifest(m) => Self::Manifest(m),
            Response::Refused(r) => Self::Refused(r),
            Response::Attestation(a) => Self::Attestation(a),
            Response::List(l) => Self::List(l),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn hello() -> Hello {
        let mut b = Bitfield::new(10);
        b.set(3);
        let lists = vec![HeldList { identifier: Uuid::nil(), version: "1.0.2".into() }];
        Hello { site: "cern".into(), role: Role::Worker, images: vec![(Uuid::nil(), WireBitfield::new(&b))], lists }
    }

    #[test]
    fn round_trips() {
        let msgs = [
            Request::Hello(hello()),
            Request::Chunk { image: Uuid::nil(), index: 9, insist: true },
            Request::Manifest { image: Uuid::nil() },
            Request::List { identifier: Uuid::nil() },
        ];
        for m in msgs {
            assert_eq!(decode::<Request>(&encode(&m).unwrap(), Limit::Control).unwrap(), m);
        }
        let mut b = Bitfield::new(20);
        b.set(19);
        let frame: NoticeFrame = vec![
            (Uuid::nil(), Notice::Have(7)),
            (Uuid::max(), Notice::Cancel(3)),
            (Uuid::nil(), Notice::Bitfield(WireBitfield::new(&b))),
        ];
        assert_eq!(decode::<NoticeFrame>(&encode(&frame).unwrap(), Limit::Control).unwrap(), frame);
        let data = Response::Chunk(Bytes::from(vec![0xab; 100_000]));
        let bytes = encode(&data).unwrap();
        assert!(bytes.len() < 100_010, "chunk bytes are not inflated: {}", bytes.len());
        assert_eq!(decode::<Response>(&bytes, Limit::Data).unwrap(), data);
    }

    /// Head and tail are the encoding, and a frame decodes as `decode` does.
    fn parts_agree_with_the_encoding<M>(msg: &M, limit: Limit)
    where
        M: Message + Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug,
    {
        let whole = encode(msg).unwrap();
        let (head, tail) = msg.to_parts().unwrap();
        assert_eq!([head.as_slice(), tail].concat(), whole);
        assert_eq!(&M::from_frame(whole.clone(), limit).unwrap(), msg);
        assert_eq!(M::from_frame(whole.clone(), limit).is_ok(), decode::<M>(&whole, limit).is_ok());
    }

    #[test]
    fn message_parts_are_the_encoding() {
        // Lengths on each side of bincode's varint widths.
        for len in [0, 1, 250, 251, 252, 65_535, 65_536, 70_000] {
            parts_agree_with_the_encoding(&Response::Chunk(Bytes::from(vec![7u8; len])), Limit::Data);
        }
        parts_agree_with_the_encoding(&Response::Hello(hello()), Limit::Data);
        parts_agree_with_the_encoding(&Response::Manifest(vec![[3; 32]; 3]), Limit::Data);
        parts_agree_with_the_encoding(&Response::Refused(Refusal::Busy), Limit::Data);
        parts_agree_with_the_encoding(&Response::List(b"signed".to_vec()), Limit::Data);
        parts_agree_with_the_encoding(&Request::Hello(hello()), Limit::Control);
        let frame: NoticeFrame = vec![(Uuid::nil(), Notice::Have(7))];
        parts_agree_with_the_encoding(&frame, Limit::Control);
    }

    #[test]
    fn a_decoded_chunk_is_the_frame_itself() {
        let frame = encode(&Response::Chunk(Bytes::from(vec![9u8; 4096]))).unwrap();
        let start = frame.as_ptr() as usize;
        let Response::Chunk(data) = Response::from_frame(frame, Limit::Data).unwrap() else { panic!("not a chunk") };
        let offset = data.as_ptr() as usize - start;
        assert!(offset <= 10, "the chunk's bytes were copied (offset {offset})");
        assert_eq!(data.len(), 4096);
    }

    #[test]
    fn refuses_oversize_trailing_and_lying_lengths() {
        let big = encode(&Response::Chunk(Bytes::from(vec![0; Limit::Control.bytes() + 1]))).unwrap();
        assert!(matches!(decode::<Response>(&big, Limit::Control), Err(Error::Wire(_))));
        assert!(matches!(Response::from_frame(big, Limit::Control), Err(Error::Wire(_))));
        let mut extra = encode(&Request::Manifest { image: Uuid::nil() }).unwrap();
        extra.push(0);
        assert!(decode::<Request>(&extra, Limit::Control).unwrap_err().to_string().contains("trailing"));
        // Variant 2 (Chunk) claiming a length of 2^60 bytes in 12 bytes.
        let lying = [2u8, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert!(decode::<Response>(&lying, Limit::Data).is_err());
    }

    #[test]
    fn stray_bitfield_bits_are_refused_at_parse() {
        let w = WireBitfield { len: 3, bytes: vec![0xff] };
        assert!(w.parse().is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes, Limit::Control);
            let _ = decode::<NoticeFrame>(&bytes, Limit::Control);
            let _ = decode::<Response>(&bytes, Limit::Data);
            let _ = Response::from_frame(bytes.clone(), Limit::Data);
            let _ = decode::<Announce>(&bytes, Limit::Control);
            let _ = decode::<Peers>(&bytes, Limit::Control);
            let _ = decode::<Admit>(&bytes, Limit::Control);
            let _ = decode::<Admission>(&bytes, Limit::Control);
        }

        #[test]
        fn mutated_messages_never_panic(pos in 0usize..64, byte in any::<u8>()) {
            let mut bytes = encode(&Request::Hello(hello())).unwrap();
            let i = pos % bytes.len();
            bytes[i] = byte;
            if let Ok(Request::Hello(h)) = decode::<Request>(&bytes, Limit::Control) {
                for (_, b) in h.images {
                    let _ = b.parse();
                }
            }
        }
    }
}
