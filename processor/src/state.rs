//! Durable state: RocksDB holding, per input partition, the open sessions, the ids of closed
//! sessions and the consumed offset — written together in one batch at each checkpoint.
//!
//! Keys (one column family):
//! - `meta` → JSON naming the manifest, version and group the folder belongs to;
//! - `o\0<topic>\0<partition>` → next offset to consume (i64, big-endian);
//! - `s\0<topic>\0<partition>\0<session>` → the session's state ([`SessionState::checkpoint`]);
//! - `r\0<topic>\0<partition>\0<session length, u32 BE><session><chunk, u64 BE>` → a chunk of
//!   the session's dedup ring; each checkpoint writes only the chunks that changed;
//! - `c\0<topic>\0<partition>\0<session>` → when the session was closed (driver clock, µs);
//! - `w\0<topic>\0<partition>` → the changelog writer id of the checkpoint (u64, big-endian).
//!
//! Closed ids stay on disk for good (a few dozen bytes a session): a copy of an event that
//! arrives long after its session closed must not open it again, and replay, which remembers
//! every closed session, refuses it too. Memory holds only the recently closed
//! (`--closed-retention`); an id not found there is looked up on disk, once per session opened.

use std::path::Path;
use std::sync::Arc;

use pitgun_engine::{OpenSessions, SessionState, SessionStore};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, DB};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Error, Result};

/// Which folder belongs to which manifest version: a state folder is never shared by two.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// Manifest name.
    pub manifest: String,
    /// Manifest version.
    pub version: u32,
    /// Consumer group.
    pub group: String,
}

/// The state database of one processor.
pub struct StateDb {
    db: Arc<DB>,
}

/// What a partition's checkpoint holds.
pub struct Restored {
    /// Next offset to consume.
    pub offset: i64,
    /// The partition's sessions and closed ids.
    pub store: PartitionStore,
}

fn part_prefix(tag: u8, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 16);
    k.push(tag);
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(partition.to_string().as_bytes());
    k
}

