//! Holds the public JSON Schemas in `schemas/`, their examples and the Rust types against each other.
//!
//! - Every valid example passes its schema, parses strictly into its Rust type, and the type
//!   serializes back into a document the schema still accepts (so the two cannot drift apart).
//! - Every invalid example is rejected with a violation at the JSON pointer its folder's
//!   `expected.json` names.
//! - The schemas are valid draft 2020-12 schemas whose `$ref`s all resolve offline; the Avro
//!   schema of the envelope has the JSON schema's fields; enums and defaults match the Rust types.
//! - The example bundle and pipelines pin the example documents by their real content hashes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use pitgun_contracts::analysis::{AnalysisContract, ColumnRole, ColumnType};
use pitgun_contracts::bundle::Bundle;
use pitgun_contracts::dictionary::{Dictionary, MetricKind, Stability, ValueType};
use pitgun_contracts::envelope::{Envelope, EventKind, SourceKind};
use pitgun_contracts::hash::content_hash;
use pitgun_contracts::load::{load_text, Loaded, SourceText};
use pitgun_contracts::manifest::{AggregateFn, Duration, PipelineManifest, SinkKind, TimePolicy, UnknownChannelPolicy, WindowDef};
use pitgun_contracts::schema::{schema, schemas, ContractKind, Validators, ENVELOPE_AVRO_SCHEMA};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const COMMON_NAME: &str = "pitgun-common";

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("schemas")
}

/// The example documents of one contract, `valid` or `invalid`, sorted by name.
fn examples(kind: ContractKind, which: &str) -> Vec<PathBuf> {
    let dir = schemas_dir().join(kind.schema_name()).join("examples").join(which);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name != "expected.json" && [".json", ".yaml", ".yml"].iter().any(|ext| name.ends_with(ext))
        })
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).expect("utf-8 file name").to_string()
}

fn read(path: &Path) -> SourceText {
    SourceText::read(path).unwrap_or_else(|e| panic!("{e}"))
}

fn parse(path: &Path) -> Value {
    read(path).parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Loads every valid example of `kind` as `T` and checks the round trip through the type.
fn check_valid<T>(kind: ContractKind) -> Vec<Loaded<T>>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let files = examples(kind, "valid");
    assert!(files.len() >= 2, "{}: want at least two valid examples, found {}", kind.tag(), files.len());
    let validators = Validators::get();
    files
        .iter()
        .map(|path| {
            let name = path.display();
            let violations = validators.validate(kind, &parse(path));
            assert!(violations.is_empty(), "{name} should be valid, but: {violations:#?}");

            let loaded: Loaded<T> = load_text(kind, read(path)).unwrap_or_else(|e| panic!("{name} does not load: {e}"));

            let back = serde_json::to_value(&loaded.doc).expect("a contract type always serializes");
            let violations = validators.validate(kind, &back);
            assert!(violations.is_empty(), "{name}: the re-serialized {} no longer validates: {violations:#?}\n{back:#}", std::any::type_name::<T>());
            let again: T = serde_json::from_value(back).unwrap_or_else(|e| panic!("{name}: the re-serialized document does not parse: {e}"));
            assert_eq!(again, loaded.doc, "{name}: serialize → parse is not the identity");
            loaded
        })
        .collect()
}

/// Checks every invalid example of `kind` is rejected at its expected pointer.
fn check_invalid<T>(kind: ContractKind)
where
    T: DeserializeOwned + Debug,
{
    let dir = schemas_dir().join(kind.schema_name()).join("examples").join("invalid");
    let expected_path = dir.join("expected.json");
    let expected: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())))
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));

    let files = examples(kind, "invalid");
    let names: BTreeSet<String> = files.iter().map(|p| file_name(p)).collect();
    let listed: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(names, listed, "{}: invalid examples and expected.json must name the same files", dir.display());
    for case in ["wrong-type", "missing-required", "unknown-field", "out-of-range"] {
        assert!(names.iter().any(|n| n.starts_with(case)), "{}: no `{case}` invalid example", dir.display());
    }

    let validators = Validators::get();
    for path in &files {
        let name = path.display();
        let pointer = &expected[&file_name(path)];
        let violations = validators.validate(kind, &parse(path));
        assert!(!violations.is_empty(), "{name} should be invalid but passes the schema");
        assert!(violations.iter().any(|v| &v.pointer == pointer), "{name}: expected a violation at {pointer:?}, got {violations:#?}");

        let err = load_text::<T>(kind, read(path)).expect_err(&format!("{name} should not load"));
        let issue = err.issues().iter().find(|i| &i.pointer == pointer).unwrap_or_else(|| panic!("{name}: no issue at {pointer:?} in {err}"));
        assert!(issue.line.is_some(), "{name}: the issue at {pointer:?} has no line");
    }
}

