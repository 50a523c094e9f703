//! Where the engine keeps per-session state: a small trait, so the Kafka runtime can back it
//! with RocksDB (loading a session on first use, writing changed sessions at each checkpoint)
//! while replay and tests use [`MemoryStore`].

use rustc_hash::{FxHashMap, FxHashSet};

use crate::session_engine::SessionState;

/// Per-session state, plus the ids of sessions already closed (their late events are refused).
pub trait SessionStore {
    /// The open session's state.
    fn get_mut(&mut self, session_id: &str) -> Option<&mut SessionState>;
    /// The open session's state if it is in memory already (loads nothing, marks nothing).
    fn in_memory(&self, session_id: &str) -> Option<&SessionState>;
    /// Stores a new open session and returns it.
    fn insert(&mut self, session_id: &str, state: SessionState) -> &mut SessionState;
    /// Takes an open session's state out (to close it).
    fn remove(&mut self, session_id: &str) -> Option<SessionState>;
    /// Open sessions, in any order.
    fn open_ids(&self) -> Vec<Box<str>>;
    /// Open sessions whose last activity is at or before `idle_cutoff`, or `ended_cutoff` for a
    /// session whose end arrived (driver clock, µs).
    fn idle_ids(&self, idle_cutoff: i64, ended_cutoff: i64) -> Vec<Box<str>>;
    /// Number of open sessions.
    fn open_count(&self) -> usize;
    /// Whether the session was closed.
    fn is_closed(&self, session_id: &str) -> bool;
    /// Remembers that the session was closed, at `at_us` of the driver's clock.
    fn mark_closed(&mut self, session_id: &str, at_us: i64);
}

/// Open sessions by id: the map every store keeps in memory (the durable one adds what changed).
#[derive(Default)]
pub struct OpenSessions(FxHashMap<Box<str>, SessionState>);

impl OpenSessions {
    /// The session's state.
    pub fn get(&self, session_id: &str) -> Option<&SessionState> {
        self.0.get(session_id)
    }

    /// The session's state, mutably.
    pub fn get_mut(&mut self, session_id: &str) -> Option<&mut SessionState> {
        self.0.get_mut(session_id)
    }

    /// Stores a session (keeping an existing one) and returns it.
    pub fn insert(&mut self, session_id: &str, state: SessionState) -> &mut SessionState {
        self.0.entry(session_id.into()).or_insert(state)
    }

    /// Takes a session out.
    pub fn remove(&mut self, session_id: &str) -> Option<SessionState> {
        self.0.remove(session_id)
    }

    /// Starts every session's idle clock again at `now_us` ([`SessionState::restart_idle_clock`]).
    pub fn restart_idle_clocks(&mut self, now_us: i64) {
        for s in self.0.values_mut() {
            s.restart_idle_clock(now_us);
        }
    }

    /// Every id, in any order.
    pub fn ids(&self) -> Vec<Box<str>> {
        self.0.keys().cloned().collect()
    }

    /// Ids of sessions whose last activity is at or before `idle_cutoff` (`ended_cutoff` for
    /// sessions whose end arrived).
    pub fn idle_ids(&self, idle_cutoff: i64, ended_cutoff: i64) -> Vec<Box<str>> {
        let cutoff = |s: &SessionState| if s.has_ended() { ended_cutoff } else { idle_cutoff };
        self.0.iter().filter(|(_, s)| s.last_activity() <= cutoff(s)).map(|(id, _)| id.clone()).collect()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    open: OpenSessions,
    closed: FxHashSet<Box<str>>,
}

impl SessionStore for MemoryStore {
    fn get_mut(&mut self, session_id: &str) -> Option<&mut SessionState> {
        self.open.get_mut(session_id)
    }

    fn in_memory(&self, session_id: &str) -> Option<&SessionState> {
        self.open.get(session_id)
    }

    fn insert(&mut self, session_id: &str, state: SessionState) -> &mut SessionState {
        self.open.insert(session_id, state)
    }

    fn remove(&mut self, session_id: &str) -> Option<SessionState> {
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
        self.closed.contains(session_id)
    }

    fn mark_closed(&mut self, session_id: &str, _at_us: i64) {
        self.closed.insert(session_id.into());
    }
}
