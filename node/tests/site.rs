//! Subscriptions, updates and the cache life cycle, through the node
//! library with an injected clock: rows T8, T9, T11, T12, T13, T14 and T17 of
//! the attack checklist, the new-image modes, site decisions, expiry, hooks,
//! garbage collection, and what runs at once: lists offered, downloads and
//! host commands.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{DAY, Img, LIST_ID, Lab, bytes, ts, wait_until};
use node::site::{ImageOutcome, ListOutcome, UpdateReport};
use node::store::{Decision, ImageRecord, ImageState, NewImages};
use testkit::http::{Behaviour, HttpServer};
use testkit::{BOB_DN, CA_DN, ENDORSER_DN};

fn update(lab: &Lab, at: i64) -> UpdateReport {
    lab.site().update(ts(at), &mut |_, _| {}).unwrap()
}

fn state(lab: &Lab, img: &Img) -> ImageState {
    lab.site().store().image(img.id).unwrap().unwrap().state
}

fn list_outcome(r: &UpdateReport) -> &ListOutcome {
    &r.lists[0].2
}

/// A lab subscribed in `mode` to a list holding `images`.
fn subscribed(mode: NewImages, images: &[Img]) -> Lab {
    let lab = Lab::new();
    lab.publish("0.0.1", images);
    lab.site().subscribe(&lab.url(), mode, ts(lab.now)).unwrap();
    lab
}

/// A lab whose one image, cached, is available after a first update.
fn cached(seed: &str, len: usize) -> (tempfile::TempDir, Img, Lab) {
    let (src, img) = one_image(seed, len);
    let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
    update(&lab, lab.now);
    assert_eq!(state(&lab, &img), ImageState::Available);
    (src, img, lab)
}

/// A lab whose list, naming one image it does not cache, is in force after
/// a first update.
fn in_force(seed: &str) -> (tempfile::TempDir, Img, Lab) {
    let (src, img) = one_image(seed, 1000);
    let lab = subscribed(NewImages::Accept, std::slice::from_ref(&img));
    update(&lab, lab.now);
    (src, img, lab)
}

fn one_image(lab_dir_hint: &str, len: usize) -> (tempfile::TempDir, Img) {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(len, lab_dir_hint.len() as u8);
    let path = dir.path().join("img");
    std::fs::write(&path, &data).unwrap();
    let img = Img::new(1, &format!("file://{}", path.display()), data);
    (dir, img)
}

#[test]
fn cache_mode_downloads_verifies_and_withdrawal_expires() {
    let (_src, img) = one_image("a", 300_000);
    let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
    let r = update(&lab, lab.now);
    assert_eq!(list_outcome(&r), &ListOutcome::Accepted("0.0.1".into()));
    assert_eq!(r.images, vec![(img.id, ImageOutcome::Downloaded)]);
    assert_eq!(state(&lab, &img), ImageState::Available);
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), img.bytes);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(lab.image_path(img.id)).unwrap().permissions());
    assert_eq!(mode & 0o222, 0, "an installed image is read-only");
    assert!(!r.failed());

    // Nothing new: no-op.
    assert_eq!(list_outcome(&update(&lab, lab.now + 1)), &ListOutcome::Unchanged);

    // A new version without the image withdraws it: the file moves to expired/.
    lab.publish("0.0.2", &[]);
    let r = update(&lab, lab.now + 2);
    assert_eq!(list_outcome(&r), &ListOutcome::Accepted("0.0.2".into()));
    let history = lab.site().store().list_history(LIST_ID).unwrap();
    let versions: Vec<&str> = history.iter().map(|h| h.list.version.as_str()).collect();
    assert_eq!(versions, ["0.0.1", "0.0.2"]);
    assert_ne!(history[0].list.content_sha512, history[1].list.content_sha512);
    assert_eq!(history[1].accepted_at, ts(lab.now + 2));
    assert_eq!(state(&lab, &img), ImageState::Expired);
    assert!(!lab.image_path(img.id).exists());
    let expired = lab.expired_files();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].starts_with(&img.id.to_string()), "{expired:?}");
}

