//! Feeds arbitrary bytes to the image-list JSON parser: it never panics,
//! a list it accepts encodes to JSON that decodes to the same list (every
//! field kept), and the version order it uses on two arbitrary strings is a
//! consistent order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::imagelist::{ImageList, version};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = ImageList::from_json(data) {
        let again = ImageList::from_json(&list.to_json()).expect("an encoded list decodes");
        assert_eq!(again, list, "decode, encode, decode changed the list");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Some((a, b)) = text.split_once('\n')
    {
        assert_eq!(version::compare(a, b), version::compare(b, a).reverse());
        assert_eq!(version::compare(a, a), std::cmp::Ordering::Equal);
        assert_eq!(version::compare(&version::bump(a), a), std::cmp::Ordering::Greater, "{a:?}");
    }
});
