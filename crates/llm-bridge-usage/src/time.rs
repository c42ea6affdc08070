//! Calendar arithmetic for usage queries (UTC), without a date-time dependency.

use llm_bridge_core::calendar::{DAY_MS, civil_from_days, days_from_civil};
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DD` of a timestamp.
pub fn day_of(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// An RFC 3339 UTC timestamp (`2026-11-26T13:05:00Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (h, rem) = (secs.rem_euclid(86_400) / 3600, secs.rem_euclid(3600));
    format!("{}T{h:02}:{:02}:{:02}Z", day_of(ms), rem / 60, rem % 60)
}

/// A point in time written as Unix seconds, `YYYY-MM-DD` (midnight UTC),
/// `YYYY-MM-DDTHH:MM[:SS][Z]`, or a duration before `now` (`90s`, `15m`, `12h`, `7d`).
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    let err = || {
        format!(
            "'{text}' is not a time: use Unix seconds, YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or a duration such as 7d"
        )
    };
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<i64>() {
        return secs.checked_mul(1000).ok_or_else(err);
    }
    if let Some(d) = parse_duration_ms(t) {
        return Ok(now_ms - d);
    }
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, rest)) => (d, Some(rest.trim_end_matches('Z'))),
        None => (t, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(err());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| err())?,
        m.parse().map_err(|_| err())?,
        d.parse().map_err(|_| err())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(err());
    }
    let mut ms = days_from_civil(y, m, d) * DAY_MS;
    if let Some(time) = time {
        let fields: Vec<&str> = time.split(':').collect();
        let nums: Vec<i64> = fields
            .iter()
            .map(|f| f.split('.').next().unwrap_or("").parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| err())?;
        let (h, mi, s) = match nums.as_slice() {
            [h, mi] => (*h, *mi, 0),
            [h, mi, s] => (*h, *mi, *s),
            _ => return Err(err()),
        };
        if h > 23 || mi > 59 || s > 60 {
            return Err(err());
        }
        ms += (h * 3600 + mi * 60 + s) * 1000;
    }
    Ok(ms)
}

/// `90s`, `15m`, `12h`, `7d`, `2w` in milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    llm_bridge_core::calendar::parse_duration_ms(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for day in [-1000, 0, 1, 365, 10_957, 20_000, 20_418, 50_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_764_115_200_000), "2025-11-26");
        assert_eq!(rfc3339(1_764_162_300_000), "2025-11-26T13:05:00Z");
    }

    #[test]
    fn instants() {
        let now = 1_764_162_300_000;
        assert_eq!(parse_instant("2025-11-26", now).unwrap(), 1_764_115_200_000);
        assert_eq!(
            parse_instant("2025-11-26T13:05:00Z", now).unwrap(),
            1_764_162_300_000
        );
        assert_eq!(
            parse_instant("2025-11-26T13:05", now).unwrap(),
            1_764_162_300_000
        );
        assert_eq!(parse_instant("1764162300", now).unwrap(), 1_764_162_300_000);
        assert_eq!(parse_instant("7d", now).unwrap(), now - 7 * DAY_MS);
        assert!(parse_instant("yesterday", now).is_err());
        assert!(parse_instant("2025-13-01", now).is_err());
    }
}