#[test]
fn envelope_examples() {
    check_valid::<Envelope>(ContractKind::Envelope);
    check_invalid::<Envelope>(ContractKind::Envelope);
}

#[test]
fn dictionary_examples() {
    check_valid::<Dictionary>(ContractKind::Dictionary);
    check_invalid::<Dictionary>(ContractKind::Dictionary);
}

#[test]
fn pipeline_examples() {
    let loaded = check_valid::<PipelineManifest>(ContractKind::Pipeline);
    check_invalid::<PipelineManifest>(ContractKind::Pipeline);

    // Together the valid examples show every window kind and every aggregate function.
    let windows: BTreeSet<&str> = loaded.iter().map(|l| l.doc.window.kind_name()).collect();
    assert_eq!(windows, BTreeSet::from(["tumbling", "hopping", "session", "segment", "global"]));
    let functions: BTreeSet<String> =
        loaded.iter().flat_map(|l| &l.doc.aggregations).map(|a| serde_json::to_value(a.function).unwrap().as_str().unwrap().to_string()).collect();
    let all_functions: BTreeSet<String> = schema_enum("pitgun-pipeline", "/$defs/aggregation/properties/fn/enum");
    assert_eq!(functions, all_functions, "the pipeline examples should use every aggregate function");
}

#[test]
fn bundle_examples() {
    check_valid::<Bundle>(ContractKind::Bundle);
    check_invalid::<Bundle>(ContractKind::Bundle);
}

#[test]
fn analysis_examples() {
    check_valid::<AnalysisContract>(ContractKind::Analysis);
    check_invalid::<AnalysisContract>(ContractKind::Analysis);
}

/// A pin must equal the content hash; the message gives the hash to write instead.
fn assert_pin(what: &str, pinned: &str, actual: &str) {
    assert_eq!(pinned, actual, "{what} is pinned as {pinned}, but its content hash is {actual}");
}

#[test]
fn example_pins_are_real_content_hashes() {
    let dictionaries: BTreeMap<(String, String), String> = examples(ContractKind::Dictionary, "valid")
        .iter()
        .map(|p| {
            let l = load_text::<Dictionary>(ContractKind::Dictionary, read(p)).unwrap();
            ((l.doc.name.clone(), l.doc.version.clone()), l.hash)
        })
        .collect();
    for path in examples(ContractKind::Pipeline, "valid") {
        let l = load_text::<PipelineManifest>(ContractKind::Pipeline, read(&path)).unwrap();
        let pin = &l.doc.dictionary;
        let hash = dictionaries
            .get(&(pin.name.clone(), pin.version.clone()))
            .unwrap_or_else(|| panic!("{}: pins {}@{}, not an example dictionary", path.display(), pin.name, pin.version));
        assert_pin(&format!("{}: dictionary {}@{}", path.display(), pin.name, pin.version), &pin.sha256, hash);
    }

    for path in examples(ContractKind::Bundle, "valid") {
        let bundle = load_text::<Bundle>(ContractKind::Bundle, read(&path)).unwrap().doc;
        let base = path.parent().unwrap();
        let what = |p: &str| format!("{}: {p}", path.display());

        let d = &bundle.dictionary;
        let dict = load_text::<Dictionary>(ContractKind::Dictionary, read(&base.join(&d.path))).unwrap_or_else(|e| panic!("{}: {e}", what(&d.path)));
        assert_eq!((&d.name, &d.version), (&dict.doc.name, &dict.doc.version), "{}", what(&d.path));
        assert_pin(&what(&d.path), &d.sha256, &dict.hash);

        for p in &bundle.pipelines {
            let manifest =
                load_text::<PipelineManifest>(ContractKind::Pipeline, read(&base.join(&p.path))).unwrap_or_else(|e| panic!("{}: {e}", what(&p.path)));
            assert_eq!((&p.name, &p.version), (&manifest.doc.name, &manifest.doc.version.to_string()), "{}", what(&p.path));
            assert_pin(&what(&p.path), &p.sha256, &manifest.hash);
            let pin = &manifest.doc.dictionary;
            assert_eq!(
                (&pin.name, &pin.version, &pin.sha256),
                (&d.name, &d.version, &d.sha256),
                "{}: the pipeline pins another dictionary than the bundle",
                what(&p.path)
            );
        }

        for s in &bundle.schemas {
            let value = parse(&base.join(&s.path));
            assert_eq!(value["$id"], json!(s.id), "{}", what(&s.path));
            assert!(schemas().iter().any(|e| e.id == s.id), "{}: not an embedded schema", what(&s.path));
            assert_pin(&what(&s.path), &s.sha256, &content_hash(&value));
        }
    }
}

