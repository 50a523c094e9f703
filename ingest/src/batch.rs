//! A request body → the byte ranges of its items: content type, content encoding, framing.
//!
//! Items are found without parsing them: NDJSON splits on newlines; a JSON array is scanned for
//! its top-level commas (tracking strings, escapes and bracket depth). Each item is then decoded
//! once, strictly, by the validator — so a broken item in an array is reported by its index
//! instead of failing the whole batch, and a good item is parsed only once.

use std::io::Read;
use std::ops::Range;

/// How the body frames its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/json`: one envelope object or an array of them.
    Json,
    /// `application/x-ndjson` and its other names (`application/json-seq` is not one): one
    /// envelope per line. `text/plain` is read as NDJSON too: it is what `navigator.sendBeacon`
    /// can send without a CORS preflight.
    Ndjson,
}

/// Every `Content-Type` the gateway reads (compared without parameters, case-insensitively), and
/// how: the one list the handler, the OpenAPI document and the README follow.
pub const CONTENT_TYPES: [(&str, Framing); 6] = [
    ("application/json", Framing::Json),
    ("application/x-ndjson", Framing::Ndjson),
    ("application/ndjson", Framing::Ndjson),
    ("application/jsonl", Framing::Ndjson),
    ("application/x-jsonlines", Framing::Ndjson),
    ("text/plain", Framing::Ndjson),
];

/// How the body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Identity,
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
}

/// Why a body cannot be split into items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// 415: a content type or encoding the gateway does not read.
    Unsupported(String),
    /// 413: larger than the limit, before or after decompression, or too many items.
    TooLarge(String),
    /// 400: no items, or no way to find them.
    Malformed(String),
}

/// Reads the `Content-Type` header (parameters such as `charset=utf-8` are allowed).
pub fn framing(content_type: Option<&str>) -> Result<Framing, BodyError> {
    let Some(ct) = content_type else {
        return Err(BodyError::Unsupported(format!("missing Content-Type: {}", what_to_send())));
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match CONTENT_TYPES.iter().find(|(name, _)| *name == mime) {
        Some((_, framing)) => Ok(*framing),
        None => Err(BodyError::Unsupported(format!("Content-Type {ct:?} is not supported: {}", what_to_send()))),
    }
}

/// The types a client may send, from [`CONTENT_TYPES`], as a 415 names them.
fn what_to_send() -> String {
    let of = |framing: Framing| CONTENT_TYPES.iter().filter(|(_, f)| *f == framing).map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
    format!("send {} (an envelope or an array) or {} (one envelope per line)", of(Framing::Json), of(Framing::Ndjson))
}

/// Reads the `Content-Encoding` header.
pub fn encoding(content_encoding: Option<&str>) -> Result<Encoding, BodyError> {
    match content_encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(Encoding::Identity),
        Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
        Some("zstd") => Ok(Encoding::Zstd),
        Some(other) => Err(BodyError::Unsupported(format!("Content-Encoding {other:?} is not supported: send gzip, zstd or an uncompressed body"))),
    }
}

/// Decompresses `body` into `out` (cleared first), refusing more than `max` bytes of output, so a
/// small compressed body cannot expand into gigabytes (a zip bomb).
pub fn decompress(body: &[u8], enc: Encoding, max: usize, out: &mut Vec<u8>) -> Result<(), BodyError> {
    out.clear();
    let reader: Box<dyn Read + '_> = match enc {
        Encoding::Identity => {
            out.extend_from_slice(body);
            return Ok(());
        }
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(|e| BodyError::Malformed(format!("zstd body: {e}")))?),
    };
    let name = if enc == Encoding::Gzip { "gzip" } else { "zstd" };
    match reader.take(max as u64 + 1).read_to_end(out) {
        Ok(_) if out.len() > max => Err(BodyError::TooLarge(format!("the {name} body expands to more than the {max}-byte limit"))),
        Ok(_) => Ok(()),
        Err(e) => Err(BodyError::Malformed(format!("cannot decompress the {name} body: {e}"))),
    }
}

/// Splits `body` into the byte ranges of its items, refusing more than `max_items`.
pub fn split(body: &[u8], framing: Framing, max_items: usize, items: &mut Vec<Range<usize>>) -> Result<(), BodyError> {
    items.clear();
    match framing {
        Framing::Ndjson => split_lines(body, max_items, items)?,
        Framing::Json => match body.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(start) if body[start] == b'[' => split_array(body, start, max_items, items)?,
            Some(start) => {
                let end = body.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
                items.push(start..end);
            }
            None => {}
        },
    }
    if items.is_empty() {
        return Err(BodyError::Malformed("the body holds no envelopes".into()));
    }
    Ok(())
}

