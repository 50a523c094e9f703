//! The window assigner: the one interface through which the engine places events in windows,
//! emits them as the watermark passes, and closes them with their session. [`Assigner`] is
//! chosen once per plan; each window kind keeps its rules in its own section below:
//!
//! - **fixed** (tumbling, and hopping: a tumbling window is a hopping one whose hop is its size),
//!   identified by start;
//! - **gap** (session windows): events closer than the gap share a window, which merges when
//!   a late event bridges two;
//! - **segment**: one window per value of the segment field, closed by the next value;
//! - **global**: the whole session.
//!
//! A key's windows ([`Windows`]) live in session state, so their serialised form is part of
//! the checkpoint format ([`super::STATE_FORMAT`]).

use std::collections::BTreeMap;

use pitgun_contracts::analysis::ColumnType;
use pitgun_contracts::manifest::{AggregateFn, WindowDef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{KeyState, Output, Pending};
use crate::accumulate::Accumulator;
use crate::plan::Plan;
use crate::row::{self, Row};
use crate::{Reason, Stats};

/// One window's accumulated state.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Win {
    start: i64,
    end: i64,
    first_t: i64,
    last_t: i64,
    min_seq: u64,
    max_seq: u64,
    events: u64,
    accs: Vec<Accumulator>,
    emitted: bool,
    dirty: bool,
    /// Segment value (segment windows).
    segment: f64,
    /// Segment closed by the next value (segment windows).
    closed: bool,
    complete: bool,
    /// The row's fixed time (`window_anchor`): the start when the row was first emitted. A late
    /// event may move an emitted segment's or global window's start, but its row keeps its
    /// identity (`row_id`), so a store keyed by time (QuestDB's dedup keys) needs a time that
    /// does not move with it.
    anchor: i64,
    /// Segment windows: the boundary it started at was observed (the previous segment's end, or
    /// the session's start). A segment first seen mid-way — a session joined late, resumed, or
    /// cut by retention — is never `complete`, however it ends.
    start_seen: bool,
}

impl Win {
    fn new(plan: &Plan, start: i64, end: i64) -> Win {
        Win {
            start,
            end,
            first_t: i64::MAX,
            last_t: i64::MIN,
            min_seq: u64::MAX,
            max_seq: 0,
            events: 0,
            accs: plan.aggregations.iter().map(|a| Accumulator::new(a.function)).collect(),
            emitted: false,
            dirty: false,
            segment: f64::NAN,
            closed: false,
            complete: false,
            anchor: start,
            start_seen: false,
        }
    }

    #[inline]
    fn add(&mut self, plan: &Plan, values: &[f64], t: i64, seq: u64) {
        for (acc, agg) in self.accs.iter_mut().zip(&plan.aggregations) {
            match agg.slot {
                None => acc.add(0.0, t, seq),
                Some(s) => {
                    let v = values[s];
                    if !v.is_nan() {
                        acc.add(v, t, seq);
                    }
                }
            }
        }
        self.first_t = self.first_t.min(t);
        self.last_t = self.last_t.max(t);
        self.min_seq = self.min_seq.min(seq);
        self.max_seq = self.max_seq.max(seq);
        self.events += 1;
        self.dirty = true;
    }

    fn merge(&mut self, other: &Win) {
        for (a, b) in self.accs.iter_mut().zip(&other.accs) {
            a.merge(b);
        }
        self.first_t = self.first_t.min(other.first_t);
        self.last_t = self.last_t.max(other.last_t);
        self.min_seq = self.min_seq.min(other.min_seq);
        self.max_seq = self.max_seq.max(other.max_seq);
        self.events += other.events;
        self.dirty = true;
    }

    #[inline]
    fn add_pending(&mut self, plan: &Plan, p: &Pending) {
        self.add(plan, &p.values, p.time, p.seq);
    }
}

