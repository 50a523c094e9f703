//! API keys: one source per key, stored only as SHA-256 hashes.
//!
//! The keys file is a YAML list; `pitgun gateway keygen` prints a new random token once and
//! appends its hash, so the file can be kept in configuration management without holding a
//! secret. A token is `pgk_` and 64 hex digits (256 random bits); a request presents it as
//! `Authorization: Bearer <token>` or `X-Api-Key: <token>`.
//!
//! A presented token is hashed and compared with every stored hash in constant time (`subtle`,
//! the RustCrypto comparison), so how long a refusal takes says nothing about the keys. The file
//! may not be writable by group or others, nor owned by another user than root or the gateway's
//! (whoever can write it, or make it writable, can add a key), and
//! [`KeysFile`] reloads it when it changes or on demand (SIGHUP): a key is revoked by deleting
//! its entry, without a restart.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
    /// (SHA-256 of the token, its source), in file order.
    entries: Vec<([u8; 32], String)>,
}

/// A key's identity for quotas and logs: its SHA-256, never the token.
pub type KeyHash = [u8; 32];

const HEADER: &str = "# API keys of the Pitgun ingest gateway, one entry per token. Only each token's SHA-256 is\n\
# stored; `pitgun gateway keygen --source S --keys FILE` prints a new token once and appends it here.\n";

/// Whether a keys file owned by `owner` may be trusted by a gateway running as `gateway`: root's
/// or its own (any other owner can make it writable and add a key).
fn owner_allowed(owner: u32, gateway: u32) -> bool {
    owner == 0 || owner == gateway
}

impl ApiKeys {
    /// Loads a keys file, refusing one that group or others may write, or that another user
    /// than root or the gateway's own owns (as OpenSSH does for `authorized_keys`).
    pub fn load(path: &Path) -> Result<ApiKeys> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let read = |source| Error::Read { path: path.to_path_buf(), source };
        // The checks and the read see one file: the one opened, not whatever the path names later.
        let mut file = std::fs::File::open(path).map_err(read)?;
        let meta = file.metadata().map_err(read)?;
        let refuse = |source| Err(Error::Keys { path: Some(path.to_path_buf()), source });
        if meta.mode() & 0o022 != 0 {
            return refuse(KeysError::Writable { mode: meta.mode() & 0o777 });
        }
        let gateway = rustix::process::geteuid().as_raw();
        if !owner_allowed(meta.uid(), gateway) {
            return refuse(KeysError::Owner { owner: meta.uid(), gateway });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read)?;
        ApiKeys::parse(&text).map_err(|source| Error::Keys { path: Some(path.to_path_buf()), source })
    }

    /// Parses the text of a keys file.
    pub fn parse(text: &str) -> Result<ApiKeys, KeysError> {
        let entries: Option<Vec<KeyEntry>> = serde_yaml_ng::from_str(text).map_err(KeysError::NotAList)?;
        let mut keys = ApiKeys::default();
        let mut seen = HashSet::new();
        for (i, e) in entries.unwrap_or_default().into_iter().enumerate() {
            let mut hash = [0u8; 32];
            if e.sha256.len() != 64 || hex::decode_to_slice(&e.sha256, &mut hash).is_err() {
                return Err(KeysError::BadHash { entry: i, source_name: e.source });
            }
            if let Some(problem) = pitgun_codec::rules::producer_id_problem(&e.source) {
                return Err(KeysError::BadSource { entry: i, problem });
            }
            if !seen.insert(hash) {
                let first = keys.entries.iter().find(|(h, _)| *h == hash).map(|(_, s)| s.clone()).unwrap_or_default();
                return Err(KeysError::Duplicate { entry: i, first, second: e.source });
            }
            keys.entries.push((hash, e.source));
        }
        Ok(keys)
    }

    /// The key a token is and the source it may send for, if it is a known key. Every stored
    /// hash is compared, each in constant time.
    pub fn source_of(&self, token: &str) -> Option<(KeyHash, &str)> {
        let presented = hash(token);
        let mut found = None;
        for (stored, source) in &self.entries {
            if bool::from(stored.ct_eq(&presented)) {
                found = Some((presented, source.as_str()));
            }
        }
        found
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys (every request gets 401).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The keys file the gateway runs with, reloaded when it changes: the keys a request is checked
/// against are those of the last good reading; a broken new version is refused with an error and
/// the previous keys stay.
#[derive(Debug)]
pub struct KeysFile {
    path: PathBuf,
    keys: RwLock<Arc<ApiKeys>>,
    /// What the file looked like at the last reading, to notice a change without reading it.
    seen: Mutex<Option<Stamp>>,
}

/// A file version as `stat` shows it; Kubernetes replaces a mounted Secret's file by a new one,
/// so the inode changes even if the size and second do not, and a `chmod` changes only the
/// mode and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    changed: (i64, i64),
    len: u64,
    inode: u64,
    mode: u32,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), changed: (m.ctime(), m.ctime_nsec()), len: m.len(), inode: m.ino(), mode: m.mode() })
}

