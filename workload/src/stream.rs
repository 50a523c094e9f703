//! The run: sessions merged in event-time order, faults applied, records delivered.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::ControlFlow;

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
pub fn simulate(config: &SimConfig, mut emit: impl FnMut(Record)) -> GroundTruth {
    simulate_while(config, |record| {
        emit(record);
        ControlFlow::Continue(())
    })
}

/// [`simulate`], stopped at once when `emit` breaks (its output failed: the rest of a long run
/// would be simulated for nothing). The truth then covers only what was simulated.
///
/// # Panics
///
/// If `config` fails [`SimConfig::validate`].
pub fn simulate_while(config: &SimConfig, emit: impl FnMut(Record) -> ControlFlow<()>) -> GroundTruth {
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
        if out.stopped() {
            break;
        }
        let run = &mut runs[i];
        let event = run.next.take().expect("queued sessions have an event");
        events += 1;
        out.release_until(now);
        if let Some(lap) = &event.lap {
            laps.push(sessions[i].record_lap(lap));
        }

        deliver(run, event, now, &mut out, &mut counts);

        run.next = run.session.next_event();
        if let Some(e) = &run.next {
            queue.push(Reverse((e.time_us, i)));
        }
    }
    out.finish();

    let stats = StreamStats { events, envelopes: out.envelopes, malformed: out.malformed, max_held: out.max_held, faults: counts };
    GroundTruth { laps, sessions, stats }
}

