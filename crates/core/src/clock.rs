//! Wall-clock time, injected, and the store's calendar. Durations are measured with `tokio::time::Instant`;
//! this is only for timestamps that are stored (connected_at, turn keys, TTLs) and for the JST calendar
//! (the daily token budget's day, the peak schedule): Japan has no daylight saving time, so JST is always
//! UTC+9 and no time-zone database is needed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Reads the process's CPU time so far (user and system, every thread); `None` where it cannot be read.
/// Injected by the binary (the chat function reads the OS's process CPU clock), so the core reads none.
pub type CpuClock = fn() -> Option<Duration>;

/// The process CPU time used since it was started, by an injected [`CpuClock`]: an invocation's own CPU
/// where one invocation runs per process at a time (Lambda).
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    clock: CpuClock,
    start: Duration,
}

impl CpuMeter {
    /// Starts now; `None` when the clock cannot be read.
    pub fn start(clock: CpuClock) -> Option<Self> {
        clock().map(|start| Self { clock, start })
    }

    /// The CPU time used since [`CpuMeter::start`].
    pub fn used(&self) -> Option<Duration> {
        (self.clock)().map(|now| now.saturating_sub(self.start))
    }
}

/// Japan has no daylight saving time: JST is always UTC+9.
const JST_OFFSET_SECS: u64 = 9 * 3600;
const DAY_MS: u64 = 86_400_000;

/// The JST day of `now_ms` (days since the epoch, counted in JST) and the ms until it ends.
pub fn jst_day(now_ms: u64) -> (u64, u64) {
    let local = now_ms + JST_OFFSET_SECS * 1000;
    (local / DAY_MS, DAY_MS - local % DAY_MS)
}

/// A wall-clock reading in Asia/Tokyo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JstTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    /// Seconds since local midnight.
    pub seconds_of_day: u32,
}

impl JstTime {
    pub fn from_unix_ms(ms: u64) -> Self {
        let secs = ms / 1000 + JST_OFFSET_SECS;
        let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
        let (year, month, day) = civil_from_days(days);
        Self { year, month, day, seconds_of_day: u32::try_from(secs % 86_400).unwrap_or(0) }
    }

    /// `YYYYMMDD`.
    pub fn date_compact(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar (Hinnant's algorithm:
/// count in 400-year eras of 146,097 days, with years starting on 1 March so leap days fall last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}