/// The key of a ring chunk; chunk `u64::MAX` (never written) bounds a session's range.
fn chunk_key(topic: &str, partition: i32, session: &str, chunk: u64) -> Vec<u8> {
    let mut k = part_prefix(b'r', topic, partition);
    k.push(0);
    k.extend_from_slice(&(session.len() as u32).to_be_bytes());
    k.extend_from_slice(session.as_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

fn session_key(tag: u8, topic: &str, partition: i32, session: &str) -> Vec<u8> {
    let mut k = part_prefix(tag, topic, partition);
    k.push(0);
    k.extend_from_slice(session.as_bytes());
    k
}

impl StateDb {
    /// Opens (or creates) the folder; refuses one written for another manifest version.
    pub fn open(dir: &Path, meta: &Meta) -> Result<StateDb> {
        let folder = |e: Box<dyn std::error::Error + Send + Sync>| Error::StateFolder { path: dir.to_path_buf(), source: e };
        std::fs::create_dir_all(dir).map_err(|e| folder(e.into()))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A new session id is looked up among the closed ids on disk, and is almost never there:
        // a bloom filter answers most such misses without reading a block.
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, dir).map_err(|e| folder(e.into()))?;
        match db.get(b"meta").map_err(Error::rocks("reading the meta record"))? {
            Some(bytes) => {
                let found: Meta = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::CorruptState(format!("state folder {}: unreadable meta record: {e}", dir.display())))?;
                if &found != meta {
                    return Err(Error::ForeignState { path: dir.to_path_buf(), found: Box::new(found), want: Box::new(meta.clone()) });
                }
            }
            None => db.put(b"meta", serde_json::to_vec(meta).expect("plain strings and numbers")).map_err(Error::rocks("writing the meta record"))?,
        }
        Ok(StateDb { db: Arc::new(db) })
    }

    /// An empty store for the partition, whose closed ids are looked up in this folder.
    pub fn empty_store(&self, topic: &str, partition: i32) -> PartitionStore {
        let mut prefix = part_prefix(b'c', topic, partition);
        prefix.push(0);
        PartitionStore { closed_on_disk: Some(ClosedOnDisk { db: self.db.clone(), prefix }), ..PartitionStore::default() }
    }

    /// The offset of the partition's checkpoint, if this folder has one (without reading it).
    pub fn checkpoint_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let Some(off) = self.db.get(part_prefix(b'o', topic, partition)).map_err(Error::rocks("reading a checkpoint"))? else {
            return Ok(None);
        };
        let offset: [u8; 8] = off.as_slice().try_into().map_err(|_| Error::CorruptState(format!("{topic}/{partition}: corrupt offset record")))?;
        Ok(Some(i64::from_be_bytes(offset)))
    }

    /// The partition's checkpoint, if this folder has one.
    pub fn restore(&self, topic: &str, partition: i32) -> Result<Option<Restored>> {
        let Some(offset) = self.checkpoint_offset(topic, partition)? else {
            return Ok(None);
        };
        let corrupt = |what: &str| Error::CorruptState(format!("{topic}/{partition}: corrupt {what}"));
        // Closed ids are not read: they are looked up on disk when a session id is new.
        let mut store = self.empty_store(topic, partition);
        let mut prefix = part_prefix(b's', topic, partition);
        prefix.push(0);
        for item in self.db.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item.map_err(Error::rocks("reading a checkpoint"))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id = std::str::from_utf8(&k[prefix.len()..]).map_err(|_| corrupt("session key"))?;
            let state = SessionState::from_bytes(&v).map_err(|e| Error::CorruptState(format!("{topic}/{partition} session {id:?}: {e}")))?;
            store.open.insert(id, state);
        }
        let mut prefix = part_prefix(b'r', topic, partition);
        prefix.push(0);
        for item in self.db.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item.map_err(Error::rocks("reading a checkpoint"))?;
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else { break };
            let chunk_key = || corrupt("ring chunk key");
            let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(chunk_key)?;
            let id = rest.get(..u32::from_be_bytes(*len) as usize).ok_or_else(chunk_key)?;
            let id = std::str::from_utf8(id).map_err(|_| chunk_key())?;
            // A chunk of a session closed in the same checkpoint that deleted it cannot be left
            // behind (the deletion is in the same batch), so an orphan chunk is corruption.
            let state = store.open.get_mut(id).ok_or_else(chunk_key)?;
            state.load_ring_chunk(&v).map_err(|e| Error::CorruptState(format!("{topic}/{partition} session {id:?}: {e}")))?;
        }
        Ok(Some(Restored { offset, store }))
    }

    /// Deletes the partition's checkpoint: its offset, sessions, ring chunks and closed ids.
    pub fn discard(&self, topic: &str, partition: i32) -> Result<()> {
        self.db.write(discard_batch(topic, partition)).map_err(Error::rocks("discarding a checkpoint"))
    }

    /// Adds the partition's changes since its last checkpoint, and its offset, to `batch`; with
    /// `mirror`, the same changes (the offset aside) are also listed there, for the changelog.
    pub fn stage(
        &self,
        batch: &mut WriteBatch,
        topic: &str,
        partition: i32,
        offset: i64,
        store: &mut PartitionStore,
        mirror: Option<&mut Vec<Change>>,
    ) {
        let mut w = Writes { batch, mirror };
        for id in store.dirty.drain() {
            let key = session_key(b's', topic, partition, &id);
            match store.open.get_mut(&id) {
                Some(state) => {
                    let (record, ring) = state.checkpoint();
                    w.put(key, record);
                    for (chunk, bytes) in ring.put {
                        w.put(chunk_key(topic, partition, &id, chunk), bytes);
                    }
                    if !ring.delete.is_empty() {
                        w.delete_range(chunk_key(topic, partition, &id, ring.delete.start), chunk_key(topic, partition, &id, ring.delete.end));
                    }
                }
                None => {
                    w.delete(key);
                    w.delete_range(chunk_key(topic, partition, &id, 0), chunk_key(topic, partition, &id, u64::MAX));
                }
            }
        }
        for (id, at) in store.newly_closed.drain(..) {
            w.put(session_key(b'c', topic, partition, &id), at.to_be_bytes().to_vec());
        }
        batch_offset(w.batch, topic, partition, offset);
    }

    /// Every record of the partition's checkpoint but its offset: sessions, ring chunks and
    /// closed ids (a changelog snapshot).
    pub fn partition_records(&self, topic: &str, partition: i32) -> Result<Vec<KeyValue>> {
        let mut records = Vec::new();
        for tag in [b's', b'r', b'c'] {
            let mut prefix = part_prefix(tag, topic, partition);
            prefix.push(0);
            for item in self.db.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
                let (k, v) = item.map_err(Error::rocks("reading a checkpoint"))?;
                if !k.starts_with(&prefix) {
                    break;
                }
                records.push((k, v));
            }
        }
        Ok(records)
    }

    /// Replaces the partition's checkpoint with `changes` (a changelog's snapshot and the
    /// deltas after it, in order) at `offset`, in one batch.
    pub fn replace(&self, topic: &str, partition: i32, offset: i64, writer: u64, changes: Vec<Change>) -> Result<()> {
        let mut batch = discard_batch(topic, partition);
        for change in changes {
            match change {
                Change::Put(k, v) => batch.put(k, v),
                Change::Delete(k) => batch.delete(k),
                Change::DeleteRange(from, to) => batch.delete_range(from, to),
            }
        }
        batch_offset(&mut batch, topic, partition, offset);
        Self::stage_writer(&mut batch, topic, partition, writer);
        self.db.write(batch).map_err(Error::rocks("writing a checkpoint from the changelog"))
    }

    /// Records which changelog writer the partition's checkpoint belongs to.
    pub fn stage_writer(batch: &mut WriteBatch, topic: &str, partition: i32, writer: u64) {
        batch.put(part_prefix(b'w', topic, partition), writer.to_be_bytes());
    }

    /// The changelog writer the partition's checkpoint belongs to, if recorded.
    pub fn writer(&self, topic: &str, partition: i32) -> Result<Option<u64>> {
        let found = self.db.get(part_prefix(b'w', topic, partition)).map_err(Error::rocks("reading a checkpoint"))?;
        Ok(found.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_be_bytes))
    }

    /// The key of the partition's offset record (the changelog's marks carry it too).
    pub fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
        part_prefix(b'o', topic, partition)
    }

    /// Writes a batch atomically.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db.write(batch).map_err(Error::rocks("writing the checkpoint"))
    }

    /// Bytes on disk and in memtables (an estimate RocksDB keeps).
    pub fn size_bytes(&self) -> u64 {
        let prop = |p: &str| self.db.property_int_value(p).ok().flatten().unwrap_or(0);
        prop("rocksdb.total-sst-files-size") + prop("rocksdb.cur-size-all-mem-tables")
    }
}