/// A key's windows, in the form of its kind.
#[derive(Serialize, Deserialize)]
pub(super) enum Windows {
    /// Tumbling and hopping windows by start.
    Fixed(BTreeMap<i64, Win>),
    /// Session-gap windows, ordered by first event.
    Sessions(Vec<Win>),
    /// Segments in order of value.
    Segments(Vec<Win>),
    /// The whole session.
    Global(Option<Win>),
}

/// Where a key's rows go: the plan renders them, the stats count them, the session numbers
/// its emissions.
pub(super) struct Rows<'a> {
    pub plan: &'a Plan,
    pub stats: &'a mut Stats,
    pub emissions: &'a mut u64,
    pub out: &'a mut Vec<Output>,
}

/// The plan's window kind, with its geometry in µs.
#[derive(Clone, Copy)]
pub(super) enum Assigner {
    Fixed { size: i64, hop: i64 },
    Gap { gap: i64 },
    Segment { slot: usize, integral: bool },
    Global,
}

impl Assigner {
    pub fn of(plan: &Plan) -> Assigner {
        match &plan.manifest.window {
            WindowDef::Tumbling { size } => Assigner::Fixed { size: size.micros, hop: size.micros },
            WindowDef::Hopping { size, hop } => Assigner::Fixed { size: size.micros, hop: hop.micros },
            WindowDef::Session { gap } => Assigner::Gap { gap: gap.micros },
            WindowDef::Segment { .. } => {
                let slot = plan.segment_slot.expect("a segment plan has its slot");
                Assigner::Segment { slot, integral: plan.slots[slot].integral }
            }
            WindowDef::Global => Assigner::Global,
        }
    }

    /// A new key's (empty) windows.
    pub fn empty(self) -> Windows {
        match self {
            Assigner::Fixed { .. } => Windows::Fixed(BTreeMap::new()),
            Assigner::Gap { .. } => Windows::Sessions(Vec::new()),
            Assigner::Segment { .. } => Windows::Segments(Vec::new()),
            Assigner::Global => Windows::Global(None),
        }
    }

    /// An event released in order (`wm`: the session's watermark, `started`: its
    /// `session_start` time); false when its window was already dropped.
    pub fn add_in_order(self, rows: &mut Rows, key: &mut KeyState, sid: &str, p: &Pending, wm: i64, started: Option<i64>) -> bool {
        let plan = rows.plan;
        match (self, &mut key.windows) {
            (Assigner::Fixed { size, hop }, Windows::Fixed(map)) => fixed_add_in_order(plan, map, size, hop, p, wm),
            (Assigner::Gap { gap }, Windows::Sessions(wins)) => gap_add_in_order(plan, wins, key.sealed_until, gap, p),
            (Assigner::Segment { .. }, Windows::Segments(_)) => {
                segment_add_in_order(rows, self, key, sid, p, started);
                true
            }
            (Assigner::Global, Windows::Global(win)) => {
                win.get_or_insert_with(|| Win::new(plan, p.time, p.time)).add_pending(plan, p);
                true
            }
            _ => unreachable!("windows match the plan"),
        }
    }

    /// An event that arrived behind what was released; false when no retained window takes it.
    pub fn add_late(self, rows: &mut Rows, key: &mut KeyState, p: &Pending, wm: i64) -> bool {
        let KeyState { key: names, windows, sealed_until, .. } = key;
        match (self, windows) {
            (Assigner::Fixed { size, hop }, Windows::Fixed(map)) => fixed_add_late(rows, names, map, size, hop, p, wm),
            (Assigner::Gap { gap }, Windows::Sessions(wins)) => gap_add_late(rows.plan, wins, *sealed_until, gap, p, wm),
            (Assigner::Segment { slot, .. }, Windows::Segments(segs)) => segment_add_late(rows, self, names, segs, slot, p),
            (Assigner::Global, Windows::Global(win)) => {
                win.get_or_insert_with(|| Win::new(rows.plan, p.time, p.time)).add_pending(rows.plan, p);
                true
            }
            _ => unreachable!("windows match the plan"),
        }
    }

