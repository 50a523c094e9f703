//! Volume checks, run in release and one at a time:
//! `cargo test -p pitgun-workload --release --test throughput -- --ignored --nocapture --test-threads=1`

use std::time::Instant;

use pitgun_workload::{simulate, Faults, Record, SimConfig};

/// Peak resident set size of this process, in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
#[ignore = "release-mode measurement"]
fn throughput_of_100_sessions_for_60_seconds() {
    let config = SimConfig::new(100, 60_000_000, 1);
    let started = Instant::now();
    let mut envelopes = 0u64;
    simulate(&config, |r| {
        envelopes += u64::from(matches!(r, Record::Envelope(_)))
    });
    let simulate_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut bytes = 0usize;
    simulate(&config, |r| bytes += r.to_json_line().len() + 1);
    let ndjson_s = started.elapsed().as_secs_f64();
    println!(
        "100 sessions x 60 s: {envelopes} envelopes; simulate {simulate_s:.3} s = {:.0} envelopes/s; \
         with NDJSON encoding {ndjson_s:.3} s = {:.0} envelopes/s, {:.1} MB",
        envelopes as f64 / simulate_s,
        envelopes as f64 / ndjson_s,
        bytes as f64 / 1e6
    );
}

#[test]
#[ignore = "release-mode measurement"]
fn five_million_envelopes_stream_in_bounded_memory() {
    let config = SimConfig {
        faults: Faults::parse_list(
            "reorder_within=0.01,late_within_lateness=0.001,very_late=0.0005,duplicates=0.001",
        )
        .unwrap(),
        ..SimConfig::new(100, 820_000_000, 2)
    };
    let before = peak_rss_kib();
    let started = Instant::now();
    let mut envelopes = 0u64;
    let truth = simulate(&config, |r| {
        envelopes += u64::from(matches!(r, Record::Envelope(_)))
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = peak_rss_kib();
    println!(
        "{envelopes} envelopes in {elapsed:.2} s ({:.0}/s), {} laps, max held {}, peak RSS {before:?} -> {after:?} KiB",
        envelopes as f64 / elapsed,
        truth.laps.len(),
        truth.stats.max_held
    );
    assert!(envelopes >= 5_000_000);
    assert!(elapsed < 30.0, "{elapsed} s");
    if let (Some(before), Some(after)) = (before, after) {
        assert!(
            after - before < 64 * 1024,
            "peak RSS grew by {} KiB",
            after - before
        );
    }
}