/// A batch that deletes the partition's whole checkpoint.
fn discard_batch(topic: &str, partition: i32) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for tag in [b's', b'r', b'c'] {
        let (mut from, mut to) = (part_prefix(tag, topic, partition), part_prefix(tag, topic, partition));
        from.push(0);
        to.push(1);
        batch.delete_range(from, to);
    }
    batch.delete(part_prefix(b'o', topic, partition));
    batch.delete(part_prefix(b'w', topic, partition));
    batch
}

fn batch_offset(batch: &mut WriteBatch, topic: &str, partition: i32, offset: i64) {
    batch.put(part_prefix(b'o', topic, partition), offset.to_be_bytes());
}

/// A stored key and its value.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// One change to a partition's checkpoint, as the changelog carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a key.
    Delete(Vec<u8>),
    /// Delete the keys from the first to the second (excluded).
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// A write batch, and optionally the same changes listed for the changelog.
struct Writes<'a> {
    batch: &'a mut WriteBatch,
    mirror: Option<&'a mut Vec<Change>>,
}

impl Writes<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.batch.put(&key, &value);
        if let Some(m) = self.mirror.as_deref_mut() {
            m.push(Change::Put(key, value));
        }
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.batch.delete(&key);
        if let Some(m) = self.mirror.as_deref_mut() {
            m.push(Change::Delete(key));
        }
    }

    fn delete_range(&mut self, from: Vec<u8>, to: Vec<u8>) {
        self.batch.delete_range(&from, &to);
        if let Some(m) = self.mirror.as_deref_mut() {
            m.push(Change::DeleteRange(from, to));
        }
    }
}

