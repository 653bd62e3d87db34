//! Time helpers: the one place that turns clocks into the contract's formats
//! (RFC 3339 UTC strings in JSON, epoch milliseconds in the database).

use time::OffsetDateTime;
use time::macros::format_description;

/// Milliseconds since the Unix epoch, the portable timestamp stored in both
/// database backends (sqlx's Any driver cannot decode `TIMESTAMPTZ`).
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 UTC rendering of an epoch-milliseconds timestamp, always with
/// three fractional digits so that timestamps also sort as strings.
pub fn rfc3339_from_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(format_description!(
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
    }
}
