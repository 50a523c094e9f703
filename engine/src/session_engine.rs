//! The engine proper: per-session watermarks, reorder buffers and deduplication; the window
//! kinds behind one assigner ([`windows`]).
//!
//! Every session keeps its own watermark (highest event time − out-of-orderness) and a reorder
//! buffer. Events wait in the buffer until the watermark passes them and are then *released* in
//! (event time, sequence) order, so formulas that read previous values, segment boundaries and
//! first/last never depend on the order events arrived in within the bound (while the buffer
//! holds at most [`MAX_BUFFERED_EVENTS`]; past it the oldest leave early). An event that arrives
//! behind what was already released takes the late path: it updates a window still inside the
//! allowed lateness (re-emitting its row, an upsert by `row_id`) or goes to the late output.
//! Nothing depends on other sessions, so threads, files and partitions cannot change a row.

mod windows;

use std::collections::VecDeque;

use pitgun_contracts::envelope::EventKind;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::dedup::{Seen, SeenEvents};
use crate::formula::{Evaluated, FormulaRuntime};
use crate::plan::Plan;
use crate::row::{self, Row};
use crate::store::{MemoryStore, SessionStore};
use crate::{CloseCause, Reason, Stats};
use windows::{Assigner, Rows, Windows};

/// An event ready for the engine: decoded, resolved to input slots, key extracted.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    /// Session id.
    pub session_id: &'a str,
    /// Idempotency key.
    pub event_id: &'a str,
    /// Per-session sequence number.
    pub seq: u64,
    /// Event time, µs.
    pub time_us: i64,
    /// Kind.
    pub kind: EventKind,
    /// Values of the key dimensions, in the manifest's key order.
    pub key: &'a [&'a str],
    /// Canonical input values, one per input slot (NaN = absent).
    pub inputs: &'a [f64],
    /// Where the driver read the event, echoed in any note about it.
    pub origin: Origin,
}

/// Where a driver read an event (replay: file and line; the processor: the offset), kept with
/// the event while it waits in the reorder buffer, so a note written when it is released names
/// the record it came from, not the record whose arrival released it. The engine only passes it
/// on; `u64::MAX` is reserved for [`Origin::UNKNOWN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(pub u64);

impl Origin {
    /// A driver that does not say, or an event restored from a checkpoint (origins are not
    /// checkpointed: the state's format, and so an upgrade's state, stays as it was).
    pub const UNKNOWN: Origin = Origin(u64::MAX);
}

impl Default for Origin {
    fn default() -> Origin {
        Origin::UNKNOWN
    }
}

/// What the engine emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A window's row (a re-emission replaces the earlier row with the same `row_id`).
    Row(Row),
    /// An event too late for any window.
    Late(EventNote),
    /// An event refused by the engine (clock jump, formula limit, …).
    Rejected(EventNote),
}

/// Identifies an event in the late or rejected output, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct EventNote {
    /// Session id.
    pub session_id: String,
    /// Event id.
    pub event_id: String,
    /// Sequence number.
    pub seq: u64,
    /// Event time, µs.
    pub time_us: i64,
    /// Reason code.
    pub reason: &'static str,
    /// Details.
    pub detail: String,
    /// Where the driver read the event ([`EventRef::origin`]).
    pub origin: Origin,
}

impl EventNote {
    /// The note as one JSON line.
    pub fn to_json(&self) -> String {
        self.to_json_after(serde_json::Map::new())
    }

    /// The note as one JSON line whose first members are `first` (a driver's location of the
    /// event).
    pub fn to_json_after(&self, mut first: serde_json::Map<String, serde_json::Value>) -> String {
        first.extend([
            ("session_id".to_string(), self.session_id.clone().into()),
            ("event_id".to_string(), self.event_id.clone().into()),
            ("seq".to_string(), self.seq.into()),
            ("time".to_string(), row::format_timestamp(self.time_us).into()),
            ("reason".to_string(), self.reason.into()),
            ("detail".to_string(), self.detail.clone().into()),
        ]);
        serde_json::Value::Object(first).to_string()
    }
}

#[derive(Serialize, Deserialize)]
struct Pending {
    time: i64,
    seq: u64,
    key: u32,
    /// Already behind the watermark on arrival: its window may have been dropped.
    behind: bool,
    /// Inline up to 24 bytes (ids are usually short) and values inline up to 12 slots, so a
    /// buffered event is one contiguous entry of the session's buffer: releasing it two seconds
    /// later reads no cold heap allocation.
    event_id: EventId,
    values: SmallVec<[f64; 12]>,
    /// Not checkpointed (restored as unknown): see [`Origin`].
    #[serde(skip)]
    origin: Origin,
}

/// An event id kept in a pending event (UTF-8 bytes of the id).
#[derive(Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct EventId(SmallVec<[u8; 24]>);

