//! Time helpers: the one place that turns clocks into the contract's formats
//! (RFC 3339 UTC strings in JSON, epoch milliseconds in the database).

use time::OffsetDateTime;
use time::macros::format_description;

/// Milliseconds since the Unix epoch, the portable timestamp stored in both
/// database backends (sqlx's Any driver cannot decode `TIMESTAMPTZ`).
/// Read from `SystemTime` directly: it is called on every request (metrics
/// rollups) and `OffsetDateTime::now_utc` does calendar work first.
pub fn now_ms() -> i64 {
    ms_of(std::time::SystemTime::now())
}

/// `at` in milliseconds since the Unix epoch (negative before it).
pub(crate) fn ms_of(at: std::time::SystemTime) -> i64 {
    match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

/// RFC 3339 UTC rendering of an epoch-milliseconds timestamp, always with
/// three fractional digits so that timestamps also sort as strings.
///
/// Years 0–9999 are written digit by digit: `format` walks a format
/// description and cost about 2k instructions per call, which every
/// `/api/health` response paid.
pub(crate) fn rfc3339_from_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    if !(0..=9999).contains(&t.year()) {
        return formatted(t);
    }
    let mut out = String::with_capacity(24);
    push_digits(&mut out, t.year() as u32, 4);
    for (sep, n, width) in [
        ('-', u32::from(u8::from(t.month())), 2),
        ('-', u32::from(t.day()), 2),
        ('T', u32::from(t.hour()), 2),
        (':', u32::from(t.minute()), 2),
        (':', u32::from(t.second()), 2),
        ('.', u32::from(t.millisecond()), 3),
    ] {
        out.push(sep);
        push_digits(&mut out, n, width);
    }
    out.push('Z');
    out
}

/// `n` zero-padded to `width` digits.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
    }
}

fn formatted(t: OffsetDateTime) -> String {
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// The current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    rfc3339_from_ms(now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ms_renders_as_rfc3339_utc() {
        assert_eq!(rfc3339_from_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_from_ms(1_500), "1970-01-01T00:00:01.500Z");
        assert!(
            rfc3339_from_ms(47_910) < rfc3339_from_ms(47_915),
            "sorts as text"
        );
        for ms in [
            1,
            999,
            951_782_400_123,
            1_764_355_200_007,
            253_402_300_799_999,
        ] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            assert_eq!(rfc3339_from_ms(ms), formatted(t), "{ms}");
        }
    }
}
