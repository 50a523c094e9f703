//! Which channels each producer version may send, from the dictionary's aliases.
//!
//! The gateway only admits what the processor can place: a producer (`source.id`) at a version
//! (`source.version`) must have aliases, and every channel it sends must be one of them. Tables
//! are built per (producer, version) the first time that pair is seen and shared by every
//! request; a batch normally carries one producer version, so the caller keeps the last table
//! and compares two short strings per envelope instead of hashing them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pitgun_contracts::dictionary::{Dictionary, ValueType};
use rustc_hash::FxHashMap;

/// How many (producer, version) tables are kept; versions beyond it are checked uncached, so
/// a client inventing versions cannot grow the gateway's memory.
const MAX_CACHED_VERSIONS: usize = 1024;

/// What the dictionary says about one channel of one producer version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Whether the metric is a boolean: its 0/1 values travel as Avro booleans.
    pub boolean: bool,
}

/// The channels of one producer version. Looked up once per channel of every envelope; the keys
/// come from the dictionary, never from clients, so a fast non-keyed hash is safe here.
#[derive(Debug, Default)]
pub struct ChannelTable {
    channels: FxHashMap<Box<str>, ChannelInfo>,
}

impl ChannelTable {
    /// The channel, if the dictionary knows it for this producer version.
    pub fn get(&self, channel: &str) -> Option<ChannelInfo> {
        self.channels.get(channel).copied()
    }

    /// Number of known channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether no channel is known (the version matches no alias).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

/// Why a producer version has no channel table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownSource {
    /// No alias names this producer at all.
    Producer,
    /// The producer is known, but `source.version` is not a semantic version.
    NotSemver(String),
    /// The producer is known, but no alias covers this version; the known ranges are listed.
    Version(Vec<String>),
}

/// `(source.id, source.version)`.
type ProducerVersion = (Box<str>, Box<str>);

struct Alias {
    versions: semver::VersionReq,
    channel: String,
    info: ChannelInfo,
}

/// Every alias of a dictionary, by producer.
pub struct ChannelCatalog {
    by_producer: HashMap<String, Vec<Alias>>,
    cache: RwLock<HashMap<ProducerVersion, Arc<ChannelTable>>>,
}

impl ChannelCatalog {
    /// Indexes `dict`'s aliases. An alias whose version range does not parse is an error (the
    /// dictionary loader validates the document, but not the ranges' grammar).
    pub fn new(dict: &Dictionary) -> Result<ChannelCatalog, String> {
        let mut by_producer: HashMap<String, Vec<Alias>> = HashMap::new();
        for metric in &dict.metrics {
            let info = ChannelInfo { boolean: metric.value_type == ValueType::Bool };
            for alias in &metric.aliases {
                let versions = semver::VersionReq::parse(&alias.versions)
                    .map_err(|e| format!("metric {} alias {}: versions {:?}: {e}", metric.id, alias.channel, alias.versions))?;
                by_producer.entry(alias.producer.clone()).or_default().push(Alias { versions, channel: alias.channel.clone(), info });
            }
        }
        Ok(ChannelCatalog { by_producer, cache: RwLock::new(HashMap::new()) })
    }

    /// The channel table of `producer` at `version`.
    pub fn table(&self, producer: &str, version: &str) -> Result<Arc<ChannelTable>, UnknownSource> {
        let key = (Box::<str>::from(producer), Box::<str>::from(version));
        if let Some(t) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(t.clone());
        }
        let aliases = self.by_producer.get(producer).ok_or(UnknownSource::Producer)?;
        let parsed = semver::Version::parse(version).map_err(|e| UnknownSource::NotSemver(e.to_string()))?;
        let mut table = ChannelTable::default();
        for alias in aliases.iter().filter(|a| a.versions.matches(&parsed)) {
            table.channels.entry(alias.channel.as_str().into()).or_insert(alias.info);
        }
        if table.is_empty() {
            let mut ranges: Vec<String> = aliases.iter().map(|a| a.versions.to_string()).collect();
            ranges.sort();
            ranges.dedup();
            return Err(UnknownSource::Version(ranges));
        }
        let table = Arc::new(table);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() < MAX_CACHED_VERSIONS {
            cache.insert(key, table.clone());
        }
        Ok(table)
    }

    /// Producer ids with at least one alias, sorted.
    pub fn producers(&self) -> Vec<&str> {
        let mut p: Vec<&str> = self.by_producer.keys().map(String::as_str).collect();
        p.sort();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> ChannelCatalog {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/dictionary/racing.yaml")).unwrap();
        let dict: Dictionary = serde_yaml_ng::from_str(&text).unwrap();
        ChannelCatalog::new(&dict).unwrap()
    }

    #[test]
    fn tables_follow_producer_versions() {
        let c = catalog();
        let old = c.table("pitgun-web", "0.9.3").unwrap();
        assert!(old.get("spd").is_some() && old.get("speed_kmh").is_none());
        let new = c.table("pitgun-web", "1.4.2").unwrap();
        assert!(new.get("speed_kmh").is_some() && new.get("spd").is_none());
        assert_eq!(c.table("pitgun-sim", "2.1.0").unwrap().get("pit_lane").map(|i| i.boolean), Some(true));
        assert_eq!(c.table("nobody", "1.0.0").unwrap_err(), UnknownSource::Producer);
        assert!(matches!(c.table("pitgun-web", "7.0.0").unwrap_err(), UnknownSource::Version(r) if !r.is_empty()));
        assert!(matches!(c.table("pitgun-web", "1.0").unwrap_err(), UnknownSource::NotSemver(_)));
        assert_eq!(c.producers(), ["pitgun-sim", "pitgun-web"]);
    }
}
