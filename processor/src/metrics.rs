//! The processor's Prometheus metrics (names prefixed `pitgun_processor_`).

use crate::config::Summary;
use pitgun_engine::{CloseCause, Stats};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric the processor exports.
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Records consumed.
    pub events_in: IntCounter,
    /// Records refused, by reason (`invalid_envelope`, `unknown_channel`, `clock_jump`, …).
    pub rejected: IntCounterVec,
    /// Duplicate event ids dropped.
    pub duplicates: IntCounter,
    /// Events that reached no window, by reason ([`LATE_REASONS`]).
    pub late: IntCounterVec,
    /// Late events whose note was not written (the late topic's rate bound), by reason.
    pub late_shed: IntCounterVec,
    /// Event ids forgotten early because a session's dedup memory was full.
    pub dedup_evicted: IntCounter,
    /// Events released from a session's full reorder buffer before the watermark passed them.
    pub released_early: IntCounter,
    /// Channels no alias of the event's producer version names: dropped, or kept for raw
    /// channel inputs (`input.unknown_channels: keep`).
    pub unknown_channels: IntCounter,
    /// Events from a producer version the dictionary has no aliases for: accepted, but none of
    /// their channels can be a dictionary metric.
    pub uncovered_sources: IntCounter,
    /// Window rows produced (re-emissions included).
    pub windows_emitted: IntCounter,
    /// Records sent to the dead-letter topic.
    pub deadletters: IntCounter,
    /// Sessions expired after the idle timeout.
    pub sessions_expired: IntCounter,
    /// Sessions closed, by cause (`pitgun_engine::CloseCause`).
    pub sessions_closed: IntCounterVec,
    /// Open sessions held in state.
    pub sessions_open: IntGauge,
    /// Wall clock minus the newest event time seen, per partition (seconds).
    pub watermark_lag: IntGaugeVec,
    /// High watermark minus next offset, per partition.
    pub consumer_lag: IntGaugeVec,
    /// Time to flush, write and commit a checkpoint.
    pub checkpoint_seconds: Histogram,
    /// Checkpoints written.
    pub checkpoints: IntCounter,
    /// Partitions resumed from a local checkpoint.
    pub checkpoints_restored: IntCounter,
    /// Partitions rebuilt from the earliest offset, by cause: [`REBUILT_FIRST_READ`] (no state was
    /// ever had for it) or [`REBUILT_STATE_UNAVAILABLE`] (state was had, and is not to be had now).
    pub partitions_rebuilt: IntCounterVec,
    /// Local checkpoints discarded because they were not at the group's committed offset.
    pub checkpoints_discarded: IntCounter,
    /// Sessions restored at assignment, from a local checkpoint or the changelog.
    pub sessions_restored: IntCounter,
    /// Time to read one partition's local checkpoint at assignment.
    pub restore_seconds: Histogram,
    /// State size on disk (RocksDB SST files + memtables).
    pub state_bytes: IntGauge,
    /// Bytes written to the state changelog (keys and values).
    pub changelog_bytes: IntCounter,
    /// Full snapshots written to the state changelog.
    pub changelog_snapshots: IntCounter,
    /// Partitions whose changelog chain broke (a record not stored, the topic reset) and was
    /// started again from a snapshot.
    pub changelog_restarts: IntCounterVec,
    /// Partitions restored from the state changelog.
    pub changelog_restored: IntCounter,
    /// Changelog records read by restores (rate: restore records/s).
    pub restore_records: IntCounter,
    /// Changelog bytes read by restores.
    pub restore_bytes: IntCounter,
    /// Time to restore one partition from the changelog (read and write to local state).
    pub changelog_restore_seconds: Histogram,
}

