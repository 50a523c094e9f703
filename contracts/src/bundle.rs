//! `pitgun-bundle/v1`: a release — the dictionary, manifests and schemas pinned by content hash.

use serde::{Deserialize, Serialize};

/// The schema identifier of a v1 bundle manifest.
pub const BUNDLE_SCHEMA_V1: &str = "pitgun-bundle/v1";

/// What an operator deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_SCHEMA_V1`].
    pub schema: String,
    /// Bundle name.
    pub name: String,
    /// Semantic version of the release.
    pub version: String,
    /// What the release contains, for operators.
    #[serde(default)]
    pub description: String,
    /// The dictionary.
    pub dictionary: PinnedDocument,
    /// The pipeline manifests.
    pub pipelines: Vec<PinnedDocument>,
    /// The public schemas.
    pub schemas: Vec<PinnedSchema>,
}

/// A document pinned by path and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedDocument {
    /// Path relative to the bundle file.
    pub path: String,
    /// Name inside the document.
    pub name: String,
    /// Version inside the document (semantic version or manifest number).
    pub version: String,
    /// `sha256:<hex>` content hash.
    pub sha256: String,
}

impl PinnedDocument {
    /// The document found at the pin's path is the one pinned: its own `name` and `version`
    /// are the pin's. A hash alone says the bytes were not changed, not that the path leads to
    /// the document the pin's name promises (a pipeline asked for by name would run another).
    pub fn names(&self, name: &str, version: &str) -> Result<(), String> {
        if self.name == name && self.version == version {
            return Ok(());
        }
        Err(format!("{}: the document is {name} version {version}, but the bundle pins {} version {}", self.path, self.name, self.version))
    }
}

impl Bundle {
    /// The pin of the pipeline named `name`: an error when the bundle has none or pins the
    /// name more than once (which copy would run is not for the reader to guess).
    pub fn pipeline(&self, name: &str) -> Result<&PinnedDocument, String> {
        let mut pins = self.pipelines.iter().filter(|p| p.name == name);
        match (pins.next(), pins.next()) {
            (Some(pin), None) => Ok(pin),
            (Some(_), Some(_)) => Err(format!("bundle {} pins pipeline {name:?} more than once", self.name)),
            (None, _) => Err(format!("bundle {} has no pipeline {name:?}", self.name)),
        }
    }
}

/// A schema pinned by `$id` and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedSchema {
    /// The schema's `$id`.
    pub id: String,
    /// Path relative to the bundle file.
    pub path: String,
    /// `sha256:<hex>` content hash.
    pub sha256: String,
}
