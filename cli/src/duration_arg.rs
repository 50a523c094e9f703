//! Parsers of the durations commands take: those a command cannot run with at zero (an
//! interval, a timeout), so `0s` is refused on the command line instead of, say, a checkpoint on
//! every record; and a database statement timeout, where zero means none.

use std::time::Duration;

/// A humantime duration (`500ms`, `30s`, `5m`) greater than zero.
pub fn positive(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// `--query-timeout`: zero (none) or 1ms to 24h (PostgreSQL takes at most about 24 days).
pub fn query_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    match d.is_zero() || (Duration::from_millis(1)..=Duration::from_secs(24 * 3600)).contains(&d) {
        true => Ok(d),
        false => Err("must be 0 (none) or from 1ms to 24h".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn zero_is_refused_and_the_rest_parsed() {
        assert_eq!(super::positive("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(super::positive("0s").unwrap_err(), "must be greater than zero");
        assert!(super::positive("soon").is_err());
    }

    #[test]
    fn a_query_timeout_is_none_or_one_postgresql_takes() {
        assert_eq!(super::query_timeout("0s"), Ok(Duration::ZERO));
        assert_eq!(super::query_timeout("250ms"), Ok(Duration::from_millis(250)));
        for refused in ["25h", "500us", "soon"] {
            assert!(super::query_timeout(refused).is_err(), "{refused}");
        }
    }
}
