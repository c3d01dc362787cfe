//! Who may write a partial file (`node::cache::partial`): chunks received
//! from peers never land in, or count for, an image's data once that data
//! was discarded or is for other content, nor while a download from the
//! source fills it.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::os::unix::fs::FileExt;

use common::{Img, Lab, bytes, digest, ts, wait_until};
use node::site::{ImageOutcome, Site};
use node::store::{ImageRecord, ImageState, NewImages};
use proto::manifest::VerifiedChunk;
use testkit::http::{Behaviour, HttpServer};

/// A lab subscribed, caching new images, to a list holding `img`, and its
/// site, with the list applied but nothing downloaded (as on a worker).
fn applied(img: &Img) -> (Lab, Site) {
    let lab = Lab::new();
    lab.publish("0.0.1", std::slice::from_ref(img));
    let site = lab.site();
    site.subscribe(&lab.url(), NewImages::Cache, ts(lab.now)).unwrap();
    site.update_with(ts(lab.now), false, &mut |_, _| {}).unwrap();
    (lab, site)
}

fn record(site: &Site, img: &Img) -> ImageRecord {
    site.store().image(img.id).unwrap().unwrap()
}

/// A new list version gives the image `new`'s bytes (the same UUID as
/// before), and the site applies it; the image's record after.
fn switch_to(lab: &Lab, site: &Site, new: &Img) -> ImageRecord {
    lab.publish("0.0.2", std::slice::from_ref(new));
    site.update_with(ts(lab.now), false, &mut |_, _| {}).unwrap();
    record(site, new)
}

/// Chunk `index` of `data`, cut as `img` is, checked against the manifest
/// of `data` (as a node checks what it receives).
fn chunk(img: &Img, data: &[u8], index: usize) -> VerifiedChunk<Vec<u8>> {
    let cs = img.chunk_size as usize;
    let m = digest(data, img.chunk_size).manifest;
    let root = m.root();
    let body = data[index * cs..((index + 1) * cs).min(data.len())].to_vec();
    m.verify_root(root).unwrap().verify_chunk(index as u32, body).unwrap()
}

#[test]
fn chunks_written_for_an_images_old_content_never_count_for_its_new_content() {
    let old = Img::new(1, "file:///nonexistent/old", bytes(300_000, 1));
    let (lab, site) = applied(&old);
    let cache = site.cache();
    let mut before = record(&site, &old);
    assert_eq!(before.state, ImageState::Partial);
    let claim = cache.open_partial(&mut before).unwrap().claim;
    cache.write_received(&before, claim, &chunk(&old, &old.bytes, 0)).unwrap();

    // A new list version gives the image other bytes; the old partial data
    // is dropped, and a writer of the new content takes the file.
    let new = Img { bytes: bytes(300_000, 2), uri: "file:///nonexistent/new".into(), ..old.clone() };
    let mut after = switch_to(&lab, &site, &new);
    assert_ne!(after.sha512, before.sha512);
    let new_claim = cache.open_partial(&mut after).unwrap().claim;
    assert_ne!(new_claim, claim);

    // Work for the old content that was under way meanwhile is refused.
    let late_write = cache.write_received(&before, claim, &chunk(&old, &old.bytes, 1));
    assert!(late_write.is_err(), "a chunk of the old content was written into the new content's file");
    let late_commit = cache.commit_received(&before, claim, &[(0, chunk(&old, &old.bytes, 0).hash())]);
    assert!(late_commit.is_err(), "a chunk of the old content was recorded for the new content");
    let store = site.store();
    // So is a download's, which the store alone checks.
    let old_chunk = [(2, chunk(&old, &old.bytes, 2).hash())];
    assert!(store.record_chunks(old.id, &before.sha512, before.chunk_count(), &old_chunk).is_err());
    assert_eq!(store.have(old.id, after.chunk_count()).unwrap().count(), 0);
    let file = std::fs::File::open(store.paths().partial(old.id)).unwrap();
    let mut second = vec![0xff; old.chunk_size as usize];
    file.read_exact_at(&mut second, old.chunk_size).unwrap();
    assert!(second.iter().all(|b| *b == 0), "the old content's chunk 1 is in the new content's file");

    // The new content's own chunks are written and recorded.
    cache.write_received(&after, new_claim, &chunk(&new, &new.bytes, 1)).unwrap();
    cache.commit_received(&after, new_claim, &[(1, chunk(&new, &new.bytes, 1).hash())]).unwrap();
    let have = store.have(new.id, after.chunk_count()).unwrap();
    assert_eq!((have.count(), have.get(1)), (1, true));
    file.read_exact_at(&mut second, new.chunk_size).unwrap();
    assert_eq!(&second, chunk(&new, &new.bytes, 1).body());
}

