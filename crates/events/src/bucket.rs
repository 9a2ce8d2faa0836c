//! Time buckets for clustering keys: `minute(ts)`, `hour(ts)`, `day(ts)`.
//!
//! Buckets are written as UTC ISO-8601 prefixes (`2024-11-24`, `2024-11-24T12`,
//! `2024-11-24T12:05`) because they sort as bytes in time order (so range reads over
//! clustering keys are time ranges) and read well in URLs and dashboards.

/// The granularity of a time bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// `YYYY-MM-DDTHH:MM`.
    Minute,
    /// `YYYY-MM-DDTHH`.
    Hour,
    /// `YYYY-MM-DD`.
    Day,
}

impl Bucket {
    /// The bucket named by a function name of the mapping language.
    pub fn named(name: &str) -> Option<Bucket> {
        match name {
            "minute" => Some(Bucket::Minute),
            "hour" => Some(Bucket::Hour),
            "day" => Some(Bucket::Day),
            _ => None,
        }
    }

    /// The bucket holding `secs` (seconds since 1970, UTC; negative is before 1970).
    pub fn format(self, secs: i64) -> String {
        let days = secs.div_euclid(86_400);
        let in_day = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (h, min) = (in_day / 3600, (in_day % 3600) / 60);
        match self {
            Bucket::Day => format!("{y:04}-{m:02}-{d:02}"),
            Bucket::Hour => format!("{y:04}-{m:02}-{d:02}T{h:02}"),
            Bucket::Minute => format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}"),
        }
    }
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian calendar;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(Bucket::Day.format(0), "1970-01-01");
        assert_eq!(Bucket::Hour.format(1_732_450_000), "2024-11-24T12");
        assert_eq!(Bucket::Minute.format(1_732_450_000), "2024-11-24T12:06");
        assert_eq!(Bucket::Day.format(951_782_400), "2000-02-29");
        assert_eq!(Bucket::Day.format(253_402_300_799), "9999-12-31");
        assert_eq!(Bucket::Minute.format(-1), "1969-12-31T23:59");
    }

    #[test]
    fn buckets_sort_in_time_order() {
        let mut last = String::new();
        for secs in (0..4_000_000_000i64).step_by(3_599_999) {
            for b in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
                let _ = b.format(secs);
            }
            let now = Bucket::Minute.format(secs);
            assert!(now > last, "{now} after {last}");
            last = now;
        }
    }
}
