//! Back-to-source downloads against a local HTTP server that serves wrong,
//! short, oversized and slow data: rows D1, D2, D5 and D6 of the attack
//! checklist, plus resumption.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Img, Lab, bytes, fast_timeouts, ts};
use node::fetch::Timeouts;
use node::site::{ImageOutcome, ListOutcome, Site, UpdateReport};
use node::store::{ImageState, NewImages};
use testkit::http::{Behaviour, HttpServer};

const SIZE: usize = 1 << 20;

/// A lab subscribed in cache mode to one image served by `server` at `/img`.
fn setup(server: &HttpServer, behaviour: Behaviour) -> (Lab, Img) {
    let data = bytes(SIZE, 7);
    let url = server.serve("/img", data.clone(), behaviour);
    let img = Img::new(1, &url, data);
    let lab = Lab::new();
    lab.publish("0.0.1", std::slice::from_ref(&img));
    lab.site().subscribe(&lab.url(), NewImages::Cache, ts(lab.now)).unwrap();
    (lab, img)
}

fn update_with(lab: &Lab, t: Timeouts, at: i64) -> UpdateReport {
    Site::open(&lab.data, t).unwrap().update(ts(at), &mut |_, _| {}).unwrap()
}

fn update(lab: &Lab, at: i64) -> UpdateReport {
    update_with(lab, fast_timeouts(), at)
}

fn failure(r: &UpdateReport) -> String {
    match &r.images[..] {
        [(_, ImageOutcome::Failed(e))] => e.clone(),
        other => panic!("expected one failed download, got {other:?}"),
    }
}

fn record(lab: &Lab, img: &Img) -> node::store::ImageRecord {
    lab.site().store().image(img.id).unwrap().unwrap()
}

fn nothing_exposed(lab: &Lab, img: &Img) {
    assert!(!lab.image_path(img.id).exists(), "unverified data stands in the cache");
    assert_ne!(record(lab, img).state, ImageState::Available);
}

#[test]
fn d1_oversized_source_is_cut_at_the_listed_size() {
    let server = HttpServer::start();
    let (lab, img) = setup(&server, Behaviour::Oversized(4096));
    let r = update(&lab, lab.now);
    assert!(failure(&r).contains("more than the 1048576 bytes"), "{r:?}");
    assert!(r.failed());
    nothing_exposed(&lab, &img);
    // The first hv:size bytes were kept chunk by chunk; the retry installs
    // them after checking SHA-512 and root, without fetching them again.
    let sent = server.bytes_sent("/img");
    server.set_behaviour("/img", Behaviour::Honest);
    let r = update(&lab, lab.now + 1);
    assert_eq!(r.images, vec![(img.id, ImageOutcome::Downloaded)]);
    assert_eq!(server.bytes_sent("/img"), sent, "verified chunks were fetched again");
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), img.bytes);
}

#[test]
fn d1_list_larger_than_the_cap_is_refused() {
    let server = HttpServer::start();
    let lab = Lab::new();
    lab.publish("0.0.1", &[]);
    let url = server.serve("/list", vec![b' '; proto::smime::MAX_MESSAGE_BYTES + 10], Behaviour::Honest);
    let err = lab.site().subscribe(&url, NewImages::Cache, ts(lab.now)).unwrap_err();
    assert!(err.to_string().contains("cap"), "{err}");
}

#[test]
fn d2_wrong_bytes_are_never_exposed_and_are_fetched_again() {
    let server = HttpServer::start();
    let (lab, img) = setup(&server, Behaviour::Corrupt);
    let r = update(&lab, lab.now);
    let e = failure(&r);
    assert!(e.contains("manifest") || e.contains("SHA-512"), "{e}");
    nothing_exposed(&lab, &img);
    assert!(!lab.data.join("images").join(format!("{}.partial", img.id)).exists(), "bad data was kept");
    assert_eq!(record(&lab, &img).attempts, 1);
    server.set_behaviour("/img", Behaviour::Honest);
    assert_eq!(update(&lab, lab.now + 1).images, vec![(img.id, ImageOutcome::Downloaded)]);
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), img.bytes);
}