#[test]
fn schemas_are_valid_draft_2020_12_and_resolve_offline() {
    let ids: BTreeMap<&str, &Value> = schemas().iter().map(|s| (s.id.as_str(), &s.value)).collect();
    assert_eq!(ids.len(), 6, "common + five contracts");
    for s in schemas() {
        assert_eq!(s.value["$schema"], json!("https://json-schema.org/draft/2020-12/schema"), "{}", s.id);
        if let Err(e) = jsonschema::meta::validate(&s.value) {
            panic!("{} is not a valid draft 2020-12 schema: {e} at {}", s.id, e.instance_path());
        }
        // Every $ref names an embedded schema and a node that exists in it.
        let mut refs = Vec::new();
        collect_refs(&s.value, &mut refs);
        for r in refs {
            let (base, fragment) = r.split_once('#').unwrap_or((r.as_str(), ""));
            let target =
                if base.is_empty() { &s.value } else { ids.get(base).unwrap_or_else(|| panic!("{}: $ref {r} is not an embedded schema", s.id)) };
            assert!(target.pointer(fragment).is_some(), "{}: $ref {r} points at nothing", s.id);
        }
    }
    // Compiling resolves every reference through the embedded retriever; it panics otherwise.
    let validators = Validators::get();
    // A cross-schema reference really applies: the envelope inside a pipeline test case.
    let mut manifest = parse(&schemas_dir().join("pitgun-pipeline/examples/valid/speed-trace.yaml"));
    manifest["tests"][0]["input"][0]["seq"] = json!(-1);
    let violations = validators.validate(ContractKind::Pipeline, &manifest);
    assert!(violations.iter().any(|v| v.pointer == "/tests/0/input/0/seq"), "{violations:#?}");
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Every property of every schema (wherever a `properties` keyword appears) has a description.
#[test]
fn every_property_is_described() {
    fn walk(id: &str, at: &str, value: &Value, missing: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (name, sub) in props {
                        let described = sub.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty());
                        // `true` re-admits a property described where the object is defined;
                        // `false` forbids one there.
                        if !described && !sub.is_boolean() {
                            missing.push(format!("{id}#{at}/properties/{name}"));
                        }
                    }
                }
                for (k, v) in map {
                    // An `if` only tests values; it defines nothing a reader needs described.
                    if k != "if" {
                        walk(id, &format!("{at}/{k}"), v, missing);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(id, &format!("{at}/{i}"), v, missing);
                }
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for s in schemas() {
        walk(&s.id, "", &s.value, &mut missing);
    }
    assert!(missing.is_empty(), "properties without a description: {missing:#?}");
}

/// Every keyword is a draft 2020-12 keyword: a misspelt one (`minLenght`) would be ignored silently.
#[test]
fn schemas_use_only_known_keywords() {
    const KNOWN: &[&str] = &[
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "type",
        "const",
        "enum",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "patternProperties",
        "unevaluatedProperties",
        "dependentRequired",
        "dependentSchemas",
        "minProperties",
        "maxProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
    ];
    fn check(id: &str, at: &str, schema: &Value, unknown: &mut Vec<String>) {
        let Value::Object(map) = schema else { return };
        for (k, v) in map {
            let here = format!("{at}/{k}");
            if !KNOWN.contains(&k.as_str()) {
                unknown.push(format!("{id}#{here}"));
            }
            match k.as_str() {
                "properties" | "$defs" | "patternProperties" | "dependentSchemas" => {
                    for (name, sub) in v.as_object().into_iter().flatten() {
                        check(id, &format!("{here}/{name}"), sub, unknown);
                    }
                }
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    for (i, sub) in v.as_array().into_iter().flatten().enumerate() {
                        check(id, &format!("{here}/{i}"), sub, unknown);
                    }
                }
                "items" | "additionalProperties" | "propertyNames" | "unevaluatedProperties" | "contains" | "not" | "if" | "then" | "else" => {
                    check(id, &here, v, unknown)
                }
                _ => {}
            }
        }
    }
    let mut unknown = Vec::new();
    for s in schemas() {
        check(&s.id, "", &s.value, &mut unknown);
    }
    assert!(unknown.is_empty(), "unknown keywords: {unknown:#?}");
}