/// Bytes before the records in a RocksDB write batch: sequence number (8) and count (4).
const BATCH_HEADER: usize = 12;

/// Joins write batches into one, to be written atomically. A batch's bytes are a 12-byte header
/// (sequence number, then the record count as a little-endian u32) and its records, so the
/// joined batch is the summed header followed by every batch's records — what RocksDB's own
/// `WriteBatchInternal::Append` does.
pub fn join_batches(batches: &[WriteBatch]) -> WriteBatch {
    let mut data = Vec::with_capacity(BATCH_HEADER + batches.iter().map(|b| b.size_in_bytes()).sum::<usize>());
    data.extend_from_slice(&[0; 8]);
    let count: usize = batches.iter().map(|b| b.len()).sum();
    data.extend_from_slice(&u32::try_from(count).expect("fewer than 2^32 records in a checkpoint").to_le_bytes());
    for b in batches {
        data.extend_from_slice(&b.data()[BATCH_HEADER..]);
    }
    WriteBatch::from_data(&data)
}

/// One partition's sessions in memory, with what changed since the last checkpoint.
#[derive(Default)]
pub struct PartitionStore {
    open: OpenSessions,
    /// Closed sessions and when they closed (driver clock, µs).
    closed: FxHashMap<Box<str>, i64>,
    dirty: FxHashSet<Box<str>>,
    newly_closed: Vec<(Box<str>, i64)>,
    /// Where closed ids no longer in memory are found (none: a store of its own, as in tests).
    closed_on_disk: Option<ClosedOnDisk>,
}

/// One partition's closed ids in the state folder.
struct ClosedOnDisk {
    db: Arc<DB>,
    /// `c\0<topic>\0<partition>\0`.
    prefix: Vec<u8>,
}

impl ClosedOnDisk {
    fn contains(&self, session_id: &str) -> bool {
        let mut key = Vec::with_capacity(self.prefix.len() + session_id.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(session_id.as_bytes());
        match self.db.get_pinned(&key) {
            Ok(found) => found.is_some(),
            Err(e) => {
                // Refusing the event sends it to the late topic, where it is kept; opening the
                // session could overwrite its rows.
                tracing::warn!(session = session_id, "cannot read a closed id from the state folder ({e}); the event is refused as late");
                true
            }
        }
    }
}

impl PartitionStore {
    /// Drops from memory the ids of sessions closed before `cutoff` (driver clock): memory
    /// stays bounded, and the state folder still has them.
    pub fn forget_closed_before(&mut self, cutoff: i64) -> usize {
        // An id closed since the last checkpoint is not on disk yet: it stays until it is.
        let unwritten: FxHashSet<&str> = self.newly_closed.iter().map(|(id, _)| &**id).collect();
        let before = self.closed.len();
        self.closed.retain(|id, at| *at >= cutoff || unwritten.contains(&**id));
        before - self.closed.len()
    }

    /// After a restore, at `now_us`: the time the processor was down is not a session's
    /// idleness, so every idle clock starts again now. (The stored values are not rewritten:
    /// the next restore restarts them too.)
    pub fn resume(&mut self, now_us: i64) {
        self.open.restart_idle_clocks(now_us);
    }
}

impl SessionStore for PartitionStore {
    fn in_memory(&self, session_id: &str) -> Option<&SessionState> {
        self.open.get(session_id)
    }

    fn get_mut(&mut self, session_id: &str) -> Option<&mut SessionState> {
        let s = self.open.get_mut(session_id)?;
        // Any access may change the state; the set keeps one entry per session.
        if !self.dirty.contains(session_id) {
            self.dirty.insert(session_id.into());
        }
        Some(s)
    }