#[test]
fn refuse_mode_waits_for_approval_and_accept_mode_does_not_cache() {
    let (_src, img) = one_image("b", 10_000);
    let lab = subscribed(NewImages::Refuse, std::slice::from_ref(&img));
    update(&lab, lab.now);
    assert_eq!(state(&lab, &img), ImageState::Refused);
    assert!(!lab.image_path(img.id).exists());
    let rec = lab.site().decide(img.id, Decision::Approved, ts(lab.now)).unwrap();
    assert_eq!(rec.state, ImageState::Partial);
    update(&lab, lab.now + 1);
    assert_eq!(state(&lab, &img), ImageState::Available);
    // Refusing it again takes it out of the cache.
    assert_eq!(lab.site().decide(img.id, Decision::Refused, ts(lab.now + 2)).unwrap().state, ImageState::Refused);
    assert!(!lab.image_path(img.id).exists());
    // Revoking is final until approved again, even though the list still endorses it.
    assert_eq!(lab.site().decide(img.id, Decision::Revoked, ts(lab.now + 3)).unwrap().state, ImageState::Revoked);
    update(&lab, lab.now + 4);
    assert_eq!(state(&lab, &img), ImageState::Revoked);

    let (_src2, img2) = one_image("c", 10_000);
    let accept = subscribed(NewImages::Accept, std::slice::from_ref(&img2));
    update(&accept, accept.now);
    let rec = accept.site().store().image(img2.id).unwrap().unwrap();
    assert_eq!((rec.decision, rec.cache, rec.state), (Decision::Approved, false, ImageState::Partial));
    assert!(!accept.image_path(img2.id).exists());
}

#[test]
fn t8_t9_rollback_and_reused_version_leave_the_list_in_force() {
    let (_src, img) = one_image("d", 1000);
    let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
    lab.publish("0.0.5", std::slice::from_ref(&img));
    update(&lab, lab.now);
    lab.publish("0.0.4", &[]);
    let r = update(&lab, lab.now + 1);
    assert!(matches!(list_outcome(&r), ListOutcome::Failed(e) if e.contains("rollback")), "{r:?}");
    assert!(r.failed());
    assert_eq!(state(&lab, &img), ImageState::Available, "the list in force still endorses the image");
    lab.publish("0.0.5", &[]);
    let r = update(&lab, lab.now + 2);
    assert!(
        matches!(list_outcome(&r), ListOutcome::Failed(e) if e.contains("already accepted with different content")),
        "{r:?}"
    );
    assert_eq!(state(&lab, &img), ImageState::Available);
}

/// A list updated again and again keeps the store bounded: only the last
/// versions' messages stay, the one in force among them.
#[test]
fn only_the_last_list_versions_are_kept() {
    let (_src, img) = one_image("k", 1000);
    let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
    let versions = node::store::KEPT_VERSIONS + 5;
    for v in 1..=versions {
        lab.publish(&format!("0.1.{v}"), std::slice::from_ref(&img));
        assert!(!update(&lab, lab.now + v as i64).failed());
    }
    let site = lab.site();
    let store = site.store();
    let history = store.list_history(LIST_ID).unwrap();
    assert_eq!(history.len() as u64, node::store::KEPT_VERSIONS);
    assert_eq!(history.last().unwrap().list.version, format!("0.1.{versions}"));
    let current = store.subscription(LIST_ID).unwrap().unwrap().current.unwrap();
    assert!(store.list_message(LIST_ID, current.seq).unwrap().is_some(), "the list in force");
    assert!(store.list_message(LIST_ID, history[0].list.seq - 1).unwrap().is_none(), "an older one");
    drop(site);
    assert_eq!(state(&lab, &img), ImageState::Available);
}

#[test]
fn t11_a_clock_that_stepped_back_stops_updates() {
    let (_src, img) = one_image("e", 1000);
    let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
    update(&lab, lab.now + DAY);
    let err = lab.site().update(ts(lab.now), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("clock stepped back"), "{err}");
    // A small step (NTP slew) is tolerated.
    assert!(lab.site().update(ts(lab.now + DAY - 60), &mut |_, _| {}).is_ok());
    assert_eq!(state(&lab, &img), ImageState::Available);
}