impl EventId {
    fn new(id: &str) -> EventId {
        EventId(SmallVec::from_slice(id.as_bytes()))
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl Pending {
    /// This buffered event in the late or rejected output.
    fn note(&self, sid: &str, reason: &'static str, detail: String) -> EventNote {
        EventNote {
            session_id: sid.to_string(),
            event_id: self.event_id.to_string(),
            seq: self.seq,
            time_us: self.time,
            reason,
            detail,
            origin: self.origin,
        }
    }
}

/// An event more than `max_clock_jump` from the clock of a session not yet settled
/// ([`SessionState::settled`]): which of the two clocks is wild, the session's or the event's, is
/// told by the session's next event, so the event waits for it here.
#[derive(Serialize, Deserialize)]
struct Held {
    event_id: String,
    seq: u64,
    time: i64,
    kind: EventKind,
    key: Vec<String>,
    inputs: Vec<f64>,
    /// Not checkpointed (restored as unknown): see [`Origin`].
    #[serde(skip)]
    origin: Origin,
}

impl Held {
    fn of(ev: &EventRef) -> Box<Held> {
        Box::new(Held {
            event_id: ev.event_id.to_string(),
            seq: ev.seq,
            time: ev.time_us,
            kind: ev.kind,
            key: ev.key.iter().map(|k| k.to_string()).collect(),
            inputs: ev.inputs.to_vec(),
            origin: ev.origin,
        })
    }

    fn note(&self, sid: &str, detail: String) -> EventNote {
        EventNote {
            session_id: sid.to_string(),
            event_id: self.event_id.clone(),
            seq: self.seq,
            time_us: self.time,
            reason: Reason::ClockJump.as_str(),
            detail,
            origin: self.origin,
        }
    }
}

/// Why an event after its session's end is late, whether it arrived before the end or after.
const AFTER_END: &str = "the event comes after the session's end";
const AFTER_SILENCE: &str = "more than idle_timeout after the session's last event: the session had ended";

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq, &self.event_id) == (o.time, o.seq, &o.event_id)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.seq, &self.event_id).cmp(&(o.time, o.seq, &o.event_id))
    }
}

#[derive(Serialize, Deserialize)]
struct KeyState {
    /// Session id then key dimension values.
    key: Vec<String>,
    prev: Vec<f64>,
    last_eval: Vec<i64>,
    windows: Windows,
    segment_high: f64,
    /// Last event time of session windows already emitted (and dropped) for this key.
    sealed_until: i64,
}

/// The state of one open session (watermark, reorder buffer, seen ids, windows). Opaque to
/// drivers; a [`SessionStore`] holds it, and a durable store saves it with
/// [`SessionState::checkpoint`].
#[derive(Serialize, Deserialize)]
pub struct SessionState {
    max_time: i64,
    /// (time, seq) of the session's end, once a `session_end` arrived (the earliest, if more).
    /// The session closes when the watermark passes it; events after it are `session_closed`.
    end: Option<(i64, u64)>,
    /// Time of the session's `session_start`, if one arrived: the first segment's start was seen.
    started: Option<i64>,
    frontier: Option<(i64, u64)>,
    /// Reorder buffer, sorted by (time, seq); in-order arrivals append at the back in O(1).
    buffer: VecDeque<Pending>,
    seen: SeenEvents,
    since_purge: u32,
    min_seq: u64,
    max_seq: u64,
    received: u64,
    keys: Vec<KeyState>,
    last_activity: i64,
    emissions: u64,
    // Fields after this point are new in format 5; `from_bytes` gives a format-4 record their
    // values for a settled session (see `format_4_tail`).
    /// Earliest event time the session took (`i64::MAX` before its first event).
    first_time: i64,
    /// An event waiting to tell which clock is wild ([`Held`]).
    held: Option<Box<Held>>,
}

/// Most keys (values of the manifest's `key` dimensions) one session holds. A driver or car
/// change gives a session a few; a producer naming a new player in every event would make it
/// hold (and search, per event) an unbounded list. An event of one key more is refused
/// (`too_many_keys`). A rule of the session alone, so replay and the stream refuse the same events.
pub const MAX_KEYS_PER_SESSION: usize = 64;

/// Most events one session's reorder buffer holds. An event waits there until the watermark is
/// out-of-orderness past it, so a device whose clock stands still (every event at one time)
/// would make it grow without end, and the session's record (one RocksDB value, one changelog
/// record) with it. Past this bound the oldest events are released before the watermark passes
/// them, in (time, seq) order, never past the session's end (an event after a known end is
/// refused as it arrives, so the buffer stays bounded then too). 60 Hz with 2 s of
/// out-of-orderness holds 120. A rule of the session alone, so replay and the stream release
/// the same events.
pub const MAX_BUFFERED_EVENTS: usize = 4096;

