//! Which channels a producer version may send: the dictionary's aliases, indexed once.
//!
//! The gateway admits a channel only if the processor can place it. Both read this index, so the
//! two cannot disagree: the gateway's catalog and the engine's resolver each ask
//! [`AliasIndex::admitted`] for a (producer, version) and keep what it answers.
//!
//! One rule for overlaps: when two aliases of one producer name the same channel and both cover
//! a version, the first in dictionary order (metric order, then alias order) is the one.

use std::collections::HashMap;

use crate::dictionary::Dictionary;

/// One alias of the dictionary, with its version range parsed.
#[derive(Debug, Clone)]
pub struct IndexedAlias {
    /// Position of its metric in `Dictionary::metrics`.
    pub metric: usize,
    /// Position of the alias in that metric's `aliases`.
    pub alias: usize,
    /// The producer's channel name.
    pub channel: Box<str>,
    /// The producer versions it covers.
    pub versions: semver::VersionReq,
}

/// Why a producer version may send no channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownSource {
    /// No alias names this producer at all.
    Producer,
    /// The producer is known, but its version is not a semantic version.
    NotSemver(String),
    /// The producer is known, but no alias covers this version; the known ranges, sorted.
    Version(Vec<String>),
}

/// An alias whose version range does not parse (the schema checks the document, not the
/// ranges' grammar).
#[derive(Debug, Clone, thiserror::Error)]
#[error("metric {metric} alias {channel}: versions {versions:?}: {message}")]
pub struct AliasError {
    /// The metric id.
    pub metric: String,
    /// The alias's channel.
    pub channel: String,
    /// The range as written.
    pub versions: String,
    /// What the semver parser said.
    pub message: String,
}

/// An alias no producer version reaches: every version it covers, earlier aliases of its
/// producer for the same channel cover first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeverUsed {
    /// Position of its metric in `Dictionary::metrics`.
    pub metric: usize,
    /// Position of the alias in that metric's `aliases`.
    pub alias: usize,
    /// The earlier aliases (metric, alias) that take its versions.
    pub covered_by: Vec<(usize, usize)>,
}

/// Every alias of a dictionary, in dictionary order, and the positions of each producer's.
#[derive(Debug, Clone, Default)]
pub struct AliasIndex {
    all: Vec<IndexedAlias>,
    by_producer: HashMap<String, Vec<usize>>,
}

impl AliasIndex {
    /// Indexes `dict`'s aliases; every alias whose range does not parse is an error.
    pub fn new(dict: &Dictionary) -> Result<AliasIndex, Vec<AliasError>> {
        let mut index = AliasIndex::default();
        let mut errors = Vec::new();
        for (m, metric) in dict.metrics.iter().enumerate() {
            for (a, alias) in metric.aliases.iter().enumerate() {
                match semver::VersionReq::parse(&alias.versions) {
                    Ok(versions) => {
                        index.by_producer.entry(alias.producer.clone()).or_default().push(index.all.len());
                        index.all.push(IndexedAlias { metric: m, alias: a, channel: alias.channel.as_str().into(), versions });
                    }
                    Err(e) => errors.push(AliasError {
                        metric: metric.id.clone(),
                        channel: alias.channel.clone(),
                        versions: alias.versions.clone(),
                        message: e.to_string(),
                    }),
                }
            }
        }
        if errors.is_empty() {
            Ok(index)
        } else {
            Err(errors)
        }
    }

    /// Every alias, in dictionary order.
    pub fn all(&self) -> &[IndexedAlias] {
        &self.all
    }

    /// The aliases `producer` at `version` may send, as positions in [`AliasIndex::all`]: one per
    /// channel name, the first in dictionary order where two cover the same channel. A
    /// pre-release (`1.5.0-rc.1`) takes its release's aliases.
    pub fn admitted(&self, producer: &str, version: &str) -> Result<Vec<usize>, UnknownSource> {
        let mine = self.by_producer.get(producer).ok_or(UnknownSource::Producer)?;
        let parsed = semver::Version::parse(version).map_err(|e| UnknownSource::NotSemver(e.to_string()))?;
        // A pre-release sends what its release will: matched as the release too (semver's own
        // rule, made for dependencies, admits a pre-release only under a range naming one).
        let release = semver::Version::new(parsed.major, parsed.minor, parsed.patch);
        let mut admitted: Vec<usize> = Vec::new();
        for &i in mine {
            let alias = &self.all[i];
            if (alias.versions.matches(&parsed) || alias.versions.matches(&release))
                && !admitted.iter().any(|&j| self.all[j].channel == alias.channel)
            {
                admitted.push(i);
            }
        }
        if admitted.is_empty() {
            let mut ranges: Vec<String> = mine.iter().map(|&i| self.all[i].versions.to_string()).collect();
            ranges.sort();
            ranges.dedup();
            return Err(UnknownSource::Version(ranges));
        }
        Ok(admitted)
    }

