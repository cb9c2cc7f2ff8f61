//! Asia/Tokyo wall-clock time without a time-zone database: Japan has no daylight saving time, so JST is
//! always UTC+9, and the civil date follows from the day count.

/// Japan has no daylight saving time: JST is always UTC+9.
const JST_OFFSET_SECS: u64 = 9 * 3600;
/// Peak starts at 09:00 JST (inclusive).
pub const PEAK_START_SECS: u32 = 9 * 3600;
/// Peak ends at 23:00 JST (exclusive).
pub const PEAK_END_SECS: u32 = 23 * 3600;
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

    /// 09:00 <= time < 23:00.
    pub fn is_peak(&self) -> bool {
        (PEAK_START_SECS..PEAK_END_SECS).contains(&self.seconds_of_day)
    }

    /// `YYYYMMDD`.
    pub fn date_compact(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Is `now_ms` (Unix ms) inside the JST peak window?
pub fn is_peak(now_ms: u64) -> bool {
    JstTime::from_unix_ms(now_ms).is_peak()
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