/// Version of the byte form of [`SessionState`]; bumped whenever the state's fields change, so a
/// state folder written by another build is refused instead of misread.
pub const STATE_FORMAT: u8 = 5;

/// The previous format, still read: format 5 added `first_time` and `held` at the end of the
/// record, so a format-4 record is read with their encoding appended — `first_time` at
/// `i64::MIN` (the session counts as settled, as every session was before) and nothing held.
const FORMAT_4: u8 = 4;

fn format_4_tail() -> Vec<u8> {
    postcard::to_allocvec(&(i64::MIN, Option::<Box<Held>>::None)).expect("writing to a Vec cannot fail")
}

impl SessionState {
    /// What a durable store writes at a checkpoint: the session's record (a format byte, then
    /// postcard) and its dedup ring's changes since the last checkpoint, stored as chunks
    /// beside the record — the ring holds an id per event of a whole lap, and rewriting it every
    /// second made it most of each checkpoint's bytes.
    pub fn checkpoint(&mut self) -> (Vec<u8>, crate::RingChanges) {
        // The changes first: taking them moves the ring's stored bounds, which the record holds.
        let ring = self.seen.take_changes();
        let mut out = vec![STATE_FORMAT];
        postcard::to_io(&*self, &mut out).expect("writing to a Vec cannot fail");
        (out, ring)
    }

    /// Reads a record [`SessionState::checkpoint`] wrote; then give it the ring's stored chunks
    /// with [`SessionState::load_ring_chunk`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SessionState, String> {
        let read = |rest: &[u8]| -> Result<SessionState, String> {
            let mut state: SessionState = postcard::from_bytes(rest).map_err(|e| format!("corrupt session state: {e}"))?;
            state.seen.index_restored();
            Ok(state)
        };
        match bytes.split_first() {
            Some((&STATE_FORMAT, rest)) => read(rest),
            Some((&FORMAT_4, rest)) => read(&[rest, &format_4_tail()].concat()),
            Some((v, _)) => Err(format!("session state in format {v}, this build reads formats {FORMAT_4} and {STATE_FORMAT}")),
            None => Err("empty session state".into()),
        }
    }

    /// Puts back one stored chunk of the dedup ring.
    pub fn load_ring_chunk(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.seen.load_chunk(bytes)
    }

    /// Last activity in the driver's clock (µs), for idle expiry.
    pub fn last_activity(&self) -> i64 {
        self.last_activity
    }

    /// Starts the idle clock again at `now_us` of the driver's clock. For a session restored
    /// from a checkpoint: the time the driver was down is not idleness, so a group stopped
    /// for longer than `idle_timeout` does not close every session it held.
    pub fn restart_idle_clock(&mut self, now_us: i64) {
        self.last_activity = now_us;
    }

    /// A new session, before its first event.
    fn new(now_us: i64) -> SessionState {
        SessionState {
            max_time: i64::MIN,
            end: None,
            started: None,
            frontier: None,
            buffer: VecDeque::new(),
            seen: SeenEvents::default(),
            since_purge: 0,
            min_seq: u64::MAX,
            max_seq: 0,
            received: 0,
            keys: Vec::new(),
            last_activity: now_us,
            emissions: 0,
            first_time: i64::MAX,
            held: None,
        }
    }

    /// Whether the session's clock is settled: its watermark has passed its first event, so
    /// windows may have counted events by that clock. Until then nothing has left the reorder
    /// buffer, and a session that began on a wild clock (a device whose clock was not set yet)
    /// can start again on the clock its next events keep.
    fn settled(&self, plan: &Plan) -> bool {
        // An event released early from a full buffer has reached windows by this clock.
        self.frontier.is_some() || self.watermark(plan) > self.first_time
    }

    fn watermark(&self, plan: &Plan) -> i64 {
        self.max_time.saturating_sub(plan.ooo_us)
    }

    /// Events older than this are more than the allowed lateness behind the watermark: late for
    /// every window kind, so their ids need not be remembered (the dedup memory's bound).
    fn horizon(&self, plan: &Plan) -> i64 {
        self.watermark(plan).saturating_sub(plan.lateness_us)
    }

    /// Whether a `session_end` arrived (the session closes once the watermark passes it).
    pub fn has_ended(&self) -> bool {
        self.end.is_some()
    }
}

/// Everything but the sessions, so session code can borrow both.
struct Core {
    plan: Plan,
    /// The plan's window kind: where events go, when windows are emitted.
    assigner: Assigner,
    rt: FormulaRuntime,
    stats: Stats,
    /// All-NaN previous values, for late events and filters.
    no_prev: Vec<f64>,
    /// Slot values for filter evaluation (derived slots stay NaN).
    scratch: Vec<f64>,
}

