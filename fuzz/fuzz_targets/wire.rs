//! Feeds arbitrary bytes to every `proto::wire` decoder: none may panic or
//! allocate past its limit, whatever decodes re-encodes to a message that
//! decodes to the same value, and a frame decodes through `Message` exactly
//! as through `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
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