#[test]
fn t12_fast_forward_recovery_after_the_site_resets_the_version() {
    let (_src, img) = one_image("f", 1000);
    let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
    // A compromised endorser key publishes an absurd version.
    lab.publish("9223372036854775807", std::slice::from_ref(&img));
    update(&lab, lab.now);
    // The site withdraws the compromised credential and approves the
    // endorser's new one; the list in force stops endorsing.
    let site = lab.site();
    site.remove_endorser(ENDORSER_DN, CA_DN, ts(lab.now + 1)).unwrap();
    site.add_endorser(BOB_DN, CA_DN, ts(lab.now + 1)).unwrap();
    drop(site);
    assert_eq!(state(&lab, &img), ImageState::Expired);
    lab.publish_as("bob", "0.0.2", std::slice::from_ref(&img));
    let r = update(&lab, lab.now + 2);
    assert!(matches!(list_outcome(&r), ListOutcome::Failed(e) if e.contains("rollback")), "{r:?}");
    lab.site().reset_version(&LIST_ID.to_string()).unwrap();
    let r = update(&lab, lab.now + 3);
    assert_eq!(list_outcome(&r), &ListOutcome::Accepted("0.0.2".into()));
    assert_eq!(state(&lab, &img), ImageState::Available);
}

#[test]
fn t13_another_lists_identifier_at_the_subscribed_url_is_refused() {
    let (_src, img, lab) = cached("g", 1000);
    // The same endorser publishes a different list at the subscribed URL.
    lab.publish_list("endorser", uuid::Uuid::from_u128(7), "0.0.9", &[]);
    let r = update(&lab, lab.now + 1);
    assert!(matches!(list_outcome(&r), ListOutcome::Failed(e) if e.starts_with("identifier")), "{r:?}");
    assert_eq!(state(&lab, &img), ImageState::Available);
}

#[test]
fn t14_lists_in_force_are_rechecked_against_current_trust() {
    let (_src, img, lab) = cached("h", 1000);
    // De-approving the endorser expires the images at once, without a fetch.
    lab.site().remove_endorser(ENDORSER_DN, CA_DN, ts(lab.now + 1)).unwrap();
    assert_eq!(state(&lab, &img), ImageState::Expired);
    assert!(!lab.image_path(img.id).exists());
    // Approving again restores endorsement; the next update fetches the data.
    lab.site().add_endorser(ENDORSER_DN, CA_DN, ts(lab.now + 2)).unwrap();
    assert_eq!(state(&lab, &img), ImageState::Partial);
    update(&lab, lab.now + 3);
    assert_eq!(state(&lab, &img), ImageState::Available);
    // The CRL lapses (30 days): the list no longer verifies and its images expire.
    let r = update(&lab, lab.now + 31 * DAY);
    assert!(matches!(list_outcome(&r), ListOutcome::Failed(e) if e.starts_with("crl")), "{r:?}");
    assert_eq!(state(&lab, &img), ImageState::Expired);
}

#[test]
fn t17_a_failed_update_leaves_the_last_good_state() {
    let (_src, img, lab) = cached("i", 1000);
    let good = std::fs::read(&lab.list).unwrap();
    for junk in [
        b"garbage".to_vec(),
        good[..good.len() / 2].to_vec(),
        good.iter().map(|b| if *b == b'1' { b'2' } else { *b }).collect(),
    ] {
        std::fs::write(&lab.list, &junk).unwrap();
        let r = update(&lab, lab.now + 1);
        assert!(matches!(list_outcome(&r), ListOutcome::Failed(_)), "{r:?}");
        assert_eq!(state(&lab, &img), ImageState::Available);
        let sub = lab.site().store().subscription(LIST_ID).unwrap().unwrap();
        assert_eq!(sub.current.unwrap().version, "0.0.1");
    }
    std::fs::write(&lab.list, good).unwrap();
    lab.publish("0.0.2", std::slice::from_ref(&img));
    assert_eq!(list_outcome(&update(&lab, lab.now + 2)), &ListOutcome::Accepted("0.0.2".into()));
}

#[test]
fn disabling_a_subscription_expires_its_images() {
    let (_src, img, lab) = cached("j", 1000);
    lab.site().set_enabled(&LIST_ID.to_string(), false, ts(lab.now + 1)).unwrap();
    assert_eq!(state(&lab, &img), ImageState::Expired);
    let r = update(&lab, lab.now + 2);
    assert_eq!(list_outcome(&r), &ListOutcome::Disabled);
    lab.site().set_enabled(&lab.url(), true, ts(lab.now + 3)).unwrap();
    update(&lab, lab.now + 4);
    assert_eq!(state(&lab, &img), ImageState::Available);
}