/// The manifest engine for one plan. Pure: it is fed events and a clock reading by a driver
/// (replay, the Kafka processor) and returns outputs; it owns no thread, file or socket.
pub struct Engine<S: SessionStore = MemoryStore> {
    core: Core,
    sessions: S,
    /// Most sessions held open at once ([`Engine::limit_open_sessions`]).
    max_open: usize,
}

impl Engine<MemoryStore> {
    /// An engine for a compiled plan, with in-memory state.
    pub fn new(plan: Plan) -> Engine<MemoryStore> {
        Engine::with_store(plan, MemoryStore::default())
    }
}

impl<S: SessionStore> Engine<S> {
    /// An engine keeping its session state in `store`.
    pub fn with_store(mut plan: Plan, store: S) -> Engine<S> {
        let rt = std::mem::take(&mut plan.formulas);
        let no_prev = vec![f64::NAN; plan.slots.len()];
        let core = Core { assigner: Assigner::of(&plan), plan, rt, stats: Stats::default(), scratch: no_prev.clone(), no_prev };
        Engine { core, sessions: store, max_open: usize::MAX }
    }

    /// Holds at most `max` sessions open: an event that would open one more is refused
    /// (`too_many_sessions`, to the dead letters) until a session closes, so a producer that
    /// opens sessions without end meets a bound, not the memory limit. Open sessions keep
    /// taking events. Unbounded by default.
    pub fn limit_open_sessions(&mut self, max: usize) {
        self.max_open = max;
    }

    /// The session store.
    pub fn store(&self) -> &S {
        &self.sessions
    }

    /// The session store, mutably (a durable store's checkpoint).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.sessions
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.core.plan
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Counts an event a driver refused before it reached the engine (decode, resolution).
    pub fn count_rejected(&mut self, reason: Reason) {
        self.core.stats.events_in += 1;
        self.core.stats.rejected[reason as usize] += 1;
    }

    /// Counts unknown channels a driver dropped under the `drop`/`keep` policies.
    pub fn count_unknown_channels(&mut self, n: u32) {
        self.core.stats.unknown_channels += u64::from(n);
    }

    /// Counts an event from a producer or version the dictionary has no aliases for.
    pub fn count_uncovered_source(&mut self) {
        self.core.stats.uncovered_sources += 1;
    }

    /// Number of sessions holding state.
    pub fn open_sessions(&self) -> usize {
        self.sessions.open_count()
    }

    /// Feeds one event. `now_us` is the driver's clock (used only for idle expiry).
    pub fn process(&mut self, ev: &EventRef, now_us: i64, out: &mut Vec<Output>) {
        self.core.stats.events_in += 1;
        self.take(ev, now_us, out);
    }