    /// Emits the windows the watermark has passed and drops those beyond the allowed lateness.
    pub fn advance(self, rows: &mut Rows, key: &mut KeyState, wm: i64) {
        let lateness = rows.plan.lateness_us;
        let KeyState { key: names, windows, sealed_until, .. } = key;
        match windows {
            Windows::Fixed(map) => {
                while let Some(mut entry) = map.first_entry() {
                    let w = entry.get_mut();
                    if w.end > wm {
                        break;
                    }
                    if !w.emitted || w.dirty {
                        rows.emit(self, names, w);
                    }
                    if w.end + lateness <= wm {
                        entry.remove();
                    } else {
                        break;
                    }
                }
                // Windows after the first retained one may also have ended (hopping).
                for w in map.values_mut() {
                    if w.end > wm {
                        break;
                    }
                    if !w.emitted || w.dirty {
                        rows.emit(self, names, w);
                    }
                }
            }
            Windows::Sessions(wins) => {
                let gap = if let Assigner::Gap { gap } = self { gap } else { 0 };
                while wins.first().is_some_and(|w| w.last_t + gap + lateness < wm) {
                    let mut w = wins.remove(0);
                    *sealed_until = (*sealed_until).max(w.last_t);
                    rows.emit(self, names, &mut w);
                }
            }
            Windows::Segments(segs) => {
                while segs.first().is_some_and(|w| w.closed && w.end + lateness <= wm) {
                    segs.remove(0);
                }
            }
            Windows::Global(_) => {}
        }
    }

    /// The session closed: every window still held is emitted (an open segment as incomplete).
    pub fn close(self, rows: &mut Rows, key: &mut KeyState) {
        let KeyState { key: names, windows, .. } = key;
        match windows {
            Windows::Fixed(map) => {
                for w in map.values_mut() {
                    if !w.emitted || w.dirty {
                        rows.emit(self, names, w);
                    }
                }
            }
            Windows::Sessions(wins) => {
                for w in wins.iter_mut() {
                    rows.emit(self, names, w);
                }
            }
            Windows::Segments(segs) => {
                for w in segs.iter_mut() {
                    if !w.closed {
                        w.closed = true;
                        w.end = w.last_t;
                        w.complete = false;
                        w.dirty = true;
                    }
                    if !w.emitted || w.dirty {
                        rows.emit(self, names, w);
                    }
                }
            }
            Windows::Global(Some(w)) => rows.emit(self, names, w),
            Windows::Global(None) => {}
        }
    }

    /// A window's start and end on its row, and what tells it from the key's other windows.
    fn bounds(self, w: &Win) -> (i64, i64, Value) {
        match self {
            Assigner::Fixed { .. } => (w.start, w.end, Value::from(w.start)),
            Assigner::Gap { .. } => (w.first_t, w.last_t, Value::from(w.first_t)),
            Assigner::Segment { integral, .. } => {
                let t = if integral { ColumnType::Int } else { ColumnType::Float };
                let end = if w.closed { w.end } else { w.last_t };
                (w.start, end, row::number(Some(w.segment), t))
            }
            Assigner::Global => (w.first_t, w.last_t, Value::Null),
        }
    }

    /// Time and session windows are identified by their start, so their anchor is the start; a
    /// segment or global window keeps the start its row was first emitted with.
    fn anchor(self, w: &mut Win, start: i64) -> i64 {
        match self {
            Assigner::Segment { .. } | Assigner::Global => {
                if !w.emitted {
                    w.anchor = start;
                }
                w.anchor
            }
            _ => start,
        }
    }
}

// Fixed windows (tumbling, hopping).