#[test]
fn a_new_checksum_replaces_the_cached_copy() {
    let (src, img) = one_image("k", 5000);
    let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
    update(&lab, lab.now);
    let mut v2 = img.clone();
    v2.bytes = bytes(7000, 99);
    std::fs::write(src.path().join("img"), &v2.bytes).unwrap();
    lab.publish("0.0.2", std::slice::from_ref(&v2));
    let r = update(&lab, lab.now + 1);
    assert!(r.images.contains(&(img.id, ImageOutcome::Expired)), "{r:?}");
    assert!(r.images.contains(&(img.id, ImageOutcome::Downloaded)), "{r:?}");
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), v2.bytes);
    assert_eq!(lab.expired_files().len(), 1);
}

#[test]
fn hooks_get_vmcatcher_events_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events");
    let hook = format!(
        "echo \"$VMCATCHER_EVENT_TYPE|$VMCATCHER_EVENT_DC_IDENTIFIER|$VMCATCHER_EVENT_HV_SIZE|$VMCATCHER_EVENT_FILENAME|$VMCATCHER_EVENT_IL_DC_IDENTIFIER|$VMCATCHER_CACHE_DIR_CACHE\" >> {}",
        log.display()
    );
    let lab = Lab::with_config(|c| c.hook = Some(hook));
    let (_src, img) = one_image("l", 2000);
    lab.publish("0.0.1", std::slice::from_ref(&img));
    lab.site().subscribe(&lab.url(), NewImages::Cache, ts(lab.now)).unwrap();
    update(&lab, lab.now);
    lab.publish("0.0.2", &[]);
    update(&lab, lab.now + 1);
    let events: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    let types: Vec<&str> = events.iter().map(|e| e.split('|').next().unwrap()).collect();
    assert_eq!(
        types,
        [
            "ProcessPrefix",
            "SubscriptionImageNew",
            "AvailablePrefix",
            "AvailablePostfix",
            "ProcessPostfix",
            "ProcessPrefix",
            "ExpirePrefix",
            "ExpirePostfix",
            "ProcessPostfix"
        ]
    );
    let id = img.id.to_string();
    let cache_dir = lab.data.join("images").display().to_string();
    assert_eq!(events[3], format!("AvailablePostfix|{id}|2000|{id}|{LIST_ID}|{cache_dir}"));
    assert!(events[7].starts_with(&format!("ExpirePostfix|{id}|2000|{id}.")), "{}", events[7]);
}

#[test]
fn a_hanging_or_failing_hook_never_stalls_the_node() {
    let lab = Lab::with_config(|c| {
        c.hook = Some("if [ \"$VMCATCHER_EVENT_TYPE\" = AvailablePrefix ]; then sleep 60; fi; exit 3".into());
        c.hook_timeout_secs = 1;
    });
    let (_src, img) = one_image("m", 2000);
    lab.publish("0.0.1", std::slice::from_ref(&img));
    lab.site().subscribe(&lab.url(), NewImages::Cache, ts(lab.now)).unwrap();
    let started = std::time::Instant::now();
    let r = update(&lab, lab.now);
    assert!(started.elapsed() < Duration::from_secs(30), "the hook's time limit did not hold");
    assert!(!r.failed(), "{r:?}");
    assert_eq!(state(&lab, &img), ImageState::Available);
}

#[test]
fn gc_removes_only_old_expired_images_and_keeps_foreign_files() {
    let lab = Lab::with_config(|c| {
        c.expired_max_age_days = 10;
        c.min_free_percent = 0;
    });
    let expired = lab.data.join("expired");
    let id = "488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d";
    let old = ts(lab.now - 20 * DAY).to_string().replace('T', "_").replace(':', "-").replace('Z', "");
    let new = ts(lab.now - DAY).to_string().replace('T', "_").replace(':', "-").replace('Z', "");
    for name in [format!("{id}.{old}"), format!("{id}.{new}"), "README.txt".into(), format!("{id}.{old}.notes")] {
        std::fs::write(expired.join(name), b"x").unwrap();
    }
    let r = update(&lab, lab.now);
    assert_eq!(r.gc.removed.len(), 1, "{r:?}");
    assert_eq!(lab.expired_files(), vec![format!("{id}.{old}.notes"), format!("{id}.{new}"), "README.txt".into()]);

    // Below the free-space watermark every expired image goes, still nothing else.
    let full = Lab::with_config(|c| c.min_free_percent = 100);
    std::fs::write(full.data.join("expired").join(format!("{id}.{new}")), b"x").unwrap();
    std::fs::write(full.data.join("expired").join("keep.me"), b"x").unwrap();
    update(&full, full.now);
    assert_eq!(full.expired_files(), vec!["keep.me".to_owned()]);
}

