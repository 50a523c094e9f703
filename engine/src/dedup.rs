//! Per-session duplicate detection by event id, with bounded memory.
//!
//! A duplicate is the same event id in the same session, whatever its sequence number: a
//! resend keeps its id, but a producer may number it anew. Ids are therefore looked up by a
//! 4-byte fingerprint in one array (`Fingerprints`: the lookup is per event, and its cache
//! footprint is what it costs); a fingerprint found is confirmed, with the sequence number the
//! id was first seen with, by a scan of the full id hashes, which only duplicates pay (and one
//! event in some millions whose fingerprint another id shares). Where ids are *kept* (for
//! forgetting by time, confirming, and checkpoints)
//! is a ring indexed by `seq - base`: a session's sequence numbers are dense and
//! increasing, so recording an event is an array write. An id whose sequence number falls
//! outside the ring (far ahead, far behind, or a slot another id holds) goes to a small log
//! instead, bounded by [`OVERFLOW_CAP`]; past it the oldest is forgotten and counted.
//!
//! **The bound.** The engine forgets ids of events older than the session's *horizon*
//! (watermark − allowed lateness) and refuses, as late, any event older than that horizon, so a
//! forgotten id can never be counted twice. Memory per session is thus the ids of the last
//! `allowed_lateness + out_of_orderness` of event time (about 2,000 at 60 Hz with the shipped
//! manifests), whatever the window: a session-long global window no longer keeps every id of the
//! session. The ring spans at most [`MAX_SPAN`] sequence numbers, and starts anew at a far
//! sequence number once its older ids are forgotten (a producer that renumbered).
//!
//! The ring is stored by a durable store as fixed chunks of [`RING_CHUNK`] sequence numbers
//! under their own keys, and each checkpoint writes only the chunks changed since the last one
//! ([`SeenEvents::take_changes`]) and deletes the ones forgotten; the session's own record holds
//! the ring's bounds and the overflow log (at most [`OVERFLOW_CAP`] entries).

use std::collections::VecDeque;

/// The ring spans at most this many sequence numbers; an id further from its base, or more
/// than [`MAX_GAP`] past its end, goes to the overflow log.
const MAX_SPAN: u64 = 1 << 16;

/// A sequence number more than this past the ring's end is not worth growing the ring for (a
/// producer that jumped its numbering would otherwise make the ring, and a checkpoint, huge).
const MAX_GAP: u64 = 4096;

/// Most ids kept outside the ring per session; past it the oldest is forgotten (counted in
/// [`SeenEvents::evicted`]).
pub const OVERFLOW_CAP: usize = 4096;

/// Sequence numbers per stored ring chunk: chunk `c` holds sequence numbers
/// `c * RING_CHUNK .. (c + 1) * RING_CHUNK` (a second or so of a 60 Hz session, 4 KB).
pub const RING_CHUNK: u64 = 256;

/// Bytes of one ring entry in a stored chunk: id hash and event time, little-endian.
const ENTRY: usize = 16;

/// Event ids seen in one session.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct SeenEvents {
    /// Sequence number of the ring's first entry; at most `i64::MAX` (an envelope's `seq` is an
    /// Avro long), so `base + ring.len()` cannot overflow: a stored record past it is damaged.
    #[serde(deserialize_with = "sequence_number")]
    base: u64,
    /// `(id hash, event time)` per sequence number from `base`; hash 0 = not seen. Serialised
    /// as its length only: the entries are stored as chunks (see [`SeenEvents::take_changes`]).
    #[serde(with = "ring_length")]
    ring: VecDeque<(u64, i64)>,
    /// `(event time, id hash, seq)` of ids that did not fit the ring, oldest first.
    overflow_log: VecDeque<(i64, u64, u64)>,
    /// The fingerprint of every id remembered (ring and overflow), for the lookup; rebuilt
    /// when restored.
    #[serde(skip)]
    ids: Fingerprints,
    /// Lowest chunk a durable store may still hold for this ring.
    stored_from: u64,
    /// Lowest sequence number changed since the last checkpoint (`u64::MAX`: none). A new ring
    /// is wholly unsaved (0); a restored one is wholly saved.
    #[serde(skip, default = "nothing_changed")]
    changed_from: u64,
    /// Ids forgotten early because the overflow log was full, since the last
    /// [`SeenEvents::take_evicted`].
    #[serde(skip)]
    evicted: u64,
}