/// Applies the session's fault plan to one event and hands the result to `out`.
fn deliver<F: FnMut(Record) -> ControlFlow<()>>(run: &mut Running, mut event: SimEvent, now: i64, out: &mut Delivery<F>, counts: &mut FaultCounts) {
    let plan = run.injector.plan(event.kind);
    if plan.gap {
        counts.gaps += 1;
        return;
    }
    if plan.out_of_range && faults::push_out_of_range(&mut event.values) {
        counts.out_of_range += 1;
    }
    let mut envelope = run.encoder.encode(&event);
    if let Some(variant) = plan.malformed {
        counts.malformed += 1;
        let line = faults::malform(&envelope, variant, run.injector.rng());
        out.send(Record::Malformed(line));
        return;
    }
    if plan.clock_jump {
        envelope.time_us += CLOCK_JUMP_US;
        counts.clock_jumps += 1;
    }
    if let Some(channel) = plan.unknown_channel {
        faults::add_unknown_channel(&mut envelope, channel);
        counts.unknown_channels += 1;
    }
    // Within-bound faults must not land after the session's end (see `faults`).
    let end_us = run.session.identity.end_us;
    let duplicate = plan.duplicate_after.filter(|d| now + d < end_us).map(|d| (now + d, envelope.clone()));
    let delay = plan.delay.filter(|(kind, d)| (*kind != Delay::Reorder || now + d < end_us) && out.has_room());
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
    if let Some((at, copy)) = duplicate.filter(|_| out.has_room()) {
        counts.duplicates += 1;
        out.hold(at, Record::Envelope(copy));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use pitgun_contracts::envelope::{ChannelValue, Envelope, EventKind};

    use super::*;
    use crate::config::Faults;
    use crate::faults::{LATE_MAX_US, OUT_OF_ORDERNESS_BOUND_US, VERY_LATE_MAX_US, VERY_LATE_MIN_US};
    use crate::producer::channels;

    fn run(config: &SimConfig) -> (Vec<Record>, GroundTruth) {
        let mut records = Vec::new();
        let truth = simulate(config, |r| records.push(r));
        (records, truth)
    }

    fn envelopes(records: &[Record]) -> impl Iterator<Item = &Envelope> {
        records.iter().filter_map(|r| match r {
            Record::Envelope(e) => Some(e),
            Record::Malformed(_) => None,
        })
    }

    /// A channel's value back in the metric's canonical unit.
    fn canonical(e: &Envelope, metric: &str) -> Option<f64> {
        channels().into_iter().find_map(|c| {
            let hit = c.producer == e.source.id && c.version == e.source.version && c.metric == metric;
            let v = e.channels.get(c.channel).filter(|_| hit)?;
            Some((v.as_f64() - c.offset) / c.scale)
        })
    }

    fn faults(list: &str) -> Faults {
        Faults::parse_list(list).unwrap()
    }

    #[test]
    fn same_config_same_records() {
        let config = SimConfig {
            faults: faults("reorder_within=0.05,duplicates=0.02,gaps=0.01,malformed=0.01,unknown_channels=0.01,out_of_range=0.01,clock_jumps=0.01,late_within_lateness=0.01"),
            ..SimConfig::new(3, 20_000_000, 11)
        };
        let (a, truth_a) = run(&config);
        let (b, truth_b) = run(&config);
        assert!(a.len() > 3 * 20 * 60);
        assert_eq!(a, b);
        assert_eq!(truth_a, truth_b);
        let (c, _) = run(&SimConfig { seed: 12, ..config.clone() });
        assert_ne!(a, c, "another seed, another run");
    }

    #[test]
    fn faults_do_not_change_the_physics() {
        let clean = SimConfig::new(2, 30_000_000, 5);
        let faulty = SimConfig { faults: faults("duplicates=0.1,unknown_channels=0.1"), ..clean.clone() };
        let (a, _) = run(&clean);
        let (b, _) = run(&faulty);
        let strip = |records: &[Record]| -> BTreeMap<String, BTreeMap<String, ChannelValue>> {
            envelopes(records)
                .map(|e| {
                    let mut ch = e.channels.clone();
                    ch.retain(|k, _| !k.starts_with("debug_"));
                    (e.event_id.clone(), ch)
                })
                .collect()
        };
        assert_eq!(strip(&a), strip(&b));
    }

    #[test]
    fn sessions_are_well_formed_and_interleaved() {
        let config = SimConfig::new(5, 30_000_000, 3);
        let (records, truth) = run(&config);
        assert!(records.iter().all(|r| matches!(r, Record::Envelope(_))));
        let mut last_time = i64::MIN;
        let mut per_session: BTreeMap<&str, Vec<&Envelope>> = BTreeMap::new();
        let mut switches = 0;
        let mut previous = "";
        for e in envelopes(&records) {
            assert!(e.time_us >= last_time, "output is in event-time order without faults");
            last_time = e.time_us;
            assert_eq!(e.event_id, format!("{}-{}", e.session_id, e.seq));
            assert_eq!(e.schema, "pitgun-envelope/v1");
            assert_eq!(e.dims.keys().collect::<Vec<_>>(), ["car", "player", "track"]);
            switches += usize::from(previous != e.session_id.as_str());
            previous = &e.session_id;
            per_session.entry(&e.session_id).or_default().push(e);
        }
        assert!(switches > 1000, "sessions interleave ({switches} switches)");
        assert_eq!(per_session.len(), 5);
        let versions: BTreeSet<_> = per_session.values().map(|v| v[0].source.version.as_str()).collect();
        assert_eq!(versions, BTreeSet::from(["0.9.5", "1.4.2", "2.1.0"]));
        for (session, truth) in per_session.values().zip(&truth.sessions) {
            assert_eq!(session[0].session_id, truth.session_id);
            for (i, e) in session.iter().enumerate() {
                assert_eq!(e.seq, i as u64 + 1);
            }
            let (first, last) = (session[0], session[session.len() - 1]);
            assert_eq!(first.kind, EventKind::SessionStart);
            assert_eq!(canonical(first, "lap.number"), Some(1.0));
            assert_eq!(canonical(first, "lap.distance"), Some(0.0));
            assert_eq!(last.kind, EventKind::SessionEnd);
            assert_eq!((first.time_us, last.time_us), (truth.start_us, truth.end_us));
            assert!((0..5_000_000).contains(&(first.time_us - config.start_time_us)));
            let samples = session.iter().filter(|e| e.kind == EventKind::Sample).count();
            assert_eq!(samples, 30 * 60);
            let health = session.iter().filter(|e| e.kind == EventKind::Health).count();
            assert_eq!(health, 29);
        }
    }

    #[test]
    fn ground_truth_matches_the_lap_events() {
        let config = SimConfig::new(4, 420_000_000, 9);
        let (records, truth) = run(&config);
        let laps: Vec<&Envelope> = envelopes(&records).filter(|e| e.kind == EventKind::Lap).collect();
        assert_eq!(laps.len(), truth.laps.len());
        assert!(truth.laps.len() >= 8, "{} laps", truth.laps.len());
        for (e, lap) in laps.iter().zip(&truth.laps) {
            assert_eq!(e.session_id, lap.session_id);
            assert_eq!(e.time_us, lap.end_us);
            assert_eq!(canonical(e, "lap.number"), Some(f64::from(lap.lap + 1)));
            let sent = canonical(e, "lap.last_time").unwrap();
            assert!((sent - lap.lap_time_s).abs() < 1e-9, "{sent} vs {}", lap.lap_time_s);
            assert_eq!(lap.lap_time_s, (lap.end_us - lap.start_us) as f64 / 1e6);
            assert!((60.0..200.0).contains(&lap.lap_time_s), "{lap:?}");
        }
        for s in &truth.sessions {
            let mine: Vec<_> = truth.laps.iter().filter(|l| l.session_id == s.session_id).collect();
            assert_eq!(mine.len() as u32, s.complete_laps);
            assert_eq!(mine[0].start_us, s.start_us);
            for (k, pair) in mine.windows(2).enumerate() {
                assert_eq!(pair[0].end_us, pair[1].start_us, "laps are contiguous");
                assert_eq!(pair[0].lap as usize, k + 1);
            }
            let best = mine.iter().map(|l| l.lap_time_s).fold(f64::INFINITY, f64::min);
            assert_eq!(s.best_lap_s, Some(best));
            // The three sector times add up to the lap time, to the microsecond.
            for lap in &mine {
                let sectors: f64 = envelopes(&records)
                    .filter(|e| e.session_id == s.session_id && e.kind == EventKind::Sector)
                    .filter(|e| canonical(e, "lap.number") == Some(f64::from(lap.lap)))
                    .map(|e| canonical(e, "lap.sector_time").unwrap())
                    .sum();
                assert!((sectors - lap.lap_time_s).abs() < 1e-6, "{sectors} vs {lap:?}");
            }
        }
    }

    #[test]
    fn samples_are_rich_and_compact() {
        let config = SimConfig::new(8, 40_000_000, 2);
        let (records, _) = run(&config);
        let mut sizes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let (mut total, mut count) = (0, 0);
        for e in envelopes(&records).filter(|e| e.kind == EventKind::Sample) {
            assert!(e.channels.len() >= 12, "{} channels", e.channels.len());
            let bytes = serde_json::to_string(e).unwrap().len();
            let s = sizes.entry(format!("{}@{}", e.source.id, e.source.version)).or_default();
            s.0 += 1;
            s.1 += bytes;
            total += bytes;
            count += 1;
        }
        let mean = total as f64 / count as f64;
        for (producer, (n, bytes)) in &sizes {
            println!("{producer}: {n} samples, mean {:.1} bytes", *bytes as f64 / *n as f64);
        }
        println!("all: {count} samples, mean {mean:.1} bytes");
        assert!((400.0..=500.0).contains(&mean), "mean sample envelope {mean} bytes");
    }

    #[test]
    fn fault_rates_follow_the_config() {
        let p = 0.02;
        let list = Faults::NAMES.iter().map(|n| format!("{n}={p}")).collect::<Vec<_>>().join(",");
        let config = SimConfig { faults: faults(&list), ..SimConfig::new(4, 150_000_000, 21) };
        let (records, truth) = run(&config);
        let stats = truth.stats;
        let eligible = stats.events - 2 * 4 - truth.laps.len() as u64;
        let counts = stats.faults;
        // Gaps are drawn first, malformed only on the rest, delays exclusively in order.
        let expect = |name: &str, count: u64| {
            let rate = count as f64 / eligible as f64;
            assert!((rate - p).abs() < p * 0.3, "{name}: {count} of {eligible} ({rate})");
        };
        for (name, count) in counts.iter() {
            if name == "out_of_range" || name == "reorder_within" || name == "duplicates" {
                // Not every event has a value to push, reorders and duplicates stop at the end.
                assert!(count as f64 > eligible as f64 * p * 0.6, "{name}: {count}");
            } else {
                expect(name, count);
            }
        }
        // What was counted is what arrived.
        let malformed: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::Malformed(line) => Some(line),
                Record::Envelope(_) => None,
            })
            .collect();
        assert_eq!(malformed.len() as u64, counts.malformed);
        for line in &malformed {
            assert!(serde_json::from_str::<Envelope>(line).is_err(), "{line}");
        }
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for e in envelopes(&records) {
            *seen.entry(&e.event_id).or_default() += 1;
        }
        let copies: u64 = seen.values().map(|n| n - 1).sum();
        assert_eq!(copies, counts.duplicates);
        let sent = seen.len() as u64;
        assert_eq!(stats.events, sent + counts.gaps + counts.malformed);
        assert_eq!(stats.envelopes, sent + counts.duplicates);
        let unknown = envelopes(&records).filter(|e| e.channels.keys().any(|k| k.starts_with("debug_"))).count();
        let unknown_ids: BTreeSet<_> =
            envelopes(&records).filter(|e| e.channels.keys().any(|k| k.starts_with("debug_"))).map(|e| &e.event_id).collect();
        assert!(unknown >= unknown_ids.len() && unknown_ids.len() as u64 == counts.unknown_channels);
        let jumped: BTreeSet<_> =
            envelopes(&records).filter(|e| e.time_us > truth.sessions.iter().map(|s| s.end_us).max().unwrap()).map(|e| &e.event_id).collect();
        assert_eq!(jumped.len() as u64, counts.clock_jumps);
        // Ground-truth events are never faulted.
        let kept = |kind| envelopes(&records).filter(|e| e.kind == kind).count();
        assert_eq!(kept(EventKind::Lap), truth.laps.len());
        assert_eq!(kept(EventKind::SessionStart), 4);
        assert_eq!(kept(EventKind::SessionEnd), 4);
    }

    /// Lateness of each envelope against the latest event time its session had sent before it.
    fn lateness(records: &[Record]) -> Vec<i64> {
        let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
        envelopes(records)
            .map(|e| {
                let max = latest.entry(&e.session_id).or_insert(i64::MIN);
                *max = (*max).max(e.time_us);
                *max - e.time_us
            })
            .collect()
    }

    #[test]
    fn delays_land_where_they_are_meant_to() {
        let base = SimConfig::new(3, 200_000_000, 8);
        let run_with = |list: &str| run(&SimConfig { faults: faults(list), ..base.clone() });

        let (records, truth) = run_with("reorder_within=0.05");
        let late = lateness(&records);
        assert!(late.iter().all(|&l| l < OUT_OF_ORDERNESS_BOUND_US / 2), "reorders stay within 1 s");
        let out_of_order = late.iter().filter(|&&l| l > 0).count() as u64;
        assert!(out_of_order >= truth.stats.faults.reorder_within / 2, "{out_of_order}");

        let (records, truth) = run_with("late_within_lateness=0.01");
        let late = lateness(&records);
        assert!(late.iter().all(|&l| l <= LATE_MAX_US));
        let beyond = late.iter().filter(|&&l| l > OUT_OF_ORDERNESS_BOUND_US).count() as u64;
        let injected = truth.stats.faults.late_within_lateness;
        assert!(beyond <= injected && beyond as f64 >= injected as f64 * 0.85, "{beyond} of {injected}");

        let (records, truth) = run_with("very_late=0.005");
        let late = lateness(&records);
        assert!(late.iter().all(|&l| l <= VERY_LATE_MAX_US));
        let beyond = late.iter().filter(|&&l| l >= VERY_LATE_MIN_US - 20_000).count() as u64;
        let injected = truth.stats.faults.very_late;
        // Events delayed past their session's end are only as late as the end allows.
        assert!(beyond <= injected && beyond as f64 >= injected as f64 * 0.3, "{beyond} of {injected}");
    }

    #[test]
    fn the_delay_buffer_is_bounded() {
        let config = |seconds: i64| SimConfig {
            faults: faults("reorder_within=0.05,late_within_lateness=0.02,very_late=0.01,duplicates=0.02"),
            ..SimConfig::new(2, seconds * 1_000_000, 4)
        };
        let short = simulate(&config(180), |_| {}).stats.max_held;
        let long = simulate(&config(540), |_| {}).stats.max_held;
        assert!(short > 0);
        assert!(long as f64 <= short as f64 * 1.5 + 10.0, "held {short} then {long}: grows with duration");

        // Past the cap, delays are not injected: memory stays bounded whatever the rates.
        let flood = SimConfig { faults: faults("very_late=1"), ..SimConfig::new(20, 70_000_000, 4) };
        let truth = simulate(&flood, |_| {});
        assert_eq!(truth.stats.max_held, crate::MAX_HELD);
        assert!(truth.stats.faults.very_late < truth.stats.events);
        assert_eq!(truth.stats.envelopes, truth.stats.events);
    }

    #[test]
    fn envelopes_follow_the_schema_and_malformed_lines_do_not() {
        use pitgun_contracts::schema::{ContractKind, Validators};
        let config = SimConfig {
            faults: faults("malformed=0.05,unknown_channels=0.05,clock_jumps=0.05,out_of_range=0.05"),
            ..SimConfig::new(5, 10_000_000, 6)
        };
        let (records, _) = run(&config);
        let validators = Validators::get();
        let mut malformed = 0;
        for r in &records {
            let line = r.to_json_line();
            let value = serde_json::from_str::<serde_json::Value>(&line);
            match r {
                Record::Envelope(_) => {
                    let violations = validators.validate(ContractKind::Envelope, &value.unwrap());
                    assert!(violations.is_empty(), "{line}: {violations:?}");
                }
                Record::Malformed(_) => {
                    malformed += 1;
                    let invalid = value.map_or(true, |v| !validators.validate(ContractKind::Envelope, &v).is_empty());
                    assert!(invalid, "{line}");
                }
            }
        }
        assert!(malformed > 50);
    }

    #[test]
    fn old_web_clients_send_old_names() {
        let config = SimConfig::new(5, 10_000_000, 1);
        let (records, _) = run(&config);
        let names = |version: &str| -> BTreeSet<String> {
            envelopes(&records).filter(|e| e.source.version == version).flat_map(|e| e.channels.keys().cloned()).collect()
        };
        let (old, new, sim) = (names("0.9.5"), names("1.4.2"), names("2.1.0"));
        assert!(old.contains("spd") && old.contains("eng_temp") && !old.contains("ers_kj"));
        assert!(new.contains("speed_kmh") && new.contains("water_temp") && new.contains("ers_kj"));
        assert!(sim.contains("speed") && sim.contains("wheel_temp_surface_fl"));
        assert!(old.is_disjoint(&["speed_kmh".to_string(), "water_temp".to_string()].into()));
    }
}