    /// [`Engine::process`] but for the count of events in: also how a held event is taken.
    fn take(&mut self, ev: &EventRef, now_us: i64, out: &mut Vec<Output>) {
        let core = &mut self.core;
        // A kind this manifest neither takes nor needs (start and end mark the session) is only
        // counted: it reaches no window, so it is never late, nor kept in the dedup memory.
        let marks = matches!(ev.kind, EventKind::SessionStart | EventKind::SessionEnd);
        let accepted_kind = core.plan.accepts(ev.kind);
        let takes = accepted_kind || marks;
        let session = match self.sessions.get_mut(ev.session_id) {
            Some(s) => s,
            None => {
                if self.sessions.is_closed(ev.session_id) {
                    core.late_or_filtered(out, ev, takes, "the session already ended");
                    return;
                }
                if self.sessions.open_count() >= self.max_open {
                    let detail = format!("{} open sessions, the bound (--max-open-sessions): a session must close first", self.max_open);
                    core.reject(out, ev, Reason::TooManySessions, detail);
                    return;
                }
                core.stats.sessions_opened += 1;
                self.sessions.insert(ev.session_id, SessionState::new(now_us))
            }
        };
        // Every check comes before the id is remembered: a refused event must not hold dedup memory.
        if session.max_time != i64::MIN {
            let plan = &core.plan;
            let wm = session.watermark(plan);
            let jump = plan.max_jump_us;
            let far = |t: i64, wm: i64| t.saturating_sub(wm) > jump || wm.saturating_sub(t) > jump;
            // A far event may carry the clock the session goes on with only while no window has
            // counted anything and the session has not ended. What is far is the manifest's
            // max_clock_jump: beyond it a difference in event time is a clock's, not a silence
            // (the rule reads event times only, so replay and the stream restart the same
            // sessions).
            let open = !session.settled(plan) && session.end.is_none();
            // A resent copy of an event taken is no news of the clock: it leaves a held event be.
            let copy = session.held.is_some() && session.seen.contains(id_hash(ev.event_id));
            if let Some(held) = session.held.as_mut().filter(|_| !copy) {
                if held.event_id == ev.event_id {
                    held.seq = held.seq.min(ev.seq);
                    core.stats.duplicates += 1;
                    return;
                }
                let held = session.held.take().expect("held");
                if open && far(ev.time_us, wm) && !far(ev.time_us, held.time.saturating_sub(plan.ooo_us)) {
                    // Two events agree on a clock the session's first events did not keep.
                    self.start_again(ev.session_id, *held, now_us, out);
                    self.take(ev, now_us, out);
                    return;
                }
                let limit = &plan.manifest.time.max_clock_jump;
                let detail = format!("more than {limit} from its session's clock, and the session's next event kept to that clock");
                core.stats.rejected[Reason::ClockJump as usize] += 1;
                out.push(Output::Rejected(held.note(ev.session_id, detail)));
            }
            if open && !copy && far(ev.time_us, wm) {
                session.held = Some(Held::of(ev));
                return;
            }
            let ahead = ev.time_us.saturating_sub(wm);
            if ahead > jump {
                let limit = &plan.manifest.time.max_clock_jump;
                let detail = format!("event time is {:.3} s ahead of the session's watermark (limit {limit})", ahead as f64 / 1e6);
                core.reject(out, ev, Reason::ClockJump, detail);
                return;
            }
        }
        // A silence in the session's own event time longer than idle_timeout ended it: the
        // event that breaks it finds the session closed, in replay (which reads the gap) as in
        // the stream (whose wall clock expired the session meanwhile, or would have).
        if session.end.is_none() && session.max_time != i64::MIN && ev.time_us.saturating_sub(session.max_time) > core.plan.idle_us {
            self.close_session(ev.session_id, CloseCause::Gap, now_us, out);
            self.core.late_or_filtered(out, ev, takes, AFTER_SILENCE);
            return;
        }
        if takes && ev.time_us < session.horizon(&core.plan) {
            core.stats.late += 1;
            out.push(Output::Late(note(ev, "too_late", "more than allowed_lateness behind the session's watermark")));
            return;
        }
        // After the session's end in (time, seq) order, whichever arrived first.
        if session.end.is_some_and(|end| (ev.time_us, ev.seq) > end) {
            core.late_or_filtered(out, ev, takes, AFTER_END);
            return;
        }
        // The key is found before the id is remembered, for the same reason.
        let known_key = if accepted_kind { find_key(session, ev) } else { None };
        if accepted_kind && known_key.is_none() && session.keys.len() >= MAX_KEYS_PER_SESSION {
            let detail =
                format!("the session already holds {MAX_KEYS_PER_SESSION} keys (values of {:?}); this event names another", core.plan.manifest.key);
            core.reject(out, ev, Reason::TooManyKeys, detail);
            return;
        }
        // Only what can reach a window needs telling apart from a resent copy.
        if takes {
            match session.seen.insert(ev.seq, id_hash(ev.event_id), ev.time_us) {
                Seen::New => {}
                Seen::Duplicate { first_seq } => {
                    if ev.seq < first_seq {
                        renumber(session, ev);
                    }
                    core.stats.duplicates += 1;
                    return;
                }
            }
            core.stats.dedup_evicted += session.seen.take_evicted();
        }
        session.last_activity = session.last_activity.max(now_us);
        session.min_seq = session.min_seq.min(ev.seq);
        session.max_seq = session.max_seq.max(ev.seq);
        session.received += 1;
        session.max_time = session.max_time.max(ev.time_us);
        session.first_time = session.first_time.min(ev.time_us);
        match ev.kind {
            EventKind::SessionStart => session.started = Some(session.started.map_or(ev.time_us, |t| t.min(ev.time_us))),
            EventKind::SessionEnd => session.end = Some(session.end.map_or((ev.time_us, ev.seq), |e| e.min((ev.time_us, ev.seq)))),
            _ => {}
        }

        if accepted_kind && core.admit(ev, out) {
            let key = known_key.unwrap_or_else(|| new_key(&core.plan, core.assigner, session, ev));
            let mut values = SmallVec::from_slice(ev.inputs);
            values.resize(core.plan.slots.len(), f64::NAN);
            let event_id = EventId::new(ev.event_id);
            let behind = ev.time_us < session.watermark(&core.plan);
            let pending = Pending { time: ev.time_us, seq: ev.seq, key, behind, event_id, values, origin: ev.origin };
            if session.frontier.is_some_and(|f| (ev.time_us, ev.seq) < f) {
                core.apply(session, ev.session_id, pending, false, out);
            } else if session.buffer.back().is_none_or(|last| *last <= pending) {
                session.buffer.push_back(pending);
            } else {
                let at = session.buffer.partition_point(|p| *p <= pending);
                session.buffer.insert(at, pending);
            }
        } else {
            core.stats.filtered += 1;
        }

        let wm = session.watermark(&core.plan);
        core.release(session, ev.session_id, Some(wm), out);
        if session.end.is_some_and(|(t, _)| t < wm) {
            self.close_session(ev.session_id, CloseCause::End, now_us, out);
            return;
        }
        core.advance(session, wm, out);
        session.since_purge += 1;
        if session.since_purge >= 1024 {
            session.since_purge = 0;
            session.seen.forget_before(session.horizon(&core.plan));
        }
    }