/// Runs `a` and `b` on two threads, released at the same moment.
fn at_once(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            a();
        });
        start.wait();
        b();
    });
}

/// How many times a race is run: each test failed within this many rounds
/// without the turns it checks.
const ROUNDS: usize = 20;

#[test]
fn lists_offered_at_once_never_roll_the_version_back() {
    // Two peers forward versions 0.0.2 and 0.0.3 at the same moment. Each
    // offer reads the version in force, then stores its own; unless offers
    // take turns, the older can be stored over the newer.
    for round in 0..ROUNDS {
        let (_src, img, lab) = in_force("g");
        let signed = |version: &str| {
            lab.publish(version, std::slice::from_ref(&img));
            std::fs::read(&lab.list).unwrap()
        };
        let (older, newer) = (signed("0.0.2"), signed("0.0.3"));
        let (site, at) = (lab.site(), ts(lab.now));
        // One of the two may be refused as a rollback: that is the point.
        at_once(|| drop(site.offer_list(&older, at)), || drop(site.offer_list(&newer, at)));
        let sub = site.store().subscription(LIST_ID).unwrap().unwrap();
        assert_eq!(
            sub.current.unwrap().version,
            "0.0.3",
            "round {round}: an older version was stored over a newer one"
        );
    }
}

#[test]
fn a_subscription_disabled_during_an_update_stays_disabled() {
    // A running node takes host commands while its update cycle runs. The
    // cycle reads each subscription, then stores it with the list applied;
    // unless the two take turns, it can store the subscription as enabled
    // again.
    for round in 0..ROUNDS {
        let (_src, img, lab) = in_force("h");
        lab.publish("0.0.2", std::slice::from_ref(&img));
        let (site, at) = (lab.site(), ts(lab.now));
        at_once(
            || drop(site.update(at, &mut |_, _| {}).unwrap()),
            || drop(site.set_enabled(&LIST_ID.to_string(), false, at).unwrap()),
        );
        let sub = site.store().subscription(LIST_ID).unwrap().unwrap();
        assert!(!sub.enabled, "round {round}: the update stored the subscription as enabled again");
    }
}

#[test]
fn an_image_withdrawn_while_it_downloads_is_never_left_available() {
    // The update cycle downloads outside the turn (a download may take
    // minutes). A list that withdraws the image can be applied meanwhile,
    // and settles the image out of the cache; the download must not then
    // install it as available under the withdrawn list.
    for round in 0..ROUNDS {
        let (_src, img) = one_image("i", 300_000);
        let lab = subscribed(NewImages::Cache, std::slice::from_ref(&img));
        let first = std::fs::read(&lab.list).unwrap();
        lab.publish("0.0.2", &[]);
        let withdrawal = std::fs::read(&lab.list).unwrap();
        std::fs::write(&lab.list, first).unwrap();
        let (site, at) = (lab.site(), ts(lab.now));
        // Either order is fine, and either call may fail: what may never
        // happen is an available image that the list in force withdrew.
        let mut report = None;
        at_once(|| report = site.update(at, &mut |_, _| {}).ok(), || drop(site.offer_list(&withdrawal, at)));
        let failed = report.iter().flat_map(|r| &r.images).any(|(_, o)| matches!(o, ImageOutcome::Failed(_)));
        assert!(!failed, "round {round}: a download the withdrawal cut short is reported as failed");
        let sub = site.store().subscription(LIST_ID).unwrap().unwrap();
        assert_eq!(sub.current.unwrap().version, "0.0.2", "round {round}");
        if let Some(rec) = site.store().image(img.id).unwrap() {
            assert_ne!(rec.state, ImageState::Available, "round {round}: a withdrawn image was installed");
            assert!(!rec.endorsed, "round {round}: a withdrawn image is recorded as endorsed");
        }
        assert!(!lab.image_path(img.id).exists(), "round {round}: a withdrawn image stands in the cache");
    }
}

