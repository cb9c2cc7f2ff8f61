//! The store's peak window in Asia/Tokyo time (the schedule the reconciler keeps; the calendar itself is
//! [`crate::clock::JstTime`]).

use crate::clock::JstTime;

/// Peak starts at 09:00 JST (inclusive).
pub const PEAK_START_SECS: u32 = 9 * 3600;
/// Peak ends at 23:00 JST (exclusive).
pub const PEAK_END_SECS: u32 = 23 * 3600;

/// Is `now_ms` (Unix ms) inside the JST peak window, 09:00 <= time < 23:00?
pub fn is_peak(now_ms: u64) -> bool {
    (PEAK_START_SECS..PEAK_END_SECS).contains(&JstTime::from_unix_ms(now_ms).seconds_of_day)
}