    /// Aliases the overlap rule leaves unused, in dictionary order. A specific range before a
    /// general one (`=1.4.1` before `>=1.0`) is an override, not this: the general one still
    /// takes the other versions. Ranges naming a pre-release are left out (not judged).
    pub fn never_used(&self) -> Vec<NeverUsed> {
        let mut unused = Vec::new();
        for positions in self.by_producer.values() {
            for (k, &i) in positions.iter().enumerate() {
                let alias = &self.all[i];
                let earlier: Vec<&IndexedAlias> = positions[..k].iter().map(|&j| &self.all[j]).filter(|e| e.channel == alias.channel).collect();
                if earlier.is_empty() {
                    continue;
                }
                let reqs = || std::iter::once(alias).chain(earlier.iter().copied()).map(|a| &a.versions);
                // Ranges naming a pre-release are not judged: a pre-release is matched as its
                // release too, and the boundaries below are releases only.
                if reqs().flat_map(|r| &r.comparators).any(|c| !c.pre.is_empty()) {
                    continue;
                }
                let versions: Vec<semver::Version> = boundary_versions(reqs()).into_iter().filter(|v| alias.versions.matches(v)).collect();
                // A range of pre-releases only is not judged here.
                if versions.is_empty() || !versions.iter().all(|v| earlier.iter().any(|e| e.versions.matches(v))) {
                    continue;
                }
                let covered_by = earlier.iter().filter(|e| versions.iter().any(|v| e.versions.matches(v))).map(|e| (e.metric, e.alias)).collect();
                unused.push(NeverUsed { metric: alias.metric, alias: alias.alias, covered_by });
            }
        }
        unused.sort_by_key(|u| (u.metric, u.alias));
        unused
    }

    /// Producer ids with at least one alias, sorted.
    pub fn producers(&self) -> Vec<&str> {
        let mut p: Vec<&str> = self.by_producer.keys().map(String::as_str).collect();
        p.sort();
        p
    }
}

