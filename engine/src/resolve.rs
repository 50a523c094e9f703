//! Dictionary resolution: a producer's channels → canonical values in the plan's input slots.
//!
//! Aliases are keyed by producer and producer version. The first time a (producer, version)
//! pair is seen its channel table is built — a hash map from channel name to slot, conversion
//! and checks — and cached. A producer writes an event kind's channels in the same order every
//! time (Avro maps and JSON objects keep the writer's order), so the resolver also remembers the
//! channel lists (*layouts*: names and bindings by position) it has seen for each channel count,
//! a few per count: a channel then costs one short comparison, and only an unseen name costs a
//! hash lookup. A producer that writes its maps in random order fills its few layouts and then
//! simply uses the hash table.

use std::sync::Arc;

use pitgun_contracts::dictionary::ValueType;
use pitgun_contracts::manifest::UnknownChannelPolicy;
use rustc_hash::FxHashMap;

use crate::plan::{Plan, ValueCheck};
use crate::Reason;
use pitgun_codec::json::EnvelopeView;
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

/// A channel's binding and the index of its metric's name (for refusal messages).
pub(crate) type Bound = (Binding, u32);

type ChannelTable = FxHashMap<Box<str>, Bound>;

/// Channel names and bindings by position, as one of the producer's events had them.
type Layout = Box<[(Box<str>, Option<Bound>)]>;

/// Channel counts up to this get remembered layouts; larger events use the table alone.
const MAX_LAYOUT: usize = 64;

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
    plan_aliases: Arc<[crate::plan::AliasBinding]>,
    metric_names: Vec<String>,
    raw: Vec<(String, usize)>,
    policy: UnknownChannelPolicy,
    key_dims: Vec<String>,
    input_count: usize,
    cache: Vec<ProducerTable>,
    /// The producer of the previous event (usually the next one's too).
    last: usize,
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
        let mut metric_names: Vec<String> = plan.aliases.iter().map(|a| a.metric.clone()).collect();
        metric_names.dedup();
        Resolver {
            plan_aliases: plan.aliases.clone().into(),
            metric_names,
            raw: plan.raw_channels.clone(),
            policy: plan.unknown_channels,
            key_dims: plan.key_dims.clone(),
            input_count: plan.input_count,
            cache: Vec::new(),
            last: 0,
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
        let mut table = ChannelTable::default();
        let parsed = semver::Version::parse(version);
        if let Ok(parsed) = &parsed {
            for alias in self.plan_aliases.iter() {
                if alias.producer == producer && alias.versions.matches(parsed) {
                    let metric = self.metric_names.iter().position(|m| *m == alias.metric).unwrap_or(0) as u32;
                    let binding = match alias.slot {
                        Some(s) => Binding::Slot(s, alias.check),
                        None => Binding::Unused(alias.check),
                    };
                    table.insert(alias.channel.clone().into_boxed_str(), (binding, metric));
                }
            }
        }
        for (channel, slot) in &self.raw {
            table.entry(channel.clone().into_boxed_str()).or_insert((Binding::Raw(*slot), u32::MAX));
        }
        self.cache.push(ProducerTable {
            producer: producer.into(),
            version: version.into(),
            channels: parsed.is_ok().then_some(table),
            layouts: vec![Vec::new(); MAX_LAYOUT + 1],
        });
        self.last = self.cache.len() - 1;
        self.last
    }

    /// Writes the event's input values into `values` (NaN where absent) and its key dimension
    /// values into `key`. Returns the number of unknown channels dropped.
    pub fn resolve<'v>(&mut self, ev: &'v EnvelopeView<'_>, values: &mut Vec<f64>, key: &mut KeyValues<'v>) -> Result<u32, Refusal> {
        values.clear();
        values.resize(self.input_count, f64::NAN);
        let t = self.table(&ev.source.id, &ev.source.version);
        let ProducerTable { channels: table, layouts, .. } = &mut self.cache[t];
        let Some(table) = table else {
            return Err(Refusal {
                reason: Reason::InvalidEnvelope,
                detail: format!("at /source/version: {:?} is not a semantic version", ev.source.version),
            });
        };
        key_values(&self.key_dims, ev, key)
            .map_err(|name| Refusal { reason: Reason::MissingKey, detail: format!("dimension {name:?} (part of the manifest key) is missing") })?;
        let mut unknown = 0;
        let no_layouts: &[Layout] = &[];
        let known = layouts.get(ev.channels.len()).map_or(no_layouts, |l| l.as_slice());
        let mut current = 0;
        let mut novel = false;
        for (i, (channel, raw)) in ev.channels.iter().enumerate() {
            let found = match follow(known, &mut current, i, channel.as_bytes()) {
                Some(found) => *found,
                None => {
                    novel = true;
                    table.get(&**channel).copied()
                }
            };
            let Some((binding, metric)) = found else {
                match self.policy {
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
            bind(binding, *raw, values).map_err(|(r, check)| refusal(&self.metric_names, r, channel, *raw, metric, check))?;
        }
        // A channel list not seen before is remembered (a few per count), so the producer's
        // next events like it compare names instead of hashing them.
        if novel && (1..=MAX_LAYOUT).contains(&ev.channels.len()) {
            let list = &mut layouts[ev.channels.len()];
            if list.len() < LAYOUTS_PER_COUNT {
                list.push(ev.channels.iter().map(|(c, _)| (Box::from(&**c), table.get(&**c).copied())).collect());
            }
        }
        Ok(unknown)
    }
}

#[cold]
fn refusal(metric_names: &[String], reason: Reason, channel: &str, raw: f64, metric: u32, check: ValueCheck) -> Refusal {
    let metric = metric_names.get(metric as usize).map(String::as_str).unwrap_or("?");
    let detail = match (reason, check.range) {
        (Reason::OutOfRange, Some((lo, hi))) => {
            format!("channel {channel:?} = {raw} is {} in {metric}'s unit, outside its range [{lo}, {hi}]", check.conversion.apply(raw))
        }
        _ => format!("channel {channel:?} = {raw} is not a valid {:?} for {metric}", check.value_type),
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
    let mut v = check.conversion.apply(raw);
    if let Some(snap) = check.snap {
        v = snap.apply(v);
    }
    if let Some((lo, hi)) = check.range {
        if !(lo..=hi).contains(&v) {
            return Err(Reason::OutOfRange);
        }
    }
    Ok(v)
}
