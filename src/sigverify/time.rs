//! Request timestamps: the ISO 8601 basic form SigV4 signs (`20130524T000000Z`) and the
//! HTTP dates SigV2 requests carry (`Tue, 27 Mar 2007 19:36:42 +0000`), as Unix seconds.
//! Owns the byte-level parsing and formatting of those forms; the calendar (proleptic
//! Gregorian, UTC: field validation, days ↔ dates) is the `time` crate's. Nothing here reads
//! a clock.

use ::time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// Unix seconds of a UTC civil time, `None` for an invalid or pre-1970 one.
fn unix(year: u32, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<u64> {
    let small = |n: u32| u8::try_from(n).ok();
    let month = Month::try_from(small(month)?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, small(day)?).ok()?;
    let time = Time::from_hms(small(h)?, small(m)?, small(s)?).ok()?;
    let utc = PrimitiveDateTime::new(date, time).assume_utc();
    u64::try_from(utc.unix_timestamp()).ok()
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0')))
}

/// `YYYYMMDDTHHMMSSZ` → Unix seconds.
pub(crate) fn parse_amz_date(s: &[u8]) -> Option<u64> {
    if s.len() != 16 || s[8] != b'T' || s[15] != b'Z' {
        return None;
    }
    unix(
        digits(&s[0..4])?,
        digits(&s[4..6])?,
        digits(&s[6..8])?,
        digits(&s[9..11])?,
        digits(&s[11..13])?,
        digits(&s[13..15])?,
    )
}

/// Unix seconds → `YYYYMMDDTHHMMSSZ`; saturates at 9999-12-31T23:59:59Z, the last second
/// a four-digit year can name (only a `Date` on that day with a negative offset parses to
/// later).
pub(crate) fn format_amz_date(t: u64) -> [u8; 16] {
    let utc = i64::try_from(t)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or(PrimitiveDateTime::MAX.assume_utc());
    let mut out = *b"00000000T000000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, utc.year().unsigned_abs());
    put(4, 2, u32::from(u8::from(utc.month())));
    put(6, 2, u32::from(utc.day()));
    put(9, 2, u32::from(utc.hour()));
    put(11, 2, u32::from(utc.minute()));
    put(13, 2, u32::from(utc.second()));
    out
}

fn month_of(name: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let pos = MONTHS
        .iter()
        .position(|m| name.eq_ignore_ascii_case(&m[..]))?;
    Some(pos as u32 + 1)
}

/// Zone offset in seconds east of UTC: `GMT`, `UTC`, `Z`, `+hhmm` or `-hhmm`.
fn zone_offset(z: &[u8]) -> Option<i64> {
    if [&b"GMT"[..], b"UTC", b"Z"]
        .iter()
        .any(|n| z.eq_ignore_ascii_case(n))
    {
        return Some(0);
    }
    let (sign, rest) = match z.split_first()? {
        (b'+', rest) => (1, rest),
        (b'-', rest) => (-1, rest),
        _ => return None,
    };
    if rest.len() != 4 {
        return None;
    }
    let (h, m) = (digits(&rest[..2])?, digits(&rest[2..])?);
    (h < 24 && m < 60).then(|| sign * i64::from(h * 3600 + m * 60))
}

/// An RFC 1123 HTTP date, `[Wdy, ]D[D] Mon YYYY HH:MM:SS ZONE` (zone `GMT`, `UTC`, `Z`
/// or a numeric offset, as the S3 documentation's `+0000`) → Unix seconds. The weekday is
/// not checked against the date.
pub(crate) fn parse_http_date(s: &[u8]) -> Option<u64> {
    let s = match s.iter().position(|&b| b == b',') {
        Some(comma) => &s[comma + 1..],
        None => s,
    };
    let mut parts = s
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|p| !p.is_empty());
    let day = parts.next().filter(|d| d.len() <= 2).and_then(digits)?;
    let month = month_of(parts.next()?)?;
    let year = parts.next().filter(|y| y.len() == 4).and_then(digits)?;
    let mut hms = parts.next()?.split(|&b| b == b':');
    let mut field = || hms.next().filter(|f| f.len() == 2).and_then(digits);
    let (h, m, sec) = (field()?, field()?, field()?);
    let offset = zone_offset(parts.next()?)?;
    if parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    let t = unix(year, month, day, h, m, sec)?;
    u64::try_from(t as i64 - offset).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date(b"20130524T000000Z"), Some(1_369_353_600));
        assert_eq!(parse_amz_date(b"20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date(b"20000229T010101Z"), Some(951_786_061));
        assert_eq!(&format_amz_date(951_786_061), b"20000229T010101Z");
        assert_eq!(&format_amz_date(1_369_353_600), b"20130524T000000Z");
        for bad in [
            &b"20130524T000000"[..],
            b"20130524 000000Z",
            b"20130230T000000Z",
            b"20131324T000000Z",
            b"20130524T240000Z",
            b"2013052aT000000Z",
            b"19690101T000000Z",
        ] {
            assert_eq!(
                parse_amz_date(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn calendar_edges() {
        let ok = |s: &[u8], t: u64| {
            assert_eq!(parse_amz_date(s), Some(t), "{}", String::from_utf8_lossy(s));
            assert_eq!(&format_amz_date(t), s);
        };
        ok(b"19700101T000000Z", 0);
        ok(b"19991231T235959Z", 946_684_799);
        ok(b"20000101T000000Z", 946_684_800);
        ok(b"20240229T120000Z", 1_709_208_000);
        ok(b"20241231T235959Z", 1_735_689_599);
        ok(b"21000301T000000Z", 4_107_542_400);
        ok(b"24000229T000000Z", 13_574_563_200);
        ok(b"99991231T235959Z", 253_402_300_799);
        for bad in [
            &b"19691231T235959Z"[..],
            b"00000101T000000Z",
            b"19000229T000000Z",
            b"21000229T000000Z",
            b"20230229T000000Z",
            b"20240230T000000Z",
            b"20240431T000000Z",
            b"20240001T000000Z",
            b"20240100T000000Z",
            b"20241301T000000Z",
            b"20240101T006000Z",
            b"20240101T000060Z",
            b"+2024011T000000Z",
        ] {
            let shown = String::from_utf8_lossy(bad);
            assert_eq!(parse_amz_date(bad), None, "{shown}");
        }
    }

    #[test]
    fn http_dates_around_the_epoch() {
        assert_eq!(parse_http_date(b"Thu, 1 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date(b"Thu, 1 Jan 1970 00:00:00 -0100"),
            Some(3600)
        );
        assert_eq!(parse_http_date(b"Thu, 1 Jan 1970 00:00:00 +0100"), None);
        assert_eq!(parse_http_date(b"Wed, 31 Dec 1969 23:59:59 GMT"), None);
        // The local date is checked before the offset is applied: a 1969 one is refused
        // even when its UTC instant is in 1970.
        assert_eq!(parse_http_date(b"Wed, 31 Dec 1969 23:00:00 -0100"), None);
        assert_eq!(
            parse_http_date(b"Sat, 29 Feb 2020 00:00:00 GMT"),
            Some(1_582_934_400)
        );
        assert_eq!(parse_http_date(b"Fri, 29 Feb 2019 00:00:00 GMT"), None);
    }

    #[test]
    fn format_saturates_past_year_9999() {
        let last = 253_402_300_799;
        assert_eq!(
            parse_http_date(b"Fri, 31 Dec 9999 23:59:59 -0100"),
            Some(last + 3600)
        );
        for t in [last + 1, last + 3600, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(&format_amz_date(t), b"99991231T235959Z", "{t}");
        }
    }

    #[test]
    fn round_trip_over_centuries() {
        for t in (0..5_000_000_000u64).step_by(86_399 * 97) {
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
    }

    #[test]
    fn http_dates() {
        let t = 1_175_024_202; // 2007-03-27 19:36:42 UTC
        assert_eq!(parse_http_date(b"Tue, 27 Mar 2007 19:36:42 +0000"), Some(t));
        assert_eq!(parse_http_date(b"Tue, 27 Mar 2007 19:36:42 GMT"), Some(t));
        assert_eq!(parse_http_date(b"27 Mar 2007 19:36:42 UTC"), Some(t));
        assert_eq!(parse_http_date(b"Tue, 27 Mar 2007 21:36:42 +0200"), Some(t));
        assert_eq!(parse_http_date(b"Tue, 27 Mar 2007 14:36:42 -0500"), Some(t));
        assert_eq!(
            parse_http_date(b"Fri, 1 Jan 2016 00:00:00 GMT"),
            Some(1_451_606_400)
        );
        for bad in [
            &b"Tue, 27 Mar 2007 19:36:42"[..],
            b"Tue, 27 Foo 2007 19:36:42 GMT",
            b"Tue, 27 Mar 07 19:36:42 GMT",
            b"Tue, 27 Mar 2007 19:36 GMT",
            b"Tue, 27 Mar 2007 19:36:42 GMT extra",
            b"Tue, 32 Mar 2007 19:36:42 GMT",
            b"Tue, 27 Mar 2007 19:36:42 +2500",
            b"",
        ] {
            assert_eq!(
                parse_http_date(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