#[test]
fn short_source_fails_and_the_retry_resumes_with_a_range_request() {
    let server = HttpServer::start();
    let (lab, img) = setup(&server, Behaviour::Short);
    let e = failure(&update(&lab, lab.now));
    assert!(e.contains("ended after 524288 of 1048576 bytes"), "{e}");
    nothing_exposed(&lab, &img);
    let have = lab.site().store().have(img.id, 16).unwrap();
    assert_eq!(have.count(), 8, "the verified first half stays");
    server.set_behaviour("/img", Behaviour::Honest);
    assert_eq!(update(&lab, lab.now + 1).images, vec![(img.id, ImageOutcome::Downloaded)]);
    let ranges: Vec<Option<u64>> =
        server.requests().iter().filter(|r| r.path == "/img").map(|r| r.range_start).collect();
    assert_eq!(ranges, vec![None, Some(524_288)]);
    assert_eq!(server.bytes_sent("/img"), SIZE as u64, "every byte was sent exactly once");
}

#[test]
fn resume_works_when_the_server_ignores_range() {
    let server = HttpServer::start();
    let (lab, img) = setup(&server, Behaviour::Short);
    failure(&update(&lab, lab.now));
    server.set_behaviour("/img", Behaviour::IgnoreRange);
    assert_eq!(update(&lab, lab.now + 1).images, vec![(img.id, ImageOutcome::Downloaded)]);
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), img.bytes);
}

#[test]
fn slow_source_trips_the_rate_floor() {
    let server = HttpServer::start();
    let (lab, img) = setup(&server, Behaviour::Slow(20_000));
    let t = Timeouts { min_rate: 200_000, rate_window: Duration::from_millis(500), ..fast_timeouts() };
    let e = failure(&update_with(&lab, t, lab.now));
    assert!(e.contains("too slow"), "{e}");
    nothing_exposed(&lab, &img);
}

#[test]
fn d5_every_source_bad_is_reported_and_bounded() {
    let server = HttpServer::start();
    let (lab, img) = setup(&server, Behaviour::Corrupt);
    for attempt in 1..=5 {
        let r = update(&lab, lab.now + attempt);
        assert!(r.failed(), "attempt {attempt} was not reported as failed");
        assert!(matches!(r.images[..], [(_, ImageOutcome::Failed(_))]), "{r:?}");
    }
    let before = server.requests().len();
    let r = update(&lab, lab.now + 6);
    assert!(r.failed());
    assert!(matches!(&r.images[..], [(_, ImageOutcome::GaveUp(_))]), "{r:?}");
    let img_requests = server.requests()[before..].iter().filter(|q| q.path == "/img").count();
    assert_eq!(img_requests, 0, "no more attempts after the limit");
    nothing_exposed(&lab, &img);
    // A new list version resets the count.
    server.set_behaviour("/img", Behaviour::Honest);
    lab.publish("0.0.2", std::slice::from_ref(&img));
    let r = update(&lab, lab.now + 7);
    assert_eq!(r.lists[0].2, ListOutcome::Accepted("0.0.2".into()));
    assert_eq!(r.images, vec![(img.id, ImageOutcome::Downloaded)]);
}

#[test]
fn d6_nothing_is_fetched_that_the_list_does_not_name_or_the_site_did_not_approve() {
    let server = HttpServer::start();
    server.serve("/decoy", b"never ask for me".to_vec(), Behaviour::Honest);
    let approved = Img::new(1, &server.serve("/approved", bytes(1000, 1), Behaviour::Honest), bytes(1000, 1));
    let refused = Img::new(2, &server.serve("/refused", bytes(1000, 2), Behaviour::Honest), bytes(1000, 2));
    let lab = Lab::new();
    lab.publish("0.0.1", &[approved.clone(), refused.clone()]);
    lab.site().subscribe(&lab.url(), NewImages::Refuse, ts(lab.now)).unwrap();
    update(&lab, lab.now);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    lab.site().decide(approved.id, node::store::Decision::Approved, ts(lab.now + 1)).unwrap();
    update(&lab, lab.now + 2);
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/approved".to_owned()]);
    assert_eq!(record(&lab, &approved).state, ImageState::Available);
    assert_eq!(record(&lab, &refused).state, ImageState::Refused);
}
