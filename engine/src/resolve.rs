//! Dictionary resolution: a producer's channels → canonical values in the plan's input slots.
//!
//! Aliases are keyed by producer and producer version. The first time a (producer, version)
//! pair is seen its channel table is built from the dictionary's alias index (the gateway's
//! catalog reads the same index) — a hash map from channel name to slot, conversion
//! and checks — and cached. A producer writes an event kind's channels in the same order every
//! time (Avro maps and JSON objects keep the writer's order), so the resolver also remembers the
//! channel lists (*layouts*: names and bindings by position) it has seen for each channel count,
//! a few per count: a channel then costs one short comparison, and only an unseen name costs a
//! hash lookup. A producer that writes its maps in random order fills its few layouts and then
//! simply uses the hash table.

use std::sync::Arc;

use pitgun_contracts::aliases::{AliasIndex, UnknownSource};
use pitgun_contracts::dictionary::ValueType;
use pitgun_contracts::manifest::UnknownChannelPolicy;
use rustc_hash::FxHashMap;

use crate::plan::{AliasBinding, Plan, ValueCheck};
use crate::Reason;
use pitgun_codec::json::EnvelopeView;
use pitgun_codec::rules::{check_channels, check_dim_names, check_dim_values, check_ids, check_source, Broken};
use pitgun_codec::text::{same, same_bytes};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Binding {
    /// Goes to a slot after conversion and checks.
    Slot(usize, ValueCheck),
    /// A known metric this manifest does not read: checked, then ignored.
    Unused(ValueCheck),
    /// A raw channel kept under its own name.
    Raw(usize),
}

/// A channel's binding and its alias's position in the plan (for refusal messages).
pub(crate) type Bound = (Binding, u32);

type ChannelTable = FxHashMap<Box<str>, Bound>;

/// Channel names and bindings by position, as one of the producer's events had them.
type Layout = Box<[(Box<str>, Option<Bound>)]>;

/// Channel counts up to this get remembered layouts; larger events use the table alone.
const MAX_LAYOUT: usize = 64;

/// (producer, version) tables kept per resolver.
const MAX_PRODUCER_VERSIONS: usize = 256;

/// Layouts remembered per channel count (a producer may interleave a few channel sets).
const LAYOUTS_PER_COUNT: usize = 4;

/// Follows an event's channel names through the layouts of its channel count: stays on the
/// current layout while its names match, and at a name that differs moves to another layout
/// that agrees on every name so far and has this one. Names and bindings are equal wherever
/// layouts agree, so the bindings already taken stay right.
#[inline(always)]
fn follow<'l>(layouts: &'l [Layout], current: &mut usize, i: usize, name: &[u8]) -> Option<&'l Option<Bound>> {
    let here = layouts.get(*current)?;
    if same_bytes(here[i].0.as_bytes(), name) {
        return Some(&here[i].1);
    }
    let j = layouts.iter().position(|l| same_bytes(l[i].0.as_bytes(), name) && l[..i].iter().zip(&here[..i]).all(|(a, b)| same(&a.0, &b.0)))?;
    *current = j;
    Some(&layouts[j][i].1)
}

/// What the resolver knows about one (producer, version).
struct ProducerTable {
    producer: Box<str>,
    version: Box<str>,
    /// `None` when the version is not a semantic version (every event is refused).
    channels: Option<ChannelTable>,
    /// The schema's rule on the producer id and version, checked once per pair.
    source: Result<(), Broken>,
    /// Whether the dictionary has aliases for this producer and version (otherwise none of its
    /// channels resolves to a metric).
    covered: bool,
    /// Remembered layouts, by channel count.
    layouts: Vec<Vec<Layout>>,
}

/// Values of an event's key dimensions (inline: no allocation per event).
pub type KeyValues<'a> = smallvec::SmallVec<[&'a str; 4]>;

/// Why an event was refused during resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Counted reason.
    pub reason: Reason,
    /// Details naming the channel and value.
    pub detail: String,
}

/// Resolves envelopes for one plan; holds a per-producer cache, so keep one per thread.
pub struct Resolver {
    alias_index: Arc<AliasIndex>,
    bindings: Arc<[AliasBinding]>,
    raw: Vec<(String, usize)>,
    policy: UnknownChannelPolicy,
    key_dims: Vec<String>,
    input_count: usize,
    /// At most [`MAX_PRODUCER_VERSIONS`] tables; when full, the oldest is replaced.
    cache: Vec<ProducerTable>,
    /// The producer of the previous event (usually the next one's too).
    last: usize,
    /// The table the next new (producer, version) replaces once the cache is full.
    evict: usize,
    /// The last list of dimension names that kept the schema's rules: events repeat it, and
    /// comparing names is cheaper than checking them.
    dim_names: Vec<Box<str>>,
}

