//! HTTPS sources: a server is trusted through the platform's CA store (read
//! at the first handshake, so `SSL_CERT_FILE` applies), never otherwise.
//! One test in its own binary, as it sets the process environment.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Img, Lab, bytes, fast_timeouts, pki, ts};
use node::site::{ImageOutcome, Site};
use node::store::NewImages;
use testkit::http::{Behaviour, HttpServer};

#[test]
fn an_https_source_is_trusted_only_through_the_platform_ca_store() {
    let server = HttpServer::start_tls(pki().read("server.pem"), pki().read("server.key"));
    let data = bytes(1 << 20, 3);
    let url = server.serve("/img", data.clone(), Behaviour::Honest);
    assert!(url.starts_with("https://localhost:"), "{url}");
    let img = Img::new(1, &url, data);
    let lab = Lab::new();
    lab.publish("0.0.1", std::slice::from_ref(&img));
    lab.site().subscribe(&lab.url(), NewImages::Cache, ts(lab.now)).unwrap();
    let update = |ca: &str| {
        // SAFETY: this binary's only test; no other thread reads or writes
        // the environment while it changes.
        unsafe { std::env::set_var("SSL_CERT_FILE", pki().path(ca)) };
        Site::open(&lab.data, fast_timeouts()).unwrap().update(ts(lab.now), &mut |_, _| {}).unwrap()
    };

    let r = update("other/ca.pem");
    match &r.images[..] {
        [(_, ImageOutcome::Failed(e))] => assert!(e.contains("UnknownIssuer"), "{e}"),
        other => panic!("a server signed by a CA the platform does not trust was used: {other:?}"),
    }
    assert_eq!(server.bytes_sent("/img"), 0);

    let r = update("ca.pem");
    assert_eq!(r.images, vec![(img.id, ImageOutcome::Downloaded)]);
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), img.bytes);
}