#[test]
fn chunks_from_peers_are_refused_while_the_source_download_fills_the_image() {
    // A master downloads an image from its source and may hear of the same
    // chunks from another master meanwhile. The source's bytes are checked
    // only once the image is complete, so a verified chunk from a peer must
    // not be recorded beside them (its record would vouch for whichever
    // bytes were written last), nor written over them.
    let data = bytes(400_000, 3);
    let server = HttpServer::start();
    let probe = Img::new(1, "http://unused", data.clone());
    let head = 2 * probe.chunk_size;
    let img = Img { uri: server.serve("/img", data.clone(), Behaviour::Held(head as usize)), ..probe };
    let (lab, site) = applied(&img);
    // The swarm took the image up before the download started.
    let mut rec = record(&site, &img);
    let claim = site.cache().open_partial(&mut rec).unwrap().claim;
    std::thread::scope(|s| {
        let download = s.spawn(|| site.update(ts(lab.now), &mut |_, _| {}).unwrap());
        wait_until("the head of the image to be sent", || server.bytes_sent("/img") >= head);
        wait_until("the download to claim the image", || site.cache().is_sourcing(img.id));
        let cache = site.cache();
        for index in [0, 3] {
            let written = cache.write_received(&rec, claim, &chunk(&img, &data, index as usize));
            assert!(written.is_err(), "chunk {index} from a peer was written during the source download");
            let hash = chunk(&img, &data, index as usize).hash();
            let committed = cache.commit_received(&rec, claim, &[(index, hash)]);
            assert!(committed.is_err(), "chunk {index} from a peer was recorded during the source download");
        }
        server.release();
        let report = download.join().unwrap();
        assert!(report.images.iter().all(|(_, o)| !matches!(o, ImageOutcome::Failed(_))), "{report:?}");
    });
    assert!(!site.cache().is_sourcing(img.id), "the claim outlived the download");
    assert_eq!(record(&site, &img).state, ImageState::Available);
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), data);
}

#[test]
fn chunks_written_before_the_data_was_discarded_never_count_for_the_data_after() {
    // The data is discarded (a failed check, an expiry) while a chunk's
    // commit is under way, and the file is created anew for the same bytes
    // before the commit records: the chunk's bytes went to the deleted
    // file, so the new one must not count them.
    let img = Img::new(1, "file:///nonexistent/img", bytes(300_000, 4));
    let (lab, site) = applied(&img);
    let cache = site.cache();
    let mut rec = record(&site, &img);
    let first = cache.open_partial(&mut rec).unwrap().claim;
    cache.write_received(&rec, first, &chunk(&img, &img.bytes, 0)).unwrap();
    cache.expire(&mut rec, ts(lab.now)).unwrap();
    let mut rec = record(&site, &img);
    let second = cache.open_partial(&mut rec).unwrap().claim;
    assert_ne!(second, first);
    let late = cache.commit_received(&rec, first, &[(0, chunk(&img, &img.bytes, 0).hash())]);
    assert!(late.is_err(), "a chunk written into the deleted file was recorded for the new one");
    assert_eq!(site.store().have(img.id, rec.chunk_count()).unwrap().count(), 0);
    assert!(cache.write_received(&rec, first, &chunk(&img, &img.bytes, 1)).is_err());
    cache.write_received(&rec, second, &chunk(&img, &img.bytes, 1)).unwrap();
    cache.commit_received(&rec, second, &[(1, chunk(&img, &img.bytes, 1).hash())]).unwrap();
    assert!(site.store().have(img.id, rec.chunk_count()).unwrap().get(1));
}

#[test]
fn a_second_update_leaves_the_download_under_way_to_finish() {
    // `imageswarm update` on a host whose node is running runs in the node,
    // beside the node's own update cycle, which may be downloading the
    // image: the command leaves it to finish, and does not fail.
    let data = bytes(300_000, 5);
    let server = HttpServer::start();
    let probe = Img::new(1, "http://unused", data.clone());
    let img = Img { uri: server.serve("/img", data.clone(), Behaviour::Held(probe.chunk_size as usize)), ..probe };
    let (lab, site) = applied(&img);
    std::thread::scope(|s| {
        let first = s.spawn(|| site.update(ts(lab.now), &mut |_, _| {}).unwrap());
        wait_until("the first update's download to claim the image", || site.cache().is_sourcing(img.id));
        let second = site.update(ts(lab.now), &mut |_, _| {}).unwrap();
        assert!(!second.failed(), "{second:?}");
        assert_eq!(second.images, vec![(img.id, ImageOutcome::InProgress)]);
        server.release();
        let first = first.join().unwrap();
        assert_eq!(first.images, vec![(img.id, ImageOutcome::Downloaded)]);
    });
    assert_eq!(std::fs::read(lab.image_path(img.id)).unwrap(), data);
}

