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
