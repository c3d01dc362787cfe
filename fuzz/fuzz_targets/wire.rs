//! Feeds arbitrary bytes to every `proto::wire` decoder, and to the framing
//! reader over a stream that hands them out a few at a time: none may panic
//! or allocate past its limit; whatever decodes re-encodes to a message
//! that decodes to the same value; a frame decodes through `Message`
//! exactly as through `decode`; and the stream reader yields exactly the
//! messages its length prefixes delimit.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::AsyncRead;
use libfuzzer_sys::fuzz_target;
use p2p::codec::read_frame;
use proto::wire::{Announce, Limit, Message, NoticeFrame, Peers, Request, Response, decode, encode};

fn round_trip<T>(data: &[u8], limit: Limit)
where
    T: Message + serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let decoded = decode::<T>(data, limit);
    match (&decoded, T::from_frame(data.to_vec(), limit)) {
        (Ok(a), Ok(b)) => assert_eq!(a, &b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("decode and from_frame disagree: {a:?} vs {b:?}"),
    }
    if let Ok(msg) = decoded {
        let again = encode(&msg).expect("a decoded message encodes");
        assert_eq!(decode::<T>(&again, limit).expect("re-encoded message decodes"), msg);
    }
}

/// A stream that hands out at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

/// Reads frames off `stream` until one fails, checking each against the
/// frame its length prefix delimits.
fn frames(step: usize, stream: &[u8]) {
    let mut reader = Trickle { data: stream, step };
    let mut at = 0;
    for _ in 0..64 {
        let Ok(msg) = futures::executor::block_on(read_frame::<_, Request>(&mut reader, Limit::Control)) else {
            return;
        };
        let len = u32::from_be_bytes(stream[at..at + 4].try_into().expect("4 bytes")) as usize;
        let frame = &stream[at + 4..at + 4 + len];
        assert_eq!(decode::<Request>(frame, Limit::Control).expect("the same frame decodes"), msg);
        at += 4 + len;
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data, Limit::Control);
    round_trip::<NoticeFrame>(data, Limit::Control);
    round_trip::<Response>(data, Limit::Data);
    round_trip::<Announce>(data, Limit::Control);
    round_trip::<Peers>(data, Limit::Control);
    if let Ok(Request::Hello(h)) = decode::<Request>(data, Limit::Control) {
        for (_, b) in &h.images {
            let _ = b.parse();
        }
    }
    if let Some((&step, stream)) = data.split_first() {
        frames(usize::from(step % 16) + 1, stream);
    }
});
