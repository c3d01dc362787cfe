//! Byte rates for a node's status: what a counter gained per second over
//! the last few seconds.
//!
//! # Contract
//! [`Rate::sample`] takes the counter's total with the time, as often as
//! the caller likes; [`Rate::per_sec`] is the gain over a window of at
//! least [`Rate::WINDOW`] that ends at the latest sample (or since the first
//! sample, while fewer seconds have passed). It keeps a bounded number of
//! samples whatever the caller does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A counter's recent rate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// The window a rate is taken over.
    pub(crate) const WINDOW: Duration = Duration::from_secs(5);

    /// Samples kept at most: samples two apart are a second apart or more,
    /// and those older than the window go.
    const MAX: usize = 16;

    /// The counter stood at `total` at `at`.
    pub(crate) fn sample(&mut self, at: Instant, total: u64) {
        let n = self.samples.len();
        // Within a second of the one before the last, the last moves up.
        if n >= 2 && at.saturating_duration_since(self.samples[n - 2].0) < Duration::from_secs(1) {
            self.samples[n - 1] = (at, total);
        } else {
            self.samples.push_back((at, total));
        }
        // One sample at or before the window's start stays.
        while self.samples.len() > 2 && at.saturating_duration_since(self.samples[1].0) >= Self::WINDOW
            || self.samples.len() > Self::MAX
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window (0 before two samples).
    pub(crate) fn per_sec(&self) -> u64 {
        let (Some(&(t0, n0)), Some(&(t1, n1))) = (self.samples.front(), self.samples.back()) else { return 0 };
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        if secs <= 0.0 { 0 } else { (n1.saturating_sub(n0) as f64 / secs) as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_counter_gives_its_rate_and_an_idle_one_falls_to_zero() {
        let start = Instant::now();
        let mut r = Rate::default();
        assert_eq!(r.per_sec(), 0);
        for s in 0..=20u64 {
            r.sample(start + Duration::from_secs(s), s * 1000);
        }
        assert_eq!(r.per_sec(), 1000);
        assert!(r.samples.len() <= Rate::MAX);
        // Idle for longer than the window: no gain over it.
        for s in 21..=30u64 {
            r.sample(start + Duration::from_secs(s), 20_000);
        }
        assert_eq!(r.per_sec(), 0);
    }

    #[test]
    fn frequent_samples_stay_bounded_and_count_the_latest_total() {
        let start = Instant::now();
        let mut r = Rate::default();
        for ms in 0..=10_000u64 {
            r.sample(start + Duration::from_millis(ms), ms * 2);
        }
        assert!(r.samples.len() <= Rate::MAX, "{}", r.samples.len());
        let rate = r.per_sec();
        assert!((1900..=2100).contains(&rate), "{rate}");
    }
}
