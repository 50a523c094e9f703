//! Query parameters: parsed into typed values, or a 400 that names the parameter and what is
//! wrong. Unknown parameters are refused too, so a typo (`?tarck=spa`) is not silently ignored.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A bad request: the message the client gets with its 400.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest(pub String);

/// The most characters a text value (a filter, a session id) may have: the longest dimension
/// value an envelope may carry (256, its schema's `dimensionValue`), so any stored player,
/// track or car can be asked for. The OpenAPI document's `maxLength`, which counts characters,
/// as the envelope's limits do.
pub const MAX_TEXT_CHARS: usize = 256;

/// Why `value` cannot be a text value: empty, too long or holding a NUL (PostgreSQL text cannot).
pub fn text_problem(value: &str) -> Option<String> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Some(format!("expected 1 to {MAX_TEXT_CHARS} characters, got {chars}"));
    }
    value.contains('\0').then(|| "NUL characters are not allowed".to_string())
}

/// The pairs of a query string (`application/x-www-form-urlencoded`: `+` is a space), each name
/// and value percent-decoded and required to be UTF-8: a value that is not is refused naming its
/// parameter, where a lossy reading would look for U+FFFD instead.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, BadRequest> {
    let decode = |part: &str| -> Option<String> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced).decode_utf8().ok().map(|c| c.into_owned())
    };
    let mut pairs = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = decode(name) else {
            return Err(BadRequest(format!("a parameter name ({name:?}) is not UTF-8 once percent-decoded")));
        };
        let Some(value) = decode(value) else {
            return Err(BadRequest(format!("{name}: not UTF-8 once percent-decoded")));
        };
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// The raw parameters of one request, checked against the names an endpoint takes.
pub struct Params {
    raw: HashMap<String, String>,
}

impl Params {
    /// Refuses any parameter not in `allowed`, and one given twice (which value was meant
    /// cannot be known).
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Params, BadRequest> {
        let mut unknown: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).filter(|k| !allowed.contains(k)).collect();
        unknown.sort_unstable();
        if let Some(k) = unknown.first() {
            return Err(BadRequest(format!("unknown parameter {k:?}; this endpoint takes {}", allowed.join(", "))));
        }
        let mut raw = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if raw.contains_key(&k) {
                return Err(BadRequest(format!("{k}: given more than once; give it once")));
            }
            raw.insert(k, v);
        }
        Ok(Params { raw })
    }

    /// A non-empty text value, if given.
    pub fn text(&self, name: &str) -> Result<Option<String>, BadRequest> {
        match self.raw.get(name) {
            None => Ok(None),
            Some(v) => match text_problem(v) {
                Some(problem) => Err(BadRequest(format!("{name}: {problem}"))),
                None => Ok(Some(v.clone())),
            },
        }
    }

    /// A required text value.
    pub fn required(&self, name: &str) -> Result<String, BadRequest> {
        self.text(name)?.ok_or_else(|| BadRequest(format!("{name} is required")))
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn limit(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, BadRequest> {
        match self.raw.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(BadRequest(format!("{name}: expected an integer from {min} to {max}, got {v:?}"))),
            },
        }
    }

    /// An RFC 3339 UTC timestamp (`2026-11-27T10:00:00Z`, fractions allowed, `t` and `z` in either
    /// case), if given. One before 1970 is before every stored time: read as 1970's start.
    pub fn time(&self, name: &str) -> Result<Option<SystemTime>, BadRequest> {
        let Some(v) = self.raw.get(name) else { return Ok(None) };
        let refused = || BadRequest(format!("{name}: expected an RFC 3339 UTC timestamp such as 2026-11-27T10:00:00Z, got {v:?}"));
        // The grammar is ASCII; only `T` and `Z` are letters in it.
        let text = v.to_ascii_uppercase();
        let parsed = humantime::parse_rfc3339(&text);
        // humantime refuses years before 1970 as out of range: such a timestamp is checked as the
        // same date in 1970 (any year's dates are valid in 1970 but 29 February).
        let before_1970 = || {
            let year: u16 = text.get(..4).filter(|y| y.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()?;
            let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
            let rest = text.get(4..)?;
            let same_in_1970 = format!("1970{}", if leap { rest.replacen("-02-29", "-02-28", 1) } else { rest.to_string() });
            (year < 1970 && humantime::parse_rfc3339(&same_in_1970).is_ok()).then_some(UNIX_EPOCH)
        };
        parsed.ok().or_else(before_1970).map(Some).ok_or_else(refused)
    }

    /// A paging cursor from an earlier page of `list` ([`runs_list`], [`laps_list`]), if given.
    pub fn cursor(&self, name: &str, list: &str) -> Result<Option<Cursor>, BadRequest> {
        match self.raw.get(name) {
            None => Ok(None),
            Some(v) => {
                Cursor::decode(v, list).map(Some).ok_or_else(|| BadRequest(format!("{name}: not a cursor this API returned for this list ({v:?})")))
            }
        }
    }
}

