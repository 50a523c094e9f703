//! API keys: one source per key, stored only as SHA-256 hashes.
//!
//! The keys file is a YAML list; `pitgun gateway keygen` prints a new random token once and
//! appends its hash, so the file can be kept in configuration management without holding a
//! secret. A token is `pgk_` and 64 hex digits (256 random bits); a request presents it as
//! `Authorization: Bearer <token>` or `X-Api-Key: <token>`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, KeysError, Result};

/// One entry of the keys file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// The `source.id` this key may send for.
    pub source: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// When the key was made (informational).
    #[serde(default)]
    pub created: Option<String>,
    /// Free text: who holds the key.
    #[serde(default)]
    pub note: Option<String>,
}

/// The keys the gateway accepts.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], String>,
}

const HEADER: &str = "# API keys of the Pitgun ingest gateway, one entry per token. Only each token's SHA-256 is\n\
# stored; `pitgun gateway keygen --source S --keys FILE` prints a new token once and appends it here.\n";

impl ApiKeys {
    /// Loads a keys file.
    pub fn load(path: &Path) -> Result<ApiKeys> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        ApiKeys::parse(&text).map_err(|source| Error::Keys { path: Some(path.to_path_buf()), source })
    }

    /// Parses the text of a keys file.
    pub fn parse(text: &str) -> Result<ApiKeys, KeysError> {
        let entries: Option<Vec<KeyEntry>> = serde_yaml_ng::from_str(text).map_err(KeysError::NotAList)?;
        let mut keys = ApiKeys::default();
        for (i, e) in entries.unwrap_or_default().into_iter().enumerate() {
            let mut hash = [0u8; 32];
            if e.sha256.len() != 64 || hex::decode_to_slice(&e.sha256, &mut hash).is_err() {
                return Err(KeysError::BadHash { entry: i, source_name: e.source });
            }
            if e.source.is_empty() {
                return Err(KeysError::NoSource(i));
            }
            if let Some(other) = keys.by_hash.insert(hash, e.source.clone()) {
                return Err(KeysError::Duplicate { entry: i, first: other, second: e.source });
            }
        }
        Ok(keys)
    }

    /// The source a token may send for, if it is a known key.
    pub fn source_of(&self, token: &str) -> Option<&str> {
        self.by_hash.get(&hash(token)).map(String::as_str)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are no keys (every request gets 401).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// A new random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("pgk_{}", hex::encode(bytes))
}

/// Makes a token for `source`, appends its hash to `path` (created if missing) and returns the
/// token. The file is parsed before and after, so a broken file is never appended to silently.
pub fn append_new_key(path: &Path, source: &str, created: &str) -> Result<String> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(Error::Read { path: path.to_path_buf(), source }),
    };
    ApiKeys::parse(&existing).map_err(|source| Error::Keys { path: Some(path.to_path_buf()), source })?;
    let token = new_token();
    let mut entry = String::new();
    if existing.is_empty() {
        entry.push_str(HEADER);
    } else if !existing.ends_with('\n') {
        entry.push('\n');
    }
    entry.push_str(&format!("- source: {}\n  sha256: {}\n  created: \"{created}\"\n", yaml_scalar(source), hex::encode(hash(&token))));
    ApiKeys::parse(&format!("{existing}{entry}"))
        .map_err(|e| Error::Setup(format!("keys file {}: would not parse after appending (is it a YAML list?): {e}", path.display())))?;
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|source| Error::Write { path: path.to_path_buf(), source })?;
    f.write_all(entry.as_bytes()).map_err(|source| Error::Write { path: path.to_path_buf(), source })?;
    Ok(token)
}

fn yaml_scalar(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_appends_and_the_token_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let web = append_new_key(&path, "pitgun-web", "2026-01-01T00:00:00Z").unwrap();
        let sim = append_new_key(&path, "pitgun-sim", "2026-01-01T00:00:00Z").unwrap();
        assert!(web.starts_with("pgk_") && web.len() == 68 && web != sim);
        let keys = ApiKeys::load(&path).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.source_of(&web), Some("pitgun-web"));
        assert_eq!(keys.source_of(&sim), Some("pitgun-sim"));
        assert_eq!(keys.source_of("pgk_nope"), None);
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&web), "the token itself is never stored");
    }

    #[test]
    fn broken_files_are_refused() {
        assert!(ApiKeys::parse("- {source: a, sha256: xyz}").is_err());
        assert!(ApiKeys::parse("- {source: a, sha256: 00, extra: 1}").is_err());
        let h = "ab".repeat(32);
        assert!(ApiKeys::parse(&format!("- {{source: a, sha256: {h}}}\n- {{source: b, sha256: {h}}}")).is_err());
        assert!(ApiKeys::parse("").unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(&path, "keys: {}\n").unwrap();
        assert!(append_new_key(&path, "a", "now").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keys: {}\n");
    }
}