/// The learned layouts of one channel count, lent to the one-pass Avro decoder.
pub(crate) struct LearnedLayout<'r> {
    layouts: &'r [Layout],
    current: usize,
    /// Input slots of the plan.
    pub input_count: usize,
    /// Whether unknown channels are dropped (else refused).
    pub drops_unknown: bool,
}

impl LearnedLayout<'_> {
    /// The binding of the channel at position `i` named `name`, if a learned layout has it
    /// there (the inner `None`: a channel the dictionary does not know).
    #[inline(always)]
    pub fn binding(&mut self, i: usize, name: &[u8]) -> Option<Option<Bound>> {
        follow(self.layouts, &mut self.current, i, name).copied()
    }

    /// Converts and checks one value into its slot; `None` when it is refused.
    #[inline(always)]
    pub fn bind(&self, binding: Binding, raw: f64, values: &mut [f64]) -> Option<()> {
        bind(binding, raw, values).ok()
    }
}

/// Converts and checks a channel's value into its slot (a metric the manifest does not read is
/// checked only); the refusal's reason and the check that failed otherwise.
#[inline(always)]
fn bind(binding: Binding, raw: f64, values: &mut [f64]) -> Result<(), (Reason, ValueCheck)> {
    match binding {
        Binding::Raw(slot) => values[slot] = raw,
        Binding::Slot(slot, check) => values[slot] = canonical(raw, check).map_err(|r| (r, check))?,
        Binding::Unused(check) => {
            canonical(raw, check).map_err(|r| (r, check))?;
        }
    }
    Ok(())
}

/// The event's key dimension values, in the manifest's key order; the first missing one's name
/// otherwise.
#[inline]
fn key_values<'v, 'k>(key_dims: &'k [String], ev: &'v EnvelopeView<'_>, key: &mut KeyValues<'v>) -> Result<(), &'k str> {
    key.clear();
    for name in key_dims {
        key.push(ev.dim(name).ok_or(name.as_str())?);
    }
    Ok(())
}

