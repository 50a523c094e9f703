//! End-to-end tests of `pitgun simulate` + `pitgun replay` + `pitgun manifest test`, run as a
//! user would run them: through the binary, on files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::envelope::{ChannelValue, Envelope};
use pitgun_contracts::load::load;
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::units::Conversion;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pitgun");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest(name: &str) -> PathBuf {
    root().join(format!("manifests/pipelines/{name}.v1.yaml"))
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).output().expect("pitgun runs");
    out
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(out.status.success(), "pitgun {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn simulate(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let truth = dir.join(format!("{name}.truth.json"));
    let mut args = vec!["simulate", "--sessions", "3", "--duration", "4m", "--seed", "42", "--quiet"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--output", path.to_str().unwrap(), "--truth", truth.to_str().unwrap()]);
    ok(&args);
    path
}

fn replay(manifest: &Path, inputs: &[&Path], extra: &[&str]) -> String {
    let mut args = vec!["replay", "--quiet", "--manifest", manifest.to_str().unwrap(), "--input"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.extend_from_slice(extra);
    String::from_utf8(ok(&args).stdout).unwrap()
}

fn rows(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn golden_output_of_each_reference_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "golden.ndjson", &[]);
    for name in ["lap-performance", "session-summary", "client-health"] {
        let got = replay(&manifest(name), &[&data], &[]);
        let golden = root().join(format!("cli/tests/golden/{name}.ndjson"));
        if std::env::var_os("PITGUN_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).expect("golden file (PITGUN_UPDATE_GOLDEN=1 writes it)");
        assert!(!got.is_empty());
        assert_eq!(got, want, "{name}: output differs from {}", golden.display());
    }
}

#[test]
fn lap_times_equal_the_simulators_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "truth.ndjson", &[]);
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("truth.ndjson.truth.json")).unwrap()).unwrap();
    let laps = rows(&replay(&manifest("lap-performance"), &[&data], &[]));
    let complete: Vec<&Value> = laps.iter().filter(|r| r["complete"] == true).collect();
    let truth_laps = truth["laps"].as_array().unwrap();
    assert!(complete.len() >= 3, "expected several complete laps, got {}", complete.len());
    assert_eq!(complete.len(), truth_laps.len(), "every simulated lap is found, and no other");
    for t in truth_laps {
        let row = complete.iter().find(|r| r["session_id"] == t["session_id"] && r["lap"] == t["lap"]).unwrap_or_else(|| panic!("no row for {t}"));
        assert_eq!(row["lap_time"].as_f64(), t["lap_time_s"].as_f64(), "lap {t}");
    }
    // The runs summary agrees: laps completed and best lap per session.
    let runs = rows(&replay(&manifest("session-summary"), &[&data], &[]));
    assert_eq!(runs.len(), truth["sessions"].as_array().unwrap().len());
    for s in truth["sessions"].as_array().unwrap() {
        let run = runs.iter().find(|r| r["session_id"] == s["session_id"]).unwrap();
        assert_eq!(run["laps"], s["complete_laps"], "{s}");
        assert_eq!(run["best_lap"].as_f64(), s["best_lap_s"].as_f64(), "{s}");
        assert_eq!(run["missing_events"], 0);
    }
}

#[test]
fn replay_is_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let faults = "reorder_within=0.05,late_within_lateness=0.01,very_late=0.002,duplicates=0.01,gaps=0.002,clock_jumps=0.001,malformed=0.001,unknown_channels=0.01,out_of_range=0.001";
    let data = simulate(dir.path(), "faults.ndjson", &["--faults", faults]);
    for name in ["lap-performance", "session-summary", "client-health"] {
        let one = replay(&manifest(name), &[&data], &["--threads", "1"]);
        let again = replay(&manifest(name), &[&data], &["--threads", "1"]);
        let two = replay(&manifest(name), &[&data], &["--threads", "2"]);
        let three = replay(&manifest(name), &[&data], &["--threads", "3"]);
        assert!(!one.is_empty());
        assert_eq!(one, again, "{name}: two runs differ");
        assert_eq!(one, two, "{name}: 1 vs 2 threads differ");
        assert_eq!(one, three, "{name}: 1 vs 3 threads differ");
    }
    let most = replay(&manifest("client-health"), &[&data], &["--threads", "256"]);
    assert_eq!(most, replay(&manifest("client-health"), &[&data], &["--threads", "1"]), "1 vs 256 threads differ");
    for refused in ["0", "257"] {
        let out =
            run(&["replay", "--manifest", manifest("client-health").to_str().unwrap(), "--threads", refused, "--input", data.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--threads") && err.contains("1..=256"), "--threads {refused}: {err}");
    }
}

/// `simulate --help`: "the same seed and options give the same file, byte for byte", in every
/// format. Avro files differed: each got a random sync marker.
#[test]
fn a_simulated_dataset_is_the_same_file_in_every_format() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for name in ["same.avro", "same.ndjson.zst", "same.ndjson.gz", "same.ndjson"] {
        let (first, second) = (simulate(a.path(), name, &[]), simulate(b.path(), name, &[]));
        assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap(), "{name}: two runs wrote different bytes");
    }
}

#[test]
fn faults_are_counted_reported_and_never_stop_the_run_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let faults = "duplicates=0.02,malformed=0.005,clock_jumps=0.002,out_of_range=0.002,very_late=0.005";
    let data = simulate(dir.path(), "bad.ndjson", &["--faults", faults]);
    let rejected = dir.path().join("rejected.ndjson");
    let late = dir.path().join("late.ndjson");
    let out = ok(&[
        "replay",
        "--manifest",
        manifest("lap-performance").to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--rejected",
        rejected.to_str().unwrap(),
        "--late",
        late.to_str().unwrap(),
        "--output",
        dir.path().join("rows.ndjson").to_str().unwrap(),
    ]);
    let summary = String::from_utf8_lossy(&out.stderr);
    for reason in ["invalid_envelope", "clock_jump", "out_of_range"] {
        assert!(summary.contains(reason), "summary lacks {reason}:\n{summary}");
    }
    assert!(summary.contains(&format!("{}:", data.display())), "bad records are named with file:line:\n{summary}");
    let rejected = std::fs::read_to_string(&rejected).unwrap();
    let first: Value = serde_json::from_str(rejected.lines().next().unwrap()).unwrap();
    assert!(first["line"].as_u64().unwrap() > 0 && first["reason"].is_string() && first["detail"].is_string());
    assert!(std::fs::read_to_string(&late).unwrap().lines().count() > 0, "very late events reach the late output");
    // Every note about an event (clock jumps, late events) names the line the event was read from.
    let data_lines: Vec<String> = std::fs::read_to_string(&data).unwrap().lines().map(str::to_string).collect();
    let late_text = std::fs::read_to_string(&late).unwrap();
    let notes: Vec<Value> =
        rejected.lines().chain(late_text.lines()).map(|l| serde_json::from_str(l).unwrap()).filter(|n: &Value| n.get("event_id").is_some()).collect();
    assert!(
        notes.iter().any(|n| n["reason"] == "clock_jump") && notes.iter().any(|n| n["reason"] == "too_late"),
        "{} notes, not every kind",
        notes.len()
    );
    for n in &notes {
        assert_eq!(n["file"].as_str(), data.to_str(), "{n}");
        let line: Value = serde_json::from_str(&data_lines[n["line"].as_u64().unwrap() as usize - 1]).unwrap();
        assert_eq!((&line["event_id"], &line["seq"]), (&n["event_id"], &n["seq"]), "the line named holds the event: {n}");
    }
    // --quiet drops the progress bar and the summary, not the names of refused records.
    let quiet = ok(&[
        "replay",
        "--quiet",
        "--manifest",
        manifest("lap-performance").to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--output",
        "/dev/null",
    ]);
    let said = String::from_utf8_lossy(&quiet.stderr);
    // Named in file order, records refused and events the engine rejected alike, and all counted.
    let refusals: Vec<Value> = rejected.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let earliest = refusals.iter().filter_map(|r| r["line"].as_u64()).min().unwrap();
    assert!(said.contains(&format!("{}:{earliest}: ", data.display())), "a quiet run still names refused records:\n{said}");
    assert!(said.contains(&format!("… and {} more refused records", refusals.len() - 5)), "{} refusals:\n{said}", refusals.len());
    assert!(!said.contains("rows written"), "and prints no summary:\n{said}");
    let strict_rows = dir.path().join("strict-rows.ndjson");
    let strict = run(&[
        "replay",
        "--quiet",
        "--strict",
        "--manifest",
        manifest("lap-performance").to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--output",
        strict_rows.to_str().unwrap(),
    ]);
    assert_eq!(strict.status.code(), Some(1));
    let said = String::from_utf8_lossy(&strict.stderr);
    let named = format!("{}:{}: {}", data.display(), first["line"], first["reason"].as_str().unwrap());
    assert!(said.contains(&named) && said.contains("no rows were written"), "names the first refused record ({named}):\n{said}");
    assert!(!strict_rows.exists(), "a refused strict run writes no rows");
}

