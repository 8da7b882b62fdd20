//! The `Date` field value (RFC 9110 §5.6.7, IMF-fixdate) for the responses
//! ringmux writes itself.
//!
//! Formatting only: the time comes from the caller (the worker refreshes one
//! cached value on its tick), so nothing here reads a clock.

/// An IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`: always 29 bytes.
pub type HttpDate = [u8; 29];

/// `unix_secs` (seconds since 1970-01-01 00:00:00 UTC) as an IMF-fixdate.
pub fn http_date(unix_secs: u64) -> HttpDate {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let year = year.min(9999);
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], secs / 3600);
    two_digits(&mut out[20..22], secs / 60 % 60);
    two_digits(&mut out[23..25], secs % 60);
    out
}

/// `unix_secs` as the Common Log Format's time: `01/Dec/2026:18:05:00 +0000`.
pub fn clf_time(unix_secs: u64) -> [u8; 26] {
    let d = http_date(unix_secs); // "Tue, 01 Dec 2026 18:05:00 GMT"
    let mut out = *b"01/Jan/1970:00:00:00 +0000";
    out[0..2].copy_from_slice(&d[5..7]);
    out[3..6].copy_from_slice(&d[8..11]);
    out[7..11].copy_from_slice(&d[12..16]);
    out[12..20].copy_from_slice(&d[17..25]);
    out
}

/// `unix_secs` as RFC 3339 in UTC: `2026-12-01T18:05:00Z`.
pub fn rfc3339(unix_secs: u64) -> [u8; 20] {
    let (year, month, day) = civil_from_days(unix_secs / 86_400);
    let secs = unix_secs % 86_400;
    let mut out = *b"1970-01-01T00:00:00Z";
    let year = year.min(9999);
    two_digits(&mut out[0..2], year / 100);
    two_digits(&mut out[2..4], year % 100);
    two_digits(&mut out[5..7], month);
    two_digits(&mut out[8..10], day);
    two_digits(&mut out[11..13], secs / 3600);
    two_digits(&mut out[14..16], secs / 60 % 60);
    two_digits(&mut out[17..19], secs % 60);
    out
}

fn two_digits(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31) in the
/// proleptic Gregorian calendar: the era-based conversion (400-year eras of
/// 146,097 days, years counted from March so the leap day comes last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let cases: [(u64, &str); 6] = [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_164_799, "Wed, 28 Feb 2024 23:59:59 GMT"),
            (1_709_251_200, "Fri, 01 Mar 2024 00:00:00 GMT"),
            (1_796_083_200, "Tue, 01 Dec 2026 00:00:00 GMT"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                std::str::from_utf8(&http_date(secs)).unwrap(),
                want,
                "{secs}"
            );
        }
    }

    #[test]
    fn log_times() {
        assert_eq!(&clf_time(784_111_777), b"06/Nov/1994:08:49:37 +0000");
        assert_eq!(&rfc3339(784_111_777), b"1994-11-06T08:49:37Z");
    }

    #[test]
    fn every_day_of_a_leap_cycle_advances_by_one() {
        // Day by day over 1999..2005: the day of month and month step
        // consistently (no skipped or doubled dates around leap days).
        let mut prev = civil_from_days(10_592); // 1999-01-01
        assert_eq!(prev, (1999, 1, 1));
        for d in 10_593..12_785 {
            let cur = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = if prev.1 == 12 {
                (prev.0 + 1, 1, 1)
            } else {
                (prev.0, prev.1 + 1, 1)
            };
            assert!(cur == next_day || cur == next_month, "{prev:?} -> {cur:?}");
            prev = cur;
        }
    }
}