fn sequence_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let seq = <u64 as serde::Deserialize>::deserialize(d)?;
    if seq > i64::MAX as u64 {
        return Err(serde::de::Error::custom(format!("sequence number {seq} is past the largest an envelope may carry")));
    }
    Ok(seq)
}

fn nothing_changed() -> u64 {
    u64::MAX
}

/// What [`SeenEvents::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A new id, now remembered.
    New,
    /// The id was seen before, first with this sequence number.
    Duplicate {
        /// The sequence number the id was first seen with.
        first_seq: u64,
    },
}

/// What a checkpoint writes for one session's ring.
#[derive(Debug, Default, PartialEq)]
pub struct RingChanges {
    /// Chunks changed since the last checkpoint: chunk number and bytes, to store.
    pub put: Vec<(u64, Vec<u8>)>,
    /// Chunks no longer needed (all their ids forgotten), to delete.
    pub delete: std::ops::Range<u64>,
}

impl SeenEvents {
    /// Records an event, or finds it was already seen (a duplicate), whatever the sequence
    /// number it came with.
    pub fn insert(&mut self, seq: u64, id_hash: u64, time: i64) -> Seen {
        let id = id_hash.max(1);
        if !self.ids.add_if_absent(fingerprint(id)) {
            if let Some(first_seq) = self.seq_of(id) {
                return Seen::Duplicate { first_seq };
            }
            self.ids.add(fingerprint(id)); // another id with the same fingerprint
        }
        let len = self.ring.len() as u64;
        let far = seq < self.base.saturating_sub(1024) || seq.saturating_sub(self.base) > len + MAX_GAP;
        if self.ring.is_empty() || (far && len <= 1) {
            // A new ring, or one whose ids were all forgotten but the last (kept for its bounds):
            // start it anew at this sequence number, the last id moving to the log.
            if let Some(&(last, t)) = self.ring.back().filter(|(h, _)| *h != 0) {
                self.push_overflow(t, last, self.base + len - 1);
            }
            self.ring.clear();
            self.base = seq;
        }
        let len = self.ring.len() as u64;
        if seq < self.base && self.base - seq < 1024 && len + (self.base - seq) < MAX_SPAN {
            for _ in seq..self.base {
                self.ring.push_front((0, i64::MIN));
            }
            self.base = seq;
        }
        if seq >= self.base && seq - self.base < MAX_SPAN && seq - self.base <= len + MAX_GAP {
            let at = (seq - self.base) as usize;
            if at >= self.ring.len() {
                self.ring.resize(at + 1, (0, i64::MIN)); // at == len: the next in order, the common case
            }
            let slot = &mut self.ring[at];
            if slot.0 == 0 {
                *slot = (id, time);
                self.changed_from = self.changed_from.min(seq);
                return Seen::New;
            }
        }
        self.push_overflow(time, id, seq);
        Seen::New
    }

    /// Starts bringing into cache where [`SeenEvents::insert`] will look for this id.
    pub fn prefetch(&self, id_hash: u64) {
        self.ids.prefetch(fingerprint(id_hash.max(1)));
    }

    /// Whether an id is remembered. A scan, not the lookup [`SeenEvents::insert`] makes: for
    /// rare questions about a few ids (a session not yet settled holds a second or two of them).
    pub fn contains(&self, id_hash: u64) -> bool {
        self.seq_of(id_hash.max(1)).is_some()
    }

    /// The sequence number an id was recorded under, if it is remembered.
    fn seq_of(&self, id: u64) -> Option<u64> {
        if let Some(at) = self.ring.iter().position(|(h, _)| *h == id) {
            return Some(self.base + at as u64);
        }
        self.overflow_log.iter().find(|(_, h, _)| *h == id).map(|(_, _, seq)| *seq)
    }

    fn push_overflow(&mut self, time: i64, id: u64, seq: u64) {
        if self.overflow_log.len() >= OVERFLOW_CAP {
            let (_, oldest, _) = self.overflow_log.pop_front().expect("a full log");
            self.ids.remove(fingerprint(oldest));
            self.evicted += 1;
        }
        self.overflow_log.push_back((time, id, seq));
    }

