//! `manifests/dictionary/racing.yaml` is a valid dictionary, every unit in it is UCUM, and the
//! simulator sends exactly what its aliases promise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pitgun_contracts::dictionary::{Alias, Dictionary, MetricDef, MetricKind, Stability, ValueType};
use pitgun_contracts::envelope::ChannelValue;
use pitgun_contracts::schema::ContractKind;
use pitgun_workload::{channels, simulate, Faults, Record, SimConfig};
use semver::{Version, VersionReq};

const SIMULATED: [(&str, &str); 3] = [("pitgun-web", "0.9.5"), ("pitgun-web", "1.4.2"), ("pitgun-sim", "2.1.0")];

fn dictionary() -> Dictionary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/dictionary/racing.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn metric<'a>(d: &'a Dictionary, id: &str) -> &'a MetricDef {
    d.metrics.iter().find(|m| m.id == id).unwrap_or_else(|| panic!("no metric {id}"))
}

fn matches(alias: &Alias, producer: &str, version: &str) -> bool {
    alias.producer == producer && VersionReq::parse(&alias.versions).unwrap().matches(&Version::parse(version).unwrap())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn the_dictionary_passes_the_contract_loader() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/dictionary/racing.yaml");
    let loaded = pitgun_contracts::load::load::<Dictionary>(ContractKind::Dictionary, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.doc, dictionary());
}