    /// A session not yet settled whose first events kept a clock more than `max_clock_jump`
    /// from the one its next events agree on: those first events are refused as `clock_jump`
    /// (none reached a window), the session starts again, and takes `held` as its first event.
    /// Events of kinds the manifest does not take stay counted as filtered; a `session_start`
    /// among them no longer counts as the start seen (the first lap began on the other clock).
    fn start_again(&mut self, sid: &str, held: Held, now_us: i64, out: &mut Vec<Output>) {
        let core = &mut self.core;
        let session = self.sessions.get_mut(sid).expect("the session is open");
        let limit = &core.plan.manifest.time.max_clock_jump;
        for p in session.buffer.drain(..) {
            let detail = format!("the session's first events kept a clock more than {limit} from the one its next events agree on");
            core.stats.rejected[Reason::ClockJump as usize] += 1;
            out.push(Output::Rejected(p.note(sid, Reason::ClockJump.as_str(), detail)));
        }
        *session = SessionState::new(session.last_activity);
        let key: SmallVec<[&str; 4]> = held.key.iter().map(String::as_str).collect();
        let ev = EventRef {
            session_id: sid,
            event_id: &held.event_id,
            seq: held.seq,
            time_us: held.time,
            kind: held.kind,
            key: &key,
            inputs: &held.inputs,
            origin: held.origin,
        };
        self.take(&ev, now_us, out);
    }

    /// A hint, given before the event is resolved: starts bringing into cache the slot of the
    /// session's dedup memory the event will be looked up in, so that memory's wait overlaps
    /// the resolver's work (the lookup is otherwise the engine's one cache miss per event).
    /// Changes nothing.
    pub fn prefetch(&self, session_id: &str, event_id: &str) {
        if let Some(session) = self.sessions.in_memory(session_id) {
            session.seen.prefetch(id_hash(event_id));
        }
    }

    /// Closes sessions silent (in the driver's clock) for longer than the idle timeout, and
    /// ended sessions silent for longer than the out-of-orderness: nothing moves their
    /// watermark past the end any more, so the driver's clock says when to stop waiting for
    /// events sent before it.
    pub fn expire_idle(&mut self, now_us: i64, out: &mut Vec<Output>) {
        let plan = &self.core.plan;
        let ids = self.sessions.idle_ids(now_us.saturating_sub(plan.idle_us), now_us.saturating_sub(plan.ooo_us));
        self.close_all(ids, now_us, out);
    }

    /// Closes ended sessions without events for `idle_timeout` of the driver's clock (`now_us`):
    /// how replay, whose clock is the event time read so far, frees them before the end of input.
    pub fn close_ended(&mut self, now_us: i64, out: &mut Vec<Output>) {
        self.close_ended_where(now_us, |_| true, out);
    }

    /// [`Engine::close_ended`] for the sessions `among` picks (by id): a driver keeping a
    /// clock per group of sessions closes each group by its own.
    pub fn close_ended_where(&mut self, now_us: i64, among: impl Fn(&str) -> bool, out: &mut Vec<Output>) {
        let mut ids = self.sessions.idle_ids(i64::MIN, now_us.saturating_sub(self.core.plan.idle_us));
        ids.retain(|id| among(id));
        self.close_all(ids, now_us, out);
    }

    /// Closes these sessions in id order, at `now_us` of the driver's clock; those that had not
    /// ended count as expired.
    fn close_all(&mut self, mut ids: Vec<Box<str>>, now_us: i64, out: &mut Vec<Output>) {
        ids.sort();
        for id in ids {
            self.close_session(&id, CloseCause::Idle, now_us, out);
        }
    }

    /// End of input: closes every open session (in session-id order) as a session end would, at
    /// `now_us` of the driver's clock.
    pub fn finish(&mut self, now_us: i64, out: &mut Vec<Output>) {
        let mut ids = self.sessions.open_ids();
        ids.sort();
        for id in ids {
            self.close_session(&id, CloseCause::InputEnd, now_us, out);
        }
    }

    /// Closes an open session and remembers it closed at `now_us` of the driver's clock. An ended
    /// session the clock closes ([`CloseCause::Idle`]) counts as closed by its end.
    fn close_session(&mut self, id: &str, cause: CloseCause, now_us: i64, out: &mut Vec<Output>) {
        let session = self.sessions.remove(id).expect("present");
        let cause = if cause == CloseCause::Idle && session.has_ended() { CloseCause::End } else { cause };
        self.core.close(session, id, cause, out);
        self.sessions.mark_closed(id, now_us);
    }
}

