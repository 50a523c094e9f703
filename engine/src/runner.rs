//! One thread's pipeline: decode → resolve → engine, with reusable scratch buffers.

use crate::plan::Plan;
use crate::resolve::{KeyValues, Resolver};
use crate::session_engine::{Engine, EventRef, Origin, Output};
use crate::store::{MemoryStore, SessionStore};
use crate::Reason;
use pitgun_codec::json::{decode_into, EnvelopeView};
use pitgun_codec::Record;

/// A record the runner could not turn into an event.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// Counted reason.
    pub reason: Reason,
    /// Where and what (JSON pointer and message, or the channel and value).
    pub detail: String,
}

/// The clock a driver passes before it has one (replay, before the first record of a group of
/// sessions): the record's own event time stands for it. A clock of 0 there would start the
/// session's idle clock in 1970, and an ended session that had one event would be closed at
/// the next check whatever came after.
pub const NO_CLOCK_YET: i64 = i64::MIN;

/// Decode, resolve and process JSON envelopes for one plan on one thread.
pub struct Runner<S: SessionStore = MemoryStore> {
    engine: Engine<S>,
    resolver: Resolver,
    values: Vec<f64>,
    last_time_us: i64,
    /// The event time of the record being fed, once decoded (`i64::MIN` until then).
    record_time_us: i64,
}

impl Runner<MemoryStore> {
    /// A runner for `plan`, with in-memory session state.
    pub fn new(plan: Plan) -> Runner<MemoryStore> {
        Runner::with_store(plan, MemoryStore::default())
    }
}

impl<S: SessionStore> Runner<S> {
    /// A runner for `plan` whose session state lives in `store`.
    pub fn with_store(plan: Plan, store: S) -> Runner<S> {
        let resolver = Resolver::new(&plan);
        Runner { engine: Engine::with_store(plan, store), resolver, values: Vec::new(), last_time_us: i64::MIN, record_time_us: i64::MIN }
    }

