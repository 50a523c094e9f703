//! Reading contract documents from YAML or JSON with errors that name file, line and pointer.

use std::path::Path;

use serde::de::DeserializeOwned;
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

    fn is_json(&self) -> bool {
        self.file.ends_with(".json") || self.text.trim_start().starts_with('{')
    }

    /// Parses the text (JSON or YAML) into a JSON value.
    pub fn parse(&self) -> Result<Value, ContractError> {
        if self.is_json() {
            serde_json::from_str(&self.text).map_err(|e| {
                ContractError::Invalid(vec![Issue {
                    file: self.file.clone(),
                    line: Some(e.line()),
                    pointer: String::new(),
                    message: format!("not valid JSON: {e}"),
                }])
            })
        } else {
            serde_yaml_ng::from_str(&self.text).map_err(|e| {
                ContractError::Invalid(vec![Issue {
                    file: self.file.clone(),
                    line: e.location().map(|l| l.line()),
                    pointer: String::new(),
                    message: format!("not valid YAML: {e}"),
                }])
            })
        }
    }
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

    #[test]
    fn serde_paths_become_pointers() {
        assert_eq!(path_to_pointer("window.size"), "/window/size");
        assert_eq!(path_to_pointer("aggregations[1].fn"), "/aggregations/1/fn");
        assert_eq!(path_to_pointer("."), "");
    }
}