fn fixed_add_in_order(plan: &Plan, map: &mut BTreeMap<i64, Win>, size: i64, hop: i64, p: &Pending, wm: i64) -> bool {
    // An event released in order may still be far behind the watermark (nothing after it had
    // been released yet): a window already dropped is not re-created.
    let last = p.time.div_euclid(hop) * hop;
    let mut start = last - size + hop;
    let mut taken = false;
    while start <= last {
        if !p.behind || map.contains_key(&start) || start + size + plan.lateness_us > wm {
            map.entry(start).or_insert_with(|| Win::new(plan, start, start + size)).add_pending(plan, p);
            taken = true;
        }
        start += hop;
    }
    taken
}

fn fixed_add_late(rows: &mut Rows, names: &[String], map: &mut BTreeMap<i64, Win>, size: i64, hop: i64, p: &Pending, wm: i64) -> bool {
    let plan = rows.plan;
    let last = p.time.div_euclid(hop) * hop;
    let mut start = last - size + hop;
    let mut taken = false;
    while start <= last {
        let end = start + size;
        if map.contains_key(&start) || end + plan.lateness_us > wm {
            let w = map.entry(start).or_insert_with(|| Win::new(plan, start, end));
            w.add_pending(plan, p);
            if w.emitted || end <= wm {
                rows.emit(Assigner::Fixed { size, hop }, names, w);
            }
            taken = true;
        }
        start += hop;
    }
    taken
}

// Gap (session) windows.

fn gap_add_in_order(plan: &Plan, wins: &mut Vec<Win>, sealed_until: i64, gap: i64, p: &Pending) -> bool {
    let t = p.time;
    if p.behind && t <= sealed_until.saturating_add(gap) {
        return false;
    }
    match wins.last_mut() {
        Some(w) if t - w.last_t <= gap => w.add_pending(plan, p),
        _ => {
            let mut w = Win::new(plan, t, t);
            w.add_pending(plan, p);
            wins.push(w);
        }
    }
    true
}

fn gap_add_late(plan: &Plan, wins: &mut Vec<Win>, sealed_until: i64, gap: i64, p: &Pending, wm: i64) -> bool {
    let t = p.time;
    // Within the gap of a window already emitted: merging is no longer possible.
    if t <= sealed_until.saturating_add(gap) {
        return false;
    }
    let hits: Vec<usize> = (0..wins.len()).filter(|&i| t >= wins[i].first_t - gap && t <= wins[i].last_t + gap).collect();
    match hits.as_slice() {
        [] => {
            if t + gap + plan.lateness_us < wm {
                return false;
            }
            let mut w = Win::new(plan, t, t);
            w.add_pending(plan, p);
            let at = wins.partition_point(|x| x.first_t < t);
            wins.insert(at, w);
        }
        [i, rest @ ..] => {
            for j in rest.iter().rev() {
                let other = wins.remove(*j);
                wins[*i].merge(&other);
            }
            wins[*i].add_pending(plan, p);
        }
    }
    true
}

// Segment windows.

fn segment_add_in_order(rows: &mut Rows, assigner: Assigner, key: &mut KeyState, sid: &str, p: &Pending, started: Option<i64>) {
    let Assigner::Segment { slot, integral } = assigner else { unreachable!("a segment assigner") };
    let plan = rows.plan;
    let v = p.values[slot];
    let KeyState { key: names, windows, segment_high, .. } = key;
    let Windows::Segments(segs) = windows else { unreachable!("windows match the plan") };
    let open = segs.last_mut().filter(|w| !w.closed);
    if v.is_nan() {
        match open {
            Some(w) => w.add_pending(plan, p),
            None => rows.stats.no_segment += 1,
        }
        return;
    }
    if let Some(w) = open {
        if w.segment == v {
            w.add_pending(plan, p);
            return;
        }
    }
    if v < *segment_high {
        rows.stats.rejected[Reason::SegmentRegressed as usize] += 1;
        rows.out.push(Output::Rejected(p.note(sid, Reason::SegmentRegressed.as_str(), format!("segment value {v} after {segment_high}"))));
        return;
    }
    // Its start is seen if a segment before it was, or the session's start was.
    let start_seen = *segment_high > f64::NEG_INFINITY || started.is_some_and(|t| t <= p.time);
    *segment_high = v;
    if let Some(w) = segs.last_mut().filter(|w| !w.closed) {
        w.closed = true;
        w.end = p.time;
        w.complete = w.start_seen && (!integral || v == w.segment + 1.0);
        rows.emit(assigner, names, w);
    }
    let mut w = Win::new(plan, p.time, p.time);
    w.start_seen = start_seen;
    w.segment = v;
    w.add_pending(plan, p);
    segs.push(w);
}

