//! The canonical definitions API: schemas, the dictionary and the manifests, as JSON with ETags.
//!
//! Everything is read and rendered once at start, so a request is a map lookup: the body bytes
//! and a strong ETag (a hash of exactly those bytes) are ready, and `If-None-Match` answers 304
//! without a body. Schemas are the ones compiled into this binary — the very documents the
//! gateway validates with, so what it serves and what it enforces cannot differ — and they are
//! the files of `schemas/` at build time. The dictionary and the manifests are read from disk.

use std::collections::BTreeMap;
use std::path::Path;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::schema::ContractKind;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One served document.
#[derive(Clone)]
struct Resource {
    body: Bytes,
    etag: HeaderValue,
}

impl Resource {
    fn new(value: &Value) -> Resource {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        let digest = Sha256::digest(&body);
        let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16]))).unwrap_or(HeaderValue::from_static("\"\""));
        Resource { body: Bytes::from(body), etag }
    }
}

/// The documents, by request path.
pub struct Definitions {
    by_path: BTreeMap<String, Resource>,
    /// What exists, for 404 messages: (path prefix, human list).
    known_schemas: Vec<String>,
    known_manifests: Vec<String>,
    dictionary_label: String,
}

impl Definitions {
    /// Renders the embedded schemas, `dictionary` and the manifests below `manifests_dir`
    /// (`pipelines/*.yaml` or `*.yml` with their `*.contract.json`, `bundles/*.yaml`; a missing folder
    /// serves none). A manifest that does not validate fails the start.
    pub fn load(dictionary: &Loaded<pitgun_contracts::dictionary::Dictionary>, manifests_dir: Option<&Path>) -> Result<Definitions> {
        let mut by_path = BTreeMap::new();
        let mut schema_list = Vec::new();
        for s in pitgun_contracts::schema::schemas() {
            let path = format!("/schemas/{}/v{}", s.name, s.version);
            schema_list.push(json!({"name": s.name, "version": format!("v{}", s.version), "id": s.id, "url": path}));
            by_path.insert(path, Resource::new(&s.value));
        }
        let known_schemas = schema_list.iter().filter_map(|s| Some(format!("{}/{}", s["name"].as_str()?, s["version"].as_str()?))).collect();
        by_path.insert("/schemas".into(), Resource::new(&json!({"schemas": schema_list})));

        by_path.insert("/dictionary".into(), Resource::new(&dictionary.value));
        for metric in dictionary.value["metrics"].as_array().into_iter().flatten() {
            if let Some(id) = metric["id"].as_str() {
                by_path.insert(format!("/dictionary/{id}"), Resource::new(metric));
            }
        }
        let dictionary_label = format!("{} {}", dictionary.doc.name, dictionary.doc.version);

        let mut manifest_list = Vec::new();
        if let Some(dir) = manifests_dir.filter(|d| d.is_dir()) {
            for (folder, kind) in [("pipelines", ContractKind::Pipeline), ("bundles", ContractKind::Bundle)] {
                for path in yaml_files(&dir.join(folder))? {
                    let loaded: Loaded<Value> = load(kind, &path)?;
                    let name = loaded.value["name"].as_str().unwrap_or_default().to_string();
                    let version = match &loaded.value["version"] {
                        Value::Number(n) => format!("v{n}"),
                        v => v.as_str().unwrap_or_default().to_string(),
                    };
                    let url = format!("/manifests/{name}/{version}");
                    if by_path.contains_key(&url) {
                        return Err(Error::Setup(format!("{}: another manifest is already served at {url}", path.display())));
                    }
                    let mut entry = json!({"kind": kind.schema_name(), "name": name, "version": version, "sha256": loaded.hash, "url": url});
                    let contract = path.with_extension("contract.json");
                    let contract = if kind == ContractKind::Pipeline && contract.is_file() {
                        let text = std::fs::read_to_string(&contract).map_err(|source| Error::Read { path: contract.clone(), source })?;
                        let value: Value = serde_json::from_str(&text).map_err(|source| Error::NotJson { path: contract.clone(), source })?;
                        entry["contract"] = json!(format!("{url}/contract"));
                        Some(value)
                    } else {
                        None
                    };
                    // `v1` and `1` name the same version, for the manifest and its contract alike.
                    let numbered = version.strip_prefix('v').map(|number| format!("/manifests/{name}/{number}"));
                    for at in std::iter::once(url).chain(numbered) {
                        if let Some(c) = &contract {
                            by_path.insert(format!("{at}/contract"), Resource::new(c));
                        }
                        by_path.insert(at, Resource::new(&loaded.value));
                    }
                    manifest_list.push(entry);
                }
            }
        }
        let known_manifests = manifest_list.iter().filter_map(|m| Some(format!("{}/{}", m["name"].as_str()?, m["version"].as_str()?))).collect();
        by_path.insert("/manifests".into(), Resource::new(&json!({"manifests": manifest_list})));
        Ok(Definitions { by_path, known_schemas, known_manifests, dictionary_label })
    }

    /// Answers a GET of `path`.
    pub fn answer(&self, path: &str, headers: &HeaderMap) -> Response {
        let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        let Some(r) = self.by_path.get(path) else {
            return self.not_found(path);
        };
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, r.etag.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if headers.get_all(header::IF_NONE_MATCH).iter().any(|v| etag_matches(v, &r.etag)) {
            return (StatusCode::NOT_MODIFIED, h).into_response();
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        (StatusCode::OK, h, r.body.clone()).into_response()
    }

    fn not_found(&self, path: &str) -> Response {
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
        let message = match parts.as_slice() {
            ["schemas", rest] => format!("no schema {rest:?}; known: {}", self.known_schemas.join(", ")),
            ["dictionary", metric] => format!("metric {metric:?} is not in dictionary {}", self.dictionary_label),
            ["manifests", rest] => {
                let known = if self.known_manifests.is_empty() { "none".to_string() } else { self.known_manifests.join(", ") };
                format!("no manifest {rest:?}; known: {known}")
            }
            _ => format!("nothing at {path}"),
        };
        crate::gateway::json_error(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// `If-None-Match`: a list of entity tags or `*`, compared weakly (RFC 9110 §13.1.2).
fn etag_matches(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(text) = header.to_str() else { return false };
    let ours = etag.to_str().unwrap_or_default();
    text.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == ours)
}

fn yaml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| Error::Read { path: dir.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline manifest named `.yml` is served as a `.yaml` one is: its contract was looked
    /// for under the manifest's own name, read as JSON, and the gateway did not start.
    #[test]
    fn a_yml_manifest_is_served_with_its_contract() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dictionary =
            pitgun_contracts::load::load(pitgun_contracts::schema::ContractKind::Dictionary, &root.join("manifests/dictionary/racing.yaml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pipelines = dir.path().join("pipelines");
        std::fs::create_dir(&pipelines).unwrap();
        let from = root.join("manifests/pipelines/lap-performance.v1");
        std::fs::copy(from.with_extension("v1.yaml"), pipelines.join("lap-performance.v1.yml")).unwrap();
        std::fs::copy(from.with_extension("v1.contract.json"), pipelines.join("lap-performance.v1.contract.json")).unwrap();
        let d = Definitions::load(&dictionary, Some(dir.path())).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.by_path.contains_key("/manifests/lap-performance/v1/contract"), "{:?}", d.by_path.keys().collect::<Vec<_>>());
    }
}
