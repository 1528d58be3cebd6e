//! The PAX `mtime` record: the ustar/GNU header holds whole, non-negative
//! seconds only, so nanoseconds and pre-1970 times travel in a PAX extended
//! header placed before the entry.

use filetime::FileTime;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The PAX `mtime` value for a time given as (seconds, nanoseconds >= 0), or
/// `None` when the header's seconds field already holds it exactly.
pub(crate) fn mtime_value(secs: i64, nanos: i64) -> Option<String> {
    let nanos = nanos.clamp(0, NANOS_PER_SEC - 1);
    if nanos == 0 {
        return (secs < 0).then(|| secs.to_string());
    }
    if secs < 0 {
        // (-2 s, +0.5 s) is -1.5 s: PAX writes the sign once, for the whole value.
        let whole = -(secs + 1);
        let frac = NANOS_PER_SEC - nanos;
        Some(format!("-{whole}.{frac:09}"))
    } else {
        Some(format!("{secs}.{nanos:09}"))
    }
}

/// Parses a PAX time (`[-]SECONDS[.FRACTION]`); `None` if malformed, so the
/// caller falls back to the header's seconds.
pub(crate) fn parse_mtime(value: &[u8]) -> Option<FileTime> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    // Finer than nanoseconds is cut; shorter fractions are scaled up.
    let mut nanos: i64 = 0;
    for digit in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + i64::from(digit - b'0');
    }
    let (secs, nanos) = if !negative {
        (secs, nanos)
    } else if nanos == 0 {
        (secs.checked_neg()?, 0)
    } else {
        (secs.checked_neg()?.checked_sub(1)?, NANOS_PER_SEC - nanos)
    };
    Some(FileTime::from_unix_time(secs, u32::try_from(nanos).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_non_negative_seconds_need_no_record() {
        assert_eq!(mtime_value(1_600_000_000, 0), None);
        assert_eq!(mtime_value(0, 0), None);
    }

    #[test]
    fn formats_nanos_and_negative_times() {
        assert_eq!(
            mtime_value(1_600_000_000, 123_456_789).as_deref(),
            Some("1600000000.123456789")
        );
        assert_eq!(mtime_value(5, 1).as_deref(), Some("5.000000001"));
        assert_eq!(
            mtime_value(-2, 500_000_000).as_deref(),
            Some("-1.500000000")
        );
        assert_eq!(
            mtime_value(-1, 500_000_000).as_deref(),
            Some("-0.500000000")
        );
        assert_eq!(mtime_value(-7, 0).as_deref(), Some("-7"));
    }

    #[test]
    fn round_trips() {
        for (s, n) in [
            (1_600_000_000, 123_456_789),
            (-2, 500_000_000),
            (-1, 1),
            (-7, 0),
            (3, 999_999_999),
        ] {
            let v = mtime_value(s, n).unwrap();
            let t = parse_mtime(v.as_bytes()).unwrap();
            assert_eq!(
                (t.unix_seconds(), i64::from(t.nanoseconds())),
                (s, n),
                "{v}"
            );
        }
    }

    #[test]
    fn parses_other_writers_forms() {
        let t = parse_mtime(b"1600000000.5").unwrap();
        assert_eq!(
            (t.unix_seconds(), t.nanoseconds()),
            (1_600_000_000, 500_000_000)
        );
        let t = parse_mtime(b"12.1234567891234").unwrap();
        assert_eq!((t.unix_seconds(), t.nanoseconds()), (12, 123_456_789));
        let t = parse_mtime(b"42").unwrap();
        assert_eq!((t.unix_seconds(), t.nanoseconds()), (42, 0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"-",
            b".5",
            b"1.2.3",
            b"x1",
            b"1e9",
            b"1.-5",
            b"\xff",
        ] {
            assert!(parse_mtime(bad).is_none(), "{bad:?}");
        }
    }
}