    /// Forgets ids of events older than `horizon`: from the ring's front (in sequence order)
    /// and from the overflow log.
    pub fn forget_before(&mut self, horizon: i64) {
        while self.ring.front().is_some_and(|(_, t)| *t < horizon) && self.ring.len() > 1 {
            let (id, _) = self.ring.pop_front().expect("front");
            if id != 0 {
                self.ids.remove(fingerprint(id));
            }
            self.base += 1;
        }
        // The log is in arrival order, not time order: take out every entry past the horizon.
        if self.overflow_log.iter().any(|(t, _, _)| *t < horizon) {
            let ids = &mut self.ids;
            self.overflow_log.retain(|(t, id, _)| {
                let keep = *t >= horizon;
                if !keep {
                    ids.remove(fingerprint(*id));
                }
                keep
            });
        }
    }

    /// Ids forgotten early since the last call because the overflow log was full.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    /// After deserialising: the lookup set from the overflow log (the ring's ids come with its
    /// chunks, [`SeenEvents::load_chunk`]).
    pub fn index_restored(&mut self) {
        for &(_, id, _) in &self.overflow_log {
            self.ids.add(fingerprint(id));
        }
    }

    /// The ring's changes since the last call (or since it was created or restored), for a
    /// durable store's checkpoint; the ring then counts as saved.
    pub fn take_changes(&mut self) -> RingChanges {
        let end = self.base + self.ring.len() as u64;
        let mut put = Vec::new();
        if !self.ring.is_empty() && self.changed_from < end {
            for chunk in self.changed_from.max(self.base) / RING_CHUNK..=(end - 1) / RING_CHUNK {
                let from = (chunk * RING_CHUNK).max(self.base);
                let to = ((chunk + 1) * RING_CHUNK).min(end);
                let mut bytes = Vec::with_capacity(8 + (to - from) as usize * ENTRY);
                bytes.extend_from_slice(&from.to_le_bytes());
                for (hash, time) in self.ring.range((from - self.base) as usize..(to - self.base) as usize) {
                    bytes.extend_from_slice(&hash.to_le_bytes());
                    bytes.extend_from_slice(&time.to_le_bytes());
                }
                put.push((chunk, bytes));
            }
        }
        let keep_from = self.base / RING_CHUNK;
        let delete = self.stored_from..keep_from.max(self.stored_from);
        self.stored_from = keep_from;
        self.changed_from = u64::MAX;
        RingChanges { put, delete }
    }

