//! Per-session duplicate detection by event id, indexed by sequence number.
//!
//! A resent event keeps its event id and its sequence number, and a session's sequence numbers
//! are dense and increasing, so the ids seen are kept in a ring indexed by `seq - base`: checking
//! and recording an event is an array access, not a hash-set insert. Events whose sequence
//! number falls outside the ring, or collides with another id, go to a small hash set. Ids are
//! forgotten from the front once older than every window still retained (a copy arriving after
//! that is too late for any window anyway).

use std::collections::VecDeque;

use rustc_hash::FxHashSet;

/// Sequence numbers further than this from the ring's base use the overflow set.
const MAX_SPAN: u64 = 1 << 20;

/// Event ids seen in one session.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct SeenEvents {
    base: u64,
    /// `(id hash, event time)` per sequence number from `base`; hash 0 = not seen.
    #[serde(with = "ring_bytes")]
    ring: VecDeque<(u64, i64)>,
    /// Ids that did not fit the ring, with their event time.
    overflow: FxHashSet<u64>,
    overflow_log: VecDeque<(i64, u64)>,
}

impl SeenEvents {
    /// Records an event; false when its id was already seen (a duplicate).
    pub fn insert(&mut self, seq: u64, id_hash: u64, time: i64) -> bool {
        let id = id_hash.max(1);
        if !self.overflow.is_empty() && self.overflow.contains(&id) {
            return false;
        }
        if self.ring.is_empty() && self.overflow.is_empty() {
            self.base = seq;
        }
        if seq < self.base && self.base - seq < 1024 && self.ring.len() as u64 + (self.base - seq) < MAX_SPAN {
            for _ in seq..self.base {
                self.ring.push_front((0, i64::MIN));
            }
            self.base = seq;
        }
        if seq >= self.base && seq - self.base < MAX_SPAN {
            let at = (seq - self.base) as usize;
            if at >= self.ring.len() {
                self.ring.resize(at + 1, (0, i64::MIN));
            }
            let slot = &mut self.ring[at];
            if slot.0 == 0 {
                *slot = (id, time);
                return true;
            }
            if slot.0 == id {
                return false;
            }
        }
        self.overflow_log.push_back((time, id));
        self.overflow.insert(id)
    }

    /// Forgets ids of events older than `horizon` from the front.
    pub fn forget_before(&mut self, horizon: i64) {
        while self.ring.front().is_some_and(|(_, t)| *t < horizon) && self.ring.len() > 1 {
            self.ring.pop_front();
            self.base += 1;
        }
        while self.overflow_log.front().is_some_and(|(t, _)| *t < horizon) {
            let (_, id) = self.overflow_log.pop_front().expect("front");
            self.overflow.remove(&id);
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.ring.iter().filter(|(h, _)| *h != 0).count() + self.overflow.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ring in a checkpoint: one block of 16 little-endian bytes per entry. It holds an entry
/// for every event of the oldest retained window (a whole lap), so writing it element by element
/// as varints made each checkpoint's serialisation several times slower than a copy.
mod ring_bytes {
    use std::collections::VecDeque;
    use std::fmt;

    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    const ENTRY: usize = 16;

    pub fn serialize<S: Serializer>(ring: &VecDeque<(u64, i64)>, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(ring.len() * ENTRY);
        for (hash, time) in ring {
            bytes.extend_from_slice(&hash.to_le_bytes());
            bytes.extend_from_slice(&time.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<(u64, i64)>, D::Error> {
        struct Ring;
        impl<'de> Visitor<'de> for Ring {
            type Value = VecDeque<(u64, i64)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a byte block of {ENTRY}-byte ring entries")
            }
            fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                if bytes.len() % ENTRY != 0 {
                    return Err(E::custom(format!("ring block of {} bytes is not a whole number of entries", bytes.len())));
                }
                Ok(bytes
                    .chunks_exact(ENTRY)
                    .map(|e| {
                        let (hash, time) = e.split_at(8);
                        (u64::from_le_bytes(hash.try_into().expect("8 bytes")), i64::from_le_bytes(time.try_into().expect("8 bytes")))
                    })
                    .collect())
            }
        }
        d.deserialize_bytes(Ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpointed_ring_reads_back_whole() {
        let mut s = SeenEvents::default();
        for seq in 5..2000u64 {
            assert!(s.insert(seq, seq * 7919, seq as i64 * 1000));
        }
        assert!(s.insert(5 + MAX_SPAN * 3, 42, 1));
        let bytes = postcard::to_allocvec(&s).unwrap();
        let mut back: SeenEvents = postcard::from_bytes(&bytes).unwrap();
        assert_eq!((back.base, &back.ring, &back.overflow), (s.base, &s.ring, &s.overflow));
        assert!(!back.insert(1999, 1999 * 7919, 1_999_000), "a duplicate after the restore");
        assert!(!back.insert(5 + MAX_SPAN * 3, 42, 1));
        assert!(postcard::from_bytes::<SeenEvents>(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn duplicates_are_found_in_and_out_of_the_ring() {
        let mut s = SeenEvents::default();
        assert!(s.insert(10, 100, 1));
        assert!(s.insert(11, 101, 2));
        assert!(!s.insert(10, 100, 1), "same id, same seq");
        assert!(s.insert(9, 99, 0), "earlier seq grows the ring at the front");
        assert!(!s.insert(9, 99, 0));
        assert!(s.insert(11, 555, 2), "same seq, another id: a different event");
        assert!(!s.insert(11, 555, 2));
        assert!(s.insert(10 + MAX_SPAN * 2, 7, 3), "far ahead: overflow");
        assert!(!s.insert(10 + MAX_SPAN * 2, 7, 3));
        s.forget_before(2);
        assert!(s.insert(9, 99, 0), "forgotten");
        assert!(!s.insert(11, 101, 2), "kept");
    }
}
