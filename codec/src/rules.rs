//! The parts of `pitgun-envelope/v1` the engine's decoder leaves to the schema: lengths, name
//! patterns and property counts.
//!
//! The decoder checks types, required and unknown fields, the schema tag, non-empty ids and
//! ranges; these rules the rest, by hand rather than by running the JSON Schema validator per
//! item (which would cost more than everything else together). Every reader applies them: the
//! gateway, `publish` and `export` whole ([`check`]), the engine in parts so that what repeats
//! from event to event is checked once (`pitgun_engine`'s resolver). A test holds decoder +
//! these rules to the schema validator over the schema's examples and mutations of them.

use std::borrow::Cow;

use crate::json::EnvelopeView;

/// A rule the envelope breaks: JSON pointer and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Where.
    pub pointer: String,
    /// What.
    pub message: String,
}

fn broken(pointer: impl Into<String>, message: impl Into<String>) -> Result<(), Broken> {
    Err(Broken { pointer: pointer.into(), message: message.into() })
}

/// Length in characters (JSON Schema counts code points), without counting short strings.
fn too_long(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().count() > max
}

/// Appends `name` to `base` as one JSON pointer segment (RFC 6901 escaping).
pub fn pointer(base: &str, name: &str) -> String {
    let mut p = String::with_capacity(base.len() + name.len() + 1);
    p.push_str(base);
    p.push('/');
    for c in name.chars() {
        match c {
            '~' => p.push_str("~0"),
            '/' => p.push_str("~1"),
            c => p.push(c),
        }
    }
    p
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]*$`
fn is_producer_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b[0].is_ascii_alphanumeric() && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// `^[a-z][a-z0-9_]*$`
fn is_dimension_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b[0].is_ascii_lowercase() && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The schema's semantic-version pattern: `MAJOR.MINOR.PATCH` without leading zeros, then
/// optional `-pre.release` and `+build` parts of `[0-9A-Za-z-]+` identifiers.
pub fn is_semver(s: &str) -> bool {
    let (core, build) = match s.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let numeric = |n: &str| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) && (n == "0" || !n.starts_with('0'));
    let idents = |x: &str| x.split('.').all(|i| !i.is_empty() && i.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    let mut parts = core.split('.');
    let three = (0..3).all(|_| parts.next().is_some_and(numeric)) && parts.next().is_none();
    three && pre.is_none_or(idents) && build.is_none_or(idents)
}

/// A channel named twice in one envelope is refused wherever an envelope is read (the gateway,
/// `publish`, and the engine on replay and on the stream): which value is meant cannot be known,
/// and keeping one would silently drop the other.
pub fn unique_channels(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    repeated_name(&view.channels).map_or(Ok(()), |name| Err(repeated_channel(name)))
}

/// The refusal of a channel named twice, for readers that find the repeat themselves.
pub fn repeated_channel(name: &str) -> Broken {
    Broken { pointer: pointer("/channels", name), message: format!("channel {name:?} appears more than once in this envelope") }
}

/// Refuses a dimension named twice: keeping one value would drop the other unseen (`player`
/// decides whose leaderboard a lap joins). The decoders apply it to every record; a record has
/// a few dimensions, so it costs a few comparisons.
pub fn unique_dims(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    match repeated_name(&view.dims) {
        Some(name) => broken(pointer("/dims", name), format!("dimension {name:?} appears more than once in this envelope")),
        None => Ok(()),
    }
}

/// The first name that repeats. Up to 4 names are compared pairwise. Up to 32 names (every envelope producers send) go into a
/// 64-slot open-addressed table on the stack, so each name is compared only with the few that
/// share its slot; a hostile list whose names all share one costs at most the 496 comparisons
/// of the pairwise scan. Beyond 32, a hash set.
fn repeated_name<'e, V>(entries: &'e [(Cow<'_, str>, V)]) -> Option<&'e str> {
    if entries.len() <= 4 {
        let repeats = |i: usize| entries[..i].iter().any(|(earlier, _)| crate::text::same(earlier, &entries[i].0));
        return (1..entries.len()).find(|&i| repeats(i)).map(|i| entries[i].0.as_ref());
    }
    if entries.len() > 32 {
        let mut seen = std::collections::HashSet::new();
        return entries.iter().map(|(n, _)| n.as_ref()).find(|n| !seen.insert(*n));
    }
    // Each slot holds the index + 1 of the name in it (0: empty).
    let mut slots = [0u8; 64];
    for (i, (name, _)) in entries.iter().enumerate() {
        let mut slot = slot_of(name.as_bytes());
        loop {
            match slots[slot] {
                0 => {
                    slots[slot] = i as u8 + 1;
                    break;
                }
                taken if crate::text::same(&entries[usize::from(taken) - 1].0, name) => return Some(name),
                _ => slot = (slot + 1) % slots.len(),
            }
        }
    }
    None
}

/// A name's first slot of 64: its length and up to eight bytes at each end, mixed by one
/// multiplication (names of one dictionary often share a prefix, a suffix or a length).
#[inline]
fn slot_of(name: &[u8]) -> usize {
    let n = name.len();
    let word = |at: usize| u64::from_le_bytes(name[at..at + 8].try_into().expect("8 bytes"));
    let bytes = if n >= 8 { word(0) ^ word(n - 8).rotate_left(29) } else { name.iter().fold(0u64, |h, &b| (h << 8) | u64::from(b)) };
    ((bytes ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
}

/// Checks what the decoder does not. `view` must have decoded without error. The engine makes
/// the same checks in parts (the source once per producer version, the channels once per new
/// list), so the stream and replay refuse what the gateway refuses.
pub fn check(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    check_ids(view)?;
    check_source(&view.source.id, &view.source.version)?;
    check_channels(view)?;
    check_dims(view)
}

/// Most characters of an `event_id` or a `session_id` (the decoder refuses an empty one).
const MAX_ID_CHARS: usize = 128;

/// `event_id` and `session_id`: at most 128 characters.
#[inline]
pub fn check_ids(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    if too_long(&view.event_id, MAX_ID_CHARS) {
        return broken("/event_id", "longer than 128 characters");
    }
    if too_long(&view.session_id, MAX_ID_CHARS) {
        return broken("/session_id", "longer than 128 characters");
    }
    Ok(())
}

/// Whether `id` is a session id an envelope may carry: for reading the session of an item the
/// decoder refused for something else.
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty() && !too_long(id, MAX_ID_CHARS)
}

/// What is wrong with `id` as a producer id (the schema's `source.id`; an API key's source), if
/// anything.
pub fn producer_id_problem(id: &str) -> Option<String> {
    (too_long(id, 128) || !is_producer_id(id))
        .then(|| format!("{id:?} is not a producer id (letters, digits, '.', '_', '-', starting with a letter or digit; at most 128)"))
}

/// A producer id and version as the schema has them.
pub fn check_source(id: &str, version: &str) -> Result<(), Broken> {
    if let Some(problem) = producer_id_problem(id) {
        return broken("/source/id", problem);
    }
    if too_long(version, 128) || !is_semver(version) {
        return broken("/source/version", format!("{version:?} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])"));
    }
    Ok(())
}

/// At most 1,024 channels, each named with 1 to 128 characters, once.
pub fn check_channels(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    if view.channels.len() > 1024 {
        return broken("/channels", format!("{} channels; at most 1024", view.channels.len()));
    }
    for (name, _) in &view.channels {
        if name.is_empty() || too_long(name, 128) {
            return broken(pointer("/channels", name), "a channel name has 1 to 128 characters");
        }
    }
    unique_channels(view)
}

/// At most 64 dimensions, each a snake-case name of at most 64 characters with a value of 1 to
/// 256 characters.
#[inline]
pub fn check_dims(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    check_dim_names(view)?;
    check_dim_values(view)
}

/// At most 64 dimensions, each a snake-case name of at most 64 characters. (Names repeat from
/// event to event: the engine checks a list once.)
pub fn check_dim_names(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    if view.dims.len() > 64 {
        return broken("/dims", format!("{} dimensions; at most 64", view.dims.len()));
    }
    for (name, _) in &view.dims {
        if too_long(name, 64) || !is_dimension_name(name) {
            return broken(pointer("/dims", name), "a dimension name is snake case ([a-z][a-z0-9_]*), at most 64 characters");
        }
    }
    Ok(())
}

/// Each dimension's value has 1 to 256 characters.
#[inline]
pub fn check_dim_values(view: &EnvelopeView<'_>) -> Result<(), Broken> {
    for (name, value) in &view.dims {
        if value.is_empty() || too_long(value, 256) {
            return broken(pointer("/dims", name), "a dimension value has 1 to 256 characters");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::json::decode;
    use pitgun_contracts::schema::{ContractKind, Validators};

    use super::*;

    const GOOD: &str = r#"{"schema":"pitgun-envelope/v1","event_id":"e1","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s1","seq":1,"time_us":1000,"kind":"sample","channels":{"speed_kmh":120.5,"in_pit":true},"dims":{"track":"monza"}}"#;

    /// Decoder + rules accept exactly what the schema accepts, and point at the same place.
    fn agree(text: &str) {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let schema = Validators::get().validate(ContractKind::Envelope, &value);
        let ours = decode(text).map_err(|e| e.pointer).and_then(|v| check(&v).map_err(|b| b.pointer));
        assert_eq!(schema.is_empty(), ours.is_ok(), "{text}\nschema: {schema:?}\nours: {ours:?}");
        if let (Some(v), Err(p)) = (schema.first(), &ours) {
            assert!(p.starts_with(&v.pointer) || v.pointer.starts_with(p.as_str()), "{text}: schema {v:?}, ours {p}");
        }
    }

    #[test]
    fn rules_equal_the_schema_on_mutations() {
        let long = "x".repeat(129);
        let mutations = [
            ("\"e1\"", format!("\"{long}\"")),
            ("\"e1\"", format!("\"{}\"", "é".repeat(128))),
            ("\"s1\"", format!("\"{long}\"")),
            ("\"pitgun-web\"", "\"-web\"".into()),
            ("\"pitgun-web\"", "\"pit gun\"".into()),
            ("\"pitgun-web\"", format!("\"{long}\"")),
            ("\"1.4.2\"", "\"1.4\"".into()),
            ("\"1.4.2\"", "\"01.4.2\"".into()),
            ("\"1.4.2\"", "\"1.4.2-rc.1+b.7\"".into()),
            ("\"1.4.2\"", "\"1.4.2-\"".into()),
            ("\"1.4.2\"", "\"1.4.2+a..b\"".into()),
            ("\"speed_kmh\"", "\"\"".into()),
            ("\"speed_kmh\"", format!("\"{long}\"")),
            ("\"track\"", "\"Track\"".into()),
            ("\"track\"", "\"9track\"".into()),
            ("\"monza\"", "\"\"".into()),
            ("\"monza\"", format!("\"{}\"", "m".repeat(257))),
            ("\"monza\"", format!("\"{}\"", "ü".repeat(256))),
        ];
        agree(GOOD);
        for (from, to) in mutations {
            agree(&GOOD.replace(from, &to));
        }
        let many: Vec<String> = (0..1025).map(|i| format!("\"c{i}\":1")).collect();
        agree(&GOOD.replace("\"speed_kmh\":120.5", &many.join(",")));
        let dims: Vec<String> = (0..65).map(|i| format!("\"d{i}\":\"v\"")).collect();
        agree(&GOOD.replace("\"track\":\"monza\"", &dims.join(",")));
    }

    #[test]
    fn rules_equal_the_schema_on_its_examples() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/pitgun-envelope/examples");
        for kind in ["valid", "invalid"] {
            for entry in std::fs::read_dir(format!("{dir}/{kind}")).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == "expected.json") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let value: serde_json::Value = if path.extension().is_some_and(|e| e == "json") {
                    serde_json::from_str(&text).unwrap()
                } else {
                    serde_yaml_ng::from_str(&text).unwrap()
                };
                agree(&serde_json::to_string(&value).unwrap());
            }
        }
    }

    /// A dimension named twice was accepted with the last value kept: `player` decides whose
    /// leaderboard a lap joins, so the other value was dropped without a word. It is refused as
    /// a channel named twice is.
    #[test]
    fn a_dimension_named_twice_is_refused() {
        let text = GOOD.replace("\"track\":\"monza\"", "\"player\":\"dara\",\"track\":\"monza\",\"player\":\"mallory\"");
        let refused = decode(&text).unwrap_err();
        assert_eq!(refused.pointer, "/dims/player");
        assert_eq!(refused.message, "dimension \"player\" appears more than once in this envelope");
        let mut general = crate::json::EnvelopeView::empty();
        assert_eq!(crate::json::decode_general_into(&text, &mut general).unwrap_err(), refused, "both decoders");
    }

    #[test]
    fn pointers_escape_names() {
        assert_eq!(pointer("/channels", "a/b~c"), "/channels/a~1b~0c");
    }

    /// The first name equal to an earlier one, comparing every pair: what the slot table must
    /// find.
    fn first_repeat(names: &[String]) -> Option<&str> {
        (1..names.len()).find(|&i| names[..i].contains(&names[i])).map(|i| names[i].as_str())
    }

    fn entries(names: &[String]) -> Vec<(Cow<'_, str>, f64)> {
        names.iter().map(|n| (Cow::Borrowed(n.as_str()), 0.0)).collect()
    }

    proptest::proptest! {
        /// Names from a small alphabet, so that lengths, prefixes, suffixes and slots collide,
        /// in lists on both sides of the 32 where the table gives way to a hash set.
        #[test]
        fn the_slot_table_finds_the_first_repeat(names in proptest::collection::vec("[ab_]{0,11}", 0..40)) {
            let list = entries(&names);
            proptest::prop_assert_eq!(repeated_name(&list), first_repeat(&names));
        }
    }

    #[test]
    fn a_repeat_is_found_whatever_the_slot_it_lands_in() {
        // 31 distinct names, then each of them in turn as the 32nd: the largest list the table
        // takes, with the repeat wherever its first copy landed.
        let mut names: Vec<String> = (0..31).map(|i| format!("channel_{i:02}")).collect();
        for repeat in 0..31 {
            names.push(names[repeat].clone());
            let list = entries(&names);
            assert_eq!(repeated_name(&list), Some(names[repeat].as_str()));
            names.pop();
        }
        assert_eq!(repeated_name(&entries(&names)).map(str::to_owned), None);
    }
}