/// Release versions where a version range can begin or end: each comparator's version, the next
/// patch, minor and major after it, and 0.0.0. A range is one interval of versions, so if some
/// version one range covers is outside the union of others, the lowest such version is one of
/// these: the range's own lower bound, or the end of one of the others.
fn boundary_versions<'a>(reqs: impl Iterator<Item = &'a semver::VersionReq>) -> Vec<semver::Version> {
    let mut versions = vec![semver::Version::new(0, 0, 0)];
    for c in reqs.flat_map(|r| &r.comparators) {
        let (major, minor, patch) = (c.major, c.minor.unwrap_or(0), c.patch.unwrap_or(0));
        versions.push(semver::Version::new(major, minor, patch));
        versions.push(semver::Version::new(major, minor, patch.saturating_add(1)));
        versions.push(semver::Version::new(major, minor.saturating_add(1), 0));
        versions.push(semver::Version::new(major.saturating_add(1), 0, 0));
    }
    versions.sort();
    versions.dedup();
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dictionary::Alias;

    fn racing() -> Dictionary {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/dictionary/racing.yaml")).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    }

    fn channels(index: &AliasIndex, producer: &str, version: &str) -> Vec<String> {
        index.admitted(producer, version).unwrap().iter().map(|&i| index.all()[i].channel.to_string()).collect()
    }

    #[test]
    fn admitted_channels_follow_producer_versions() {
        let index = AliasIndex::new(&racing()).unwrap();
        let old = channels(&index, "pitgun-web", "0.9.3");
        assert!(old.contains(&"spd".to_string()) && !old.contains(&"speed_kmh".to_string()), "{old:?}");
        let new = channels(&index, "pitgun-web", "1.4.2");
        assert!(new.contains(&"speed_kmh".to_string()) && !new.contains(&"spd".to_string()), "{new:?}");
        assert_eq!(index.admitted("nobody", "1.0.0").unwrap_err(), UnknownSource::Producer);
        assert!(matches!(index.admitted("pitgun-web", "7.0.0").unwrap_err(), UnknownSource::Version(r) if !r.is_empty()));
        assert!(matches!(index.admitted("pitgun-web", "1.0").unwrap_err(), UnknownSource::NotSemver(_)));
        assert_eq!(index.producers(), ["pitgun-sim", "pitgun-web"]);
    }

    /// A pre-release is built to send what its release sends: `1.5.0-rc.1` takes the aliases of
    /// `1.5.0` (semver's matching, made for dependencies, would admit it under no range here).
    #[test]
    fn a_pre_release_takes_the_aliases_of_its_release() {
        let index = AliasIndex::new(&racing()).unwrap();
        assert_eq!(channels(&index, "pitgun-web", "1.5.0-rc.1"), channels(&index, "pitgun-web", "1.5.0"));
        assert_eq!(channels(&index, "pitgun-web", "0.9.0-beta.2+build.7"), channels(&index, "pitgun-web", "0.9.0"));
        assert!(matches!(index.admitted("pitgun-web", "7.0.0-rc.1").unwrap_err(), UnknownSource::Version(_)));
        // A range naming a pre-release still takes it.
        let mut dict = racing();
        dict.metrics[0].aliases[0].versions = "=2.0.0-rc.1".into();
        let (producer, channel) = (dict.metrics[0].aliases[0].producer.clone(), dict.metrics[0].aliases[0].channel.clone());
        let index = AliasIndex::new(&dict).unwrap();
        assert!(channels(&index, &producer, "2.0.0-rc.1").contains(&channel.to_string()));
    }

    #[test]
    fn of_two_aliases_for_one_channel_the_first_in_dictionary_order_is_admitted() {
        let mut dict = racing();
        dict.metrics[0].aliases[0].versions = "*".into();
        let first = dict.metrics[0].aliases[0].clone();
        let last = dict.metrics.len() - 1;
        dict.metrics[last].aliases.push(first.clone());
        let index = AliasIndex::new(&dict).unwrap();
        let hits: Vec<usize> =
            index.admitted(&first.producer, "3.0.0").unwrap().into_iter().filter(|&i| *index.all()[i].channel == *first.channel).collect();
        assert_eq!(hits.len(), 1, "one alias per channel");
        assert_eq!((index.all()[hits[0]].metric, index.all()[hits[0]].alias), (0, 0), "the first in dictionary order");
    }

    #[test]
    fn an_alias_whose_every_version_an_earlier_one_takes_is_named_as_never_used() {
        let mut dict = racing();
        let first = dict.metrics[0].aliases[0].clone();
        let last = dict.metrics.len() - 1;
        // Covered by one earlier range (">=1.2, <1.4" inside the first's): never used.
        dict.metrics[0].aliases[0].versions = ">=1.0.0, <2.0.0".into();
        dict.metrics[last].aliases.push(Alias { versions: ">=1.2, <1.4".into(), ..first.clone() });
        // Covered by two earlier ranges together: never used either.
        dict.metrics[1].aliases.push(Alias { versions: ">=2.0.0, <3.0.0".into(), channel: "x".into(), ..first.clone() });
        dict.metrics[2].aliases.push(Alias { versions: ">=3.0.0".into(), channel: "x".into(), ..first.clone() });
        dict.metrics[last].aliases.push(Alias { versions: ">=2.5.0".into(), channel: "x".into(), ..first.clone() });
        // A specific range before a general one: the general one still takes the other versions.
        dict.metrics[1].aliases.push(Alias { versions: "=4.1.0".into(), channel: "y".into(), ..first.clone() });
        dict.metrics[last].aliases.push(Alias { versions: ">=4.0.0".into(), channel: "y".into(), ..first.clone() });
        // The same range under another channel or producer is another alias.
        dict.metrics[last].aliases.push(Alias { versions: ">=1.0.0, <2.0.0".into(), channel: "z".into(), ..first.clone() });
        let index = AliasIndex::new(&dict).unwrap();
        let n = dict.metrics[last].aliases.len();
        let by_two = vec![(1, dict.metrics[1].aliases.len() - 2), (2, dict.metrics[2].aliases.len() - 1)];
        assert_eq!(
            index.never_used(),
            vec![NeverUsed { metric: last, alias: n - 4, covered_by: vec![(0, 0)] }, NeverUsed { metric: last, alias: n - 3, covered_by: by_two }]
        );
    }

    #[test]
    fn a_range_naming_a_pre_release_is_not_judged() {
        // `1.5.0-beta.1` reaches the later alias (the earlier range takes neither it nor 1.5.0).
        let mut dict = racing();
        let first = dict.metrics[0].aliases[0].clone();
        dict.metrics[0].aliases[0].versions = ">=1.0.0, <1.5.0".into();
        dict.metrics[1].aliases.push(Alias { versions: ">=1.0.0, <1.5.0-rc.1".into(), ..first.clone() });
        let index = AliasIndex::new(&dict).unwrap();
        assert!(index
            .admitted(&first.producer, "1.5.0-beta.1")
            .unwrap()
            .iter()
            .any(|&i| (index.all()[i].metric, index.all()[i].channel.as_ref()) == (1, first.channel.as_str())));
        assert_eq!(index.never_used(), vec![]);
    }

    #[test]
    fn the_shipped_dictionary_has_no_alias_never_used() {
        assert!(AliasIndex::new(&racing()).unwrap().never_used().is_empty());
    }

    #[test]
    fn every_bad_range_is_reported_with_its_metric_and_channel() {
        let mut dict = racing();
        dict.metrics[0].aliases[0].versions = "not a range".into();
        dict.metrics[1].aliases[0].versions = ">=1, <<2".into();
        let errors = AliasIndex::new(&dict).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].to_string().contains(&dict.metrics[0].id) && errors[0].to_string().contains("not a range"), "{}", errors[0]);
    }
}