#[test]
fn an_open_for_an_images_old_content_never_undoes_its_new_content() {
    // The node's event loop opens images on a blocking thread, for the
    // record a sync read earlier; a new list version may have given the
    // image other bytes meanwhile, and peers' chunks of those recorded.
    let old = Img::new(1, "file:///nonexistent/old", bytes(300_000, 6));
    let (lab, site) = applied(&old);
    let cache = site.cache();
    let mut stale = record(&site, &old);
    let new = Img { bytes: bytes(300_000, 7), uri: "file:///nonexistent/new".into(), ..old.clone() };
    let mut rec = switch_to(&lab, &site, &new);
    let claim = cache.open_partial(&mut rec).unwrap().claim;
    cache.write_received(&rec, claim, &chunk(&new, &new.bytes, 1)).unwrap();
    cache.commit_received(&rec, claim, &[(1, chunk(&new, &new.bytes, 1).hash())]).unwrap();

    let late = cache.open_partial(&mut stale);
    assert!(matches!(late, Err(node::Error::Superseded(_))), "an out-of-date open went ahead: {:?}", late.err());
    assert!(site.store().have(new.id, rec.chunk_count()).unwrap().get(1), "the new content's chunk was forgotten");
    assert_eq!(record(&site, &new).data_for.as_deref(), Some(rec.sha512.as_str()));
    assert!(cache.claim_in_force(new.id, claim), "the new content's writer lost its claim");
}

#[test]
fn an_open_for_an_image_installed_meanwhile_leaves_it_whole() {
    // The same, when the image was completed and installed meanwhile (by a
    // download from the source): its chunk hashes, which its manifest is
    // served from, stay.
    let data = bytes(300_000, 8);
    let server = HttpServer::start();
    let img = Img::new(1, &server.serve("/img", data.clone(), Behaviour::Honest), data);
    let (lab, site) = applied(&img);
    let mut stale = record(&site, &img);
    assert_eq!(stale.state, ImageState::Partial);
    let report = site.update(ts(lab.now), &mut |_, _| {}).unwrap();
    assert_eq!(report.images, vec![(img.id, ImageOutcome::Downloaded)]);

    let late = site.cache().open_partial(&mut stale);
    assert!(matches!(late, Err(node::Error::Superseded(_))), "an out-of-date open went ahead: {:?}", late.err());
    let rec = record(&site, &img);
    assert_eq!(rec.state, ImageState::Available);
    let hashes = site.store().chunk_hashes(img.id, rec.chunk_count()).unwrap();
    assert!(hashes.iter().all(Option::is_some), "the installed image lost chunk hashes");
    assert!(!site.store().paths().partial(img.id).exists(), "an empty partial file appeared beside the image");
}

/// A root that a master attested binds chunks to the site's word only: an
/// image whose chunks match such a root is installed only if its SHA-512 is
/// the list's, whereas a root the list itself names stands for it.
#[test]
fn an_attested_root_never_spares_the_sha512_check() {
    let img = Img::new(3, "file:///nonexistent/img", bytes(300_000, 3));
    let other = bytes(300_000, 4);
    for attested in [true, false] {
        let (_lab, site) = applied(&img);
        let cache = site.cache();
        // The record as a lying master's attestation would leave it: the
        // root of other bytes than the list's.
        let mut rec = record(&site, &img);
        rec.root = Some(digest(&other, img.chunk_size).manifest.root().to_string());
        rec.attestation = attested.then(|| "00".to_owned());
        site.store().put_image(&rec).unwrap();
        let claim = cache.open_partial(&mut rec).unwrap().claim;
        let chunks: Vec<_> = (0..rec.chunk_count() as usize).map(|i| chunk(&img, &other, i)).collect();
        for c in &chunks {
            cache.write_received(&rec, claim, c).unwrap();
        }
        let hashes: Vec<_> = chunks.iter().enumerate().map(|(i, c)| (i as u32, c.hash())).collect();
        cache.commit_received(&rec, claim, &hashes).unwrap();
        let installed = cache.install(&mut rec, None);
        if attested {
            let err = installed.unwrap_err().to_string();
            assert!(err.contains("SHA-512"), "{err}");
            assert!(!site.store().paths().image(img.id).exists(), "bytes the endorser never signed were installed");
        } else {
            installed.unwrap();
        }
    }
}

#[test]
fn an_open_partial_file_has_the_whole_images_space_reserved() {
    use std::os::unix::fs::MetadataExt;
    let img = Img::new(1, "file:///nonexistent/a", bytes(300_000, 1));
    let (lab, site) = applied(&img);
    let mut rec = record(&site, &img);
    drop(site.cache().open_partial(&mut rec).unwrap());
    let meta = std::fs::metadata(node::store::Paths::new(&lab.data).partial(img.id)).unwrap();
    assert_eq!(meta.len(), 300_000);
    assert!(meta.blocks() * 512 >= 300_000, "{} bytes allocated: a sparse file", meta.blocks() * 512);
}