impl Resolver {
    /// The layout learned for this producer's events with `count` channels, if any.
    #[inline]
    pub(crate) fn learned_layout(&mut self, producer: &str, version: &str, count: usize) -> Option<LearnedLayout<'_>> {
        let t = self.table(producer, version);
        let table = &self.cache[t];
        table.channels.as_ref()?;
        let layouts = table.layouts.get(count)?;
        if layouts.is_empty() || count == 0 {
            return None;
        }
        Some(LearnedLayout {
            layouts,
            current: 0,
            input_count: self.input_count,
            drops_unknown: !matches!(self.policy, UnknownChannelPolicy::Reject),
        })
    }

    /// The event's key dimension values, in the manifest's key order; `None` when one is missing.
    #[inline]
    pub(crate) fn key_of<'v>(&self, ev: &'v EnvelopeView<'_>, key: &mut KeyValues<'v>) -> Option<()> {
        key_values(&self.key_dims, ev, key).ok()
    }

    /// A resolver for `plan`.
    pub fn new(plan: &Plan) -> Resolver {
        Resolver {
            alias_index: plan.alias_index.clone(),
            bindings: plan.aliases.clone().into(),
            raw: plan.raw_channels.clone(),
            policy: plan.unknown_channels,
            key_dims: plan.key_dims.clone(),
            input_count: plan.input_count,
            cache: Vec::new(),
            last: 0,
            evict: 0,
            dim_names: Vec::new(),
        }
    }

    fn table(&mut self, producer: &str, version: &str) -> usize {
        let is = |t: &ProducerTable| same(&t.producer, producer) && same(&t.version, version);
        if self.cache.get(self.last).is_some_and(is) {
            return self.last;
        }
        if let Some(i) = self.cache.iter().position(is) {
            self.last = i;
            return i;
        }
        // The gateway's catalog asks the same question, so what it admits is what is placed
        // here. An unknown producer or version has no aliases: its channels are unknown.
        let admitted = self.alias_index.admitted(producer, version);
        let covered = admitted.is_ok();
        let admitted = match admitted {
            Err(UnknownSource::NotSemver(_)) => None,
            admitted => Some(admitted.unwrap_or_default()),
        };
        let channels = admitted.map(|admitted| {
            let mut table = ChannelTable::default();
            for i in admitted {
                let alias = &self.bindings[i];
                let binding = match alias.slot {
                    Some(s) => Binding::Slot(s, alias.check),
                    None => Binding::Unused(alias.check),
                };
                table.insert(self.alias_index.all()[i].channel.clone(), (binding, i as u32));
            }
            for (channel, slot) in &self.raw {
                table.entry(channel.clone().into_boxed_str()).or_insert((Binding::Raw(*slot), u32::MAX));
            }
            table
        });
        let table = ProducerTable {
            producer: producer.into(),
            version: version.into(),
            channels,
            source: check_source(producer, version),
            covered,
            layouts: vec![Vec::new(); MAX_LAYOUT + 1],
        };
        // Bounded, so a producer inventing versions cannot grow the resolver's memory.
        if self.cache.len() < MAX_PRODUCER_VERSIONS {
            self.cache.push(table);
            self.last = self.cache.len() - 1;
        } else {
            self.last = self.evict;
            self.cache[self.evict] = table;
            self.evict = (self.evict + 1) % MAX_PRODUCER_VERSIONS;
        }
        self.last
    }

    /// Whether the dictionary has aliases for the producer and version of the event last
    /// checked or resolved.
    pub fn source_covered(&self) -> bool {
        self.cache.get(self.last).is_none_or(|t| t.covered)
    }

    /// The schema's rules on the event's ids and dimensions, which every path into the engine
    /// applies (the one-pass Avro path too: its learned layout vouches only for the source and
    /// the channels, which the rules check in between).
    #[inline]
    pub(crate) fn check_ids_and_dims(&mut self, ev: &EnvelopeView<'_>) -> Result<(), Broken> {
        check_ids(ev).and_then(|()| check_dims(&mut self.dim_names, ev))
    }

    /// The checks every event passes whatever its kind (`resolve` makes them too): the
    /// schema's limits and names (`pitgun_codec::rules`, as at the gateway), no channel named
    /// twice; in the rules' order, so an event that breaks two is told the same place.
    pub fn check_envelope(&mut self, ev: &EnvelopeView<'_>) -> Result<(), Refusal> {
        check_ids(ev).map_err(broken)?;
        let t = self.table(&ev.source.id, &ev.source.version);
        let ProducerTable { source, channels, layouts, .. } = &mut self.cache[t];
        if let Err(b) = source {
            return Err(broken(b.clone()));
        }
        let Some(table) = channels else {
            return Err(not_semver(ev));
        };
        // Events of kinds a manifest does not take are most of a stream for some (client
        // health is one event in sixty): checking their channel names each time was a tenth
        // of such a replay, and their lists repeat as the taken kinds' do.
        if !is_learned(layouts, ev) {
            check_channels(ev).map_err(broken)?;
            learn(layouts, table, ev);
        }
        check_dims(&mut self.dim_names, ev).map_err(broken)
    }

    /// Writes the event's input values into `values` (NaN where absent) and its key dimension
    /// values into `key`. Returns the number of unknown channels dropped.
    pub fn resolve<'v>(&mut self, ev: &'v EnvelopeView<'_>, values: &mut Vec<f64>, key: &mut KeyValues<'v>) -> Result<u32, Refusal> {
        values.clear();
        values.resize(self.input_count, f64::NAN);
        // The schema's rules in their order (`pitgun_codec::rules::check`: ids, source,
        // channels, dimensions), so an event that breaks two is told the place the gateway
        // names; then the manifest's own refusals.
        check_ids(ev).map_err(broken)?;
        let t = self.table(&ev.source.id, &ev.source.version);
        if let Err(b) = &self.cache[t].source {
            return Err(broken(b.clone()));
        }
        let ProducerTable { channels: table, layouts, .. } = &mut self.cache[t];
        let Some(table) = table else {
            return Err(not_semver(ev));
        };
        let no_layouts: &[Layout] = &[];
        let known = layouts.get(ev.channels.len()).map_or(no_layouts, |l| l.as_slice());
        let bound = bind_channels(ev, table, known, self.policy, &self.bindings, values);
        // A list that followed a learned layout has that layout's names, which kept the rules
        // (distinct, 1 to 128 characters), so only a new list needs checking; a broken rule is
        // the refusal, as at the gateway.
        let novel = match bound {
            Ok((_, novel)) => novel,
            Err(_) => true,
        };
        if novel {
            check_channels(ev).map_err(broken)?;
        }
        check_dims(&mut self.dim_names, ev).map_err(broken)?;
        key_values(&self.key_dims, ev, key)
            .map_err(|name| Refusal { reason: Reason::MissingKey, detail: format!("dimension {name:?} (part of the manifest key) is missing") })?;
        let (unknown, novel) = bound?;
        if novel {
            learn(layouts, table, ev);
        }
        Ok(unknown)
    }
}