impl KeysFile {
    /// Reads the file (it must be good at start).
    pub fn open(path: &Path) -> Result<KeysFile> {
        let seen = stamp(path);
        let keys = ApiKeys::load(path)?;
        Ok(KeysFile { path: path.to_path_buf(), keys: RwLock::new(Arc::new(keys)), seen: Mutex::new(seen) })
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<ApiKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again: `Ok(n)`, the number of keys now in force; `Err`, what is wrong
    /// with the new version (the previous keys stay).
    pub fn reload(&self) -> Result<usize> {
        let seen = stamp(&self.path);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        let refuse = |source| Err(Error::Keys { path: Some(self.path.clone()), source });
        // A file being written over in place (`cat new > keys`) is empty for a moment, and may
        // change while it is read: neither reading may revoke keys, and the next check reads it
        // again. (A file cut short between two writes and still while read is not caught: write
        // a new file and rename it over the old, as Kubernetes does with a Secret.)
        if seen.is_some_and(|s| s.len == 0) {
            return refuse(KeysError::EmptyOnReload);
        }
        let keys = ApiKeys::load(&self.path)?;
        if stamp(&self.path) != seen {
            return refuse(KeysError::ChangedWhileRead);
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    /// [`KeysFile::reload`] if the file changed since the last reading; `None` if it did not.
    pub fn reload_if_changed(&self) -> Option<Result<usize>> {
        let now = stamp(&self.path);
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return None;
        }
        Some(self.reload())
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
    // A new file is 0600 whatever the umask: the gateway refuses one its group may write.
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::Write { path: path.to_path_buf(), source })?;
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
        assert_eq!(keys.source_of(&web).map(|k| k.1), Some("pitgun-web"));
        assert_eq!(keys.source_of(&sim).map(|k| k.1), Some("pitgun-sim"));
        assert_ne!(keys.source_of(&web).unwrap().0, keys.source_of(&sim).unwrap().0);
        assert_eq!(keys.source_of("pgk_nope"), None);
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&web), "the token itself is never stored");
    }

    /// A key's source is a producer id, as an envelope's `source.id` is: a key for "Pitgun Web"
    /// was loaded, and every envelope its holder sent was refused for another source.
    #[test]
    fn a_key_for_what_is_not_a_producer_id_is_refused() {
        let h = "ab".repeat(32);
        for bad in ["Pitgun Web", "-web", &"w".repeat(129)] {
            let err = ApiKeys::parse(&format!("- {{source: \"{bad}\", sha256: {h}}}")).unwrap_err().to_string();
            assert!(err.contains("entry 0") && err.contains("not a producer id"), "{bad}: {err}");
        }
        assert!(ApiKeys::parse(&format!("- {{source: {}, sha256: {h}}}", "w".repeat(128))).is_ok());
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

    #[test]
    fn a_keys_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        append_new_key(&path, "a", "now").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600, "keygen makes the file 0600 whatever the umask");
        let file = KeysFile::open(&path).unwrap();
        // Each mode differs from the one before, so every step is a change even within one ctime tick.
        for (mode, ok) in [(0o644, true), (0o664, false), (0o646, false), (0o600, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = ApiKeys::load(&path);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {:?}", r.as_ref().err().map(ToString::to_string));
            if let Err(e) = r {
                let msg = format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
                assert!(msg.contains("keys.yaml") && msg.contains(&format!("{:o}", mode)) && msg.contains("chmod go-w"), "{msg}");
            }
            // A chmod alone is noticed as a change, so fixing the mode takes effect without a signal.
            assert_eq!(file.reload_if_changed().map(|r| r.is_ok()), Some(ok), "mode {mode:o}");
        }
    }

    #[test]
    fn only_root_or_the_gateway_itself_may_own_the_keys_file() {
        assert!(owner_allowed(0, 1000) && owner_allowed(1000, 1000) && owner_allowed(0, 0));
        assert!(!owner_allowed(4242, 1000) && !owner_allowed(4242, 0));
    }

    #[test]
    fn a_keys_file_another_user_owns_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        append_new_key(&path, "a", "now").unwrap();
        assert!(ApiKeys::load(&path).is_ok(), "a file of the gateway's own user");
        let me = rustix::process::geteuid().as_raw();
        // Only root may give a file away; elsewhere the refusal below cannot be staged.
        if me == 0 {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().uid(), 4242);
            let e = ApiKeys::load(&path).unwrap_err();
            let msg = format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
            assert!(msg.contains("keys.yaml") && msg.contains("uid 4242") && msg.contains("chown"), "{msg}");
            std::os::unix::fs::chown(&path, Some(0), None).unwrap();
            assert!(ApiKeys::load(&path).is_ok(), "a file root owns");
        } else {
            eprintln!("not root: the refusal of a file another user owns is not staged here");
        }
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_keys_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let a = append_new_key(&path, "a", "now").unwrap();
        let file = KeysFile::open(&path).unwrap();
        assert!(file.reload_if_changed().is_none(), "unchanged");
        let b = append_new_key(&path, "b", "now").unwrap();
        assert_eq!(file.reload_if_changed().unwrap().unwrap(), 2);
        assert!(file.current().source_of(&b).is_some());
        // Revoke a: write the file without its entry (a new file, as an editor or Kubernetes would).
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text.split("- source").filter(|e| !e.starts_with(": \"a\"\n")).collect::<Vec<_>>().join("- source");
        std::fs::write(path.with_extension("new"), &kept).unwrap();
        std::fs::rename(path.with_extension("new"), &path).unwrap();
        assert_eq!(file.reload_if_changed().unwrap().unwrap(), 1);
        assert!(file.current().source_of(&a).is_none(), "revoked");
        std::fs::write(&path, "not: [a list").unwrap();
        assert!(file.reload_if_changed().unwrap().is_err());
        assert!(file.current().source_of(&b).is_some(), "a broken version keeps the keys in force");
        assert!(file.reload_if_changed().is_none(), "and is not read again until it changes");
    }

    /// `cat new.yaml > keys.yaml` empties the file before it writes it: a check in between
    /// must not revoke every key. An empty file keeps the keys in force; `[]` revokes them.
    #[test]
    fn a_file_emptied_to_be_written_again_keeps_the_keys_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let a = append_new_key(&path, "a", "now").unwrap();
        let file = KeysFile::open(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        let refused = file.reload_if_changed().unwrap().unwrap_err();
        let said = pitgun_runtime::error::Chain(&refused).to_string();
        assert!(said.contains("empty"), "{said}");
        assert!(file.current().source_of(&a).is_some(), "the key stays while the file is being written");
        std::fs::write(&path, text).unwrap();
        assert_eq!(file.reload_if_changed().unwrap().unwrap(), 1);
        std::fs::write(&path, "[]\n").unwrap();
        assert_eq!(file.reload_if_changed().unwrap().unwrap(), 0);
        assert!(file.current().source_of(&a).is_none(), "[] revokes every key");
    }
}
