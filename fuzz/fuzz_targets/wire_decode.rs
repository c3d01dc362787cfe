//! Feeds arbitrary bytes to every `proto::wire` decoder: none may panic or
//! allocate past its limit, and whatever decodes re-encodes to a message
//! that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::wire::{Announce, Limit, NoticeFrame, Peers, Request, Response, decode, encode};

fn round_trip<T>(data: &[u8], limit: Limit)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    if let Ok(msg) = decode::<T>(data, limit) {
        let again = encode(&msg).expect("a decoded message encodes");
        assert_eq!(decode::<T>(&again, limit).expect("re-encoded message decodes"), msg);
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
});