/// The hash an event id is remembered by.
fn id_hash(event_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(event_id.as_bytes())
}

fn note(ev: &EventRef, reason: &'static str, detail: &str) -> EventNote {
    EventNote {
        session_id: ev.session_id.to_string(),
        event_id: ev.event_id.to_string(),
        seq: ev.seq,
        time_us: ev.time_us,
        reason,
        detail: detail.to_string(),
        origin: ev.origin,
    }
}

/// A resent copy of a buffered event came with a lower sequence number than the copy that
/// arrived first: the event takes the lower one, so which copy arrives first changes no row.
/// (Once released, the event is behind the watermark and the copy out of bounds.)
/// The buffered event is found by time and id, not by the number the dedup memory recorded: an
/// earlier renumbering may have lowered it already.
fn renumber(session: &mut SessionState, ev: &EventRef) {
    let id = EventId::new(ev.event_id);
    let Some(at) = session.buffer.iter().position(|p| p.time == ev.time_us && p.seq > ev.seq && p.event_id == id) else {
        return;
    };
    let mut p = session.buffer.remove(at).expect("found");
    p.seq = ev.seq;
    // A note about the event names the copy whose number it gives.
    p.origin = ev.origin;
    let at = session.buffer.partition_point(|q| *q <= p);
    session.buffer.insert(at, p);
    session.min_seq = session.min_seq.min(ev.seq);
}

/// The index of the event's key among the session's keys, if the session has it.
fn find_key(session: &SessionState, ev: &EventRef) -> Option<u32> {
    session.keys.iter().position(|k| k.key[1..].iter().zip(ev.key).all(|(a, b)| pitgun_codec::text::same(a, b))).map(|i| i as u32)
}

/// Adds the event's key to the session; returns its index.
fn new_key(plan: &Plan, assigner: Assigner, session: &mut SessionState, ev: &EventRef) -> u32 {
    let mut key = Vec::with_capacity(ev.key.len() + 1);
    key.push(ev.session_id.to_string());
    key.extend(ev.key.iter().map(|s| s.to_string()));
    let windows = assigner.empty();
    session.keys.push(KeyState {
        key,
        prev: vec![f64::NAN; plan.slots.len()],
        last_eval: vec![i64::MIN; plan.derived.len()],
        windows,
        segment_high: f64::NEG_INFINITY,
        sealed_until: i64::MIN,
    });
    (session.keys.len() - 1) as u32
}

impl Core {
    /// An event of a closed session: late if a window could have taken it (`takes`), else only
    /// counted as filtered, as every event of a kind the manifest does not take.
    fn late_or_filtered(&mut self, out: &mut Vec<Output>, ev: &EventRef, takes: bool, why: &str) {
        if takes {
            self.stats.late += 1;
            out.push(Output::Late(note(ev, "session_closed", why)));
        } else {
            self.stats.filtered += 1;
        }
    }

    fn reject(&mut self, out: &mut Vec<Output>, ev: &EventRef, reason: Reason, detail: String) {
        self.stats.rejected[reason as usize] += 1;
        let mut n = note(ev, reason.as_str(), "");
        n.detail = detail;
        out.push(Output::Rejected(n));
    }

    /// Applies the manifest's filter formula; false when the event is filtered or refused.
    fn admit(&mut self, ev: &EventRef, out: &mut Vec<Output>) -> bool {
        let Some(filter) = &self.plan.filter else { return true };
        self.scratch[..ev.inputs.len()].copy_from_slice(ev.inputs);
        let result = self.rt.eval(filter, &self.scratch, &self.no_prev, 0.0);
        match result {
            Evaluated::Value(v) => v != 0.0,
            Evaluated::Null | Evaluated::MissingInput => false,
            Evaluated::Limit => {
                self.reject(out, ev, Reason::FormulaLimit, "filter exceeded its operation limit".into());
                false
            }
            Evaluated::Error => {
                self.reject(out, ev, Reason::FormulaError, "filter failed at run time".into());
                false
            }
        }
    }

    /// Releases buffered events in (time, seq) order: those strictly before the watermark (an
    /// event at the watermark's time is exactly out-of-orderness behind and still in bounds, so
    /// it waits, as it would have had it arrived first), and the oldest past
    /// [`MAX_BUFFERED_EVENTS`] whatever the watermark; never past the session's end.
    fn release(&mut self, s: &mut SessionState, sid: &str, up_to: Option<i64>, out: &mut Vec<Output>) {
        while let Some(front) = s.buffer.front() {
            let ahead = up_to.is_some_and(|wm| front.time >= wm);
            if (ahead && s.buffer.len() <= MAX_BUFFERED_EVENTS) || s.end.is_some_and(|end| (front.time, front.seq) > end) {
                break;
            }
            if ahead {
                self.stats.released_early += 1;
            }
            let p = s.buffer.pop_front().expect("front");
            s.frontier = Some((p.time, p.seq));
            self.apply(s, sid, p, true, out);
        }
    }