    fn insert(&mut self, session_id: &str, state: SessionState) -> &mut SessionState {
        self.dirty.insert(session_id.into());
        self.open.insert(session_id, state)
    }

    fn remove(&mut self, session_id: &str) -> Option<SessionState> {
        self.dirty.insert(session_id.into());
        self.open.remove(session_id)
    }

    fn open_ids(&self) -> Vec<Box<str>> {
        self.open.ids()
    }

    fn idle_ids(&self, idle_cutoff: i64, ended_cutoff: i64) -> Vec<Box<str>> {
        self.open.idle_ids(idle_cutoff, ended_cutoff)
    }

    fn open_count(&self) -> usize {
        self.open.len()
    }

    fn is_closed(&self, session_id: &str) -> bool {
        self.closed.contains_key(session_id) || self.closed_on_disk.as_ref().is_some_and(|d| d.contains(session_id))
    }

    fn mark_closed(&mut self, session_id: &str, at_us: i64) {
        self.closed.insert(session_id.into(), at_us);
        self.newly_closed.push((session_id.into(), at_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A discarded checkpoint is gone whole; the partition beside it (same topic, a partition
    /// number with the same first digit) keeps its own.
    #[test]
    fn a_discarded_checkpoint_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("pitgun-discard-{}-{:?}", std::process::id(), std::time::SystemTime::now()));
        let meta = Meta { manifest: "m".into(), version: 1, group: "g".into() };
        let db = StateDb::open(&dir, &meta).unwrap();
        for (partition, offset) in [(1, 40), (10, 7)] {
            let mut store = PartitionStore::default();
            store.mark_closed("s-0", 5);
            let mut batch = WriteBatch::default();
            db.stage(&mut batch, "t", partition, offset, &mut store, None);
            db.write(batch).unwrap();
        }
        // An open session's record and a ring chunk of partition 1 (their bytes do not matter here).
        db.db.put(session_key(b's', "t", 1, "s-1"), b"state").unwrap();
        db.db.put(chunk_key("t", 1, "s-1", 0), b"ring").unwrap();
        db.discard("t", 1).unwrap();
        assert!(db.restore("t", 1).unwrap().is_none());
        let mut left = 0;
        for item in db.db.iterator(IteratorMode::Start) {
            let (k, _) = item.unwrap();
            assert!(k.as_ref() == b"meta" || k.windows(5).any(|w| w == b"\0t\x0010"), "left behind: {:?}", String::from_utf8_lossy(&k));
            left += 1;
        }
        assert!(left > 1);
        let kept = db.restore("t", 10).unwrap().unwrap();
        assert_eq!(kept.offset, 7);
        assert!(kept.store.is_closed("s-0") && !kept.store.is_closed("s-1"), "partition 10's closed id is on disk");
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Batches staged apart and joined are written as one: every put, delete and range delete of
    /// each is applied.
    #[test]
    fn joined_batches_apply_every_record_of_each() {
        let dir = std::env::temp_dir().join(format!("pitgun-join-{}-{:?}", std::process::id(), std::time::SystemTime::now()));
        let meta = Meta { manifest: "m".into(), version: 1, group: "g".into() };
        let db = StateDb::open(&dir, &meta).unwrap();
        db.db.put(b"gone", b"x").unwrap();
        db.db.put(b"r1", b"x").unwrap();
        db.db.put(b"r2", b"x").unwrap();
        let mut a = WriteBatch::default();
        a.put(b"a", b"1");
        a.delete(b"gone");
        let mut b = WriteBatch::default();
        b.put(b"b", b"2");
        b.delete_range(b"r0", b"r9");
        b.put(b"c", vec![7u8; 10_000]);
        let joined = join_batches(&[a, b, WriteBatch::default()]);
        assert_eq!(joined.len(), 5);
        db.write(joined).unwrap();
        assert_eq!(db.db.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(db.db.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(db.db.get(b"c").unwrap().map(|v| v.len()), Some(10_000));
        for gone in [&b"gone"[..], b"r1", b"r2"] {
            assert_eq!(db.db.get(gone).unwrap(), None);
        }
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