#[test]
fn a_run_that_refuses_every_record_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not-envelopes.ndjson");
    std::fs::write(&data, "{\"lap\": 1, \"time\": 83.2}\nlap,time\n{\"lap\": 2, \"time\": 81.9}\n").unwrap();
    let (rows, rejected) = (dir.path().join("rows.ndjson"), dir.path().join("rejected.ndjson"));
    let out = run(&[
        "replay",
        "--quiet",
        "--manifest",
        manifest("lap-performance").to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--output",
        rows.to_str().unwrap(),
        "--rejected",
        rejected.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("every one of the 3 records read was refused") && said.contains(&format!("{}:2: ", data.display())), "{said}");
    assert!(!rows.exists(), "no empty rows file passes for an answer");
    assert_eq!(std::fs::read_to_string(&rejected).unwrap().lines().count(), 3, "the refusals are written, to say why");
}

#[test]
fn compressed_and_avro_datasets_give_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let plain = simulate(dir.path(), "d.ndjson", &[]);
    let gz = simulate(dir.path(), "d.ndjson.gz", &[]);
    let zst = simulate(dir.path(), "d.ndjson.zst", &[]);
    let avro = simulate(dir.path(), "d.avro", &[]);
    let m = manifest("lap-performance");
    let want = replay(&m, &[&plain], &[]);
    for other in [&gz, &zst, &avro] {
        assert_eq!(replay(&m, &[other], &[]), want, "{}", other.display());
    }
    let csv = replay(&m, &[&plain], &["--format", "csv"]);
    assert!(csv.starts_with("row_id,session_id,player,track,car,window_start,window_end,window_anchor,lap,lap_time,"));
    assert_eq!(csv.lines().count(), want.lines().count() + 1);
}

/// Rewrites a `pitgun-sim` dataset as `pitgun-web` would send it: other channel names and
/// units (km/h, °F, %, psi…), converted through the dictionary's own aliases.
fn as_web_producer(input: &Path, output: &Path, dictionary: &Dictionary) -> usize {
    let mut converted = 0;
    let mut out = String::new();
    for line in std::fs::read_to_string(input).unwrap().lines() {
        let mut env: Envelope = serde_json::from_str(line).unwrap();
        if env.source.id != "pitgun-sim" {
            continue;
        }
        env.source.id = "pitgun-web".into();
        env.source.version = "1.4.2".into();
        env.source.kind = pitgun_contracts::envelope::SourceKind::Game;
        let mut channels = std::collections::BTreeMap::new();
        for (name, value) in &env.channels {
            let found = dictionary.metrics.iter().find_map(|m| {
                let sim = m.aliases.iter().find(|a| a.producer == "pitgun-sim" && &a.channel == name)?;
                let web = m.aliases.iter().find(|a| a.producer == "pitgun-web" && a.versions.contains("<2") && a.dimensions == sim.dimensions)?;
                Some((m, sim, web))
            });
            let Some((metric, sim, web)) = found else { continue };
            let canonical = Conversion::between(&sim.unit, &metric.unit).unwrap().apply(value.as_f64());
            let sent = Conversion::between(&metric.unit, &web.unit).unwrap().apply(canonical);
            channels.insert(web.channel.clone(), ChannelValue::Number(sent));
            converted += 1;
        }
        env.channels = channels;
        out.push_str(&serde_json::to_string(&env).unwrap());
        out.push('\n');
    }
    std::fs::write(output, out).unwrap();
    converted
}

#[test]
fn two_producers_sending_one_session_in_different_units_give_identical_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "units.ndjson", &[]);
    let dictionary = load::<Dictionary>(ContractKind::Dictionary, &root().join("manifests/dictionary/racing.yaml")).unwrap().doc;
    // Only the sessions the simulator sent as pitgun-sim, once as they are, once as pitgun-web.
    let sim_only = dir.path().join("sim.ndjson");
    let text = std::fs::read_to_string(&data).unwrap();
    let sim_lines: String = text.lines().filter(|l| l.contains("\"pitgun-sim\"")).map(|l| format!("{l}\n")).collect();
    assert!(!sim_lines.is_empty(), "the simulator produced pitgun-sim sessions");
    std::fs::write(&sim_only, sim_lines).unwrap();
    let web = dir.path().join("web.ndjson");
    assert!(as_web_producer(&sim_only, &web, &dictionary) > 1000);
    assert!(std::fs::read_to_string(&web).unwrap().contains("speed_kmh"));
    for name in ["lap-performance", "session-summary", "client-health"] {
        let a = replay(&manifest(name), &[&sim_only], &[]);
        let b = replay(&manifest(name), &[&web], &[]);
        assert!(!a.is_empty());
        assert_eq!(a, b, "{name}: rows differ between producers");
    }
}

#[test]
fn a_wrong_expectation_makes_manifest_test_fail() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(manifest("lap-performance")).unwrap();
    assert!(text.contains("lap_time: 3.0, max_speed: 108.0"));
    let wrong = text.replacen("lap_time: 3.0, max_speed: 108.0", "lap_time: 3.5, max_speed: 108.0", 1);
    let path = dir.path().join("lap-performance.v1.yaml");
    std::fs::write(&path, wrong).unwrap();
    std::fs::copy(root().join("manifests/pipelines/lap-performance.v1.contract.json"), dir.path().join("lap-performance.v1.contract.json")).unwrap();
    let dict = root().join("manifests/dictionary/racing.yaml");
    let out = run(&["manifest", "test", path.to_str().unwrap(), "--dictionary", dict.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("column \"lap_time\" expected 3.5, got 3.0"), "{stdout}");
    // And the untouched manifest passes.
    ok(&["manifest", "test", manifest("lap-performance").to_str().unwrap()]);
}

#[test]
fn a_changed_contract_without_a_new_version_fails_manifest_test() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(manifest("client-health")).unwrap();
    let changed = text.replace("  - {name: rtt_max, fn: max, of: rtt}\n", "");
    assert_ne!(changed, text);
    let path = dir.path().join("client-health.v1.yaml");
    std::fs::write(&path, changed).unwrap();
    std::fs::copy(root().join("manifests/pipelines/client-health.v1.contract.json"), dir.path().join("client-health.v1.contract.json")).unwrap();
    let dict = root().join("manifests/dictionary/racing.yaml");
    let out = run(&["manifest", "test", path.to_str().unwrap(), "--dictionary", dict.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("column \"rtt_max\" removed"), "{stdout}");
}