    /// Computes derived values and adds the event to its windows.
    fn apply(&mut self, s: &mut SessionState, sid: &str, mut p: Pending, in_order: bool, out: &mut Vec<Output>) {
        let plan = &self.plan;
        let key = &mut s.keys[p.key as usize];
        let base = plan.input_count;
        for (j, formula) in plan.derived.iter().enumerate() {
            let (prev, dt) = if in_order && key.last_eval[j] != i64::MIN {
                (&key.prev[..], (p.time - key.last_eval[j]) as f64 / 1e6)
            } else {
                (&self.no_prev[..], 0.0)
            };
            match self.rt.eval(formula, &p.values, prev, dt) {
                Evaluated::Value(v) => {
                    p.values[base + j] = v;
                    if in_order {
                        key.last_eval[j] = p.time;
                    }
                }
                Evaluated::Null => {
                    if in_order {
                        key.last_eval[j] = p.time;
                    }
                }
                // A key's first step has no previous value yet; it is still a step, so the next
                // event's `prev_*` and `dt` are this one's. An event without the formula's own
                // inputs is no step of it.
                Evaluated::MissingInput => {
                    if in_order && formula.has_current_inputs(&p.values) {
                        key.last_eval[j] = p.time;
                    }
                }
                bad @ (Evaluated::Limit | Evaluated::Error) => {
                    let (reason, what) = if bad == Evaluated::Limit {
                        (Reason::FormulaLimit, "exceeded its operation limit")
                    } else {
                        (Reason::FormulaError, "failed at run time")
                    };
                    self.stats.rejected[reason as usize] += 1;
                    out.push(Output::Rejected(p.note(sid, reason.as_str(), format!("derived value {:?} {what}", plan.slots[base + j].name))));
                    return;
                }
            }
        }
        if in_order {
            for (prev, v) in key.prev.iter_mut().zip(&p.values) {
                if !v.is_nan() {
                    *prev = *v;
                }
            }
        }
        let wm = s.max_time.saturating_sub(plan.ooo_us);
        let mut rows = Rows { plan, stats: &mut self.stats, emissions: &mut s.emissions, out };
        let key = &mut s.keys[p.key as usize];
        let accepted = if in_order {
            self.assigner.add_in_order(&mut rows, key, sid, &p, wm, s.started)
        } else {
            self.assigner.add_late(&mut rows, key, &p, wm)
        };
        if accepted {
            self.stats.accepted += 1;
            if !in_order {
                self.stats.late_updates += 1;
            }
        } else {
            self.stats.late += 1;
            out.push(Output::Late(p.note(sid, "too_late", "the event's window closed beyond the allowed lateness".into())));
        }
    }

    /// Emits windows the watermark has passed and drops those beyond the allowed lateness.
    fn advance(&mut self, s: &mut SessionState, wm: i64, out: &mut Vec<Output>) {
        let mut rows = Rows { plan: &self.plan, stats: &mut self.stats, emissions: &mut s.emissions, out };
        for key in &mut s.keys {
            self.assigner.advance(&mut rows, key, wm);
        }
    }

    /// Closes a session: releases everything buffered up to its end, emits every open window.
    fn close(&mut self, mut s: SessionState, sid: &str, cause: CloseCause, out: &mut Vec<Output>) {
        if let Some(held) = s.held.take() {
            let limit = &self.plan.manifest.time.max_clock_jump;
            self.stats.rejected[Reason::ClockJump as usize] += 1;
            out.push(Output::Rejected(held.note(sid, format!("more than {limit} from its session's clock, and no later event kept to its time"))));
        }
        self.release(&mut s, sid, None, out);
        // What is still buffered comes after the session's end.
        for p in s.buffer.drain(..) {
            self.stats.late += 1;
            out.push(Output::Late(p.note(sid, "session_closed", AFTER_END.into())));
        }
        let mut rows = Rows { plan: &self.plan, stats: &mut self.stats, emissions: &mut s.emissions, out };
        for key in &mut s.keys {
            self.assigner.close(&mut rows, key);
        }
        if s.received > 0 {
            self.stats.missing_events += (s.max_seq - s.min_seq + 1).saturating_sub(s.received);
        }
        self.stats.sessions_closed += 1;
        self.stats.closed_by[cause as usize] += 1;
        if matches!(cause, CloseCause::Idle | CloseCause::Gap) {
            self.stats.sessions_expired += 1;
        }
    }
}