impl Metrics {
    /// Registers every metric, labelled with the manifest and version.
    pub fn new(manifest: &str, version: u32) -> Metrics {
        let labels = [("manifest".to_string(), manifest.to_string()), ("version".to_string(), version.to_string())];
        let registry = Registry::new_custom(Some("pitgun_processor".into()), Some(labels.into_iter().collect())).expect("registry");
        let c = |n: &str, h: &str| {
            let m = IntCounter::new(n, h).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let g = |n: &str, h: &str| {
            let m = IntGauge::new(n, h).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let gv = |n: &str, h: &str| {
            let m = IntGaugeVec::new(Opts::new(n, h), &["topic", "partition"]).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let rejected = IntCounterVec::new(Opts::new("rejected_total", "Records refused, by reason"), &["reason"]).expect("metric");
        registry.register(Box::new(rejected.clone())).expect("register");
        // At 0 from the start: "none yet", not "no such series", for alerts and panels.
        for reason in pitgun_engine::Reason::ALL {
            rejected.with_label_values(&[reason.as_str()]);
        }
        let late_shed = IntCounterVec::new(
            Opts::new(
                "late_shed_total",
                "Late events whose note was not written to the late topic, by reason: its rate bound (--late-per-second) was reached; the events stay on the envelopes topic",
            ),
            &["reason"],
        )
        .expect("metric");
        registry.register(Box::new(late_shed.clone())).expect("register");
        let late = IntCounterVec::new(
            Opts::new(
                "late_total",
                "Events that reached no window, by reason: too_late (behind the session's watermark past allowed_lateness) or session_closed (after their session ended); noted on the late topic or shed",
            ),
            &["reason"],
        )
        .expect("metric");
        registry.register(Box::new(late.clone())).expect("register");
        for reason in LATE_REASONS {
            late.with_label_values(&[reason]);
            late_shed.with_label_values(&[reason]);
        }
        let sessions_closed = IntCounterVec::new(
            Opts::new("sessions_closed_total", "Sessions closed, by cause: end, idle (wall clock), gap (own event time), input_end"),
            &["cause"],
        )
        .expect("metric");
        registry.register(Box::new(sessions_closed.clone())).expect("register");
        for cause in CloseCause::ALL {
            sessions_closed.with_label_values(&[cause.as_str()]);
        }
        let changelog_restarts = IntCounterVec::new(
            Opts::new("changelog_restarts_total", "Partitions whose changelog chain broke and was started again from a snapshot, by cause"),
            &["cause"],
        )
        .expect("metric");
        registry.register(Box::new(changelog_restarts.clone())).expect("register");
        for cause in [crate::changelog::RESET, crate::changelog::NOT_STORED] {
            changelog_restarts.with_label_values(&[cause]);
        }
        let partitions_rebuilt = IntCounterVec::new(
            Opts::new(
                "partitions_rebuilt_total",
                "Partitions rebuilt from the earliest offset, by cause: first_read (no state was ever had for it), state_unavailable (its state at the committed offset, or the offsets of its local checkpoint, could not be had)",
            ),
            &["cause"],
        )
        .expect("metric");
        registry.register(Box::new(partitions_rebuilt.clone())).expect("register");
        for cause in [REBUILT_FIRST_READ, REBUILT_STATE_UNAVAILABLE] {
            partitions_rebuilt.with_label_values(&[cause]);
        }
        let checkpoint_seconds = Histogram::with_opts(
            HistogramOpts::new("checkpoint_duration_seconds", "Flush + state write + offset commit")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .expect("metric");
        registry.register(Box::new(checkpoint_seconds.clone())).expect("register");
        let restore_seconds = Histogram::with_opts(
            HistogramOpts::new("restore_duration_seconds", "Reading one partition's local checkpoint at assignment")
                .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("metric");
        registry.register(Box::new(restore_seconds.clone())).expect("register");
        let changelog_restore_seconds = Histogram::with_opts(
            HistogramOpts::new("changelog_restore_duration_seconds", "Restoring one partition from the state changelog at assignment")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0]),
        )
        .expect("metric");
        registry.register(Box::new(changelog_restore_seconds.clone())).expect("register");
        Metrics {
            events_in: c("events_in_total", "Records consumed"),
            rejected,
            duplicates: c("duplicates_total", "Duplicate event ids dropped"),
            late,
            late_shed,
            dedup_evicted: c("dedup_evicted_total", "Event ids forgotten early because a session's dedup memory was full"),
            released_early: c(
                "released_early_total",
                "Events released from a session's full reorder buffer (4,096 events) before the watermark passed them",
            ),
            unknown_channels: c(
                "unknown_channels_total",
                "Channels no alias of the event's producer version names: dropped, or kept raw under input.unknown_channels: keep",
            ),
            uncovered_sources: c(
                "uncovered_sources_total",
                "Events from a producer version the dictionary has no aliases for: none of their channels can be a dictionary metric",
            ),
            windows_emitted: c("windows_emitted_total", "Window rows produced, re-emissions included"),
            deadletters: c("deadletters_total", "Records sent to the dead-letter topic"),
            sessions_expired: c("sessions_expired_total", "Sessions closed without their end: idle, or a gap in their event time"),
            sessions_closed,
            sessions_open: g("sessions_open", "Open sessions held in state"),
            watermark_lag: gv("watermark_lag_seconds", "Wall clock minus the newest event time seen"),
            consumer_lag: gv("consumer_lag", "High watermark minus next offset to consume"),
            checkpoint_seconds,
            checkpoints: c("checkpoints_total", "Checkpoints written"),
            checkpoints_restored: c("checkpoints_restored_total", "Partitions resumed from a local checkpoint"),
            partitions_rebuilt,
            checkpoints_discarded: c("checkpoints_discarded_total", "Local checkpoints not at the group's committed offset, discarded"),
            sessions_restored: c("sessions_restored_total", "Sessions restored at assignment, from a local checkpoint or the changelog"),
            restore_seconds,
            state_bytes: g("state_size_bytes", "RocksDB SST files plus memtables"),
            changelog_bytes: c("changelog_bytes_total", "Bytes written to the state changelog"),
            changelog_snapshots: c("changelog_snapshots_total", "Full snapshots written to the state changelog"),
            changelog_restarts,
            changelog_restored: c("changelog_restored_total", "Partitions restored from the state changelog"),
            restore_records: c("restore_records_total", "State changelog records read by restores"),
            restore_bytes: c("restore_bytes_total", "State changelog bytes read by restores"),
            changelog_restore_seconds,
            registry,
        }
    }
}

/// Why an event reached no window: the engine's late notes' reasons.
pub const LATE_REASONS: [&str; 2] = ["too_late", "session_closed"];

/// [`Metrics::partitions_rebuilt`]'s cause for a partition the group never committed and the
/// replica held no checkpoint of: its first read (a new group or a new partition), nothing lost.
pub const REBUILT_FIRST_READ: &str = "first_read";
/// [`Metrics::partitions_rebuilt`]'s cause for a partition whose state was had and could not be
/// had again: a committed offset with no checkpoint or changelog state at it (changelog off, its
/// snapshot past retention), or a checkpoint of the replica's own whose group offsets are gone
/// (expired or deleted). What PitgunPartitionRebuilt tells an operator.
pub const REBUILT_STATE_UNAVAILABLE: &str = "state_unavailable";

/// An engine's counters already added to the metrics: the engine counts per event, and the
/// polling thread adds the difference once a round (a shared counter bumped per record by two
/// threads costs more than the engine's step).
#[derive(Default)]
pub(crate) struct Reported {
    duplicates: u64,
    dedup_evicted: u64,
    released_early: u64,
    unknown_channels: u64,
    uncovered_sources: u64,
    sessions_expired: u64,
    closed_by: [u64; CloseCause::ALL.len()],
    /// Whether the partition's uncovered sources have been warned about.
    warned_uncovered: bool,
}

impl Reported {
    /// Takes what `stats` counted so far as reported without adding it anywhere: records a
    /// partition reads again while it is rebuilt were counted by the owner that read them first.
    pub(crate) fn skip(&mut self, stats: &Stats) {
        let warned = self.warned_uncovered;
        *self = Reported {
            duplicates: stats.duplicates,
            dedup_evicted: stats.dedup_evicted,
            released_early: stats.released_early,
            unknown_channels: stats.unknown_channels,
            uncovered_sources: stats.uncovered_sources,
            sessions_expired: stats.sessions_expired,
            closed_by: stats.closed_by,
            warned_uncovered: warned,
        };
    }

    /// Adds what `stats` counted since the last call to `metrics` and `summary`. Returns whether
    /// the partition's first events from an uncovered producer version are among them, to be
    /// warned about once.
    pub(crate) fn publish(&mut self, stats: &Stats, metrics: &Metrics, summary: &mut Summary) -> bool {
        let add = |counter: &IntCounter, total: u64, reported: &mut u64| {
            let new = total - *reported;
            if new > 0 {
                counter.inc_by(new);
                *reported = total;
            }
            new
        };
        add(&metrics.duplicates, stats.duplicates, &mut self.duplicates);
        add(&metrics.dedup_evicted, stats.dedup_evicted, &mut self.dedup_evicted);
        add(&metrics.released_early, stats.released_early, &mut self.released_early);
        add(&metrics.sessions_expired, stats.sessions_expired, &mut self.sessions_expired);
        summary.unknown_channels += add(&metrics.unknown_channels, stats.unknown_channels, &mut self.unknown_channels);
        let uncovered = add(&metrics.uncovered_sources, stats.uncovered_sources, &mut self.uncovered_sources);
        summary.uncovered_sources += uncovered;
        for ((cause, total), reported) in CloseCause::ALL.iter().zip(stats.closed_by).zip(&mut self.closed_by) {
            if total > *reported {
                metrics.sessions_closed.with_label_values(&[cause.as_str()]).inc_by(total - *reported);
                *reported = total;
            }
        }
        let first = uncovered > 0 && !self.warned_uncovered;
        self.warned_uncovered |= first;
        first
    }
}
