//! A clock the test sets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;

/// A `Clock` that reads what the test set: fixed ([`TestClock::at`]) or moving 1 ms per reading
/// ([`TestClock::ticking`], so that stored timestamps never repeat), and moved by [`TestClock::set`] and
/// [`TestClock::advance`].
#[derive(Debug, Default)]
pub struct TestClock {
    now_ms: AtomicU64,
    tick: bool,
}

impl TestClock {
    /// Always `ms` until moved.
    pub fn at(ms: u64) -> Self {
        Self { now_ms: AtomicU64::new(ms), tick: false }
    }

    /// `ms` at the first reading, then 1 ms later at each.
    pub fn ticking(ms: u64) -> Self {
        Self { now_ms: AtomicU64::new(ms), tick: true }
    }

    pub fn set(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.now_ms.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        match self.tick {
            true => self.now_ms.fetch_add(1, Ordering::SeqCst),
            false => self.now_ms.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_told_and_a_ticking_one_never_repeats() {
        let fixed = TestClock::at(1_000);
        assert_eq!((fixed.now_ms(), fixed.now_ms()), (1_000, 1_000));
        fixed.advance(Duration::from_secs(60));
        assert_eq!(fixed.now_ms(), 61_000);
        let ticking = TestClock::ticking(5);
        assert_eq!((ticking.now_ms(), ticking.now_ms()), (5, 6));
    }
}