    /// Puts back a chunk a durable store held (after deserialising the rest). Entries outside
    /// the ring (forgotten since the chunk was written) are skipped.
    pub fn load_chunk(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (first, entries) = bytes.split_at_checked(8).ok_or("ring chunk shorter than its header")?;
        if entries.len() % ENTRY != 0 {
            return Err(format!("ring chunk of {} bytes is not a whole number of entries", entries.len()));
        }
        let first = u64::from_le_bytes(first.try_into().expect("8 bytes"));
        if first.checked_add((entries.len() / ENTRY).saturating_sub(1) as u64).is_none() {
            return Err(format!("ring chunk from sequence number {first} runs past the last one"));
        }
        for (i, e) in entries.chunks_exact(ENTRY).enumerate() {
            let Some(at) = (first + i as u64).checked_sub(self.base) else { continue };
            if let Some(slot) = self.ring.get_mut(at as usize) {
                let (hash, time) = e.split_at(8);
                *slot = (u64::from_le_bytes(hash.try_into().expect("8 bytes")), i64::from_le_bytes(time.try_into().expect("8 bytes")));
                if slot.0 != 0 {
                    self.ids.add(fingerprint(slot.0));
                }
            }
        }
        Ok(())
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.ids.len
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An id hash's fingerprint: its high half (the low half is no more random, and the high
/// half's low bits make a fingerprint's slot independent of the ring's indexing).
fn fingerprint(id: u64) -> u32 {
    ((id >> 32) as u32).max(1)
}

/// A multiset of fingerprints: open addressing with linear probing, and backward-shift deletion
/// so forgetting leaves no tombstones. A fingerprint's low bits are its slot (they come from
/// xxh3, uniform already), so a lookup reads one array, mostly one cache line, where a
/// general-purpose set reads a control-byte line and a bucket line — and at 4 bytes an entry
/// more sessions' tables stay in cache between their events. Two ids that share a fingerprint
/// are two entries. Holds at most half its slots.
#[derive(Default, Debug)]
struct Fingerprints {
    /// 0 = empty (fingerprints are never 0); a power of two long, or empty.
    slots: Vec<u32>,
    len: usize,
}

impl Fingerprints {
    /// Adds `fp` unless it is there; false if it was.
    fn add_if_absent(&mut self, fp: u32) -> bool {
        self.add_unless(fp, true)
    }

    /// Adds `fp` even if it is there (another id with the same fingerprint).
    fn add(&mut self, fp: u32) {
        self.add_unless(fp, false);
    }

    fn add_unless(&mut self, fp: u32, present: bool) -> bool {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = fp as usize & mask;
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = fp;
                    self.len += 1;
                    return true;
                }
                h if present && h == fp => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn prefetch(&self, fp: u32) {
        #[cfg(target_arch = "x86_64")]
        if let Some(mask) = self.slots.len().checked_sub(1) {
            let slot: *const u32 = &self.slots[fp as usize & mask];
            // SAFETY: a prefetch is a hint that never faults; SSE is part of x86-64.
            unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(slot.cast()) };
        }
    }

    /// Takes out one entry of `fp`.
    fn remove(&mut self, fp: u32) {
        let Some(mask) = self.slots.len().checked_sub(1) else { return };
        let mut hole = fp as usize & mask;
        loop {
            match self.slots[hole] {
                0 => return,
                h if h == fp => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Pull back each later entry of the run that may sit in the hole: one whose home slot
        // is not between the hole and where it sits.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let h = self.slots[j];
            if h == 0 {
                break;
            }
            if j.wrapping_sub(h as usize) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = h;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![0; slots]);
        self.len = 0;
        for fp in old.into_iter().filter(|&fp| fp != 0) {
            self.add(fp);
        }
    }

    /// Every entry, sorted.
    #[cfg(test)]
    fn sorted(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.slots.iter().copied().filter(|&fp| fp != 0).collect();
        all.sort_unstable();
        all
    }
}

/// The ring in the session's own record: its length only; the entries come from its chunks
/// ([`SeenEvents::load_chunk`]) and are empty until then.
mod ring_length {
    use std::collections::VecDeque;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(ring: &VecDeque<(u64, i64)>, s: S) -> Result<S::Ok, S::Error> {
        (ring.len() as u64).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<(u64, i64)>, D::Error> {
        let len = u64::deserialize(d)?;
        if len > super::MAX_SPAN {
            return Err(serde::de::Error::custom(format!("ring of {len} entries is longer than the limit")));
        }
        Ok(VecDeque::from(vec![(0, i64::MIN); len as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `insert` as a yes/no: true for a new id.
    trait Add {
        fn add(&mut self, seq: u64, id: u64, time: i64) -> bool;
    }

    impl Add for SeenEvents {
        fn add(&mut self, seq: u64, id: u64, time: i64) -> bool {
            self.insert(seq, id, time) == Seen::New
        }
    }

    /// A store's view of one session: its record and its ring chunks.
    #[derive(Default)]
    struct Stored {
        record: Vec<u8>,
        chunks: std::collections::BTreeMap<u64, Vec<u8>>,
    }

    impl Stored {
        /// A checkpoint: the changes, then the record (which holds `stored_from`).
        fn save(&mut self, s: &mut SeenEvents) -> RingChanges {
            let changes = s.take_changes();
            for (c, bytes) in &changes.put {
                self.chunks.insert(*c, bytes.clone());
            }
            self.chunks.retain(|c, _| !changes.delete.contains(c));
            self.record = postcard::to_allocvec(s).unwrap();
            changes
        }

        fn restore(&self) -> SeenEvents {
            let mut back: SeenEvents = postcard::from_bytes(&self.record).unwrap();
            back.index_restored();
            for bytes in self.chunks.values() {
                back.load_chunk(bytes).unwrap();
            }
            back
        }
    }

    fn same(a: &SeenEvents, b: &SeenEvents) {
        assert_eq!((a.base, &a.ring, a.ids.sorted(), &a.overflow_log), (b.base, &b.ring, b.ids.sorted(), &b.overflow_log));
    }

    #[test]
    fn a_checkpointed_ring_reads_back_whole_and_later_checkpoints_write_only_what_changed() {
        let mut s = SeenEvents::default();
        let mut store = Stored::default();
        for seq in 5..2000u64 {
            assert!(s.add(seq, seq * 7919, seq as i64 * 1000));
        }
        assert!(s.add(5 + MAX_SPAN * 3, 42, 1));
        let first = store.save(&mut s);
        assert_eq!(first.put.len(), 8, "seqs 5..2000 span chunks 0..=7");
        let mut back = store.restore();
        same(&back, &s);
        assert_eq!(back.take_changes(), RingChanges { put: vec![], delete: 0..0 }, "a restored ring is saved");
        assert!(!back.add(1999, 1999 * 7919, 1_999_000), "a duplicate after the restore");
        assert!(!back.add(5 + MAX_SPAN * 3, 42, 1));

        // A second of events later, and the oldest ids forgotten: one chunk written, two deleted.
        for seq in 2000..2060u64 {
            assert!(s.add(seq, seq * 7919, seq as i64 * 1000));
        }
        s.forget_before(600_000);
        let second = store.save(&mut s);
        assert_eq!(second.put.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(second.delete, 0..2, "chunks 0 and 1 hold only forgotten ids");
        same(&store.restore(), &s);

        // An earlier sequence number below the base grows the ring at the front: its chunk is
        // rewritten, and forgotten ids still in a kept chunk are not brought back.
        assert!(s.add(595, 595 * 7919, 595_000));
        store.save(&mut s);
        let back = store.restore();
        same(&back, &s);
        assert!(postcard::from_bytes::<SeenEvents>(&store.record[..store.record.len() - 3]).is_err());
        assert!(SeenEvents::default().load_chunk(&[1, 2, 3]).is_err());
    }

    /// Found by the `checkpoint_state` fuzz target: a damaged chunk whose sequence numbers run
    /// past `u64::MAX` wrapped around onto the ring's first slot (an overflow panic in debug).
    #[test]
    fn a_ring_chunk_past_the_last_sequence_number_is_an_error() {
        let mut s = SeenEvents::default();
        assert!(s.add(0, 7, 1));
        let mut chunk = u64::MAX.to_le_bytes().to_vec();
        for hash in [11u64, 13] {
            chunk.extend_from_slice(&hash.to_le_bytes());
            chunk.extend_from_slice(&5i64.to_le_bytes());
        }
        assert!(s.load_chunk(&chunk).is_err());
        assert_eq!(s.ring[0], (7, 1), "the ring's first id is kept");
    }

    /// Found by the `checkpoint_state` fuzz target: a damaged record whose ring starts near
    /// `u64::MAX` loaded, then the next checkpoint overflowed computing the ring's end.
    #[test]
    fn a_record_with_a_base_past_the_largest_sequence_number_is_an_error() {
        let mut s = SeenEvents::default();
        assert!(s.add(0, 7, 1));
        s.base = u64::MAX - 1;
        let record = postcard::to_allocvec(&s).unwrap();
        assert!(postcard::from_bytes::<SeenEvents>(&record).is_err());
        s.base = i64::MAX as u64;
        assert!(postcard::from_bytes::<SeenEvents>(&postcard::to_allocvec(&s).unwrap()).is_ok(), "the largest is kept");
    }

    #[test]
    fn the_fingerprint_table_agrees_with_a_reference_multiset_through_adds_and_removals() {
        // Fingerprints crowded onto few home slots, so runs wrap around the table and removals
        // shift; some added twice, as two ids sharing one.
        let seed = 20261130u64;
        println!("seed {seed}");
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut table = Fingerprints::default();
        let mut reference = std::collections::BTreeMap::<u32, usize>::new();
        for step in 0..200_000 {
            let fp = ((next() % 3000 + 1) as u32) << if step % 3 == 0 { 0 } else { 10 };
            match next() % 4 {
                0 => {
                    table.remove(fp);
                    if let Some(n) = reference.get_mut(&fp) {
                        *n -= 1;
                        if *n == 0 {
                            reference.remove(&fp);
                        }
                    }
                }
                1 => {
                    table.add(fp);
                    *reference.entry(fp).or_default() += 1;
                }
                _ => {
                    let absent = !reference.contains_key(&fp);
                    assert_eq!(table.add_if_absent(fp), absent, "add {fp} at step {step}");
                    if absent {
                        reference.insert(fp, 1);
                    }
                }
            }
            assert_eq!(table.len, reference.values().sum::<usize>());
        }
        let expected: Vec<u32> = reference.iter().flat_map(|(fp, n)| std::iter::repeat_n(*fp, *n)).collect();
        assert_eq!(table.sorted(), expected);
    }

    #[test]
    fn ids_that_share_a_fingerprint_are_told_apart() {
        let mut s = SeenEvents::default();
        let (a, b) = (0xABCD_0000_0000_0001u64, 0xABCD_0000_0000_0002u64);
        assert_eq!(fingerprint(a), fingerprint(b));
        assert_eq!(s.insert(1, a, 1), Seen::New);
        assert_eq!(s.insert(2, b, 2), Seen::New, "same fingerprint, another id");
        assert_eq!(s.insert(3, b, 2), Seen::Duplicate { first_seq: 2 });
        s.forget_before(2); // forgets a, one entry of the fingerprint
        assert_eq!(s.insert(4, b, 2), Seen::Duplicate { first_seq: 2 }, "b still found");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn duplicates_are_found_in_and_out_of_the_ring() {
        let mut s = SeenEvents::default();
        assert!(s.add(10, 100, 1));
        assert!(s.add(11, 101, 2));
        assert!(!s.add(10, 100, 1), "same id, same seq");
        assert!(s.add(9, 99, 0), "earlier seq grows the ring at the front");
        assert!(!s.add(9, 99, 0));
        assert!(s.add(11, 555, 2), "same seq, another id: a different event");
        assert!(!s.add(11, 555, 2));
        assert!(s.add(10 + MAX_SPAN * 2, 7, 3), "far ahead: overflow");
        assert!(!s.add(10 + MAX_SPAN * 2, 7, 3));
        s.forget_before(2);
        assert!(s.add(9, 99, 0), "forgotten");
        assert!(!s.add(11, 101, 2), "kept");
    }

    #[test]
    fn a_resent_id_is_a_duplicate_whatever_its_sequence_number() {
        let mut s = SeenEvents::default();
        assert!(s.add(1, 100, 1));
        assert!(s.add(2, 200, 2));
        assert!(!s.add(3, 100, 1), "id 100 again, numbered anew");
        assert!(!s.add(2 + MAX_SPAN * 4, 200, 2), "id 200 again, far ahead");
        assert_eq!(s.insert(0, 200, 2), Seen::Duplicate { first_seq: 2 }, "id 200 again, behind the base");
        assert_eq!(s.insert(9, 300, 5), Seen::New);
        assert_eq!(s.insert(10, 300, 2), Seen::Duplicate { first_seq: 9 });
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn memory_is_bounded_and_what_falls_out_is_counted() {
        let mut s = SeenEvents::default();
        // A producer that jumps its numbering by more than the gap each time: every id goes to
        // the overflow log, which keeps the newest OVERFLOW_CAP and counts the rest.
        for i in 0..(OVERFLOW_CAP as u64 + 10) {
            assert!(s.add(1 + i * (MAX_GAP + 1) * 2, 1000 + i, i as i64));
        }
        assert_eq!(s.overflow_log.len(), OVERFLOW_CAP);
        assert_eq!(s.take_evicted(), 9, "the first id went to the ring; 9 of the rest fell out");
        assert!(s.ring.len() as u64 <= MAX_SPAN);
        // A sequence number far past the ring's end does not grow it.
        let before = s.ring.len();
        assert!(s.add(s.base + before as u64 + MAX_GAP + 1, 7, 0));
        assert_eq!(s.ring.len(), before);
        // A ring whose ids were forgotten starts anew at a far sequence number (a producer that
        // renumbered from zero) instead of sending every later id to the log.
        let mut r = SeenEvents::default();
        for seq in 1_000_000..1_000_100u64 {
            assert!(r.add(seq, seq, seq as i64));
        }
        r.forget_before(1_000_099);
        assert!(r.add(0, 7, 1_000_100));
        assert!(r.add(1, 8, 1_000_101));
        assert_eq!((r.base, r.ring.len(), r.overflow_log.len()), (0, 2, 1), "the old last id moved to the log");
        // Forgetting by time empties both.
        s.forget_before(i64::MAX);
        assert!(s.overflow_log.is_empty());
        assert_eq!(s.len(), s.ring.iter().filter(|(h, _)| *h != 0).count());
    }
}