/// Whether the event's channel names are those of a layout learned for its count: that list
/// kept the rules (distinct, 1 to 128 characters) when it was learned.
#[inline]
fn is_learned(layouts: &[Vec<Layout>], ev: &EnvelopeView<'_>) -> bool {
    layouts.get(ev.channels.len()).is_some_and(|known| known.iter().any(|l| l.iter().zip(&ev.channels).all(|((a, _), (b, _))| same(a, b))))
}

/// Remembers the event's channel list, not learned before and kept to the rules, with its
/// bindings (a few lists per count), so the producer's next events like it compare names
/// instead of hashing and checking them.
fn learn(layouts: &mut [Vec<Layout>], table: &ChannelTable, ev: &EnvelopeView<'_>) {
    if (1..=MAX_LAYOUT).contains(&ev.channels.len()) {
        let list = &mut layouts[ev.channels.len()];
        if list.len() < LAYOUTS_PER_COUNT {
            list.push(ev.channels.iter().map(|(c, _)| (Box::from(&**c), table.get(&**c).copied())).collect());
        }
    }
}

/// The schema's rules on the event's dimensions; the names only when they are not `last`, the
/// last list that kept them (events of a producer repeat it).
#[inline]
fn check_dims(last: &mut Vec<Box<str>>, ev: &EnvelopeView<'_>) -> Result<(), Broken> {
    let known = last.len() == ev.dims.len() && last.iter().zip(&ev.dims).all(|(a, (b, _))| same(a, b));
    if !known {
        check_dim_names(ev)?;
        last.clear();
        last.extend(ev.dims.iter().map(|(name, _)| Box::from(&**name)));
    }
    check_dim_values(ev)
}

fn not_semver(ev: &EnvelopeView<'_>) -> Refusal {
    Refusal { reason: Reason::InvalidEnvelope, detail: format!("at /source/version: {:?} is not a semantic version", ev.source.version) }
}

fn broken(b: Broken) -> Refusal {
    Refusal { reason: Reason::InvalidEnvelope, detail: format!("at {}: {}", b.pointer, b.message) }
}

/// Binds every channel of `ev` into `values`: the number of unknown channels dropped, and
/// whether the list left the learned layouts (`novel`).
fn bind_channels(
    ev: &EnvelopeView<'_>,
    table: &ChannelTable,
    known: &[Layout],
    policy: UnknownChannelPolicy,
    bindings: &[AliasBinding],
    values: &mut [f64],
) -> Result<(u32, bool), Refusal> {
    let (mut unknown, mut current, mut novel) = (0, 0, false);
    for (i, (channel, raw)) in ev.channels.iter().enumerate() {
        let found = match follow(known, &mut current, i, channel.as_bytes()) {
            Some(found) => *found,
            None => {
                novel = true;
                table.get(&**channel).copied()
            }
        };
        let Some((binding, metric)) = found else {
            match policy {
                UnknownChannelPolicy::Reject => {
                    return Err(Refusal {
                        reason: Reason::UnknownChannel,
                        detail: format!("channel {channel:?} is not in the dictionary for {} {}", ev.source.id, ev.source.version),
                    })
                }
                UnknownChannelPolicy::Drop | UnknownChannelPolicy::Keep => unknown += 1,
            }
            continue;
        };
        bind(binding, *raw, values).map_err(|(r, check)| refusal(bindings, r, channel, *raw, metric, check))?;
    }
    Ok((unknown, novel))
}

#[cold]
fn refusal(bindings: &[AliasBinding], reason: Reason, channel: &str, raw: f64, alias: u32, check: ValueCheck) -> Refusal {
    let Some(b) = bindings.get(alias as usize) else {
        return Refusal { reason, detail: format!("channel {channel:?} = {raw} is refused ({reason:?})") };
    };
    // A dimensionless unit ("1") is not written after a number.
    let after = |unit: &str| if unit == "1" { String::new() } else { format!(" {unit}") };
    let (sent_in, metric_unit) = (after(&b.units.0), after(&b.units.1));
    let detail = match (reason, check.range) {
        (Reason::OutOfRange, Some((lo, hi))) => {
            // The value compared with the range: converted and snapped as `canonical` does.
            let converted = check.conversion.apply(raw);
            let value = check.snap.apply(converted);
            let as_metric = if b.units.0 == b.units.1 { String::new() } else { format!(" is {value}{metric_unit}") };
            format!("channel {channel:?} = {raw}{sent_in}{as_metric}, outside {}'s range [{lo}, {hi}]{metric_unit}", b.metric)
        }
        _ => format!("channel {channel:?} = {raw} is not a valid {} for {}", format!("{:?}", check.value_type).to_lowercase(), b.metric),
    };
    Refusal { reason, detail }
}

