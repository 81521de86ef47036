//! Clocks for flow records: RFC 3339 wall time and the kernel's monotonic clock.
//!
//! The datapath stamps events with `bpf_ktime_get_coarse_ns` (`CLOCK_MONOTONIC`, coarse), which
//! has no relation to wall time. [`Clocks::now`] reads both clocks once; a monotonic stamp is
//! then placed on the wall clock by its distance from that reading.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `CLOCK_MONOTONIC` in nanoseconds (the clock `bpf_ktime_get_ns` and its coarse variant read).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Both clocks, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    pub wall: SystemTime,
    pub monotonic_ns: u64,
}

impl Clocks {
    pub fn now() -> Clocks {
        Clocks {
            wall: SystemTime::now(),
            monotonic_ns: monotonic_ns(),
        }
    }

    /// The wall time of a monotonic stamp (stamps from the future are taken as now).
    pub fn wall_of(&self, monotonic_ns: u64) -> SystemTime {
        let ago = Duration::from_nanos(self.monotonic_ns.saturating_sub(monotonic_ns));
        self.wall.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    }

    /// How long ago a monotonic stamp was.
    pub fn age(&self, monotonic_ns: u64) -> Duration {
        Duration::from_nanos(self.monotonic_ns.saturating_sub(monotonic_ns))
    }
}

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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

/// RFC 3339 in UTC with nanoseconds, e.g. `2026-05-01T12:00:00.123456789Z` (times before
/// 1970 print as the epoch).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX / 2);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// A short human duration: `850ms`, `42s`, `7m12s`, `3h05m`, `2d04h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_nanos(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        // date -u -d @951782400 → 2000-02-29 (a leap day of a century leap year).
        assert_eq!(
            rfc3339_nanos(at(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
        // date -u -d @1777636800 → 2026-05-01T12:00:00Z.
        assert_eq!(
            rfc3339_nanos(at(1_777_636_800, 123_456_789)),
            "2026-05-01T12:00:00.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(at(4_102_444_799, 999_999_999)),
            "2099-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339_nanos(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn monotonic_stamps_map_onto_the_wall_clock() {
        let c = Clocks {
            wall: at(1000, 0),
            monotonic_ns: 5_000_000_000,
        };
        assert_eq!(c.wall_of(4_000_000_000), at(999, 0));
        assert_eq!(
            c.wall_of(6_000_000_000),
            at(1000, 0),
            "future stamps are now"
        );
        assert_eq!(c.age(4_500_000_000), Duration::from_millis(500));
        let now = Clocks::now();
        assert!(now.monotonic_ns > 0);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(432)), "7m12s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 300)), "3h05m");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2d04h"
        );
    }
}
