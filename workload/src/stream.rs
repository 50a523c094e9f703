//! The run: sessions merged in event-time order, faults applied, records delivered.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::config::SimConfig;
use crate::delivery::Delivery;
use crate::faults::{self, Delay, FaultCounts, Injector, CLOCK_JUMP_US};
use crate::producer::Encoder;
use crate::session::{session_rng, Session, SimEvent, STREAM_FAULTS};
use crate::truth::{GroundTruth, SessionTruth, StreamStats};
use crate::Record;

/// A session with what the merge needs: its next event, its encoder and its faults.
struct Running {
    session: Session,
    next: Option<SimEvent>,
    encoder: Encoder,
    injector: Injector,
}

/// Simulates `config`, handing every record to `emit` in output order, and returns the ground
/// truth.
///
/// Records are streamed: memory is bounded by the number of sessions and [`crate::MAX_HELD`], not
/// by the duration. Sessions are interleaved by event time (ties by session index); delayed
/// records come out when the stream passes their output time.
///
/// # Panics
///
/// If `config` fails [`SimConfig::validate`].
pub fn simulate(config: &SimConfig, emit: impl FnMut(Record)) -> GroundTruth {
    if let Err(e) = config.validate() {
        panic!("{e}");
    }
    let mut runs: Vec<Running> = (0..config.sessions)
        .map(|index| {
            let session = Session::new(config, index);
            let encoder = Encoder::new(session.identity.producer, session.identity.id.clone(), session.identity.dims());
            let injector = Injector::new(config.faults, session_rng(config.seed, index, STREAM_FAULTS));
            Running { session, next: None, encoder, injector }
        })
        .collect();
    let mut sessions: Vec<SessionTruth> = runs.iter().map(|r| SessionTruth::new(&r.session.identity)).collect();
    let mut laps = Vec::new();
    let mut counts = FaultCounts::default();
    let mut events = 0u64;

    let mut queue = BinaryHeap::with_capacity(runs.len());
    for (i, run) in runs.iter_mut().enumerate() {
        run.next = run.session.next_event();
        if let Some(e) = &run.next {
            queue.push(Reverse((e.time_us, i)));
        }
    }

    let mut out = Delivery::new(emit);
    while let Some(Reverse((now, i))) = queue.pop() {
        let run = &mut runs[i];
        let mut event = run.next.take().expect("queued sessions have an event");
        events += 1;
        out.release_until(now);
        if let Some(lap) = &event.lap {
            laps.push(sessions[i].record_lap(lap));
        }

        let plan = run.injector.plan(event.kind);
        if plan.gap {
            counts.gaps += 1;
        } else if plan.out_of_range && faults::push_out_of_range(&mut event.values) {
            counts.out_of_range += 1;
        }
        if !plan.gap {
            let mut envelope = run.encoder.encode(&event);
            if let Some(variant) = plan.malformed {
                counts.malformed += 1;
                let line = faults::malform(&envelope, variant, run.injector.rng());
                out.send(Record::Malformed(line));
            } else {
                if plan.clock_jump {
                    envelope.time_us += CLOCK_JUMP_US;
                    counts.clock_jumps += 1;
                }
                if let Some(channel) = plan.unknown_channel {
                    faults::add_unknown_channel(&mut envelope, channel);
                    counts.unknown_channels += 1;
                }
                let end_us = run.session.identity.end_us;
                // Within-bound faults must not land after the session's end (see `faults`).
                let duplicate = plan
                    .duplicate_after
                    .filter(|d| now + d < end_us && out.has_room())
                    .map(|d| (now + d, envelope.clone()));
                let delay = plan
                    .delay
                    .filter(|(kind, d)| (*kind != Delay::Reorder || now + d < end_us) && out.has_room());
                match delay {
                    Some((kind, d)) => {
                        match kind {
                            Delay::Reorder => counts.reorder_within += 1,
                            Delay::Late => counts.late_within_lateness += 1,
                            Delay::VeryLate => counts.very_late += 1,
                        }
                        out.hold(now + d, Record::Envelope(envelope));
                    }
                    None => out.send(Record::Envelope(envelope)),
                }
                if let Some((at, copy)) = duplicate {
                    if out.has_room() {
                        counts.duplicates += 1;
                        out.hold(at, Record::Envelope(copy));
                    }
                }
            }
        }

        run.next = run.session.next_event();
        if let Some(e) = &run.next {
            queue.push(Reverse((e.time_us, i)));
        }
    }
    out.finish();

    let stats = StreamStats {
        events,
        envelopes: out.envelopes,
        malformed: out.malformed,
        max_held: out.max_held,
        faults: counts,
    };
    GroundTruth { laps, sessions, stats }
}