/// Where a page ends: its last row's time and id, the page's order (keyset paging, so rows
/// written meanwhile do not shift pages). Runs are paged by start and session id, a session's
/// lap rows by anchor and row id.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The time of the last row on the page (`started_at`, `window_anchor`).
    pub at: SystemTime,
    /// Its id (`session_id`, `row_id`).
    pub id: String,
}

/// The list a cursor pages through: its position means nothing in another, so a cursor of one
/// given to another is refused, not read as a place in it.
pub fn runs_list() -> String {
    "runs".into()
}

/// See [`runs_list`]: a session's lap rows (`/v1/runs/{session}` and `/performance` share it).
pub fn laps_list(session: &str) -> String {
    format!("laps/{session}")
}

impl Cursor {
    /// Opaque to clients: hex of `<list>\n<µs since epoch>:<id>`.
    pub fn encode(&self, list: &str) -> String {
        let us = self.at.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        hex::encode(format!("{list}\n{us}:{}", self.id))
    }

    fn decode(s: &str, list: &str) -> Option<Cursor> {
        let text = String::from_utf8(hex::decode(s).ok()?).ok()?;
        // The list's name may hold a line break (a session id): it is matched, not split at one.
        let position = text.strip_prefix(list)?.strip_prefix('\n')?;
        let (us, id) = position.split_once(':')?;
        // Only what this API hands out: times up to the year 9999, an id it could store.
        let us: u64 = us.parse().ok().filter(|&us| us < 253_402_300_800_000_000)?;
        if text_problem(id).is_some() {
            return None;
        }
        Some(Cursor { at: UNIX_EPOCH + Duration::from_micros(us), id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that is not UTF-8 once percent-decoded is refused naming its parameter, not
    /// read as U+FFFD (which then matched nothing, or matched a stored U+FFFD).
    #[test]
    fn the_query_string_is_read_as_utf8_or_refused() {
        let pairs = query_pairs(Some("player=Ana+Mar%C3%ADa&track=spa%26co&x")).unwrap();
        assert_eq!(pairs, [("player".into(), "Ana María".into()), ("track".into(), "spa&co".into()), ("x".into(), String::new())]);
        assert_eq!(query_pairs(None).unwrap(), []);
        assert_eq!(query_pairs(Some("")).unwrap(), []);
        let refused = query_pairs(Some("track=spa&player=%FF")).unwrap_err();
        assert_eq!(refused.0, "player: not UTF-8 once percent-decoded");
        assert!(query_pairs(Some("%FF=1")).unwrap_err().0.contains("a parameter name"));
    }

    fn params(pairs: &[(&str, &str)], allowed: &[&str]) -> Result<Params, BadRequest> {
        Params::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), allowed)
    }

    /// A dimension value may have 256 characters (the envelope schema's `dimensionValue`), and
    /// the gateway stores such a player, track or car: a filter naming it was refused at 200.
    #[test]
    fn a_filter_as_long_as_the_longest_dimension_value_is_taken() {
        let longest = "t".repeat(256);
        let p = params(&[("track", &longest)], &["track"]).unwrap();
        assert_eq!(p.text("track").unwrap().as_deref(), Some(longest.as_str()));
    }

    #[test]
    fn limits_count_characters_and_a_repeat_is_refused() {
        let wide = "赛".repeat(MAX_TEXT_CHARS);
        let p = params(&[("player", &wide)], &["player"]).unwrap();
        assert_eq!(p.text("player").unwrap().as_deref(), Some(wide.as_str()));
        let c = Cursor { at: UNIX_EPOCH, id: wide.clone() };
        assert_eq!(Cursor::decode(&c.encode("runs"), "runs"), Some(c));
        let p = params(&[("player", &(wide + "x"))], &["player"]).unwrap();
        assert_eq!(p.text("player").unwrap_err().0, "player: expected 1 to 256 characters, got 257");
        assert_eq!(params(&[("player", "a"), ("player", "b")], &["player"]).err().unwrap().0, "player: given more than once; give it once");
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(
            params(&[("tarck", "spa")], &["track", "limit"]).err().unwrap().0,
            "unknown parameter \"tarck\"; this endpoint takes track, limit"
        );
        let p = params(&[("limit", "0"), ("since", "yesterday"), ("cursor", "zz")], &["limit", "since", "cursor", "track"]).unwrap();
        assert_eq!(p.limit("limit", 10, 1, 100).unwrap_err().0, "limit: expected an integer from 1 to 100, got \"0\"");
        assert!(p.time("since").unwrap_err().0.starts_with("since: expected an RFC 3339 UTC timestamp"));
        assert!(p.cursor("cursor", &runs_list()).is_err());
        assert_eq!(p.required("track").unwrap_err().0, "track is required");
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor { at: UNIX_EPOCH + Duration::from_micros(1_767_225_603_677_340), id: "s-1:2".into() };
        assert_eq!(Cursor::decode(&c.encode(&runs_list()), &runs_list()), Some(c.clone()));
        assert_eq!(Cursor::decode(&hex::encode("runs\n99999999999999999999:s"), "runs"), None, "out of range");
        assert_eq!(Cursor::decode(&hex::encode("runs\n1:"), "runs"), None);
        // A position in one list is none in another: a runs cursor given for a session's laps,
        // or one session's lap cursor for another's, was read as a place in it.
        assert_eq!(Cursor::decode(&c.encode(&runs_list()), &laps_list("s-1")), None);
        assert_eq!(Cursor::decode(&c.encode(&laps_list("s-1")), &laps_list("s-2")), None);
        assert_eq!(Cursor::decode(&c.encode(&laps_list("s-1")), &laps_list("s-1")), Some(c.clone()));
        // A session id may hold a line break: its cursors are read back too.
        assert_eq!(Cursor::decode(&c.encode(&laps_list("a\nb")), &laps_list("a\nb")), Some(c.clone()));
        assert_eq!(Cursor::decode(&c.encode(&laps_list("a\nb")), &laps_list("a")), None);
    }

    /// RFC 3339 lets `T` and `Z` be lowercase, and a time before 1970 is a time too: before
    /// every stored row, so the whole list.
    #[test]
    fn since_takes_every_rfc3339_utc_timestamp() {
        let at = |v: &str| params(&[("since", v)], &["since"]).unwrap().time("since");
        assert_eq!(at("2026-01-01t00:00:01z").unwrap(), Some(UNIX_EPOCH + Duration::from_secs(1_767_225_601)));
        assert_eq!(at("1969-12-31T23:59:59.5Z").unwrap(), Some(UNIX_EPOCH));
        assert_eq!(at("0001-01-01T00:00:00Z").unwrap(), Some(UNIX_EPOCH));
        assert_eq!(at("1968-02-29T00:00:00Z").unwrap(), Some(UNIX_EPOCH));
        for bad in ["1969-02-29T00:00:00Z", "1969-13-01T00:00:00Z", "1969-12-31", "1969-12-31T00:00:00+02:00", "-001-01-01T00:00:00Z"] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }
}