#[inline]
fn canonical(raw: f64, check: ValueCheck) -> Result<f64, Reason> {
    match check.value_type {
        ValueType::Int if !crate::units::is_integral(raw) => return Err(Reason::TypeMismatch),
        ValueType::Bool if raw != 0.0 && raw != 1.0 => return Err(Reason::TypeMismatch),
        _ => {}
    }
    let v = check.snap.apply(check.conversion.apply(raw));
    if let Some((lo, hi)) = check.range {
        if !(lo..=hi).contains(&v) {
            return Err(Reason::OutOfRange);
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitgun_contracts::load::load;
    use pitgun_contracts::schema::ContractKind;

    fn plan() -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/dictionary/racing.yaml");
        let d = load(ContractKind::Dictionary, &path).unwrap();
        let yaml = format!(
            "schema: pitgun-pipeline/v1\nname: t\nversion: 1\ndictionary: {{name: racing, version: 1.0.0, sha256: \"{}\"}}\ninput: {{topics: [x], unknown_channels: reject}}\ninputs:\n  - {{name: speed, metric: vehicle.speed}}\nwindow: {{kind: global}}\naggregations:\n  - {{name: n, fn: count}}\noutput: {{topic: pitgun.aggregates.t.v1}}\n",
            d.hash
        );
        Plan::compile_text(&yaml, &d).unwrap_or_else(|e| panic!("{e}"))
    }

    fn resolve(r: &mut Resolver, version: &str, channel: &str) -> Result<Vec<f64>, Refusal> {
        resolve_value(r, version, channel, "36")
    }

    fn resolve_value(r: &mut Resolver, version: &str, channel: &str, value: &str) -> Result<Vec<f64>, Refusal> {
        let text = format!(
            r#"{{"schema":"pitgun-envelope/v1","event_id":"e","source":{{"kind":"game","id":"pitgun-web","version":"{version}"}},"session_id":"s","seq":1,"time_us":1,"kind":"sample","channels":{{"{channel}":{value}}}}}"#
        );
        let view = pitgun_codec::json::decode(&text).unwrap();
        let (mut values, mut key) = (Vec::new(), KeyValues::new());
        r.resolve(&view, &mut values, &mut key).map(|_| values)
    }

    /// A refused value is named in the producer's unit and in the metric's, with the range's
    /// unit: "= 2777.5 is 2777.5 in vehicle.speed's unit" said neither.
    #[test]
    fn a_refused_value_names_both_units() {
        let mut r = Resolver::new(&plan());
        let out = resolve_value(&mut r, "1.4.2", "speed_kmh", "1000").unwrap_err();
        assert_eq!(out.reason, Reason::OutOfRange);
        assert_eq!(out.detail, "channel \"speed_kmh\" = 1000 km/h is 277.778 m/s, outside vehicle.speed's range [0, 120] m/s");
        let plan = plan();
        let gear = plan.aliases.iter().position(|a| a.metric == "driver.gear").expect("the dictionary has driver.gear");
        let detail = refusal(&plan.aliases, Reason::TypeMismatch, "gear", 2.5, gear as u32, plan.aliases[gear].check).detail;
        assert_eq!(detail, "channel \"gear\" = 2.5 is not a valid int for driver.gear");
    }

    #[test]
    fn a_producer_inventing_versions_cannot_grow_the_table_cache() {
        let mut r = Resolver::new(&plan());
        for patch in 0..(MAX_PRODUCER_VERSIONS * 3) {
            let values = resolve(&mut r, &format!("1.4.{patch}"), "speed_kmh").unwrap();
            assert_eq!(values[0], 10.0, "36 km/h is 10 m/s, whichever table answers");
            assert!(r.cache.len() <= MAX_PRODUCER_VERSIONS);
        }
        assert_eq!(r.cache.len(), MAX_PRODUCER_VERSIONS);
        let old = resolve(&mut r, "0.9.3", "speed_kmh").unwrap_err();
        assert_eq!(old.reason, Reason::UnknownChannel, "0.9 sent `spd`: the alias index decides, as for the gateway");
        assert_eq!(resolve(&mut r, "1.0", "speed_kmh").unwrap_err().reason, Reason::InvalidEnvelope);
    }
}
