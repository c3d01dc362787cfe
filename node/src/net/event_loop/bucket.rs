//! Byte caps (`--upload-limit`, `--download-limit`, a master's egress and
//! the WAN limit), paced as a link of the cap's rate would pace them.
//!
//! # Contract
//! * Over any interval, the bytes that pass a cap are at most its rate
//!   times the interval, plus [`Bucket::SLACK`] of its rate.
//! * Callers that keep a cap busy get its whole rate, however many wait at
//!   once and whatever amounts they take.

use std::sync::Arc;
use std::time::Duration;

/// A byte cap, kept as a link of that rate would keep it: each caller's
/// bytes are booked behind everything booked before, and pass when a link
/// of the cap's rate would have carried them. A cap idle for a while lends
/// at most [`Bucket::SLACK`] of its rate, so it holds over short intervals
/// too. Callers wait one timer each, in turn: none waits for the cap to
/// have a whole burst free, which callers taking smaller amounts would keep
/// from happening.
#[derive(Debug)]
pub(super) struct Bucket {
    bytes_per_sec: f64,
    /// When the bytes booked so far have passed.
    booked: std::sync::Mutex<tokio::time::Instant>,
}

impl Bucket {
    /// What an idle cap lends.
    const SLACK: Duration = Duration::from_millis(20);

    pub(super) fn new(bytes_per_sec: Option<u64>) -> Option<Arc<Self>> {
        let bytes_per_sec = bytes_per_sec.filter(|&b| b > 0)? as f64;
        Some(Arc::new(Self { bytes_per_sec, booked: std::sync::Mutex::new(tokio::time::Instant::now()) }))
    }

    /// Waits until `bytes` may pass.
    pub(super) async fn take(bucket: Option<&Self>, bytes: usize) {
        let Some(b) = bucket else { return };
        let carried = {
            let mut booked = b.booked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            let start = (*booked).max(now.checked_sub(Self::SLACK).unwrap_or(now));
            *booked = start + Duration::from_secs_f64(bytes as f64 / b.bytes_per_sec);
            *booked
        };
        tokio::time::sleep_until(carried).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::Bucket;

    /// Concurrent callers taking chunks and their odd remainders get the
    /// cap's whole rate: 4 MB at 1 MB/s take 4 s, less what an idle cap
    /// lends.
    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_get_the_whole_rate_and_no_more() {
        let cap = Bucket::new(Some(1_000_000)).unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let cap = cap.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        Bucket::take(Some(&cap), 94_000).await;
                        Bucket::take(Some(&cap), 6_000).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(3_980), "{took:?}: faster than the cap");
        assert!(took <= Duration::from_millis(4_000), "{took:?}: slower than the cap");
    }

    /// An idle cap lends its slack once, then paces again.
    #[tokio::test(start_paused = true)]
    async fn an_idle_cap_lends_its_slack_once() {
        let cap = Bucket::new(Some(1_000_000)).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let started = Instant::now();
        Bucket::take(Some(&cap), 20_000).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "20 ms of slack pass at once");
        Bucket::take(Some(&cap), 100_000).await;
        assert_eq!(started.elapsed(), Duration::from_millis(100), "then the cap's rate");
        Bucket::take(Some(&cap), 100_000).await;
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[test]
    fn no_cap_is_none() {
        assert!(Bucket::new(None).is_none());
        assert!(Bucket::new(Some(0)).is_none());
    }
}
