//! Wall-clock time, injected. Durations are measured with `tokio::time::Instant`; this is only for
//! timestamps that are stored (connected_at, turn keys, TTLs).

use std::time::{SystemTime, UNIX_EPOCH};

/// Source of the current Unix time in milliseconds.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
