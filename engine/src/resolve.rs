//! Dictionary resolution: a producer's channels → canonical values in the plan's input slots.
//!
//! Aliases are keyed by producer and producer version. The first time a (producer, version)
//! pair is seen its channel table is built — a hash map from channel name to slot, conversion
//! and checks — and cached; every later event of that producer costs one hash lookup per channel.

use std::sync::Arc;

use pitgun_contracts::dictionary::ValueType;
use pitgun_contracts::manifest::UnknownChannelPolicy;
use rustc_hash::FxHashMap;

use crate::decode::EnvelopeView;
use crate::plan::{Plan, ValueCheck};
use crate::Reason;

#[derive(Debug, Clone, Copy)]
enum Binding {
    /// Goes to a slot after conversion and checks.
    Slot(usize, ValueCheck),
    /// A known metric this manifest does not read: checked, then ignored.
    Unused(ValueCheck),
    /// A raw channel kept under its own name.
    Raw(usize),
}

type ChannelTable = FxHashMap<Box<str>, (Binding, u32)>;

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
    cache: Vec<(Box<str>, Box<str>, Option<ChannelTable>)>,
}

impl Resolver {
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
        }
    }

    fn table(&mut self, producer: &str, version: &str) -> usize {
        if let Some(i) = self.cache.iter().position(|(p, v, _)| &**p == producer && &**v == version) {
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
        self.cache.push((producer.into(), version.into(), parsed.is_ok().then_some(table)));
        self.cache.len() - 1
    }

    /// Writes the event's input values into `values` (NaN where absent) and its key dimension
    /// values into `key`. Returns the number of unknown channels dropped.
    pub fn resolve<'v>(
        &mut self,
        ev: &'v EnvelopeView<'_>,
        values: &mut Vec<f64>,
        key: &mut KeyValues<'v>,
    ) -> Result<u32, Refusal> {
        values.clear();
        values.resize(self.input_count, f64::NAN);
        let t = self.table(&ev.source.id, &ev.source.version);
        let Some(table) = &self.cache[t].2 else {
            return Err(Refusal {
                reason: Reason::InvalidEnvelope,
                detail: format!("at /source/version: {:?} is not a semantic version", ev.source.version),
            });
        };
        key.clear();
        for name in &self.key_dims {
            match ev.dim(name) {
                Some(v) => key.push(v),
                None => {
                    return Err(Refusal {
                        reason: Reason::MissingKey,
                        detail: format!("dimension {name:?} (part of the manifest key) is missing"),
                    })
                }
            }
        }
        let mut unknown = 0;
        for (channel, raw) in &ev.channels {
            let Some((binding, metric)) = table.get(&**channel) else {
                match self.policy {
                    UnknownChannelPolicy::Reject => {
                        return Err(Refusal {
                            reason: Reason::UnknownChannel,
                            detail: format!(
                                "channel {channel:?} is not in the dictionary for {} {}",
                                ev.source.id, ev.source.version
                            ),
                        })
                    }
                    UnknownChannelPolicy::Drop | UnknownChannelPolicy::Keep => unknown += 1,
                }
                continue;
            };
            match *binding {
                Binding::Raw(slot) => values[slot] = *raw,
                Binding::Slot(slot, check) => {
                    values[slot] = canonical(*raw, check).map_err(|r| self.refusal(r, channel, *raw, *metric, check))?
                }
                Binding::Unused(check) => {
                    canonical(*raw, check).map_err(|r| self.refusal(r, channel, *raw, *metric, check))?;
                }
            }
        }
        Ok(unknown)
    }

    fn refusal(&self, reason: Reason, channel: &str, raw: f64, metric: u32, check: ValueCheck) -> Refusal {
        let metric = self.metric_names.get(metric as usize).map(String::as_str).unwrap_or("?");
        let detail = match (reason, check.range) {
            (Reason::OutOfRange, Some((lo, hi))) => format!(
                "channel {channel:?} = {raw} is {} in {metric}'s unit, outside its range [{lo}, {hi}]",
                check.conversion.apply(raw)
            ),
            _ => format!("channel {channel:?} = {raw} is not a valid {:?} for {metric}", check.value_type),
        };
        Refusal { reason, detail }
    }
}

#[inline]
fn canonical(raw: f64, check: ValueCheck) -> Result<f64, Reason> {
    match check.value_type {
        ValueType::Int if raw.fract() != 0.0 => return Err(Reason::TypeMismatch),
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
