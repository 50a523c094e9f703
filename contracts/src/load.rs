//! Reading contract documents from YAML or JSON with errors that name file, line and pointer.

use std::cell::RefCell;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::Value;

use crate::error::{ContractError, Issue};
use crate::hash::content_hash;
use crate::schema::{ContractKind, Validators};

/// A document as read from its file, kept so later errors can point at lines.
#[derive(Debug, Clone)]
pub struct SourceText {
    /// Where it came from.
    pub file: String,
    /// Its text.
    pub text: String,
}

impl SourceText {
    /// Reads a file.
    pub fn read(path: &Path) -> Result<SourceText, ContractError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ContractError::Io { file: file.clone(), cause })?;
        Ok(SourceText { file, text })
    }

    /// An issue at `pointer`, with the line looked up in the text.
    pub fn issue(&self, pointer: &str, message: impl Into<String>) -> Issue {
        Issue { file: self.file.clone(), line: locate_line(&self.text, pointer), pointer: pointer.to_string(), message: message.into() }
    }

    /// JSON by its name, YAML by its name (YAML in flow style opens with `{` too, and YAML reads
    /// JSON); anything else (standard input, a record) by its opening brace.
    fn is_json(&self) -> bool {
        if [".yaml", ".yml"].iter().any(|ext| self.file.ends_with(ext)) {
            return false;
        }
        self.file.ends_with(".json") || self.text.trim_start().starts_with('{')
    }

    /// Parses the text (JSON or YAML) into a JSON value. A key written twice in one mapping is
    /// refused, in both: `serde_json::Value` would keep the last copy, so a manifest with two
    /// `window:` keys ran the second and was called valid.
    pub fn parse(&self) -> Result<Value, ContractError> {
        let repeated = RefCell::new(None);
        let seed = Unique { at: String::new(), repeated: &repeated };
        let parsed = if self.is_json() {
            let mut de = serde_json::Deserializer::from_str(&self.text);
            seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v)).map_err(|e| (Some(e.line()), format!("not valid JSON: {e}")))
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(&self.text);
            seed.deserialize(de).map_err(|e| (e.location().map(|l| l.line()), format!("not valid YAML: {e}")))
        };
        parsed.map_err(|(line, message)| {
            let issue = match repeated.take() {
                // JSON's parser knows the line of the second copy; YAML's says where the mapping began.
                Some((pointer, key)) => Issue {
                    file: self.file.clone(),
                    line: if self.is_json() { line } else { second_copy_line(&self.text, &pointer, &key).or(line) },
                    message: format!("key {key:?} is written twice in one mapping; keep one"),
                    pointer,
                },
                None => Issue { file: self.file.clone(), line, pointer: String::new(), message },
            };
            ContractError::Invalid(vec![issue])
        })
    }
}

/// Reads a value as `serde_json::Value` does, except that a mapping naming a key twice is an
/// error; `repeated` then holds the key's pointer and the key.
struct Unique<'r> {
    /// The pointer of the value being read.
    at: String,
    repeated: &'r RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As `Value` does: a non-finite number (YAML's `.nan`, `.inf`) becomes null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Unique { at: format!("{}/{}", self.at, items.len()), repeated: self.repeated })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = format!("{}/{}", self.at, key.replace('~', "~0").replace('/', "~1"));
            if members.contains_key(&key) {
                let message = format!("key {key:?} is written twice in one mapping");
                *self.repeated.borrow_mut() = Some((at, key));
                return Err(de::Error::custom(message));
            }
            let v = map.next_value_seed(Unique { at, repeated: self.repeated })?;
            members.insert(key, v);
        }
        Ok(Value::Object(members))
    }
}

