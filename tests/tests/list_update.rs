//! A list update that gives an image other bytes under the same UUID, while
//! the swarm runs. Every wait is bounded by `loopback::PATIENCE`.

#![allow(clippy::unwrap_used)]

mod loopback;

use loopback::Site;

const MIB: u64 = 1 << 20;

/// 7. While some nodes still hold and serve the old bytes and others fetch
///    the new ones, no honest peer bans another: images travel named by
///    their content, so the two versions never meet. Every node ends with
///    the new bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_changes_an_images_bytes_bans_no_one() -> anyhow::Result<()> {
    let mut site = Site::closed(3, 8 * MIB, MIB).await?;
    site.start_all().await?;
    site.until_workers_complete().await?;

    // Worker 3 sleeps through the update, and wakes to a list source that
    // still serves the old version: it serves the old bytes from its start
    // until the new list reaches it through the swarm.
    site.stop(3).await;
    std::fs::copy(site.demo.www.join("list.smime"), site.demo.www.join("list-old.smime"))?;
    let new_sha = tokio::task::block_in_place(|| site.demo.replace_image_bytes())?;
    assert_ne!(new_sha, site.demo.sha512);
    site.set_list_url(3, &format!("{}/list-old.smime", site.source)).await?;

    // The master takes the new version at its restart, downloads the new
    // bytes and seeds them; the workers hear of it through the swarm.
    site.stop(0).await;
    site.start(0).await?;
    site.start(3).await?;
    let holds_new =
        |s: &Site, i: usize| node::cache::sha512_file(&s.image_path(i)).is_ok_and(|h| hex::encode(h) == new_sha);
    site.until("every node to hold the new bytes", |s| (0..=3).all(|i| holds_new(s, i))).await?;
    for i in 0..=3 {
        let st = site.client(i).status();
        assert_eq!((st.bans, st.chunks_failed), (0, 0), "node {i} took an honest peer for a liar");
    }
    Ok(())
}