#[test]
fn an_atomic_record_change_keeps_the_other_fields() {
    let (_src, img, lab) = cached("j", 1000);
    let site = lab.site();
    let store = site.store();
    let before = store.image(img.id).unwrap().unwrap();
    let after = store.update_image(img.id, |r| r.attempts = 7).unwrap().unwrap();
    assert_eq!(after.attempts, 7);
    assert_eq!(ImageRecord { attempts: before.attempts, ..after.clone() }, before);
    assert_eq!(store.image(img.id).unwrap().unwrap(), after, "the change is stored");
    assert_eq!(store.update_image(uuid::Uuid::from_u128(99), |r| r.attempts = 1).unwrap(), None);
}

#[test]
fn one_of_two_subscriptions_to_a_list_at_once_is_refused() {
    // Two host commands subscribe to the same list through two URLs at
    // once. Each checks that the list is not subscribed yet, then stores
    // its subscription; unless they take turns, both are told they
    // succeeded and the second silently replaces the first.
    for round in 0..ROUNDS {
        let lab = Lab::new();
        lab.publish("0.0.1", &[]);
        let copy = lab.file_url("copy.smime", &std::fs::read(&lab.list).unwrap());
        let (site, at) = (lab.site(), ts(lab.now));
        let (mut a, mut b) = (None, None);
        at_once(
            || a = Some(site.subscribe(&lab.url(), NewImages::Accept, at).is_ok()),
            || b = Some(site.subscribe(&copy, NewImages::Accept, at).is_ok()),
        );
        assert_eq!(
            [a.unwrap(), b.unwrap()].iter().filter(|ok| **ok).count(),
            1,
            "round {round}: both subscriptions were accepted"
        );
    }
}

#[test]
fn a_hanging_list_source_keeps_no_list_from_a_peer_waiting() {
    // An update fetches its lists before it takes the turn: a source that
    // hangs (up to the fetch's timeouts) must not hold up a list that a
    // peer forwards meanwhile, nor an install.
    let lab = Lab::new();
    lab.publish("0.0.1", &[]);
    let first = std::fs::read(&lab.list).unwrap();
    lab.publish("0.0.2", &[]);
    let second = std::fs::read(&lab.list).unwrap();
    let server = HttpServer::start();
    let url = server.serve("/list.smime", first, Behaviour::Honest);
    let (site, at) = (lab.site(), ts(lab.now));
    site.subscribe(&url, NewImages::Accept, at).unwrap();
    // From now on the source answers, and holds the body for longer than
    // the fetch's timeout unless released.
    server.serve("/list.smime", second.clone(), Behaviour::Held(0));
    std::thread::scope(|s| {
        let update = s.spawn(|| site.update(at, &mut |_, _| {}).unwrap());
        wait_until("the update to fetch the list", || server.requests().len() == 2);
        assert_eq!(site.offer_list(&second, at).unwrap(), ListOutcome::Accepted("0.0.2".into()));
        server.release();
        // The fetch was still waiting when the peer's list was taken: it then
        // got its answer, the version already in force.
        let report = update.join().unwrap();
        assert_eq!(list_outcome(&report), &ListOutcome::Unchanged, "{report:?}");
    });
}

/// An entry cut into more chunks than a manifest may have is refused with
/// a warning, and the rest of the list is taken: peers could never exchange
/// that image, and waiting on it would stall the hosts silently.
#[test]
fn an_entry_of_more_chunks_than_a_manifest_may_have_is_refused_and_the_rest_taken() {
    let (_src, img) = one_image("fine", 1000);
    let careless = Img::new(2, "https://images.example.org/huge.img", bytes(1000, 9));
    let lab = subscribed(NewImages::Cache, &[img.clone(), careless.clone()]);
    // The same list, with the second entry cut into 1 KiB chunks of a
    // 2 TiB image, signed again.
    let mut list = lab.publish("0.0.1", &[img.clone(), careless.clone()]);
    let entry = list.images.iter_mut().find(|i| i.identifier == careless.id).unwrap();
    entry.size = 2 << 40;
    entry.chunking.as_mut().unwrap().chunk_size = proto::manifest::ChunkSize::new(1 << 10).unwrap();
    let cert = node::endorse::load_certificate(&common::pki().path("endorser.pem")).unwrap();
    let key = node::endorse::load_key(&common::pki().path("endorser.key")).unwrap();
    std::fs::write(&lab.list, node::endorse::sign(&list, &cert, &key).unwrap()).unwrap();

    update(&lab, lab.now);
    assert_eq!(state(&lab, &img), ImageState::Available, "the rest of the list is taken");
    assert!(lab.site().store().image(careless.id).unwrap().is_none(), "the careless entry is not");
}
