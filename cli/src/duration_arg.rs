//! The parser of durations a command cannot run with at zero (an interval, a timeout): `0s` is
//! refused on the command line instead of, say, a checkpoint on every record.

use std::time::Duration;

/// A humantime duration (`500ms`, `30s`, `5m`) greater than zero.
pub fn positive(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_is_refused_and_the_rest_parsed() {
        assert_eq!(super::positive("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(super::positive("0s").unwrap_err(), "must be greater than zero");
        assert!(super::positive("soon").is_err());
    }
}