fn schema_value(name: &str) -> &'static Value {
    &schema(name, 1).unwrap_or_else(|| panic!("no embedded schema {name}/v1")).value
}

fn schema_enum(name: &str, pointer: &str) -> BTreeSet<String> {
    schema_value(name)
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{name}#{pointer} is not an enum"))
        .iter()
        .map(|v| v.as_str().expect("string enum").to_string())
        .collect()
}

fn object_keys(value: &Value) -> Vec<String> {
    value.as_object().expect("an object").keys().cloned().collect()
}

#[test]
fn avro_envelope_has_the_json_envelope_fields() {
    let avro: Value = serde_json::from_str(ENVELOPE_AVRO_SCHEMA).expect("the .avsc is JSON");
    assert_eq!((&avro["type"], &avro["namespace"], &avro["name"]), (&json!("record"), &json!("io.pitgun"), &json!("Envelope")));

    let json_schema = schema_value("pitgun-envelope");
    let names =
        |fields: &Value| -> Vec<String> { fields.as_array().expect("fields").iter().map(|f| f["name"].as_str().unwrap().to_string()).collect() };
    assert_eq!(names(&avro["fields"]), object_keys(&json_schema["properties"]), "envelope fields, in order");

    // Fields without an Avro default are exactly the JSON-required ones.
    let avro_required: BTreeSet<String> =
        avro["fields"].as_array().unwrap().iter().filter(|f| f.get("default").is_none()).map(|f| f["name"].as_str().unwrap().to_string()).collect();
    let json_required: BTreeSet<String> = json_schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(avro_required, json_required);

    let field = |name: &str| -> &Value { avro["fields"].as_array().unwrap().iter().find(|f| f["name"] == json!(name)).unwrap() };
    let source = &field("source")["type"];
    assert_eq!(names(&source["fields"]), object_keys(&json_schema["$defs"]["source"]["properties"]));
    let symbols = |t: &Value| -> BTreeSet<String> { t["symbols"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect() };
    assert_eq!(symbols(&source["fields"][0]["type"]), schema_enum("pitgun-envelope", "/$defs/source/properties/kind/enum"));
    assert_eq!(symbols(&field("kind")["type"]), schema_enum("pitgun-common", "/$defs/eventKind/enum"));
    assert_eq!(field("time_us")["type"], json!({"type": "long", "logicalType": "timestamp-micros"}));
    assert_eq!(field("seq")["type"], json!("long"));
    assert_eq!(field("channels")["type"], json!({"type": "map", "values": ["double", "boolean"]}));
    assert_eq!(field("dims")["type"], json!({"type": "map", "values": "string"}));
}

/// Asserts that a Rust enum's wire names are exactly a schema `enum`. The `match` is exhaustive,
/// so adding a variant to the Rust type fails to compile here until the schema follows.
macro_rules! enum_matches_schema {
    ($ty:ident, [$($variant:ident),+ $(,)?], $schema:expr, $pointer:expr) => {{
        fn _exhaustive(v: $ty) {
            match v { $($ty::$variant)|+ => {} }
        }
        let rust: BTreeSet<String> = [$($ty::$variant),+]
            .iter()
            .map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_string())
            .collect();
        assert_eq!(rust, schema_enum($schema, $pointer), "{} vs {}#{}", stringify!($ty), $schema, $pointer);
    }};
}