    /// The engine (stats, plan).
    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }

    /// The engine, mutably (end of input, idle expiry).
    pub fn engine_mut(&mut self) -> &mut Engine<S> {
        &mut self.engine
    }

    /// Feeds one record in either format, as a dataset or a topic stores it, read at `origin`
    /// (which every note about its event names).
    pub fn feed(&mut self, record: Record<'_>, origin: Origin, now_us: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        self.record_time_us = i64::MIN;
        match record {
            Record::Avro(datum) => self.avro(datum, origin, now_us, out),
            Record::Json(bytes) => match pitgun_codec::text::utf8(bytes) {
                Ok(text) => self.json(text, origin, now_us, out),
                Err(e) => Err(self.refuse_undecodable(format!("JSON record is not UTF-8: {e}"))),
            },
        }
    }

    /// Feeds one JSON envelope of unknown origin. Refused records are counted and returned as
    /// errors.
    pub fn feed_json(&mut self, text: &str, now_us: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        self.json(text, Origin::UNKNOWN, now_us, out)
    }

    /// Feeds one Avro binary datum of the envelope schema, of unknown origin (the caller checked
    /// the single-object header).
    pub fn feed_avro(&mut self, datum: &[u8], now_us: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        self.avro(datum, Origin::UNKNOWN, now_us, out)
    }

    /// Feeds one decoded envelope of unknown origin.
    pub fn feed_view(&mut self, view: &EnvelopeView<'_>, now_us: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        self.view(view, Origin::UNKNOWN, now_us, out)
    }

    fn json(&mut self, text: &str, origin: Origin, now_us: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        let mut view = EnvelopeView::empty();
        match decode_into(text, &mut view) {
            Ok(()) => self.view(&view, origin, now_us, out),
            Err(e) => Err(self.invalid(e)),
        }
    }

    fn avro(&mut self, datum: &[u8], origin: Origin, now_us: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        let mut view = EnvelopeView::empty();
        let engine = &self.engine;
        let takes = |view: &EnvelopeView<'_>| {
            let takes = engine.plan().accepts(view.kind);
            if takes {
                engine.prefetch(&view.session_id, &view.event_id);
            }
            takes
        };
        let decoded = crate::decode_avro::decode_avro_resolved(datum, &mut view, takes, &mut self.resolver, &mut self.values);
        if decoded.is_some() && !self.engine.plan().accepts(view.kind) {
            // Decoded with its channels listed, not resolved: the same step as a JSON record's.
            return self.view(&view, origin, now_us, out);
        }
        if let Some(unknown) = decoded {
            let mut key = KeyValues::new();
            if self.resolver.key_of(&view, &mut key).is_some() {
                self.saw_time(view.time_us);
                self.count_resolved(unknown);
                self.process(&view, &key, origin, now_us, out);
                return Ok(());
            }
        }
        // Anything unusual: the two-pass path, which learns layouts and words every refusal.
        let mut view = EnvelopeView::empty();
        match pitgun_codec::avro::decode_avro_into(datum, &mut view) {
            Ok(()) => self.view(&view, origin, now_us, out),
            Err(e) => Err(self.invalid(e)),
        }
    }

    /// Counts what resolving an event dropped: its unknown channels, and the event itself when
    /// the dictionary has no aliases for its producer or version.
    fn count_resolved(&mut self, unknown_channels: u32) {
        self.engine.count_unknown_channels(unknown_channels);
        if !self.resolver.source_covered() {
            self.engine.count_uncovered_source();
        }
    }

    fn invalid(&mut self, e: pitgun_codec::json::DecodeError) -> RecordError {
        self.refuse_undecodable(e.to_string())
    }

    /// A record the driver could not even hand over (not UTF-8, not an Avro single object):
    /// counted as every undecodable record is, under one reason in replay and stream.
    pub fn refuse_undecodable(&mut self, detail: String) -> RecordError {
        self.engine.count_rejected(Reason::InvalidEnvelope);
        RecordError { reason: Reason::InvalidEnvelope, detail }
    }

    fn view(&mut self, view: &EnvelopeView<'_>, origin: Origin, now_us: i64, out: &mut Vec<Output>) -> Result<(), RecordError> {
        self.saw_time(view.time_us);
        let mut key = KeyValues::new();
        let checked = if self.engine.plan().accepts(view.kind) {
            self.engine.prefetch(&view.session_id, &view.event_id);
            self.resolver.resolve(view, &mut self.values, &mut key)
        } else {
            // A kind the manifest does not take reaches no window: it moves its session's clock
            // and is counted. It must be a valid envelope, as every event must, but what only a
            // window reads — its key, its channels' metrics — is neither bound nor checked.
            self.values.clear();
            self.resolver.check_envelope(view).map(|()| 0)
        };
        match checked {
            Ok(unknown) => self.count_resolved(unknown),
            Err(r) => {
                self.engine.count_rejected(r.reason);
                return Err(RecordError { reason: r.reason, detail: r.detail });
            }
        }
        self.process(view, &key, origin, now_us, out);
        Ok(())
    }

    /// Feeds a decoded, resolved event (its inputs in `self.values`).
    #[inline]
    fn process(&mut self, view: &EnvelopeView<'_>, key: &[&str], origin: Origin, now_us: i64, out: &mut Vec<Output>) {
        let now_us = if now_us == NO_CLOCK_YET { view.time_us } else { now_us };
        let ev = EventRef {
            session_id: &view.session_id,
            event_id: &view.event_id,
            seq: view.seq,
            time_us: view.time_us,
            kind: view.kind,
            key,
            inputs: &self.values,
            origin,
        };
        self.engine.process(&ev, now_us, out);
    }

    /// The newest event time decoded so far (µs; `i64::MIN` before the first), for lag metrics.
    pub fn newest_event_time(&self) -> i64 {
        self.last_time_us
    }

    /// The event time of the record [`Runner::feed`] was last given, if it decoded as an
    /// envelope (refused later or not): what moves replay's clock.
    pub fn record_time(&self) -> Option<i64> {
        (self.record_time_us != i64::MIN).then_some(self.record_time_us)
    }

    fn saw_time(&mut self, time_us: i64) {
        self.record_time_us = time_us;
        self.last_time_us = self.last_time_us.max(time_us);
    }

    /// End of input: closes every session, at `now_us` of the driver's clock.
    pub fn finish(&mut self, now_us: i64, out: &mut Vec<Output>) {
        self.engine.finish(now_us, out);
    }
}