/// `manifest diff` names types, roles and units as the contract writes them (`int`, `m/s`),
/// not as Rust's debug output (`Int`, `Some("m/s")`).
#[test]
fn manifest_diff_names_types_and_units_as_contracts_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(manifest("lap-performance")).unwrap();
    let changed = text.replace("{name: samples, fn: count, of: speed,", "{name: samples, fn: max, of: speed,");
    assert_ne!(changed, text);
    let new = dir.path().join("lap-performance.v2.yaml");
    std::fs::write(&new, changed).unwrap();
    let dict = root().join("manifests/dictionary/racing.yaml");
    let out =
        run(&["manifest", "diff", manifest("lap-performance").to_str().unwrap(), new.to_str().unwrap(), "--dictionary", dict.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a retyped column breaks readers: {stdout}");
    assert!(stdout.contains("column \"samples\" type int → float"), "{stdout}");
    assert!(stdout.contains("column \"samples\" unit none → m/s"), "{stdout}");
    assert!(!stdout.contains("Some(") && !stdout.contains("None"), "{stdout}");
}

/// Every difference between two contracts is named: reordering two aggregations (the csv
/// header and every row's field order) or renaming the manifest (and so its topic) was
/// "contracts are identical" to `manifest diff`, while `manifest test` said the contract
/// changed and listed nothing.
#[test]
fn manifest_diff_and_test_name_a_reorder_and_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(manifest("lap-performance")).unwrap();
    let (max, mean) = ("  - {name: max_speed, fn: max, of: speed, unit: km/h}\n", "  - {name: mean_speed, fn: mean, of: speed, unit: km/h}\n");
    let reordered = text.replacen(&format!("{max}{mean}"), &format!("{mean}{max}"), 1);
    // A manifest's topic follows its name and version.
    let renamed = text.replacen("name: lap-performance\n", "name: laps\n", 1).replacen(
        "topic: pitgun.aggregates.lap-performance.v1\n",
        "topic: pitgun.aggregates.laps.v1\n",
        1,
    );
    let dict = root().join("manifests/dictionary/racing.yaml");
    let committed = root().join("manifests/pipelines/lap-performance.v1.contract.json");
    for (changed, expected) in [
        (
            reordered,
            "column order row_id, session_id, player, track, car, window_start, window_end, window_anchor, lap, lap_time, max_speed, mean_speed,",
        ),
        (renamed, "manifest lap-performance → laps"),
    ] {
        assert_ne!(changed, text, "{expected}");
        let path = dir.path().join("lap-performance.v1.yaml");
        std::fs::write(&path, changed).unwrap();
        std::fs::copy(&committed, dir.path().join("lap-performance.v1.contract.json")).unwrap();
        let (old, new, dict) = (manifest("lap-performance"), path.to_str().unwrap().to_string(), dict.to_str().unwrap());
        let out = run(&["manifest", "diff", old.to_str().unwrap(), &new, "--dictionary", dict]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{expected}: breaking without a new version: {stdout}");
        assert!(stdout.contains("BREAKING") && stdout.contains(expected), "{expected}: {stdout}");
        let out = run(&["manifest", "test", &new, "--dictionary", dict]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{expected}: {stdout}");
        assert!(stdout.contains(&format!("breaking: {expected}")), "{expected}: {stdout}");
    }
}

#[test]
fn contracts_printed_by_the_cli_validate_and_match_the_committed_ones() {
    for name in ["lap-performance", "session-summary", "client-health"] {
        let out = ok(&["manifest", "contract", manifest(name).to_str().unwrap()]);
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let file = root().join(format!("manifests/pipelines/{name}.v1.contract.json"));
        let committed: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(printed, committed);
        let v = ok(&["validate", file.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&v.stdout).contains("valid pitgun-analysis/v1"));
    }
}

/// lap-performance with one input naming a metric the dictionary lacks (`driver.brakes`),
/// written to `dir`: its path and text, and the dictionary to compile it against.
fn with_unknown_metric(dir: &Path) -> (PathBuf, String, PathBuf) {
    let text = std::fs::read_to_string(manifest("lap-performance")).unwrap();
    let bad = text.replace("metric: driver.brake}", "metric: driver.brakes}");
    assert_ne!(bad, text);
    let path = dir.join("bad.yaml");
    std::fs::write(&path, &bad).unwrap();
    (path, bad, root().join("manifests/dictionary/racing.yaml"))
}

#[test]
fn manifest_errors_name_file_line_and_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bad, dict) = with_unknown_metric(dir.path());
    let out = run(&["manifest", "contract", path.to_str().unwrap(), "--dictionary", dict.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = bad.lines().position(|l| l.contains("driver.brakes")).unwrap() + 1;
    assert!(err.contains(&format!("bad.yaml:{line}: at /inputs/3/metric: unknown metric \"driver.brakes\"")), "{err}");
}

#[test]
fn the_bundle_pins_every_document_it_ships() {
    let bundle = root().join("manifests/bundles/racing.v1.yaml");
    let out = ok(&["validate", bundle.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid pitgun-bundle/v1"));
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "b.ndjson", &[]);
    let via_bundle = String::from_utf8(
        ok(&["replay", "--quiet", "--bundle", bundle.to_str().unwrap(), "--pipeline", "lap-performance", "--input", data.to_str().unwrap()]).stdout,
    )
    .unwrap();
    assert_eq!(via_bundle, replay(&manifest("lap-performance"), &[&data], &[]));
}

#[test]
fn the_engine_refuses_exactly_the_envelopes_the_schema_refuses() {
    let load_manifest = pitgun_contracts::load::load(ContractKind::Pipeline, &manifest("lap-performance")).unwrap();
    let dictionary = load(ContractKind::Dictionary, &root().join("manifests/dictionary/racing.yaml")).unwrap();
    let mut runner = pitgun_engine::Runner::new(pitgun_engine::Plan::compile(&load_manifest, &dictionary).unwrap());
    let mut out = Vec::new();
    let base = root().join("schemas/pitgun-envelope/examples");
    for entry in std::fs::read_dir(base.join("valid")).unwrap() {
        let path = entry.unwrap().path();
        let json = pitgun_contracts::load::SourceText::read(&path).unwrap().parse().unwrap().to_string();
        // A valid envelope may still lack this manifest's key dimensions; it must not be refused
        // as an invalid envelope.
        if let Err(e) = runner.feed_json(&json, 0, &mut out) {
            assert_ne!(e.reason, pitgun_engine::Reason::InvalidEnvelope, "{}: {e:?}", path.display());
        }
    }
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(base.join("invalid/expected.json")).unwrap()).unwrap();
    for (file, pointer) in expected.as_object().unwrap() {
        let path = base.join("invalid").join(file);
        let json = pitgun_contracts::load::SourceText::read(&path).unwrap().parse().unwrap().to_string();
        let err = runner.feed_json(&json, 0, &mut out).expect_err(file);
        assert_eq!(err.reason, pitgun_engine::Reason::InvalidEnvelope, "{file}");
        let pointer = pointer.as_str().unwrap();
        if !pointer.is_empty() {
            assert!(err.detail.contains(pointer), "{file}: {} does not name {pointer}", err.detail);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Arrival order never changes a row, and the shipped manifests count what an independent count
// finds.

const SHIPPED: [&str; 3] = ["lap-performance", "client-health", "session-summary"];

/// A simulated file with every event kind, resent duplicates and events out of order within
/// out_of_orderness (the faults that stay inside the manifests' bounds). Four 15-minute sessions
/// (seed 42) include pit stops; the simulator sends no `marker`, so each session gets one in the
/// middle, numbered after its end (seq order need not be time order).
fn in_bounds_dataset(dir: &Path) -> (PathBuf, Vec<Value>) {
    let path = dir.join("in-bounds.ndjson");
    ok(&[
        "simulate",
        "--sessions",
        "4",
        "--duration",
        "15m",
        "--seed",
        "42",
        "--quiet",
        "--faults",
        "duplicates=0.02,reorder_within=0.05",
        "--output",
        path.to_str().unwrap(),
    ]);
    let mut events: Vec<Value> = std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ends: Vec<Value> = events.iter().filter(|e| e["kind"] == "session_end").cloned().collect();
    for end in ends {
        let sid = end["session_id"].as_str().unwrap();
        let at = events.iter().rposition(|e| e["session_id"] == sid && e["kind"] == "session_start").unwrap();
        let mid = (events[at]["time_us"].as_i64().unwrap() + end["time_us"].as_i64().unwrap()) / 2;
        let mut marker = end.clone();
        marker["event_id"] = Value::from(format!("{sid}-marker"));
        marker["seq"] = Value::from(end["seq"].as_u64().unwrap() + 1);
        marker["time_us"] = Value::from(mid);
        marker["kind"] = Value::from("marker");
        marker.as_object_mut().unwrap().remove("channels");
        let pos = events.iter().position(|e| e["time_us"].as_i64().unwrap() > mid).unwrap_or(events.len());
        events.insert(pos, marker);
    }
    let refs: Vec<&Value> = events.iter().collect();
    write_lines(&path, &refs);
    (path, events)
}

fn write_lines(path: &Path, events: &[&Value]) {
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn four_arrival_orders_give_byte_identical_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (simulated, events) = in_bounds_dataset(dir.path());
    let mut by_time: Vec<&Value> = events.iter().collect();
    by_time.sort_by_key(|e| e["time_us"].as_i64().unwrap());
    let mut by_session: Vec<&Value> = events.iter().collect();
    by_session.sort_by(|a, b| a["session_id"].as_str().cmp(&b["session_id"].as_str()));
    // And as a network delivers them: each event delayed by up to 1.9 s (the manifests'
    // out_of_orderness is 2 s), seeded.
    let seed = 7;
    eprintln!("four_arrival_orders: delay seed {seed}");
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let mut delayed: Vec<(i64, &Value)> =
        events.iter().map(|e| (e["time_us"].as_i64().unwrap() + rand::Rng::random_range(&mut rng, 0..1_900_000), e)).collect();
    delayed.sort_by_key(|(arrival, _)| *arrival);
    let delayed: Vec<&Value> = delayed.into_iter().map(|(_, e)| e).collect();
    let (sorted, grouped, late) = (dir.path().join("by-time.ndjson"), dir.path().join("by-session.ndjson"), dir.path().join("delayed.ndjson"));
    write_lines(&sorted, &by_time);
    write_lines(&grouped, &by_session);
    write_lines(&late, &delayed);
    assert_ne!(std::fs::read(&simulated).unwrap(), std::fs::read(&sorted).unwrap(), "the simulated order is not already sorted");
    for name in SHIPPED {
        let want = replay(&manifest(name), &[&simulated], &["--threads", "2"]);
        assert!(want.lines().count() >= 3, "{name}: {} rows", want.lines().count());
        for (order, file) in [("sorted by time", &sorted), ("grouped by session", &grouped), ("delayed up to 1.9 s", &late)] {
            let got = replay(&manifest(name), &[file], &["--threads", "1"]);
            assert!(got == want, "{name}: rows differ when the events arrive {order}");
        }
    }
}

/// The producer channel names of a dictionary metric (every producer and version).
fn channels_of(metric: &str) -> Vec<String> {
    let dict = load::<Dictionary>(ContractKind::Dictionary, &root().join("manifests/dictionary/racing.yaml")).unwrap();
    let m = dict.doc.metrics.iter().find(|m| m.id == metric).unwrap_or_else(|| panic!("{metric} in the dictionary"));
    m.aliases.iter().map(|a| a.channel.clone()).collect()
}

#[test]
fn window_counts_and_count_aggregations_equal_an_independent_count() {
    // Counted here from the envelopes themselves, without the engine: unique events per
    // session (the first copy of each event id), in (time, seq) order.
    let dir = tempfile::tempdir().unwrap();
    let (path, events) = in_bounds_dataset(dir.path());
    let mut seen = std::collections::BTreeSet::new();
    let mut unique: Vec<&Value> = events.iter().filter(|e| seen.insert((e["session_id"].to_string(), e["event_id"].to_string()))).collect();
    unique.sort_by_key(|e| (e["session_id"].as_str().unwrap().to_string(), e["time_us"].as_i64().unwrap(), e["seq"].as_u64().unwrap()));
    let kinds: std::collections::BTreeSet<&str> = unique.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["session_start", "sample", "lap", "sector", "pit_in", "pit_out", "health", "marker", "session_end"] {
        assert!(kinds.contains(k), "the dataset has no {k} event: {kinds:?}");
    }
    let has = |e: &Value, names: &[String]| names.iter().any(|n| e["channels"].get(n.as_str()).is_some());
    let value = |e: &Value, names: &[String]| names.iter().find_map(|n| e["channels"].get(n.as_str()).and_then(Value::as_f64));
    let (speed, lap, last_lap) = (channels_of("vehicle.speed"), channels_of("lap.number"), channels_of("lap.last_time"));
    type Counts = std::collections::BTreeMap<(String, String), u64>;
    let engine_counts = |name: &str, window: &str, count: &str| -> Counts {
        rows(&replay(&manifest(name), &[&path], &[]))
            .iter()
            .map(|r| ((r["session_id"].as_str().unwrap().to_string(), r[window].to_string()), r[count].as_u64().unwrap()))
            .collect()
    };

    // client-health: 10 s tumbling windows of health events; `samples` counts them.
    let mut want = Counts::new();
    for e in unique.iter().filter(|e| e["kind"] == "health") {
        let start = e["time_us"].as_i64().unwrap().div_euclid(10_000_000) * 10_000_000;
        let key = (e["session_id"].as_str().unwrap().to_string(), Value::from(pitgun_engine::row::format_timestamp(start)).to_string());
        *want.entry(key).or_default() += 1;
    }
    assert_eq!(engine_counts("client-health", "window_start", "samples"), want, "client-health windows and samples");

    // lap-performance: one window per lap value a session reaches (events of its kinds join the
    // lap open at their time); `samples` counts those carrying a speed.
    let mut want = Counts::new();
    let mut current: Option<(String, u64)> = None;
    for e in unique.iter().filter(|e| ["session_start", "sample", "lap", "session_end"].contains(&e["kind"].as_str().unwrap())) {
        let sid = e["session_id"].as_str().unwrap().to_string();
        if current.as_ref().is_some_and(|(s, _)| *s != sid) {
            current = None;
        }
        if let Some(l) = value(e, &lap) {
            current = Some((sid.clone(), l as u64));
        }
        if let Some((_, l)) = &current {
            *want.entry((sid, l.to_string())).or_default() += u64::from(has(e, &speed));
        }
    }
    assert_eq!(engine_counts("lap-performance", "lap", "samples"), want, "lap-performance windows and samples");

    // session-summary: one window per session; `events` counts every unique event, `laps` the
    // lap events carrying a lap time.
    let (mut events_want, mut laps_want) = (Counts::new(), Counts::new());
    for e in &unique {
        let key = (e["session_id"].as_str().unwrap().to_string(), "null".to_string());
        *events_want.entry(key.clone()).or_default() += 1;
        *laps_want.entry(key).or_default() += u64::from(has(e, &last_lap));
    }
    assert_eq!(engine_counts("session-summary", "no_such_column", "events"), events_want, "session-summary events");
    assert_eq!(engine_counts("session-summary", "no_such_column", "laps"), laps_want, "session-summary laps");
}

/// An output path that names an input or another output is refused before anything is written:
/// it once replaced the dataset with the rows (or left it empty) and exited 0.
#[test]
fn an_output_that_is_an_input_or_another_output_is_refused_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "clash.ndjson", &[]);
    let before = std::fs::read(&data).unwrap();
    let m = manifest("lap-performance");
    let (m, d) = (m.to_str().unwrap(), data.to_str().unwrap());
    let rows = dir.path().join("rows.ndjson");
    let rows = rows.to_str().unwrap();
    // The same file under another spelling is the same file.
    let aliased = format!("{}/./clash.ndjson", dir.path().display());
    for (args, named) in [
        (vec!["--output", d], "--output"),
        (vec!["--output", &aliased], "--output"),
        (vec!["--output", rows, "--late", d], "--late"),
        (vec!["--output", rows, "--late", rows], "--late"),
        (vec!["--output", rows, "--rejected", rows], "--rejected"),
    ] {
        let mut all = vec!["replay", "--quiet", "--manifest", m, "--input", d];
        all.extend_from_slice(&args);
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named) && stderr.contains("same file"), "{args:?}: {stderr}");
        assert_eq!(std::fs::read(&data).unwrap(), before, "{args:?}: the dataset is untouched");
        assert!(!Path::new(rows).exists(), "{args:?}: no output was created");
    }
    // Nor the manifest or the dictionary it reads (a copy here: the check must hold before the
    // committed file could be touched).
    let copy = dir.path().join("m.yaml");
    std::fs::copy(m, &copy).unwrap();
    let dict = root().join("manifests/dictionary/racing.yaml");
    let out = run(&[
        "replay",
        "--quiet",
        "--manifest",
        copy.to_str().unwrap(),
        "--dictionary",
        dict.to_str().unwrap(),
        "--input",
        d,
        "--output",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("same file as --manifest"));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(m).unwrap(), "the manifest is untouched");
    // Nor the dictionary found beside the manifest, which no flag names.
    let tree = dir.path().join("project");
    std::fs::create_dir_all(tree.join("pipelines")).unwrap();
    std::fs::create_dir_all(tree.join("dictionary")).unwrap();
    let (found, dict_copy) = (tree.join("pipelines/lap-performance.v1.yaml"), tree.join("dictionary/racing.yaml"));
    std::fs::copy(m, &found).unwrap();
    std::fs::copy(&dict, &dict_copy).unwrap();
    let out = run(&["replay", "--quiet", "--manifest", found.to_str().unwrap(), "--input", d, "--output", dict_copy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("same file as the dictionary"), "{stderr}");
    assert_eq!(std::fs::read(&dict_copy).unwrap(), std::fs::read(&dict).unwrap(), "the dictionary is untouched");
    // /dev/null takes any number of outputs.
    ok(&["replay", "--quiet", "--manifest", m, "--input", d, "--output", "/dev/null", "--late", "/dev/null", "--rejected", "/dev/null"]);
    // simulate: --truth may not be --output.
    let out = run(&["simulate", "--sessions", "1", "--duration", "1m", "--quiet", "--output", d, "--truth", d]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("same file"));
    assert_eq!(std::fs::read(&data).unwrap(), before, "simulate left the dataset alone");
}

/// A file that cannot be read is named with its cause, once (the cause was printed twice).
#[test]
fn a_missing_manifest_is_named_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = run(&["replay", "--manifest", missing.to_str().unwrap(), "--input", "samples/racing-small.ndjson.zst"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}: cannot read: ", missing.display())), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
}

/// Events from a producer version the dictionary has no aliases for are counted and warned
/// about, even with --quiet: their channels were all dropped as unknown, and a session of them
/// vanished from the rows with "rejected 0" in the summary.
#[test]
fn events_from_a_version_the_dictionary_does_not_cover_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "v.ndjson", &[]);
    let text = std::fs::read_to_string(&data).unwrap();
    let newer = text.replace("\"version\":\"2.1.0\"", "\"version\":\"1.9.0\"");
    assert_ne!(newer, text);
    let uncovered = dir.path().join("v1.ndjson");
    std::fs::write(&uncovered, &newer).unwrap();
    let m = manifest("lap-performance");
    for quiet in [false, true] {
        let mut args = vec!["replay", "--manifest", m.to_str().unwrap(), "--input", uncovered.to_str().unwrap(), "--output", "/dev/null"];
        if quiet {
            args.push("--quiet");
        }
        let out = ok(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let events = newer.matches("\"version\":\"1.9.0\"").count();
        assert!(
            stderr.contains(&format!("warning: {events} events from a producer version the dictionary has no aliases for")),
            "quiet {quiet}: {stderr}"
        );
    }
    let out = ok(&["replay", "--manifest", m.to_str().unwrap(), "--input", data.to_str().unwrap(), "--output", "/dev/null"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Errors name a file once, and say where a dictionary was looked for: `validate` printed
/// `bad.yaml: bad.yaml:17: …`, called a document without `schema` an "unknown contract
/// nothing", and replay said only "not found beside the manifest".
#[test]
fn errors_name_the_file_once_and_where_the_dictionary_was_sought() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, dict) = with_unknown_metric(dir.path());
    let out = run(&["validate", path.to_str().unwrap(), "--dictionary", dict.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches(path.to_str().unwrap()).count(), 1, "{stderr}");
    let untagged = dir.path().join("kustomization.yaml");
    std::fs::write(&untagged, "resources: [a.yaml]\n").unwrap();
    let out = run(&["validate", untagged.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no `schema` field") && !stderr.contains("nothing"), "{stderr}");
    let out = run(&["validate", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches(path.to_str().unwrap()).count(), 1, "a dictionary not found: {stderr}");
    let out = run(&["replay", "--manifest", path.to_str().unwrap(), "--input", "samples/racing-small.ndjson.zst"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let sought = [dir.path().join("../dictionary/racing.yaml"), dir.path().join("racing.yaml")];
    assert!(sought.iter().all(|p| stderr.contains(p.to_str().unwrap())) && stderr.contains("--dictionary"), "{stderr}");
}

/// `validate` compiles a pipeline against its dictionary and checks a bundle's pins, as
/// `replay` would: a manifest naming an unknown metric was reported valid.
#[test]
fn validate_refuses_a_manifest_that_cannot_run_and_a_bundle_whose_pin_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, dict) = with_unknown_metric(dir.path());
    let text = std::fs::read_to_string(manifest("lap-performance")).unwrap();
    let out = run(&["validate", path.to_str().unwrap(), "--dictionary", dict.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown metric \"driver.brakes\""), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("valid"), "nothing is called valid");
    // The committed manifests compile (their dictionary found beside them).
    let out = ok(&["validate", manifest("lap-performance").to_str().unwrap(), manifest("client-health").to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("valid pitgun-pipeline/v1").count(), 2);

    // A bundle whose pipeline changed after it was pinned.
    let bundle = copy_bundle(dir.path());
    let out = ok(&["validate", bundle.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid pitgun-bundle/v1"));
    let changed = text.replacen("description: >-\n", "description: >-\n  Changed after pinning.\n", 1);
    assert_ne!(changed, text);
    std::fs::write(dir.path().join("manifests/pipelines/lap-performance.v1.yaml"), changed).unwrap();
    let out = run(&["validate", bundle.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not match the bundle's pin"), "{err}");
}

/// An alias whose versions an earlier alias for the same channel already takes is dead (the
/// first in dictionary order wins): `validate` names it and the one that takes its versions,
/// and the dictionary stays valid (an override placed first is the same overlap, and meant).
#[test]
fn validate_warns_of_an_alias_no_version_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("manifests/dictionary/racing.yaml")).unwrap();
    let shadowed = "      - {producer: pitgun-web, versions: \">=1.0.0, <2.0.0\", channel: speed_kmh, unit: \"km/h\"}\n";
    let changed = text.replacen(shadowed, &format!("{shadowed}{}", shadowed.replace(">=1.0.0, <2.0.0", ">=1.2.0, <1.5.0")), 1);
    assert_ne!(changed, text);
    let path = dir.path().join("racing.yaml");
    std::fs::write(&path, changed).unwrap();
    let out = ok(&["validate", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid pitgun-dictionary/v1"));
    assert!(
        err.contains("racing.yaml:41: at /metrics/0/aliases/2/versions: warning: alias speed_kmh of pitgun-web is never used: every version it covers (>=1.2.0, <1.5.0) is taken first by /metrics/0/aliases/1"),
        "{err}"
    );
    // The shipped dictionary has none.
    let out = ok(&["validate", root().join("manifests/dictionary/racing.yaml").to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `manifest test` and `manifest hash` over several files go on past one they cannot load,
/// as `grep` and `sha256sum` do: the first unreadable file stopped the run, and the files after
/// it were neither tested nor hashed. The file is named, and the exit code is 2 (an error, not a
/// failed test) once the others are done.
#[test]
fn manifest_tools_go_on_past_a_file_they_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.v1.yaml");
    let (lap, health) = (manifest("lap-performance"), manifest("client-health"));
    let (lap, health, missing) = (lap.to_str().unwrap(), health.to_str().unwrap(), missing.to_str().unwrap());
    for (tool, done) in [("test", "ok   client-health v1: analysis contract matches"), ("hash", "client-health.v1.yaml")] {
        let out = run(&["manifest", tool, lap, missing, health]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{tool}: {stdout}{stderr}");
        assert!(stdout.contains(done), "{tool}: the file after the missing one: {stdout}");
        assert!(stderr.contains("error: ") && stderr.contains("missing.v1.yaml"), "{tool}: {stderr}");
    }
}

/// An output is replaced whole or not at all: a run stopped part way through writing it (here by
/// the file-size limit, as a full disk or a kill would stop it) leaves the file of that name as it
/// was. `replay` and `simulate` truncated it first and left half a file, which a later replay read
/// as if it were whole.
#[test]
fn a_run_stopped_while_writing_leaves_the_output_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "d.ndjson", &[]);
    let lap = manifest("lap-performance");
    let (lap, data) = (lap.to_str().unwrap(), data.to_str().unwrap());
    let rows = replay(Path::new(lap), &[Path::new(data)], &[]);
    assert!(rows.len() > 2048, "enough rows to pass the limit ({} bytes)", rows.len());
    // One block of 512 or 1,024 bytes: the write past it is refused (SIGXFSZ).
    let limited = |args: &[&str]| Command::new("sh").arg("-c").arg("ulimit -f 1; exec \"$0\" \"$@\"").arg(BIN).args(args).output().unwrap();
    for (name, args) in [
        ("rows.ndjson", vec!["replay", "--quiet", "--manifest", lap, "--input", data, "--output"]),
        ("copy.ndjson", vec!["simulate", "--sessions", "3", "--duration", "4m", "--seed", "42", "--quiet", "--output"]),
    ] {
        let out = dir.path().join(name);
        std::fs::write(&out, "as it was\n").unwrap();
        let mut args = args;
        args.push(out.to_str().unwrap());
        let stopped = limited(&args);
        assert!(!stopped.status.success(), "{args:?} passed the limit");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "as it was\n", "{args:?}");
        // Without the limit the same run replaces it.
        ok(&args);
        assert!(std::fs::read_to_string(&out).unwrap().len() > 2048, "{args:?}");
    }
}

/// Ctrl-C (or SIGTERM) in the middle of a run removes the output it was writing: the default
/// action ended the process where it stood, leaving the hidden `.partial-…` file (the whole
/// dataset written so far) beside the output, and the file already there stays as it was. The
/// process still ends by the signal (a shell script stops there), and a signal it was started
/// ignoring (`nohup`) stays ignored.
#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    for (signal, number, ignored) in [("INT", libc::SIGINT, None), ("TERM", libc::SIGTERM, Some(("HUP", libc::SIGHUP)))] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("long.ndjson.zst");
        std::fs::write(&out, "as it was\n").unwrap();
        // Hours of sessions: still writing when the signal comes.
        let args = ["simulate", "--sessions", "8", "--duration", "10h", "--quiet", "--output", out.to_str().unwrap()];
        let mut command = Command::new(BIN);
        command.args(args);
        // The child starts with every signal at its default action, whatever this test inherited
        // (a job started in the background of a script has SIGINT ignored, and so would the
        // child), then with SIGHUP ignored where asked, as nohup starts a command.
        // SAFETY: only sets signal dispositions in the child before exec.
        unsafe {
            command.pre_exec(move || {
                for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                    libc::signal(s, libc::SIG_DFL);
                }
                if let Some((_, ignore)) = ignored {
                    libc::signal(ignore, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let mut child = KillOnDrop(command.spawn().unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let partial = loop {
            let found = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap()).find(|e| e.file_name().to_string_lossy().starts_with(".partial-"));
            if let Some(e) = found.filter(|e| e.metadata().unwrap().len() > 0) {
                break e.path();
            }
            assert!(std::time::Instant::now() < deadline, "no partial output written within 60 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let pid = child.0.id().to_string();
        let kill = |name: &str| assert!(Command::new("kill").arg(format!("-{name}")).arg(&pid).status().unwrap().success());
        if let Some((name, _)) = ignored {
            kill(name);
            std::thread::sleep(std::time::Duration::from_millis(500));
            assert!(child.0.try_wait().unwrap().is_none(), "SIG{name}, ignored at start, ended the run");
        }
        kill(signal);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let exited = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "SIG{signal}: still running 30 s later");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(!partial.exists(), "SIG{signal} left {} behind ({exited:?})", partial.display());
        assert_eq!(exited.signal(), Some(number), "SIG{signal} ends the run by the signal: {exited:?}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [out.file_name().unwrap()], "SIG{signal}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "as it was\n", "SIG{signal}");
    }
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A simulation whose output fails stops there: it went on simulating every remaining hour for
/// nothing (a gateway that cannot be reached, at 100% of a core, for as long as the whole run).
#[cfg(feature = "live")]
#[test]
fn a_simulation_whose_output_failed_stops_at_once() {
    // A port nothing listens on: every post is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("http://127.0.0.1:{port}");
    // Hundreds of millions of records: simulated to their end, many minutes.
    let args = ["simulate", "--sessions", "200", "--duration", "10h", "--quiet", "--retry-for", "1s", "--target", &target];
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(args)
            .args(["--api-key", "pitgun-sim=k1", "--api-key", "pitgun-web=k2"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "still simulating 60 s after its gateway could not be reached");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(2), "{said}");
    assert!(said.contains(&target), "the failure names the gateway:\n{said}");
}

/// Every command that prints fails cleanly when its output cannot be written: a reader that
/// has gone (`| head -1`) or a full disk. `validate` and `manifest` used `println!`, which
/// panicked (exit 101, a backtrace) where `replay` said what failed and exited 2.
#[test]
fn commands_name_an_output_they_cannot_write_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "w.ndjson", &[]);
    let (lap, health) = (manifest("lap-performance"), manifest("client-health"));
    let (lap, health, data) = (lap.to_str().unwrap(), health.to_str().unwrap(), data.to_str().unwrap());
    let commands: [&[&str]; 7] = [
        &["validate", lap, data],
        &["validate", data],
        &["manifest", "hash", lap, health],
        &["manifest", "test", lap, health],
        &["manifest", "contract", lap],
        &["manifest", "diff", lap, health],
        &["replay", "--quiet", "--manifest", lap, "--input", data],
    ];
    for args in commands {
        // A pipe whose reader is closed before the command writes.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let gone = Command::new(BIN).args(args).stdout(writer).output().unwrap();
        let full = Command::new(BIN).args(args).stdout(std::fs::File::create("/dev/full").unwrap()).output().unwrap();
        for (what, out) in [("a closed pipe", gone), ("/dev/full", full)] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} to {what}: {err}");
            assert!(err.starts_with("error: ") && !err.contains("panicked"), "{args:?} to {what}: {err}");
        }
    }
}

/// An output whose folder does not exist is refused before any work: `simulate` replaced
/// `--output` and then failed on `--truth`, and `replay` wrote `--output` and then failed on
/// `--rejected`, in both cases after the whole run.
#[test]
fn an_output_that_cannot_be_made_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "in.ndjson", &[]);
    let kept = dir.path().join("kept.ndjson");
    let nowhere = dir.path().join("no/such/folder/x.json");
    let (kept_s, nowhere_s) = (kept.to_str().unwrap(), nowhere.to_str().unwrap());
    let lap = manifest("lap-performance");
    let runs: [Vec<&str>; 4] = [
        vec!["simulate", "--sessions", "2", "--duration", "1m", "--quiet", "--output", kept_s, "--truth", nowhere_s],
        vec!["simulate", "--sessions", "2", "--duration", "1m", "--quiet", "--output", nowhere_s, "--truth", kept_s],
        vec![
            "replay",
            "--quiet",
            "--manifest",
            lap.to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--output",
            kept_s,
            "--rejected",
            nowhere_s,
        ],
        vec!["replay", "--quiet", "--manifest", lap.to_str().unwrap(), "--input", data.to_str().unwrap(), "--late", kept_s, "--output", nowhere_s],
    ];
    for args in runs {
        std::fs::write(&kept, "precious\n").unwrap();
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(nowhere_s) && err.contains("does not exist"), "{args:?}: the output that cannot be made is named: {err}");
        assert!(std::fs::read_to_string(&kept).unwrap() == "precious\n", "{args:?}: the other output was replaced");
    }
}

/// The shipped bundle with the folder layout its relative paths need, copied under `dir`; its
/// path.
fn copy_bundle(dir: &Path) -> PathBuf {
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
    for folder in ["manifests/bundles", "manifests/pipelines", "manifests/dictionary", "schemas"] {
        copy_tree(&root().join(folder), &dir.join(folder));
    }
    dir.join("manifests/bundles/racing.v1.yaml")
}

/// A bundle pins each document by name and version as well as by hash: a pin whose path and
/// hash were another pipeline's ran that pipeline under the asked-for name, and a dictionary
/// pinned under another name or version, or a pipeline pinned twice, passed `validate`.
#[test]
fn a_bundle_pin_names_the_document_it_pins() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle(dir.path());
    let text = std::fs::read_to_string(&bundle).unwrap();
    let data = root().join("samples/racing-small.ndjson.zst");
    // lap-performance's pin given session-summary's path and hash.
    let pin = |name: &str| {
        let at = text.find(&format!("../pipelines/{name}.v1.yaml")).unwrap();
        let hash = &text[at..][text[at..].find("sha256: ").unwrap() + 8..];
        (format!("../pipelines/{name}.v1.yaml"), hash[..hash.find('\n').unwrap()].to_string())
    };
    let (lap, summary) = (pin("lap-performance"), pin("session-summary"));
    let swapped = text.replacen(&lap.0, "PATH", 1).replacen(&lap.1, "HASH", 1).replacen("PATH", &summary.0, 1).replacen("HASH", &summary.1, 1);
    let renamed = text.replacen("  name: racing\n  version: 1.0.0\n  sha256", "  name: speedway\n  version: 1.0.0\n  sha256", 1);
    let reversioned = text.replacen("  name: racing\n  version: 1.0.0\n  sha256", "  name: racing\n  version: 9.9.9\n  sha256", 1);
    let twice = text.replacen("name: session-summary", "name: lap-performance", 1);
    // Another pipeline pinned twice: refused too, whichever one is asked for.
    let other_twice = text.replacen("name: session-summary", "name: client-health", 1);
    let cases = [
        (swapped, "is session-summary version 1, but the bundle pins lap-performance version 1"),
        (renamed, "is racing version 1.0.0, but the bundle pins speedway version 1.0.0"),
        (reversioned, "is racing version 1.0.0, but the bundle pins racing version 9.9.9"),
        (twice, "pins pipeline \"lap-performance\" more than once"),
        (other_twice, "pins pipeline \"client-health\" more than once"),
    ];
    for (changed, expected) in cases {
        assert_ne!(changed, text, "{expected}");
        std::fs::write(&bundle, &changed).unwrap();
        let out = run(&["validate", bundle.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expected}: {err}");
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("valid"), "{expected}: nothing is called valid");
        let out =
            run(&["replay", "--quiet", "--bundle", bundle.to_str().unwrap(), "--pipeline", "lap-performance", "--input", data.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {err}");
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(out.stdout.is_empty(), "{expected}: no rows");
    }
}

/// `validate` reads every dataset form `replay` and `publish` take (it refused `.ndjson.zst`,
/// `.gz` and `.avro` as "not UTF-8"), names each bad record by file and line, and says so when a
/// dataset holds no envelope.
#[test]
fn validate_reads_every_dataset_form_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let plain = simulate(dir.path(), "v.ndjson", &[]);
    let lines = std::fs::read_to_string(&plain).unwrap().lines().count();
    for name in ["v.ndjson.zst", "v.ndjson.gz", "v.avro"] {
        let data = simulate(dir.path(), name, &[]);
        let out = ok(&["validate", data.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("{lines} valid envelopes")), "{name}: {stdout}");
    }
    let mut text = std::fs::read_to_string(&plain).unwrap();
    text.push_str("this is not JSON\n{\"schema\":\"pitgun-envelope/v1\"}\n");
    let broken = dir.path().join("broken.ndjson");
    std::fs::write(&broken, &text).unwrap();
    let out = run(&["validate", broken.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("broken.ndjson:{}: ", lines + 1)) && stderr.contains("not valid JSON"), "{stderr}");
    assert!(stderr.contains(&format!("broken.ndjson:{}: ", lines + 2)), "{stderr}");
    // A `.json` file of envelope lines is a dataset to validate as to replay (validate read it as
    // one document: "trailing characters"); a JSON array is refused by both, saying what to do
    // (replay refused every line of a pretty-printed one, and exited 0).
    let as_json = dir.path().join("lines.json");
    std::fs::copy(&plain, &as_json).unwrap();
    let out = ok(&["validate", as_json.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{lines} valid envelopes")), "{}", String::from_utf8_lossy(&out.stdout));
    let envelopes: Vec<Value> = std::fs::read_to_string(&plain).unwrap().lines().take(3).map(|l| serde_json::from_str(l).unwrap()).collect();
    let array = dir.path().join("array.json");
    std::fs::write(&array, serde_json::to_string_pretty(&envelopes).unwrap()).unwrap();
    for args in [
        vec!["validate", array.to_str().unwrap()],
        vec!["replay", "--manifest", manifest("lap-performance").to_str().unwrap(), "--input", array.to_str().unwrap()],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains("array.json: ") && stderr.contains("JSON array") && stderr.contains("one envelope per line"), "{args:?}: {stderr}");
    }
    // What replay refuses, validate refuses: a field or a channel written twice in one envelope
    // (a JSON value keeps the last copy, so validate called them valid).
    let first = std::fs::read_to_string(&plain).unwrap().lines().nth(1).unwrap().to_string();
    let twice = [first.replacen("\"seq\":", "\"seq\":7,\"seq\":", 1), first.replacen("\"channels\":{", "\"channels\":{\"brake\":0.5,", 1)];
    assert!(twice.iter().all(|t| *t != first), "{first}");
    let repeated = dir.path().join("repeated.ndjson");
    std::fs::write(&repeated, format!("{first}\n{}\n{}\n", twice[0], twice[1])).unwrap();
    let out = run(&["validate", repeated.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("repeated.ndjson:2: ") && stderr.contains("seq"), "{stderr}");
    assert!(stderr.contains("repeated.ndjson:3: at /channels/brake: "), "{stderr}");
    assert!(!stderr.contains("repeated.ndjson:1:"), "{stderr}");
    let strict = run(&[
        "replay",
        "--strict",
        "--manifest",
        manifest("lap-performance").to_str().unwrap(),
        "--input",
        repeated.to_str().unwrap(),
        "--output",
        "/dev/null",
    ]);
    assert_eq!(strict.status.code(), Some(1), "replay refuses them too: {}", String::from_utf8_lossy(&strict.stderr));
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let out = ok(&["validate", empty.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no envelopes"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// No command's help lists one flag twice: a command's own `--version` once hid the binary's
/// `-V, --version` behind it (`pitgun tail --version` asked for a manifest version). And no help
/// shows a secret given in the environment: `sink --help` and `api --help` printed the PostgreSQL
/// URL's password and the QuestDB token as the flags' current values.
#[test]
fn every_command_names_each_flag_once_and_no_secret() {
    let top = ok(&["--help"]);
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   ")) // a description's continued line
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 5, "{top}");
    let mut checked = 0;
    let mut queue: Vec<Vec<String>> = commands.into_iter().map(|c| vec![c]).collect();
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = Command::new(BIN)
            .args(&args)
            .env("PITGUN_POSTGRES", "postgres://pitgun:HIDDEN-pw@db:5432/pitgun")
            .env("PITGUN_QUESTDB", "http::addr=db:9000;username=admin;password=HIDDEN-pw;")
            .output()
            .unwrap();
        assert!(help.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&help.stdout).into_owned();
        assert!(!text.contains("HIDDEN-pw"), "pitgun {} --help shows a secret:\n{text}", path.join(" "));
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        // An option's own line is indented by at most 6; its description's lines by more.
        let section = text.lines().skip_while(|l| !l.starts_with("Options:")).skip(1).take_while(|l| l.is_empty() || l.starts_with(' '));
        let options = section.filter(|l| l.len() - l.trim_start().len() <= 6).map(str::trim_start);
        for line in options.filter(|l| l.starts_with('-')) {
            let long = line.split([',', ' ']).map(str::trim).find(|w| w.starts_with("--"));
            if let Some(flag) = long {
                *seen.entry(flag.to_string()).or_default() += 1;
            }
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "pitgun {} --help lists {twice:?} more than once:\n{text}", path.join(" "));
        // Nested commands (`pitgun gateway keygen`, `pitgun manifest test`…).
        let commands = text.lines().skip_while(|l| !l.starts_with("Commands:")).skip(1).take_while(|l| l.starts_with("  "));
        for sub in commands.filter(|l| !l.starts_with("   ")) {
            if let Some(name) = sub.split_whitespace().next().filter(|n| *n != "help") {
                queue.push(path.iter().cloned().chain([name.to_string()]).collect());
            }
        }
        checked += 1;
    }
    assert!(checked >= 5);
}

/// A dictionary is held to the rules the engine runs by, and `validate` says so as `replay`
/// does: a metric id defined twice (the last won silently), a display unit that is not UCUM or
/// not the canonical unit's kind, a range that admits nothing, a deprecation pointing at no
/// metric, an alias carrying a dimension value its metric lacks (it could never be selected), an
/// alias unit that is not UCUM and a version range that does not parse. Each is named by line
/// and pointer; the schema allowed them all.
#[test]
fn a_dictionary_is_held_to_the_rules_replay_runs_by() {
    let text = std::fs::read_to_string(root().join("manifests/dictionary/racing.yaml")).unwrap();
    let cases = [
        ("  - id: vehicle.accel_long", "  - id: vehicle.speed", "/metrics/1/id", "metric vehicle.speed is already defined at /metrics/0"),
        ("display_unit: \"km/h\"", "display_unit: \"kmh\"", "/metrics/0/display_unit", "\"kmh\" is not valid UCUM"),
        ("range: {min: 0, max: 120}", "range: {min: 120, max: 0}", "/metrics/0/range", "min 120 is above max 0"),
        (
            "renamed_to: engine.water_temperature",
            "renamed_to: engine.water_temp",
            "/metrics/13/deprecation/renamed_to",
            "no metric engine.water_temp",
        ),
        (
            "tyre_fl_temp, unit: \"[degF]\", dimensions: {wheel: fl}",
            "tyre_fl_temp, unit: \"[degF]\", dimensions: {wheel: fx}",
            "/metrics/14/aliases/0/dimensions/wheel",
            "\"fx\" is not a value of wheel",
        ),
        ("channel: eng_temp, unit: \"[degF]\"", "channel: eng_temp, unit: \"[degX]\"", "/metrics/13/aliases/0/unit", "\"[degX]\" is not valid UCUM"),
        (
            "versions: \">=0.9.0, <1.0.0\", channel: eng_temp",
            "versions: \">=0.9.0, <<1\", channel: eng_temp",
            "/metrics/13/aliases/0/versions",
            "does not parse",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("racing.yaml");
    for (from, to, pointer, message) in cases {
        assert!(text.contains(from), "{from}");
        let bad = text.replacen(from, to, 1);
        let line = text[..text.find(from).unwrap()].matches('\n').count() + 1;
        std::fs::write(&path, &bad).unwrap();
        let expected = format!("racing.yaml:{line}: at {pointer}: ");
        let out = run(&["validate", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "validate, {to}: {stderr}");
        assert!(stderr.contains(&expected) && stderr.contains(message), "validate, {to}: expected {expected}…{message}, got {stderr}");
        let out = run(&["manifest", "contract", manifest("lap-performance").to_str().unwrap(), "--dictionary", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "compile, {to}");
        assert!(stderr.contains(&expected) && stderr.contains(message), "compile, {to}: expected {expected}…{message}, got {stderr}");
    }
}

/// The engine holds an envelope to the schema's limits and names, as the gateway and `publish`
/// do, so a service producing straight to Kafka cannot put on the stream what the gateway would
/// refuse: a 3,000-character session id made rows no PostgreSQL index could hold. Each such
/// event is refused as `invalid_envelope` with its pointer, and the rows are the rows without it.
#[test]
fn the_engine_holds_envelopes_to_the_schemas_limits() {
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "limits.ndjson", &[]);
    let text = std::fs::read_to_string(&data).unwrap();
    let sample = text.lines().find(|l| l.contains("\"kind\":\"sample\"")).unwrap();
    let fields: Value = serde_json::from_str(sample).unwrap();
    let (event_id, session) = (fields["event_id"].as_str().unwrap(), fields["session_id"].as_str().unwrap());
    let producer = fields["source"]["id"].as_str().unwrap();
    let long = |n: usize| "x".repeat(n);
    let cases = [
        ("\"session_id\"", format!("\"session_id\":\"{}\"", long(129)), format!("\"session_id\":\"{session}\""), "/session_id"),
        ("\"event_id\"", format!("\"event_id\":\"{}\"", long(129)), format!("\"event_id\":\"{event_id}\""), "/event_id"),
        ("source id", format!("\"id\":\"{}\"", producer.replace('-', " ")), format!("\"id\":\"{producer}\""), "/source/id"),
        ("dimension name", "\"dims\":{\"Weather\":\"dry\",".to_string(), "\"dims\":{".to_string(), "/dims/Weather"),
        ("dimension value", format!("\"dims\":{{\"weather\":\"{}\",", long(257)), "\"dims\":{".to_string(), "/dims/weather"),
        ("channel name", format!("\"channels\":{{\"{}\":1.0,", long(129)), "\"channels\":{".to_string(), "/channels/xxxx"),
    ];
    let mut bad = String::new();
    for (i, (what, to, from, _)) in cases.iter().enumerate() {
        assert!(sample.contains(from.as_str()), "{what}: {from}");
        // A fresh event id (unless the case is the event id), so only the rule can refuse it.
        let copy = if *what == "\"event_id\"" { sample.to_string() } else { sample.replacen(event_id, &format!("limits-{i}"), 1) };
        bad.push_str(&copy.replacen(from.as_str(), to, 1));
        bad.push('\n');
    }
    let with_bad = dir.path().join("with-bad.ndjson");
    std::fs::write(&with_bad, format!("{text}{bad}")).unwrap();
    let rejected = dir.path().join("rejected.ndjson");
    let rows = replay(&manifest("lap-performance"), &[&with_bad], &["--rejected", rejected.to_str().unwrap()]);
    assert_eq!(rows, replay(&manifest("lap-performance"), &[&data], &[]), "the rows are the rows without the refused events");
    let notes: Vec<Value> = std::fs::read_to_string(&rejected).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(notes.len(), cases.len(), "{notes:?}");
    for (note, (what, _, _, pointer)) in notes.iter().zip(&cases) {
        assert_eq!(note["reason"], "invalid_envelope", "{what}: {note}");
        assert!(note["detail"].as_str().unwrap().starts_with(&format!("at {pointer}")), "{what}: {note}");
    }
}

/// Each live command's `--help` gives its whole description, not only its first line: a doc on
/// the command's enum variant once replaced the long help its arguments' docs give (what
/// `publish` needs of its topic, what `tail --latest` prints, what `export` leaves out).
#[cfg(feature = "live")]
#[test]
fn every_live_command_help_gives_its_whole_description() {
    let cases = [
        ("process", "Checkpoints are atomic (state + offsets)"),
        ("publish", "The topic must exist"),
        ("tail", "With --latest, only the last version of each key is printed"),
        ("export", "partition by partition in offset order"),
        ("sink", "offsets are committed only after every target has committed the batch"),
        ("api", "Endpoints: GET /v1/runs"),
        ("topics", "Topics that exist are kept as they are"),
    ];
    for (command, phrase) in cases {
        let help = String::from_utf8_lossy(&ok(&[command, "--help"]).stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains(phrase), "pitgun {command} --help lacks {phrase:?}:\n{help}");
    }
}

/// Flags a run would not honour are refused, naming the flag, before anything is read: a
/// dictionary given with a bundle (the bundle's pinned one was used and --dictionary ignored), a
/// simulation rate out of range (the error named the simulator's field `rate_hz`, not the flag).
#[test]
fn flags_a_run_would_not_honour_are_refused_naming_the_flag() {
    let bundle = root().join("manifests/bundles/racing.v1.yaml");
    let dictionary = root().join("manifests/dictionary/racing.yaml");
    let sample = root().join("samples/racing-small.ndjson.zst");
    let out = run(&[
        "replay",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pipeline",
        "lap-performance",
        "--dictionary",
        dictionary.to_str().unwrap(),
        "--input",
        sample.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dictionary") && stderr.contains("--bundle"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.ndjson");
    // Posting flags are checked before anything is sent (the target is not listening).
    let target: &[&str] = &["--target", "http://127.0.0.1:1", "--api-key", "pitgun-sim=x", "--api-key", "pitgun-web=x", "--retry-for", "1s"];
    for (flag, value, says, more) in [
        ("--rate", "0", "more than 0 and at most 10000 per second, got 0", &[][..]),
        ("--rate", "fast", "\"fast\" is not a number", &[]),
        ("--health-rate", "2000", "from 0 (none) to 1000 per second, got 2000", &[]),
        ("--health-rate", "NaN", "got NaN", &[]),
        ("--target-rate", "0", "at least 0.001 envelopes per second, got 0", target),
        ("--target-rate", "-5", "at least 0.001 envelopes per second, got -5", target),
        ("--target-rate", "inf", "at least 0.001 envelopes per second, got inf", target),
        ("--target-rate", "1e-300", "at least 0.001 envelopes per second, got 0.000", target),
        ("--batch", "0", "at least 1", target),
        ("--concurrency", "0", "at least 1", target),
    ] {
        let mut args = vec!["simulate", "--sessions", "1", "--duration", "5s", flag, value, "--output", file.to_str().unwrap()];
        args.extend(more);
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(says), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("rate_hz"), "{flag} {value}: names the simulator's field: {stderr}");
        assert!(!file.exists(), "{flag} {value}: a refused run writes nothing");
    }
}

/// `tail --manifest` takes the manifest's name, where `process`, `sink` and `topics` take its
/// file: a file given there made a topic name that came back only as "does not exist".
#[cfg(feature = "live")]
#[test]
fn tail_refuses_a_manifest_file_where_it_takes_a_name() {
    let file = manifest("lap-performance");
    let out = run(&["tail", "--manifest", file.to_str().unwrap(), "--version", "1", "--brokers", "127.0.0.1:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("looks like a file") && stderr.contains("lap-performance"), "{stderr}");
}