/// A JSON body's one item refused as malformed JSON, when it is values one after another (NDJSON
/// sent as application/json): the body is refused (400) saying so. Asked only of a refused item,
/// so a good body is still parsed once.
pub fn several_values(item: &[u8]) -> Option<BodyError> {
    let mut values = serde_json::Deserializer::from_slice(item).into_iter::<serde::de::IgnoredAny>();
    matches!((values.next(), values.next()), (Some(Ok(_)), Some(Ok(_)))).then(|| {
        BodyError::Malformed(
            "the body holds more than one JSON value: send one envelope or an array as application/json, or NDJSON as application/x-ndjson".into(),
        )
    })
}

fn too_many(max: usize) -> BodyError {
    BodyError::TooLarge(format!("more than {max} items in one batch; split it"))
}

fn split_lines(body: &[u8], max: usize, items: &mut Vec<Range<usize>>) -> Result<(), BodyError> {
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let mut line = start..end;
        while line.start < line.end && body[line.start].is_ascii_whitespace() {
            line.start += 1;
        }
        while line.end > line.start && body[line.end - 1].is_ascii_whitespace() {
            line.end -= 1;
        }
        if !line.is_empty() {
            if items.len() == max {
                return Err(too_many(max));
            }
            items.push(line);
        }
        start = end + 1;
    }
    Ok(())
}

