//! The embedded JSON Schemas and a validator that resolves every `$ref` from them, offline.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

/// Base of every Pitgun schema `$id`: `<BASE><name>/v<N>`.
pub const SCHEMA_ID_BASE: &str = "https://api.pitgun.io/schemas/";

/// The five public contracts (plus shared definitions), as `(name, version, text)`.
const EMBEDDED: &[(&str, u32, &str)] = &[
    ("pitgun-common", 1, include_str!("../../schemas/pitgun-common/v1.json")),
    ("pitgun-envelope", 1, include_str!("../../schemas/pitgun-envelope/v1.json")),
    ("pitgun-dictionary", 1, include_str!("../../schemas/pitgun-dictionary/v1.json")),
    ("pitgun-pipeline", 1, include_str!("../../schemas/pitgun-pipeline/v1.json")),
    ("pitgun-bundle", 1, include_str!("../../schemas/pitgun-bundle/v1.json")),
    ("pitgun-analysis", 1, include_str!("../../schemas/pitgun-analysis/v1.json")),
];

/// The Avro schema of the envelope, for Kafka topics and dataset files.
pub const ENVELOPE_AVRO_SCHEMA: &str = include_str!("../../schemas/pitgun-envelope/v1.avsc");

/// Which contract a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContractKind {
    /// `pitgun-envelope/v1`
    Envelope,
    /// `pitgun-dictionary/v1`
    Dictionary,
    /// `pitgun-pipeline/v1`
    Pipeline,
    /// `pitgun-bundle/v1`
    Bundle,
    /// `pitgun-analysis/v1`
    Analysis,
}

impl ContractKind {
    /// Every contract.
    pub const ALL: [ContractKind; 5] =
        [ContractKind::Envelope, ContractKind::Dictionary, ContractKind::Pipeline, ContractKind::Bundle, ContractKind::Analysis];

    /// The schema name, e.g. `pitgun-pipeline`.
    pub fn schema_name(self) -> &'static str {
        match self {
            ContractKind::Envelope => "pitgun-envelope",
            ContractKind::Dictionary => "pitgun-dictionary",
            ContractKind::Pipeline => "pitgun-pipeline",
            ContractKind::Bundle => "pitgun-bundle",
            ContractKind::Analysis => "pitgun-analysis",
        }
    }

    /// The value of the `schema` field documents of this contract carry, e.g. `pitgun-pipeline/v1`.
    pub fn tag(self) -> String {
        format!("{}/v1", self.schema_name())
    }

    /// Recognises a document by its `schema` field.
    pub fn of_document(doc: &Value) -> Option<ContractKind> {
        let tag = doc.get("schema")?.as_str()?;
        ContractKind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// A schema with its `$id`.
#[derive(Debug, Clone)]
pub struct SchemaDoc {
    /// Name, e.g. `pitgun-envelope`.
    pub name: &'static str,
    /// Version number.
    pub version: u32,
    /// `$id`.
    pub id: String,
    /// The parsed schema.
    pub value: Value,
}

/// All embedded schemas, parsed once.
pub fn schemas() -> &'static [SchemaDoc] {
    static ALL: OnceLock<Vec<SchemaDoc>> = OnceLock::new();
    ALL.get_or_init(|| {
        EMBEDDED
            .iter()
            .map(|(name, version, text)| {
                let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("embedded schema {name}/v{version} is not JSON: {e}"));
                let id = value["$id"].as_str().unwrap_or_default().to_string();
                assert_eq!(id, format!("{SCHEMA_ID_BASE}{name}/v{version}"), "schema $id of {name}");
                SchemaDoc { name, version: *version, id, value }
            })
            .collect()
    })
}

/// Looks a schema up by name and version.
pub fn schema(name: &str, version: u32) -> Option<&'static SchemaDoc> {
    schemas().iter().find(|s| s.name == name && s.version == version)
}

/// Resolves `$ref`s to the embedded schemas only; any other URI is an error, never a fetch.
struct EmbeddedRetriever {
    by_id: BTreeMap<String, Value>,
}

impl jsonschema::Retrieve for EmbeddedRetriever {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str().trim_end_matches('#');
        self.by_id.get(key).cloned().ok_or_else(|| format!("schema {key} is not one of Pitgun's embedded schemas").into())
    }
}

/// One schema violation: JSON pointer and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the instance.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Compiled validators for every contract.
pub struct Validators {
    by_kind: BTreeMap<ContractKind, jsonschema::Validator>,
}

impl Validators {
    /// The process-wide validators (compiled once).
    pub fn get() -> &'static Validators {
        static V: OnceLock<Validators> = OnceLock::new();
        V.get_or_init(|| {
            let by_id: BTreeMap<String, Value> = schemas().iter().map(|s| (s.id.clone(), s.value.clone())).collect();
            let retriever = Arc::new(EmbeddedRetriever { by_id });
            let by_kind = ContractKind::ALL
                .into_iter()
                .map(|kind| {
                    let doc = schema(kind.schema_name(), 1).expect("embedded");
                    let validator = jsonschema::draft202012::options()
                        .with_retriever(SharedRetriever(retriever.clone()))
                        .build(&doc.value)
                        .unwrap_or_else(|e| panic!("schema {} does not compile: {e}", doc.id));
                    (kind, validator)
                })
                .collect();
            Validators { by_kind }
        })
    }

    /// Every violation of `kind`'s schema in `doc`, in document order.
    pub fn validate(&self, kind: ContractKind, doc: &Value) -> Vec<Violation> {
        let mut out: Vec<Violation> =
            self.by_kind[&kind].iter_errors(doc).map(|e| Violation { pointer: e.instance_path().to_string(), message: e.to_string() }).collect();
        out.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        out
    }
}

struct SharedRetriever(Arc<EmbeddedRetriever>);

impl jsonschema::Retrieve for SharedRetriever {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.0.retrieve(uri)
    }
}