/// The line of the second copy of `key` in the block mapping holding the first (found by its
/// pointer): the next line at the first copy's column that names it, before the mapping ends;
/// the first copy's line when none does. `None` when the first copy is not found as a block
/// key (a flow mapping, `{a: 1, a: 2}`): the parser's line then stands.
fn second_copy_line(text: &str, pointer: &str, key: &str) -> Option<usize> {
    let first = locate_line(text, pointer)?;
    let lines: Vec<&str> = text.lines().collect();
    let content = |line: &str| line.find(|c: char| c != ' ' && c != '-');
    let names = |line: &str, column: usize| line.get(column..).is_some_and(|rest| rest.starts_with(&format!("{key}:")));
    let column = content(lines.get(first - 1)?).filter(|&c| names(lines[first - 1], c))?;
    for (i, line) in lines.iter().enumerate().skip(first) {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        // Less indented, or a new sequence item at or left of the key: the mapping has ended.
        let indent = line.len() - body.len();
        if indent < column && (body.starts_with('-') || content(line).is_some_and(|c| c < column)) {
            break;
        }
        if content(line) == Some(column) && names(line, column) {
            return Some(i + 1);
        }
    }
    Some(first)
}

/// A typed, schema-valid document with its source and content hash.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The typed document.
    pub doc: T,
    /// The parsed JSON form (what the hash covers).
    pub value: Value,
    /// The source text.
    pub source: SourceText,
    /// `sha256:<hex>` of the canonical JSON form.
    pub hash: String,
}

/// Checks `value` against `kind`'s schema, then parses it strictly into `T`.
pub fn from_value<T: DeserializeOwned>(kind: ContractKind, value: &Value, source: &SourceText) -> Result<T, ContractError> {
    let violations = Validators::get().validate(kind, value);
    if !violations.is_empty() {
        return Err(ContractError::Invalid(violations.into_iter().map(|v| source.issue(&v.pointer, v.message)).collect()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = path_to_pointer(&e.path().to_string());
        ContractError::Invalid(vec![source.issue(&pointer, e.inner().to_string())])
    })
}

/// Reads, schema-validates and parses a document of a known contract.
pub fn load<T: DeserializeOwned>(kind: ContractKind, path: &Path) -> Result<Loaded<T>, ContractError> {
    let source = SourceText::read(path)?;
    load_text(kind, source)
}

/// As [`load`], from text already in memory.
pub fn load_text<T: DeserializeOwned>(kind: ContractKind, source: SourceText) -> Result<Loaded<T>, ContractError> {
    let value = source.parse()?;
    let expected = kind.tag();
    match value.get("schema").and_then(Value::as_str) {
        Some(tag) if tag == expected => {}
        Some(tag) => return Err(ContractError::Invalid(vec![source.issue("/schema", format!("expected a {expected} document, found {tag:?}"))])),
        None => return Err(ContractError::Invalid(vec![source.issue("", format!("missing `schema: {expected}`"))])),
    }
    let doc = from_value(kind, &value, &source)?;
    let hash = content_hash(&value);
    Ok(Loaded { doc, value, source, hash })
}

/// `a.b[2].c` (serde_path_to_error) → `/a/b/2/c`.
fn path_to_pointer(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    let mut out = String::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push('/');
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                out.push('/');
                out.push_str(&rest[1..end]);
                rest = &rest[end + 1..];
            }
        } else {
            out.push('/');
            out.push_str(rest);
        }
    }
    out.replace("//", "/")
}

