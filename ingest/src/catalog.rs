//! Which channels each producer version may send, from the dictionary's alias index.
//!
//! The gateway only admits what the processor can place: a producer (`source.id`) at a version
//! (`source.version`) must have aliases, and every channel it sends must be one of them. Which
//! aliases those are is [`AliasIndex::admitted`]'s answer, the one the engine's resolver uses. Tables
//! are built per (producer, version) the first time that pair is seen and shared by every
//! request; a batch normally carries one producer version, so the caller keeps the last table
//! and compares two short strings per envelope instead of hashing them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pitgun_contracts::aliases::AliasIndex;
pub use pitgun_contracts::aliases::UnknownSource;
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

/// `(source.id, source.version)`.
type ProducerVersion = (Box<str>, Box<str>);

/// The dictionary's alias index, with each metric's Avro typing, and the tables built so far.
pub struct ChannelCatalog {
    aliases: AliasIndex,
    /// By metric position: whether its values travel as Avro booleans.
    boolean: Vec<bool>,
    cache: RwLock<HashMap<ProducerVersion, Arc<ChannelTable>>>,
}

impl ChannelCatalog {
    /// Indexes `dict`'s aliases; an alias whose version range does not parse is an error.
    pub fn new(dict: &Dictionary) -> Result<ChannelCatalog, String> {
        let aliases = AliasIndex::new(dict).map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))?;
        let boolean = dict.metrics.iter().map(|m| m.value_type == ValueType::Bool).collect();
        Ok(ChannelCatalog { aliases, boolean, cache: RwLock::new(HashMap::new()) })
    }

    /// The channel table of `producer` at `version`: what [`AliasIndex::admitted`] answers.
    pub fn table(&self, producer: &str, version: &str) -> Result<Arc<ChannelTable>, UnknownSource> {
        let key = (Box::<str>::from(producer), Box::<str>::from(version));
        if let Some(t) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(t.clone());
        }
        let mut table = ChannelTable::default();
        for i in self.aliases.admitted(producer, version)? {
            let alias = &self.aliases.all()[i];
            table.channels.insert(alias.channel.clone(), ChannelInfo { boolean: self.boolean[alias.metric] });
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
        self.aliases.producers()
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