#[test]
fn the_dictionary_is_complete_and_well_formed() {
    let d = dictionary();
    assert_eq!((d.schema.as_str(), d.name.as_str(), d.version.as_str()), ("pitgun-dictionary/v1", "racing", "1.0.0"));
    assert!(d.metrics.len() >= 32, "{} metrics", d.metrics.len());
    let ids: BTreeSet<_> = d.metrics.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), d.metrics.len(), "ids are unique");
    for m in &d.metrics {
        let id_ok = m.id.split('.').count() >= 2
            && m.id.split('.').all(|p| {
                p.starts_with(|c: char| c.is_ascii_lowercase()) && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        assert!(id_ok, "{}: ids are dotted lowercase", m.id);
        ucum::validate(&m.unit).unwrap_or_else(|e| panic!("{}: unit {}: {e}", m.id, m.unit));
        assert!(ucum::is_comparable(&m.unit, &m.display_unit).unwrap(), "{}: display unit", m.id);
        let range = m.range.unwrap_or_else(|| panic!("{}: range", m.id));
        assert!(range.min < range.max, "{}", m.id);
        let res = m.resolution.unwrap_or_else(|| panic!("{}: resolution", m.id));
        assert!(close(10f64.powi(res.log10().round() as i32), res), "{}: resolution {res} is a power of ten", m.id);
        assert!(m.nominal_rate_hz.is_some() || m.kind == MetricKind::Event, "{}: rate", m.id);
        assert!(!m.brief.is_empty() && !m.quantity.is_empty());
        Version::parse(&m.since).unwrap();
        assert_eq!(m.stability == Stability::Deprecated, m.deprecation.is_some(), "{}", m.id);
        if let Some(dep) = &m.deprecation {
            Version::parse(&dep.since).unwrap();
            assert!(ids.contains(dep.renamed_to.as_deref().unwrap()), "{}: renamed_to", m.id);
        }
        if m.value_type == ValueType::Bool {
            assert_eq!((range.min, range.max), (0.0, 1.0));
        }
        assert!(!m.aliases.is_empty(), "{}: aliases", m.id);
        for dim in &m.dimensions {
            let values: BTreeSet<_> = dim.values.iter().collect();
            assert_eq!(values.len(), dim.values.len(), "{}: {}", m.id, dim.name);
        }
        for a in &m.aliases {
            ucum::validate(&a.unit).unwrap_or_else(|e| panic!("{} {}: unit {}: {e}", m.id, a.channel, a.unit));
            assert!(ucum::is_comparable(&a.unit, &m.unit).unwrap(), "{} {}: {} vs {}", m.id, a.channel, a.unit, m.unit);
            VersionReq::parse(&a.versions).unwrap_or_else(|e| panic!("{} {}: {e}", m.id, a.channel));
            assert_eq!(a.dimensions.len(), m.dimensions.len(), "{} {}: one value per dimension", m.id, a.channel);
            for (name, value) in &a.dimensions {
                let dim = m.dimensions.iter().find(|d| &d.name == name).expect("known dimension");
                assert!(dim.values.contains(value), "{} {}: {name}={value}", m.id, a.channel);
            }
        }
    }
    assert_eq!(d.metrics.iter().filter(|m| m.deprecation.is_some()).count(), 1);

    // The metrics the brief asks for, in the units it asks for.
    let required = [
        ("vehicle.speed", "m/s"),
        ("vehicle.accel_long", "[g]"),
        ("vehicle.accel_lat", "[g]"),
        ("vehicle.yaw_rate", "rad/s"),
        ("driver.throttle", "1"),
        ("driver.brake", "1"),
        ("driver.clutch", "1"),
        ("driver.steer", "1"),
        ("driver.gear", "1"),
        ("engine.rpm", "/min"),
        ("engine.water_temperature", "Cel"),
        ("engine.oil_temperature", "Cel"),
        ("tyre.surface_temperature", "Cel"),
        ("tyre.inner_temperature", "Cel"),
        ("tyre.pressure", "kPa"),
        ("tyre.wear", "1"),
        ("lap.number", "1"),
        ("lap.distance", "m"),
        ("lap.sector", "1"),
        ("race.position", "1"),
        ("pit.status", "1"),
        ("lap.current_time", "s"),
        ("lap.last_time", "s"),
        ("client.fps", "/s"),
        ("client.frame_time", "ms"),
        ("client.rtt", "ms"),
        ("client.dropped_frames", "1"),
    ];
    for (id, unit) in required {
        assert_eq!(metric(&d, id).unit, unit, "{id}");
    }
    assert_eq!(metric(&d, "driver.gear").value_type, ValueType::Int);
    assert_eq!(metric(&d, "lap.last_time").kind, MetricKind::Event);
    assert_eq!(metric(&d, "client.dropped_frames").kind, MetricKind::Counter);
    assert_eq!(metric(&d, "driver.steer").range.unwrap().min, -1.0);
    for id in ["tyre.surface_temperature", "tyre.inner_temperature", "tyre.pressure", "tyre.wear"] {
        let m = metric(&d, id);
        assert_eq!(m.dimensions[0].name, "wheel");
        assert_eq!(m.dimensions[0].values, ["fl", "fr", "rl", "rr"]);
    }
}

#[test]
fn each_producer_version_has_one_metric_per_channel() {
    let d = dictionary();
    for (producer, version) in SIMULATED {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for m in &d.metrics {
            for a in m.aliases.iter().filter(|a| matches(a, producer, version)) {
                if let Some(other) = seen.insert(&a.channel, &m.id) {
                    panic!("{producer} {version}: {} is both {other} and {}", a.channel, m.id);
                }
            }
        }
        assert!(seen.len() >= 40, "{producer} {version}: {} channels", seen.len());
    }
}

#[test]
fn the_simulator_sends_what_the_aliases_promise() {
    let d = dictionary();
    let sent = channels();
    for c in &sent {
        let m = metric(&d, c.metric);
        let alias = m
            .aliases
            .iter()
            .find(|a| a.channel == c.channel && matches(a, c.producer, c.version))
            .unwrap_or_else(|| panic!("{}@{} sends {} but no alias of {} says so", c.producer, c.version, c.channel, c.metric));
        assert_eq!(alias.unit, c.unit, "{}", c.channel);
        let dims: Vec<_> = alias.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(dims, c.dimension.into_iter().collect::<Vec<_>>(), "{}", c.channel);
        for x in [0.0, 1.0, 37.5, 100.0] {
            let ucum = ucum::convert(x, &m.unit, &alias.unit).unwrap();
            assert!(close(ucum, x * c.scale + c.offset), "{}: {x} {} is {ucum} {}", c.channel, m.unit, alias.unit);
        }
    }
    // … and every alias of a simulated version is sent.
    for (producer, version) in SIMULATED {
        for m in &d.metrics {
            for a in m.aliases.iter().filter(|a| matches(a, producer, version)) {
                let found = sent.iter().any(|c| c.producer == producer && c.version == version && c.channel == a.channel);
                assert!(found, "{producer}@{version} never sends {} ({})", a.channel, m.id);
            }
        }
    }
}

/// Every value of a clean run lies inside its metric's range once converted back, every int is
/// an int and every bool a bool; with `out_of_range` faults, values leave the range.
#[test]
fn simulated_values_respect_the_ranges() {
    let d = dictionary();
    let table: BTreeMap<(&str, &str, &str), _> = channels().into_iter().map(|c| ((c.producer, c.version, c.channel), c)).collect();
    let check = |faults: &str| {
        let config = SimConfig { faults: Faults::parse_list(faults).unwrap(), ..SimConfig::new(6, 150_000_000, 77) };
        let (mut inside, mut outside) = (0u64, 0u64);
        let mut metrics_seen: BTreeSet<&str> = BTreeSet::new();
        simulate(&config, |r| {
            let Record::Envelope(e) = r else { panic!("no malformed records without the fault") };
            for (name, value) in &e.channels {
                let c =
                    table.get(&(e.source.id.as_str(), e.source.version.as_str(), name.as_str())).unwrap_or_else(|| panic!("unknown channel {name}"));
                let m = metric(&d, c.metric);
                metrics_seen.insert(c.metric);
                let canonical = (value.as_f64() - c.offset) / c.scale;
                let range = m.range.unwrap();
                let slack = m.resolution.unwrap();
                if canonical < range.min - slack || canonical > range.max + slack {
                    outside += 1;
                } else {
                    inside += 1;
                }
                match m.value_type {
                    ValueType::Bool => assert!(matches!(value, ChannelValue::Bool(_)), "{name}"),
                    ValueType::Int => assert_eq!(canonical, canonical.round(), "{name}"),
                    ValueType::Float => assert!(matches!(value, ChannelValue::Number(_))),
                }
            }
        });
        (inside, outside, metrics_seen)
    };
    let (inside, outside, seen) = check("");
    assert_eq!(outside, 0, "{outside} of {} values out of range", inside + outside);
    let missing: Vec<_> = d.metrics.iter().filter(|m| !seen.contains(m.id.as_str())).map(|m| &m.id).collect();
    assert!(missing.is_empty(), "never simulated: {missing:?}");
    let (_, outside, _) = check("out_of_range=0.01");
    assert!(outside > 100, "{outside}");
}