/// Best-effort line (1-based) of the node a JSON pointer names, in YAML block style or JSON.
///
/// Walks the pointer one segment at a time, looking for the key (or the n-th `- ` item) inside
/// the block of the previous match. Flow-style nodes resolve to the line that holds them.
pub fn locate_line(text: &str, pointer: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0usize; // line of the current node
    let mut node_indent: isize = -1;
    let mut first = true;
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let start = if first { 0 } else { at };
        first = false;
        let mut found = None;
        if let Ok(index) = seg.parse::<usize>() {
            // The n-th sequence item below the current node (YAML `- ` or JSON array element).
            let mut count = 0usize;
            let mut item_indent = None;
            for (i, line) in lines.iter().enumerate().skip(start + 1) {
                let indent = indent_of(line);
                let body = line.trim_start();
                if body.is_empty() || body.starts_with('#') {
                    continue;
                }
                if (indent as isize) <= node_indent && !body.starts_with('-') {
                    break;
                }
                if body.starts_with("- ") || body == "-" || body.starts_with('{') {
                    let want = *item_indent.get_or_insert(indent);
                    if indent == want {
                        if count == index {
                            found = Some((i, indent as isize));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        } else {
            let yaml_key = format!("{seg}:");
            let json_key = format!("\"{seg}\"");
            for (i, line) in lines.iter().enumerate().skip(start) {
                let indent = indent_of(line);
                let body = line.trim_start();
                if body.is_empty() || body.starts_with('#') {
                    continue;
                }
                if i > start && (indent as isize) <= node_indent && !body.starts_with("- ") {
                    break;
                }
                let body = body.strip_prefix("- ").unwrap_or(body);
                if body.starts_with(&yaml_key) || body.starts_with(&json_key) {
                    found = Some((i, (line.len() - body.len()) as isize));
                    break;
                }
                if body.contains(&format!("{seg}: ")) || body.contains(&format!("{json_key}:")) {
                    // A flow mapping holding the key on this line.
                    found = Some((i, indent as isize));
                    break;
                }
            }
        }
        match found {
            Some((line, indent)) => {
                at = line;
                node_indent = indent;
            }
            None => return Some(at + 1),
        }
    }
    Some(at + 1)
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "schema: x\nwindow:\n  kind: tumbling\n  size: 10s\naggregations:\n  - name: a\n    fn: count\n  - name: b\n    fn: max\n    of: speed\n";

    #[test]
    fn locates_keys_and_items() {
        assert_eq!(locate_line(DOC, "/window/size"), Some(4));
        assert_eq!(locate_line(DOC, "/aggregations/1/of"), Some(10));
        assert_eq!(locate_line(DOC, "/aggregations/0/fn"), Some(7));
        assert_eq!(locate_line(DOC, "/aggregations/1"), Some(8));
    }

    /// A key written twice in one mapping is refused, naming the key and the line, in YAML and
    /// in JSON: both parsers keep the last copy, so a manifest with two `window:` keys ran the
    /// second one and `validate` called it valid.
    /// A YAML file in flow style (`{schema: …, name: …}`) is YAML: it was read as JSON for its
    /// opening brace, and refused as "not valid JSON". JSON is read as JSON whatever it is named.
    #[test]
    fn a_yaml_file_in_flow_style_is_read_as_yaml() {
        let flow = SourceText { file: "d.yaml".into(), text: "{schema: pitgun-dictionary/v1, name: racing}\n".into() };
        assert_eq!(flow.parse().unwrap(), serde_json::json!({"schema": "pitgun-dictionary/v1", "name": "racing"}));
        for file in ["d.json", "d.yaml", "-"] {
            let json = SourceText { file: file.into(), text: "{\"schema\": \"x\", \"n\": [1, 2]}".into() };
            assert_eq!(json.parse().unwrap(), serde_json::json!({"schema": "x", "n": [1, 2]}), "{file}");
        }
    }

    #[test]
    fn a_key_written_twice_is_refused_with_its_line() {
        let twice = [
            ("m.yaml", format!("{DOC}window:\n  kind: global\n"), "window", 11),
            ("m.yaml", "schema: x\naggregations:\n  - name: a\n    fn: count\n    name: b\n".to_string(), "name", 5),
            ("m.yaml", "schema: x\nwindow: {kind: a, size: 1s, kind: b}\n".to_string(), "kind", 2),
            ("m.json", "{\"schema\": \"x\",\n \"window\": {\"kind\": \"global\",\n \"kind\": \"tumbling\"}}".to_string(), "kind", 3),
        ];
        for (file, text, key, line) in twice {
            let source = SourceText { file: file.into(), text };
            let err = source.parse().expect_err("a repeated key is refused").to_string();
            assert!(err.contains(&format!("{key:?}")) && err.contains("twice"), "{file}: {err}");
            assert!(err.contains(&format!("{file}:{line}:")), "{file}: the line of the second copy: {err}");
        }
        // The same key in two mappings is no repeat.
        let source = SourceText { file: "m.yaml".into(), text: "a: {kind: x}\nb: {kind: y}\n".into() };
        assert_eq!(source.parse().unwrap(), serde_json::json!({"a": {"kind": "x"}, "b": {"kind": "y"}}));
    }

    #[test]
    fn serde_paths_become_pointers() {
        assert_eq!(path_to_pointer("window.size"), "/window/size");
        assert_eq!(path_to_pointer("aggregations[1].fn"), "/aggregations/1/fn");
        assert_eq!(path_to_pointer("."), "");
    }
}