fn segment_add_late(rows: &mut Rows, assigner: Assigner, names: &[String], segs: &mut [Win], slot: usize, p: &Pending) -> bool {
    let plan = rows.plan;
    let (t, v) = (p.time, p.values[slot]);
    let found =
        if v.is_nan() { segs.iter().position(|w| w.start <= t && (!w.closed || t < w.end)) } else { segs.iter().position(|w| w.segment == v) };
    let Some(i) = found else { return false };
    let w = &mut segs[i];
    let old_start = w.start;
    w.add_pending(plan, p);
    if t < w.start {
        w.start = t;
    }
    let moved = w.start != old_start;
    let new_start = w.start;
    if segs[i].emitted {
        rows.emit(assigner, names, &mut segs[i]);
    }
    if moved && i > 0 {
        let prev = &mut segs[i - 1];
        if prev.closed && prev.end == old_start {
            prev.end = new_start;
            prev.dirty = true;
            if prev.emitted {
                rows.emit(assigner, names, prev);
            }
        }
    }
    true
}

impl Rows<'_> {
    /// Renders and emits a window's row.
    fn emit(&mut self, assigner: Assigner, key: &[String], w: &mut Win) {
        let plan = self.plan;
        let kind = plan.manifest.window.kind_name();
        let (start, end, discriminator) = assigner.bounds(w);
        let anchor = assigner.anchor(w, start);
        let id = row::row_id(&plan.manifest.name, plan.manifest.version, key, kind, discriminator.clone());
        let mut cols = Map::new();
        cols.insert("row_id".into(), Value::from(id.as_str()));
        cols.insert("session_id".into(), Value::from(key[0].as_str()));
        for (name, value) in plan.key_dims.iter().zip(&key[1..]) {
            cols.insert(name.clone(), Value::from(value.as_str()));
        }
        cols.insert("window_start".into(), Value::from(row::format_timestamp(start)));
        cols.insert("window_end".into(), Value::from(row::format_timestamp(end)));
        cols.insert("window_anchor".into(), Value::from(row::format_timestamp(anchor)));
        if let Some(slot) = plan.segment_slot {
            cols.insert(plan.slots[slot].name.clone(), discriminator);
        }
        for (agg, acc) in plan.aggregations.iter().zip(&w.accs) {
            let value = match agg.function {
                AggregateFn::Duration => Some((end - start) as f64 / 1e6),
                AggregateFn::Missing => Some((w.max_seq + 1).saturating_sub(w.min_seq).saturating_sub(w.events) as f64),
                f => acc.finish(f, agg.q),
            };
            let value = match agg.function {
                AggregateFn::Count | AggregateFn::Missing => value,
                f => value.map(|v| agg.conversion.apply_for_aggregate(f, v, acc.summed())),
            };
            cols.insert(agg.name.clone(), row::number(value, agg.column_type));
        }
        if plan.segment_slot.is_some() {
            cols.insert("complete".into(), Value::from(w.complete));
        }
        if !w.emitted {
            self.stats.windows_emitted += 1;
        }
        self.stats.rows_emitted += 1;
        w.emitted = true;
        w.dirty = false;
        *self.emissions += 1;
        self.out.push(Output::Row(Row { row_id: id, key: key.to_vec(), window_start: start, json: row::render(cols), emission: *self.emissions }));
    }
}
