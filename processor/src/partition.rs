//! One owned input partition: its engine, where it has read to, and how a batch of its records
//! is fed (grouped by session) with the outputs sent on at once.

use crate::error::Result;
use pitgun_codec::session::session_id;
use pitgun_codec::wire::Decoder;
use pitgun_engine::{EventNote, Origin, Output, Runner};
use pitgun_runtime::kafka::headers;
use tracing::{info, warn};

use crate::changelog::Chain;
use crate::group::SessionGroups;
use crate::metrics::Reported;
use crate::outlet::{Dest, Outlet};
use crate::queue::{prefetch, PartitionFeed, Scratch};
use crate::rebalance::Ctx;
use crate::state::PartitionStore;

/// One owned input partition.
pub(crate) struct Part {
    /// `topic/partition`, the prefix of dead-letter origins.
    pub(crate) name: String,
    pub(crate) runner: Runner<PartitionStore>,
    pub(crate) next_offset: i64,
    /// Outputs of records below this offset are not sent: the group's previous owner of the
    /// partition sent them before committing it (set while a partition is rebuilt).
    pub(crate) emit_from: i64,
    /// The engine's counters already added to the metrics.
    pub(crate) reported: Reported,
    /// What this replica has written to the changelog for the partition since taking it.
    pub(crate) chain: Chain,
    /// The engine's outputs for the record being fed (reused).
    pub(crate) out: Vec<Output>,
    /// Counts since the last round, summed into the summary and metrics on the polling thread
    /// (a shared counter bumped per record by two threads costs more than the engine's step).
    pub(crate) tally: Tally,
    /// Buffers for the feeding order of a batch.
    pub(crate) groups: SessionGroups,
    /// Room for the message pointers of a batch taken from the queue.
    pub(crate) scratch: Scratch,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) records: u64,
    pub(crate) rows: u64,
    pub(crate) late: u64,
    pub(crate) late_shed: u64,
    pub(crate) deadletters: u64,
}

impl Part {
    /// Feeds a batch of this partition's records (offset order) grouped by session
    /// ([`SessionGroups`]); outputs go to their topics right away.
    pub(crate) fn feed_batch(&mut self, outlet: &Outlet, decoder: &Decoder, now_us: i64, records: &[(i64, &[u8])]) -> Result<()> {
        // Records already in the state (a fetch raced the seek) are skipped.
        let skip = records.partition_point(|(offset, _)| *offset < self.next_offset);
        let records = &records[skip..];
        let Some(last) = records.last() else { return Ok(()) };
        self.next_offset = last.0 + 1;
        let mut groups = std::mem::take(&mut self.groups);
        let order = groups.order(records.iter().map(|(_, payload)| decoder.classify(payload).ok().and_then(session_id)));
        let mut fed = Ok(());
        for (k, &i) in order.iter().enumerate() {
            // Records arrive from librdkafka's fetch thread on another core: asking for the next
            // one's lines now hides the cache misses the engine would wait on.
            if let Some(&next) = order.get(k + 1) {
                let next = records[next as usize].1;
                prefetch(next.as_ptr(), next.len().div_ceil(64));
            }
            let (offset, payload) = records[i as usize];
            fed = self.feed(outlet, decoder, now_us, offset, payload);
            if fed.is_err() {
                break;
            }
        }
        self.groups = groups;
        if self.emit_from != i64::MIN && !self.catching_up() {
            info!(partition = %self.name, offset = self.emit_from, "caught up with the group's committed offset: emitting again");
            self.emit_from = i64::MIN;
        }
        fed
    }

