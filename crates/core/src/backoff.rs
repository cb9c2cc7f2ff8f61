//! The one backoff: full-jitter exponential waits between retries, used by every retry loop of the project
//! (the store's writes, the relay's posts, the model's throttle retries, the reconciler's state writes, the
//! HTTP context sources). Retry `n` (from 0) waits a uniformly random time in `0..=min(cap, base * 2^n)`:
//! the "full jitter" of AWS's "Exponential Backoff And Jitter" (Architecture Blog, 2015), which spreads
//! competing clients best; the loops bound the number of attempts (and, for throttles, the time).

use std::time::Duration;

/// Full-jitter exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The ceiling of retry `retry`'s wait (from 0): `min(cap, base * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base.saturating_mul(1u32 << retry.min(16)).min(self.cap)
    }

    /// A random wait for retry `retry` (from 0), in `0..=ceiling(retry)`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wait_stays_between_zero_and_its_doubling_ceiling_and_the_ceilings_reach_the_cap() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        let ceilings: Vec<u128> = (0..6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 400, 400]);
        for retry in 0..6 {
            let waits: Vec<Duration> = (0..2_000).map(|_| b.delay(retry)).collect();
            let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            assert!(*hi <= b.ceiling(retry), "retry {retry}: {hi:?}");
            // Spread over the whole range, not stuck at either end.
            assert!(*lo < b.ceiling(retry) / 10 && *hi > b.ceiling(retry) * 9 / 10, "retry {retry}: {lo:?}..{hi:?}");
        }
        assert_eq!(Backoff::new(Duration::from_secs(1), Duration::from_secs(5)).ceiling(40), Duration::from_secs(5));
    }
}