#[test]
fn enums_match_the_rust_types() {
    enum_matches_schema!(SourceKind, [Game, Simulator, Device, Replay], "pitgun-envelope", "/$defs/source/properties/kind/enum");
    enum_matches_schema!(
        EventKind,
        [Sample, Lap, Sector, PitIn, PitOut, SessionStart, SessionEnd, Health, Marker],
        COMMON_NAME,
        "/$defs/eventKind/enum"
    );
    let wire: BTreeSet<String> = EventKind::ALL.iter().map(|k| k.as_str().to_string()).collect();
    assert_eq!(wire, schema_enum(COMMON_NAME, "/$defs/eventKind/enum"));
    enum_matches_schema!(MetricKind, [Gauge, Counter, State, Event], "pitgun-dictionary", "/$defs/metric/properties/kind/enum");
    enum_matches_schema!(ValueType, [Float, Int, Bool], "pitgun-dictionary", "/$defs/metric/properties/type/enum");
    enum_matches_schema!(Stability, [Experimental, Stable, Deprecated], "pitgun-dictionary", "/$defs/metric/properties/stability/enum");
    enum_matches_schema!(UnknownChannelPolicy, [Drop, Keep, Reject], "pitgun-pipeline", "/$defs/input/properties/unknown_channels/enum");
    enum_matches_schema!(
        AggregateFn,
        [Count, Sum, Min, Max, Mean, First, Last, Stddev, Percentile, Duration, Missing],
        "pitgun-pipeline",
        "/$defs/aggregation/properties/fn/enum"
    );
    enum_matches_schema!(SinkKind, [Questdb, Postgres], "pitgun-pipeline", "/$defs/sink/properties/kind/enum");
    enum_matches_schema!(ColumnType, [String, Int, Float, Bool, Timestamp], "pitgun-analysis", "/$defs/column/properties/type/enum");
    enum_matches_schema!(ColumnRole, [Id, Key, Window, Measure, Flag], "pitgun-analysis", "/$defs/column/properties/role/enum");

    let second = Duration::from_secs(1);
    let windows = [
        WindowDef::Tumbling { size: second },
        WindowDef::Hopping { size: second, hop: second },
        WindowDef::Session { gap: second },
        WindowDef::Segment { field: "lap".into() },
        WindowDef::Global,
    ];
    let kinds: BTreeSet<String> = windows
        .iter()
        .map(|w| {
            // Exhaustive: a new window kind fails to compile here until it is listed above.
            match w {
                WindowDef::Tumbling { .. }
                | WindowDef::Hopping { .. }
                | WindowDef::Session { .. }
                | WindowDef::Segment { .. }
                | WindowDef::Global => {}
            }
            // The serde tag and the kind name agree.
            assert_eq!(serde_json::to_value(w).unwrap()["kind"], json!(w.kind_name()));
            w.kind_name().to_string()
        })
        .collect();
    assert_eq!(kinds, schema_enum(COMMON_NAME, "/$defs/windowKind/enum"));
}

#[test]
fn schema_defaults_are_the_rust_defaults() {
    let pipeline = schema_value("pitgun-pipeline");
    let time = serde_json::to_value(TimePolicy::default()).unwrap();
    let props = &pipeline["$defs"]["timePolicy"]["properties"];
    assert_eq!(object_keys(&time), object_keys(props));
    for (name, value) in time.as_object().unwrap() {
        assert_eq!(&props[name]["default"], value, "default of time.{name}");
    }
    assert_eq!(
        pipeline["$defs"]["input"]["properties"]["unknown_channels"]["default"],
        serde_json::to_value(UnknownChannelPolicy::default()).unwrap()
    );
    // A derived value without a unit is dimensionless.
    let derived: pitgun_contracts::manifest::DerivedDef = serde_json::from_value(json!({"name": "x", "formula": "1.0"})).unwrap();
    assert_eq!(pipeline["$defs"]["derived"]["properties"]["unit"]["default"], json!(derived.unit));
}

#[test]
fn durations_the_schema_accepts_parse_and_print_back_accepted() {
    let validator = jsonschema::draft202012::new(&schema_value(COMMON_NAME)["$defs"]["duration"]).unwrap();
    for text in ["0s", "1us", "250ms", "2s", "1.5s", "5m", "1h", "36h", "0.25ms"] {
        assert!(validator.is_valid(&json!(text)), "{text} should match the schema");
        let parsed = Duration::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let printed = parsed.to_string();
        assert!(validator.is_valid(&json!(printed)), "{text} prints as {printed}, which the schema rejects");
        assert_eq!(Duration::parse(&printed).unwrap(), parsed, "{text} → {printed}");
    }
    for text in ["", "2", "s", "2 s", "-1s", "2sec", "1e3ms", ".5s", "2S"] {
        assert!(!validator.is_valid(&json!(text)), "{text:?} should not match the schema");
    }
}