/// Finds the top-level items of the array opening at `open`. Items are not validated here; a
/// structure the scan cannot follow (an unclosed string or bracket) fails the whole body.
fn split_array(body: &[u8], open: usize, max: usize, items: &mut Vec<Range<usize>>) -> Result<(), BodyError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = None::<usize>;
    let mut expect_item = true;
    let push = |items: &mut Vec<Range<usize>>, s: usize, e: usize| -> Result<(), BodyError> {
        let mut e = e;
        while e > s && body[e - 1].is_ascii_whitespace() {
            e -= 1;
        }
        if items.len() == max {
            return Err(too_many(max));
        }
        items.push(s..e);
        Ok(())
    };
    for (i, &b) in body.iter().enumerate().skip(open + 1) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                match start.take() {
                    Some(s) => push(items, s, i)?,
                    None if !expect_item || items.is_empty() => {}
                    None => return Err(BodyError::Malformed(format!("array item {} is empty (a trailing comma?)", items.len()))),
                }
                return match body[i + 1..].iter().position(|b| !b.is_ascii_whitespace()) {
                    None => Ok(()),
                    Some(j) => Err(BodyError::Malformed(format!("unexpected bytes after the array at byte {}", i + 1 + j))),
                };
            }
            b',' if depth == 0 => {
                let s = start.take().ok_or_else(|| BodyError::Malformed(format!("array item {} is empty (two commas in a row?)", items.len())))?;
                push(items, s, i)?;
                expect_item = true;
                continue;
            }
            _ if b.is_ascii_whitespace() => continue,
            _ => {}
        }
        if start.is_none() {
            start = Some(i);
            expect_item = false;
        }
    }
    // Name where the scan lost track: the item whose brackets or string never closed.
    let place = match start {
        Some(s) => format!(" inside item {} (from byte {s})", items.len()),
        None => String::new(),
    };
    Err(BodyError::Malformed(if in_string {
        format!("the body ends inside a string{place}: the JSON array is not closed")
    } else {
        format!("the JSON array is not closed: the body ends{place} (an item's brackets may not match)")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_values_are_told_from_one_value_and_from_garbage() {
        let one = br#"{"a": 1}"#;
        assert!(several_values(one).is_none());
        assert!(several_values(b"{\"a\": 1}\n  ").is_none(), "trailing whitespace");
        assert!(several_values(b"{\"a\": 1} x").is_none(), "garbage after a value is one malformed item");
        assert!(several_values(b"1 2").is_some());
        assert!(several_values(b"{\"a\": 1}{\"a\": 2}").is_some());
        assert!(several_values(b"{\"a\": 1}\n{\"a\": 2}\n").is_some());
    }

    fn items(body: &str, framing: Framing) -> Result<Vec<&str>, BodyError> {
        let mut r = Vec::new();
        split(body.as_bytes(), framing, 3, &mut r)?;
        Ok(r.into_iter().map(|r| &body[r]).collect())
    }

    #[test]
    fn arrays_split_at_top_level_commas_only() {
        let body = r#" [ {"a":[1,2],"b":"x,]}\"y"} , {"c":{}},7 ] "#;
        assert_eq!(items(body, Framing::Json).unwrap(), [r#"{"a":[1,2],"b":"x,]}\"y"}"#, r#"{"c":{}}"#, "7"]);
        assert_eq!(items(r#"{"one":1}"#, Framing::Json).unwrap(), [r#"{"one":1}"#]);
        assert_eq!(items(r#"[{"broken":}, {"ok":1}]"#, Framing::Json).unwrap(), [r#"{"broken":}"#, r#"{"ok":1}"#]);
    }

    #[test]
    fn bad_arrays_and_limits_are_explained() {
        assert!(matches!(items("[1,2,3,4]", Framing::Json), Err(BodyError::TooLarge(_))));
        assert!(matches!(items("[1,,2]", Framing::Json), Err(BodyError::Malformed(m)) if m.contains("two commas")));
        assert!(matches!(items("[1,2,]", Framing::Json), Err(BodyError::Malformed(m)) if m.contains("trailing comma")));
        assert!(matches!(items("[1,2", Framing::Json), Err(BodyError::Malformed(m)) if m.contains("not closed")));
        assert!(matches!(items("[\"1]", Framing::Json), Err(BodyError::Malformed(m)) if m.contains("inside a string")));
        // The item where the scan lost track is named, with its first byte.
        let e = items(r#"[{"a":[}, {"ok":1}]"#, Framing::Json).unwrap_err();
        assert!(matches!(&e, BodyError::Malformed(m) if m.contains("not closed: the body ends inside item 0 (from byte 1)")), "{e:?}");
        let e = items(r#"[{"ok":1}, {"a":"x}, {"ok":2}]"#, Framing::Json).unwrap_err();
        assert!(matches!(&e, BodyError::Malformed(m) if m.contains("inside a string inside item 1 (from byte 11)")), "{e:?}");
        assert!(matches!(items("[1] x", Framing::Json), Err(BodyError::Malformed(m)) if m.contains("after the array")));
        assert!(matches!(items("[]", Framing::Json), Err(BodyError::Malformed(m)) if m.contains("no envelopes")));
        assert!(matches!(items("  ", Framing::Ndjson), Err(BodyError::Malformed(_))));
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        let mut r = Vec::new();
        split(deep.as_bytes(), Framing::Json, 10, &mut r).unwrap();
        assert_eq!(r.len(), 1, "depth is counted, not recursed");
    }

    #[test]
    fn ndjson_skips_blank_lines_and_trims_cr() {
        assert_eq!(items("{\"a\":1}\r\n\n  \n{\"b\":2}", Framing::Ndjson).unwrap(), ["{\"a\":1}", "{\"b\":2}"]);
        assert!(matches!(items("1\n2\n3\n4\n", Framing::Ndjson), Err(BodyError::TooLarge(_))));
    }

    #[test]
    fn content_headers() {
        assert_eq!(framing(Some("application/json; charset=utf-8")), Ok(Framing::Json));
        assert_eq!(framing(Some("Application/X-NDJSON")), Ok(Framing::Ndjson));
        assert_eq!(framing(Some("text/plain;charset=UTF-8")), Ok(Framing::Ndjson));
        assert!(matches!(framing(Some("text/csv")), Err(BodyError::Unsupported(m)) if m.contains("text/csv")));
        assert!(matches!(framing(None), Err(BodyError::Unsupported(_))));
        assert_eq!(encoding(Some("gzip")), Ok(Encoding::Gzip));
        assert!(matches!(encoding(Some("br")), Err(BodyError::Unsupported(_))));
    }

    /// The document clients are generated from, and the README, name exactly the types read.
    #[test]
    fn the_openapi_document_and_the_readme_name_every_content_type_read() {
        let document: serde_json::Value = serde_json::from_str(crate::gateway::OPENAPI).unwrap();
        let body = &document["paths"]["/v1/envelopes"]["post"]["requestBody"]["content"];
        let documented: std::collections::BTreeSet<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        let read: std::collections::BTreeSet<&str> = CONTENT_TYPES.iter().map(|(name, _)| *name).collect();
        assert_eq!(documented, read);
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("**`POST /v1/envelopes`.**").unwrap()..];
        let section = &section[..section.find("| reason |").unwrap()];
        for (name, _) in CONTENT_TYPES {
            assert!(section.contains(&format!("`{name}`")), "the README's POST /v1/envelopes does not name {name}");
        }
    }

    /// A client refused for its Content-Type learns every type it may send instead.
    #[test]
    fn a_refused_content_type_is_told_every_type_read() {
        for sent in [None, Some("application/xml")] {
            let Err(BodyError::Unsupported(message)) = framing(sent) else { panic!("{sent:?} is read") };
            for (name, _) in CONTENT_TYPES {
                assert!(message.contains(name), "{message:?} does not name {name}");
            }
        }
    }

    #[test]
    fn decompression_is_bounded() {
        use std::io::Write;
        let big = vec![b' '; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&big).unwrap();
        let gz = gz.finish().unwrap();
        let mut out = Vec::new();
        assert!(matches!(decompress(&gz, Encoding::Gzip, 1000, &mut out), Err(BodyError::TooLarge(_))));
        decompress(&gz, Encoding::Gzip, 1 << 20, &mut out).unwrap();
        assert_eq!(out.len(), 1 << 20);
        let zs = zstd::encode_all(&big[..], 3).unwrap();
        assert!(matches!(decompress(&zs, Encoding::Zstd, 1000, &mut out), Err(BodyError::TooLarge(_))));
        assert!(matches!(decompress(b"not gzip", Encoding::Gzip, 1000, &mut out), Err(BodyError::Malformed(_))));
    }
}