    /// Feeds one record of this partition; its outputs go to their topics right away.
    pub(crate) fn feed(&mut self, outlet: &Outlet, decoder: &Decoder, now_us: i64, offset: i64, payload: &[u8]) -> Result<()> {
        self.tally.records += 1;
        let fed = match decoder.classify(payload) {
            Ok(record) => self.runner.feed(record, Origin(offset as u64), now_us, &mut self.out),
            Err(detail) => Err(self.runner.refuse_undecodable(detail)),
        }
        .map_err(|e| (e.reason.as_str(), e.detail));
        if offset < self.emit_from {
            // Read again while the partition is rebuilt: its previous owner counted and sent it.
            self.reported.skip(self.runner.engine().stats());
            self.out.clear();
            return Ok(());
        }
        if fed.is_ok() && self.out.is_empty() {
            return Ok(());
        }
        let origin = format!("{}/{offset}", self.name);
        if let Err((reason, detail)) = fed {
            outlet.metrics.rejected.with_label_values(&[reason]).inc();
            self.tally.deadletters += 1;
            outlet.deadletter(reason, &detail, &origin, payload)?;
        }
        self.route_outputs(outlet, &origin, offset)
    }

    /// Whether the partition is still being rebuilt up to the previous owner's offset.
    pub(crate) fn catching_up(&self) -> bool {
        self.next_offset < self.emit_from
    }

    /// The version of rows emitted now without a record (idle expiry, end of input): the last
    /// offset read, so a row's versions keep growing.
    pub(crate) fn version_now(&self) -> i64 {
        self.next_offset - 1
    }

    /// Sends the engine's outputs to their topics; rows carry `version`
    /// ([`headers::ROW_VERSION`]). A refused event is dead-lettered under the offset it was read
    /// at, which need not be the record being fed now: an event refused as it leaves the reorder
    /// buffer was read earlier. `origin` (the record being fed, idle expiry, end of input) stands
    /// in for an event whose offset is unknown: one restored from a checkpoint.
    pub(crate) fn route_outputs(&mut self, outlet: &Outlet, origin: &str, version: i64) -> Result<()> {
        for o in self.out.drain(..) {
            match o {
                Output::Row(row) => {
                    outlet.metrics.windows_emitted.inc();
                    self.tally.rows += 1;
                    outlet.send(Dest::Aggregates, row.row_id.as_bytes(), row.json.as_bytes(), Some(headers::row_version(version)))?;
                }
                Output::Late(note) => {
                    outlet.metrics.late.with_label_values(&[note.reason]).inc();
                    self.tally.late += 1;
                    if outlet.late_note_allowed() {
                        let json = note_json(read_at(&self.name, &note).as_deref(), &note);
                        outlet.send(Dest::Late, note.session_id.as_bytes(), json.as_bytes(), None)?;
                    } else {
                        outlet.metrics.late_shed.with_label_values(&[note.reason]).inc();
                        self.tally.late_shed += 1;
                    }
                }
                Output::Rejected(note) => {
                    outlet.metrics.rejected.with_label_values(&[note.reason]).inc();
                    self.tally.deadletters += 1;
                    let at = read_at(&self.name, &note);
                    let json = note_json(at.as_deref(), &note);
                    outlet.deadletter(note.reason, &note.detail, at.as_deref().unwrap_or(origin), json.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Feeds what this partition's queue holds now, at most `max` records. Returns the count.
    pub(crate) fn drain(&mut self, queue: &PartitionFeed<Ctx>, outlet: &Outlet, decoder: &Decoder, now_us: i64, max: usize) -> Result<usize> {
        let mut errors = Vec::new();
        let mut scratch = std::mem::take(&mut self.scratch);
        let taken = queue.drain(&mut scratch, max, |e| errors.push(e), |records| self.feed_batch(outlet, decoder, now_us, records));
        self.scratch = scratch;
        for e in errors {
            warn!(partition = %self.name, "consumer error: {e}");
        }
        taken
    }
}

/// `topic/partition/offset` of the record a note's event was read from, in partition `part`
/// (`topic/partition`).
fn read_at(part: &str, note: &EventNote) -> Option<String> {
    (note.origin != Origin::UNKNOWN).then(|| format!("{part}/{}", note.origin.0))
}

/// A note as the late and dead-letter topics carry it: where its event was read (`read_at`),
/// then the note.
fn note_json(read_at: Option<&str>, note: &EventNote) -> String {
    let mut first = serde_json::Map::new();
    if let Some(at) = read_at {
        first.insert("origin".into(), at.into());
    }
    note.to_json_after(first)
}
