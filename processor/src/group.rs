//! The order a partition's batch of records is fed in: grouped by session, each session's
//! records in offset order.
//!
//! The engine's sessions are independent: a session's result depends only on the order of its
//! own events, which a partition keeps (records are keyed by session id). Interleaved sessions
//! make every event a round of cache misses on its session's state (buffer, dedup ring,
//! windows); fed grouped, a session's state stays in cache for its share of the batch. Checkpoints
//! fall between batches, so a checkpoint never sees half a batch. Session ids come from
//! `pitgun_codec::session`, for Avro and JSON records alike; a batch holding a record without
//! one (damaged data, which the engine refuses) keeps its offset order.

use std::borrow::Cow;
use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};

/// Reusable buffers for [`SessionGroups::order`].
#[derive(Default)]
pub struct SessionGroups {
    group_of: FxHashMap<u64, u32>,
    first: Vec<u32>,
    groups: Vec<u32>,
    order: Vec<u32>,
}

impl SessionGroups {
    /// Indexes `0..n` of a batch in feeding order, from each record's session key (`None`:
    /// unknown, and the batch keeps its order). Records whose keys hash alike share a group,
    /// which keeps them in offset order too.
    pub fn order<'k>(&mut self, keys: impl ExactSizeIterator<Item = Option<Cow<'k, [u8]>>>) -> &[u32] {
        let n = keys.len();
        self.group_of.clear();
        self.groups.clear();
        self.order.clear();
        for key in keys {
            let Some(key) = key else {
                self.order.extend(0..n as u32);
                return &self.order;
            };
            let mut h = FxHasher::default();
            h.write(&key);
            let next = self.group_of.len() as u32;
            self.groups.push(*self.group_of.entry(h.finish()).or_insert(next));
        }
        // A counting sort by group, stable: `first[g]` is where group g's records start.
        self.first.clear();
        self.first.resize(self.group_of.len() + 1, 0);
        for &g in &self.groups {
            self.first[g as usize + 1] += 1;
        }
        for g in 1..self.first.len() {
            self.first[g] += self.first[g - 1];
        }
        self.order.resize(n, 0);
        for (i, &g) in self.groups.iter().enumerate() {
            let at = &mut self.first[g as usize];
            self.order[*at as usize] = i as u32;
            *at += 1;
        }
        &self.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_grouped_by_session_in_first_seen_order_and_keep_their_order_within_one() {
        let keys: Vec<&[u8]> = vec![b"b", b"a", b"b", b"c", b"a", b"b"];
        let mut g = SessionGroups::default();
        assert_eq!(g.order(keys.iter().map(|k| Some(Cow::Borrowed(*k)))), &[0, 2, 5, 1, 4, 3]);
        let with_unknown = [Some(&b"b"[..]), None, Some(&b"a"[..]), Some(&b"b"[..])];
        assert_eq!(g.order(with_unknown.into_iter().map(|k| k.map(Cow::Borrowed))), &[0, 1, 2, 3], "an unknown session keeps offset order");
        assert_eq!(g.order(std::iter::empty()), &[] as &[u32]);
    }
}
