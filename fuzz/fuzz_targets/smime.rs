//! Feeds arbitrary bytes to the S/MIME path under a fixed trust store (the
//! CA and CRL in `fuzz/fixtures`, which `seeds/smime/endorsed.smime` was
//! signed under): parsing, the integrity check and full verification never
//! panic, and whatever verifies is signed by a certificate of that CA and
//! carries a list that parses from the signed content.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use proto::Timestamp;
use proto::imagelist::ImageList;
use proto::smime::SignedMessage;
use proto::trust::{CrlPolicy, EndorserPolicy, Trust, TrustAnchors, check_integrity, verify_list};

/// Inside the fixture CRL's validity and the seed list's.
const AT: &str = "2026-12-08T00:00:00Z";
const CA: &str = "/DC=org/DC=imageswarm-test/CN=imageswarm Test CA";

static TRUST: LazyLock<Trust> = LazyLock::new(|| {
    let mut anchors = TrustAnchors::new();
    anchors.add_ca_pem(include_bytes!("../fixtures/ca.pem")).expect("fixture CA");
    anchors.add_crl(include_bytes!("../fixtures/crl.pem")).expect("fixture CRL");
    Trust { anchors, crl: CrlPolicy::Required, endorsers: EndorserPolicy::AnyTrustedSigner }
});

fuzz_target!(|data: &[u8]| {
    let at = Timestamp::parse(AT).expect("fixed time");
    if let Ok(m) = SignedMessage::parse(data) {
        let _ = m.claimed_signers();
    }
    let _ = check_integrity(data);
    if let Ok(v) = verify_list(data, &TRUST, at) {
        assert_eq!(v.signer().ca, CA, "verified under a CA the store does not hold");
        let content = SignedMessage::parse(data).expect("a verified message parses").content().to_vec();
        assert_eq!(&ImageList::from_json(&content).expect("its content is the list"), v.list());
    }
});
