//! Compiling a manifest against its dictionary into a plan: every name resolved to an index,
//! every unit conversion to a factor and offset, every formula to an AST — once.

use std::collections::BTreeMap;
use std::sync::Arc;

use pitgun_contracts::aliases::AliasIndex;
use pitgun_contracts::analysis::{AnalysisContract, Column, ColumnRole, ColumnType, ANALYSIS_SCHEMA_V1, STORED_VERSION_COLUMN};
use pitgun_contracts::dictionary::{Dictionary, MetricDef, Stability, ValueType};
use pitgun_contracts::envelope::EventKind;
use pitgun_contracts::load::{Loaded, SourceText};
use pitgun_contracts::manifest::{AggregateFn, PipelineManifest, UnknownChannelPolicy, WindowDef};
use pitgun_contracts::{ContractError, Issue};

use crate::formula::{Formula, FormulaRuntime, VarSource};
use crate::units::{Conversion, Snap};

/// How a value read from a channel is turned into a canonical one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueCheck {
    /// Producer unit → canonical unit.
    pub conversion: Conversion,
    /// Snap to the dictionary resolution.
    pub snap: Snap,
    /// Allowed range in the canonical unit.
    pub range: Option<(f64, f64)>,
    /// The metric's value type.
    pub value_type: ValueType,
}

/// What one dictionary alias means to this manifest (by its position in [`AliasIndex::all`]).
#[derive(Debug, Clone)]
pub struct AliasBinding {
    /// Input slot the value goes to; `None` when the metric is known but not used here.
    pub slot: Option<usize>,
    /// Conversion and checks.
    pub check: ValueCheck,
    /// Metric id, for messages.
    pub metric: String,
    /// The unit the producer sends the channel in, and the metric's, for messages.
    pub units: (String, String),
}

/// A value slot: an input or a derived value.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    /// Name in the manifest.
    pub name: String,
    /// UCUM unit of the value.
    pub unit: String,
    /// Integer-valued (int metrics, state values).
    pub integral: bool,
}

/// One compiled aggregation.
#[derive(Debug, Clone)]
pub struct AggregationPlan {
    /// Column name.
    pub name: String,
    /// Function.
    pub function: AggregateFn,
    /// Slot aggregated (`None` for count of events, duration, missing).
    pub slot: Option<usize>,
    /// Quantile for percentiles.
    pub q: f64,
    /// Value unit → column unit.
    pub conversion: Conversion,
    /// Column type.
    pub column_type: ColumnType,
    /// Column unit.
    pub unit: Option<String>,
}

/// A manifest compiled against its dictionary, ready to run.
pub struct Plan {
    /// The manifest.
    pub manifest: PipelineManifest,
    /// Manifest content hash.
    pub manifest_hash: String,
    /// Accepted kinds as a bit set over [`EventKind::ALL`] (a `session_end` closes its session whether or not it is listed).
    pub kinds_mask: u16,
    /// Key dimension names.
    pub key_dims: Vec<String>,
    /// Inputs then derived values.
    pub slots: Vec<SlotInfo>,
    /// Number of input slots (derived follow).
    pub input_count: usize,
    /// The dictionary's aliases: which a producer version may send (shared with the gateway).
    pub alias_index: Arc<AliasIndex>,
    /// Each alias of `alias_index`, by position: its slot and checks.
    pub aliases: Vec<AliasBinding>,
    /// Raw channels read with `channel:` (name, slot).
    pub raw_channels: Vec<(String, usize)>,
    /// Unknown-channel policy.
    pub unknown_channels: UnknownChannelPolicy,
    /// Filter formula.
    pub filter: Option<Formula>,
    /// Derived formulas, in slot order.
    pub derived: Vec<Formula>,
    /// Aggregations, in column order.
    pub aggregations: Vec<AggregationPlan>,
    /// Segment field slot.
    pub segment_slot: Option<usize>,
    /// The output contract.
    pub contract: AnalysisContract,
    /// Non-fatal findings (deprecated metrics…).
    pub warnings: Vec<Issue>,
    /// The formula runtime the formulas were compiled in.
    pub formulas: FormulaRuntime,
    /// Time policy in µs: out-of-orderness, allowed lateness, max clock jump, idle timeout.
    pub ooo_us: i64,
    /// Allowed lateness, µs.
    pub lateness_us: i64,
    /// Max clock jump, µs.
    pub max_jump_us: i64,
    /// Idle timeout, µs.
    pub idle_us: i64,
}

/// Bit of a kind in [`Plan::kinds_mask`].
pub fn kind_bit(kind: EventKind) -> u16 {
    1 << (kind as u16)
}

impl Plan {
    /// Whether events of `kind` enter the pipeline.
    #[inline]
    pub fn accepts(&self, kind: EventKind) -> bool {
        self.kinds_mask & kind_bit(kind) != 0
    }

    /// Compiles a loaded manifest against a loaded dictionary; every problem is reported with
    /// the manifest's file, line and JSON pointer.
    pub fn compile(manifest: &Loaded<PipelineManifest>, dictionary: &Loaded<Dictionary>) -> Result<Plan, ContractError> {
        Compiler::new(&manifest.source).run(manifest, dictionary)
    }

    /// Compiles from in-memory text (tests).
    pub fn compile_text(manifest_yaml: &str, dictionary: &Loaded<Dictionary>) -> Result<Plan, ContractError> {
        let source = SourceText { file: "<manifest>".into(), text: manifest_yaml.into() };
        let manifest = pitgun_contracts::load::load_text(pitgun_contracts::schema::ContractKind::Pipeline, source)?;
        Plan::compile(&manifest, dictionary)
    }
}

struct Compiler<'s> {
    source: &'s SourceText,
    issues: Vec<Issue>,
}

impl<'s> Compiler<'s> {
    fn new(source: &'s SourceText) -> Self {
        Compiler { source, issues: Vec::new() }
    }

    fn err(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        let pointer = pointer.into();
        self.issues.push(self.source.issue(&pointer, message));
    }

    /// Compiles in stages, each adding its issues; a manifest with any issue gets them all.
    fn run(mut self, loaded: &Loaded<PipelineManifest>, dictionary: &Loaded<Dictionary>) -> Result<Plan, ContractError> {
        // Nothing compiles against a dictionary that breaks its own rules.
        let broken = pitgun_contracts::dictionary::issues(dictionary);
        if !broken.is_empty() {
            return Err(ContractError::Invalid(broken));
        }
        let m = &loaded.doc;
        let mut warnings = Vec::new();
        self.pins(m, dictionary);
        let Inputs { mut slots, metrics: input_metrics, raw_channels } = self.inputs(m, &dictionary.doc, &mut warnings);
        let input_count = slots.len();
        let (alias_index, aliases) = self.aliases(dictionary, &input_metrics);
        let (formulas, filter, derived) = self.formulas(m, &mut slots);
        let segment_slot = self.window(m, &slots);
        let t = &m.time;
        let aggregations = self.aggregations(m, &slots);
        let kinds_mask = self.kinds_and_keys(m);

        if !self.issues.is_empty() {
            return Err(ContractError::Invalid(self.issues));
        }
        // Without issues every alias got its binding, so positions match the index's.
        assert_eq!(aliases.len(), alias_index.all().len(), "one binding per indexed alias");
        let contract = contract_of(m, &slots, segment_slot, &aggregations);
        Ok(Plan {
            manifest: m.clone(),
            manifest_hash: loaded.hash.clone(),
            kinds_mask,
            key_dims: m.key.clone(),
            slots,
            input_count,
            alias_index: Arc::new(alias_index),
            aliases,
            raw_channels,
            unknown_channels: m.input.unknown_channels,
            filter,
            derived,
            aggregations,
            segment_slot,
            contract,
            warnings,
            formulas,
            ooo_us: t.out_of_orderness.micros,
            lateness_us: t.allowed_lateness.micros,
            max_jump_us: t.max_clock_jump.micros,
            idle_us: t.idle_timeout.micros,
        })
    }

    /// The dictionary the manifest pins, and its one output topic.
    fn pins(&mut self, m: &PipelineManifest, dictionary: &Loaded<Dictionary>) {
        let dict = &dictionary.doc;
        // Dictionary pin.
        if m.dictionary.name != dict.name {
            self.err("/dictionary/name", format!("manifest pins dictionary {:?}, given {:?}", m.dictionary.name, dict.name));
        }
        if m.dictionary.version != dict.version {
            self.err("/dictionary/version", format!("manifest pins version {}, dictionary is {}", m.dictionary.version, dict.version));
        }
        if m.dictionary.sha256 != dictionary.hash {
            self.err("/dictionary/sha256", format!("dictionary content hash is {}, manifest pins {}", dictionary.hash, m.dictionary.sha256));
        }
        let expected_topic = format!("pitgun.aggregates.{}.v{}", m.name, m.version);
        if m.output.topic != expected_topic {
            self.err("/output/topic", format!("output topic must be {expected_topic:?} (one topic per manifest version)"));
        }
    }

    /// Inputs become slots: a dictionary metric (with its dimensions selected) or a raw channel.
    fn inputs<'d>(&mut self, m: &PipelineManifest, dict: &'d Dictionary, warnings: &mut Vec<Issue>) -> Inputs<'d> {
        let metrics: BTreeMap<&str, &MetricDef> = dict.metrics.iter().map(|d| (d.id.as_str(), d)).collect();
        let mut slots: Vec<SlotInfo> = Vec::new();
        let mut input_metrics: Vec<Option<(&MetricDef, BTreeMap<String, String>)>> = Vec::new();
        let mut raw_channels = Vec::new();
        for (i, input) in m.inputs.iter().enumerate() {
            let at = format!("/inputs/{i}");
            if slots.iter().any(|s| s.name == input.name) || is_reserved(&input.name) {
                self.err(format!("{at}/name"), format!("input name {:?} is already used or reserved", input.name));
            }
            match (&input.metric, &input.channel) {
                (Some(id), None) => match metrics.get(id.as_str()) {
                    None => {
                        self.err(format!("{at}/metric"), format!("unknown metric {id:?} in dictionary {}", dict.name));
                        input_metrics.push(None);
                        slots.push(SlotInfo { name: input.name.clone(), unit: "1".into(), integral: false });
                    }
                    Some(def) => {
                        for dim in &def.dimensions {
                            match input.dimensions.get(&dim.name) {
                                None => self.err(
                                    format!("{at}/dimensions"),
                                    format!("metric {id} has dimension {:?}; select one of {:?}", dim.name, dim.values),
                                ),
                                Some(v) if !dim.values.contains(v) => self.err(
                                    format!("{at}/dimensions/{}", dim.name),
                                    format!("{v:?} is not a value of {}; expected one of {:?}", dim.name, dim.values),
                                ),
                                Some(_) => {}
                            }
                        }
                        for name in input.dimensions.keys() {
                            if !def.dimensions.iter().any(|d| &d.name == name) {
                                self.err(format!("{at}/dimensions/{name}"), format!("metric {id} has no dimension {name:?}"));
                            }
                        }
                        if def.stability == Stability::Deprecated || def.deprecation.is_some() {
                            let hint = def.deprecation.as_ref().and_then(|d| d.renamed_to.as_ref()).map(|r| format!("; use {r}")).unwrap_or_default();
                            warnings.push(self.source.issue(&format!("{at}/metric"), format!("metric {id} is deprecated{hint}")));
                        }
                        slots.push(SlotInfo { name: input.name.clone(), unit: def.unit.clone(), integral: def.value_type != ValueType::Float });
                        input_metrics.push(Some((def, input.dimensions.clone())));
                    }
                },
                (None, Some(channel)) => {
                    if m.input.unknown_channels != UnknownChannelPolicy::Keep {
                        self.err(format!("{at}/channel"), "raw channel inputs need `input.unknown_channels: keep`");
                    }
                    raw_channels.push((channel.clone(), slots.len()));
                    slots.push(SlotInfo { name: input.name.clone(), unit: "1".into(), integral: false });
                    input_metrics.push(None);
                }
                _ => {
                    self.err(at.clone(), "an input names exactly one of `metric` or `channel`");
                    slots.push(SlotInfo { name: input.name.clone(), unit: "1".into(), integral: false });
                    input_metrics.push(None);
                }
            }
        }
        Inputs { slots, metrics: input_metrics, raw_channels }
    }

    /// Every alias of every metric with its conversion and checks; the ones an input selects
    /// point at its slot, the others are validated only.
    fn aliases(&mut self, dictionary: &Loaded<Dictionary>, input_metrics: &[InputMetric<'_>]) -> (AliasIndex, Vec<AliasBinding>) {
        let dict = &dictionary.doc;
        let alias_index = AliasIndex::new(dict).unwrap_or_else(|errors| {
            for e in errors {
                let message = format!("alias {} versions {:?}: {}", e.channel, e.versions, e.message);
                self.issues.push(Issue { file: dictionary.source.file.clone(), line: None, pointer: format!("/metrics/{}", e.metric), message });
            }
            AliasIndex::default()
        });
        let mut aliases = Vec::with_capacity(alias_index.all().len());
        for indexed in alias_index.all() {
            let def = &dict.metrics[indexed.metric];
            let alias = &def.aliases[indexed.alias];
            let conversion = match Conversion::between(&alias.unit, &def.unit) {
                Ok(c) => c,
                Err(e) => {
                    let message = format!("alias {}: {e}", alias.channel);
                    self.issues.push(Issue { file: dictionary.source.file.clone(), line: None, pointer: format!("/metrics/{}", def.id), message });
                    continue;
                }
            };
            let check = ValueCheck {
                conversion,
                snap: def.resolution.and_then(Snap::from_resolution).unwrap_or(Snap::NONE),
                range: def.range.map(|r| (r.min, r.max)),
                value_type: def.value_type,
            };
            let slot = input_metrics
                .iter()
                .position(|im| im.as_ref().is_some_and(|(d, dims)| d.id == def.id && dims.iter().all(|(k, v)| alias.dimensions.get(k) == Some(v))));
            aliases.push(AliasBinding { slot, check, metric: def.id.clone(), units: (alias.unit.clone(), def.unit.clone()) });
        }
        (alias_index, aliases)
    }

    /// The filter over inputs; derived values over inputs, earlier derived values, `prev_*` and
    /// `dt` (each derived value gets a slot).
    fn formulas(&mut self, m: &PipelineManifest, slots: &mut Vec<SlotInfo>) -> (FormulaRuntime, Option<Formula>, Vec<Formula>) {
        let formulas = FormulaRuntime::new();
        let mut available: Vec<(String, VarSource)> = slots.iter().enumerate().map(|(i, s)| (s.name.clone(), VarSource::Slot(i))).collect();
        let filter = match &m.filter {
            None => None,
            Some(text) => match formulas.compile(text, &available) {
                Ok(f) => Some(f),
                Err(e) => {
                    self.err("/filter", format!("formula does not compile: {e}"));
                    None
                }
            },
        };
        for (i, s) in slots.iter().enumerate() {
            available.push((format!("prev_{}", s.name), VarSource::Prev(i)));
        }
        available.push(("dt".into(), VarSource::Dt));
        let mut derived = Vec::new();
        for (i, d) in m.derived.iter().enumerate() {
            let at = format!("/derived/{i}");
            if slots.iter().any(|s| s.name == d.name) || is_reserved(&d.name) {
                self.err(format!("{at}/name"), format!("name {:?} is already used or reserved", d.name));
            }
            if let Err(e) = ucum::validate(&d.unit) {
                self.err(format!("{at}/unit"), format!("unit {:?} is not valid UCUM: {e}", d.unit));
            }
            match formulas.compile(&d.formula, &available) {
                Ok(f) => derived.push(f),
                Err(e) => self.err(format!("{at}/formula"), format!("formula does not compile: {e}")),
            }
            let slot = slots.len();
            slots.push(SlotInfo { name: d.name.clone(), unit: d.unit.clone(), integral: false });
            available.insert(slot, (d.name.clone(), VarSource::Slot(slot)));
            available.push((format!("prev_{}", d.name), VarSource::Prev(slot)));
        }
        (formulas, filter, derived)
    }

    /// The window's geometry and the time settings; the segment field's slot.
    fn window(&mut self, m: &PipelineManifest, slots: &[SlotInfo]) -> Option<usize> {
        let mut segment_slot = None;
        match &m.window {
            WindowDef::Tumbling { size } => {
                if size.micros <= 0 {
                    self.err("/window/size", "window size must be positive");
                }
            }
            WindowDef::Hopping { size, hop } => {
                if size.micros <= 0 || hop.micros <= 0 {
                    self.err("/window", "size and hop must be positive");
                } else if hop.micros > size.micros {
                    self.err("/window/hop", format!("hop {hop} is longer than size {size}: events between windows would be lost"));
                } else if size.micros % hop.micros != 0 {
                    self.err("/window/hop", format!("hop {hop} must divide size {size}"));
                } else if size.micros / hop.micros > 64 {
                    self.err("/window/hop", "more than 64 overlapping windows per event");
                }
            }
            WindowDef::Session { gap } => {
                if gap.micros <= 0 {
                    self.err("/window/gap", "gap must be positive");
                }
            }
            WindowDef::Segment { field } => match slots.iter().position(|s| &s.name == field) {
                Some(i) => segment_slot = Some(i),
                None => self.err("/window/field", format!("segment field {field:?} is not an input or derived value")),
            },
            WindowDef::Global => {}
        }
        let t = &m.time;
        if t.out_of_orderness.micros < 0 || t.allowed_lateness.micros < 0 {
            self.err("/time", "durations must not be negative");
        }
        if t.max_clock_jump.micros <= t.out_of_orderness.micros {
            self.err("/time/max_clock_jump", "max_clock_jump must exceed out_of_orderness");
        }
        // A session ends after this much silence: at 0 every event would end its own session
        // and be refused as late, and the run would write nothing.
        if t.idle_timeout.micros <= 0 {
            self.err("/time/idle_timeout", "idle_timeout must be longer than 0");
        }
        segment_slot
    }

    /// Aggregations: their slot, unit conversion and column type.
    fn aggregations(&mut self, m: &PipelineManifest, slots: &[SlotInfo]) -> Vec<AggregationPlan> {
        let mut aggregations = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (i, a) in m.aggregations.iter().enumerate() {
            let at = format!("/aggregations/{i}");
            let is_key = m.key.contains(&a.name);
            if names.contains(&a.name.as_str()) || is_reserved(&a.name) || slots_name_is_column(&m.window, &a.name) || is_key {
                self.err(format!("{at}/name"), format!("column name {:?} is already used or reserved", a.name));
            }
            names.push(&a.name);
            let needs_of = !matches!(a.function, AggregateFn::Count | AggregateFn::Duration | AggregateFn::Missing);
            let slot = match &a.of {
                Some(of) => match slots.iter().position(|s| &s.name == of) {
                    Some(s) => Some(s),
                    None => {
                        self.err(format!("{at}/of"), format!("{of:?} is not an input or derived value"));
                        continue;
                    }
                },
                None if needs_of => {
                    self.err(format!("{at}/of"), format!("{:?} needs `of`", a.function));
                    continue;
                }
                None => None,
            };
            if matches!(a.function, AggregateFn::Duration | AggregateFn::Missing) && a.of.is_some() {
                self.err(format!("{at}/of"), format!("{:?} takes no `of`", a.function));
            }
            let q = match (a.function, a.q) {
                (AggregateFn::Percentile, Some(q)) if q > 0.0 && q < 1.0 => q,
                (AggregateFn::Percentile, _) => {
                    self.err(format!("{at}/q"), "percentile needs q in (0, 1)");
                    0.5
                }
                (_, Some(_)) => {
                    self.err(format!("{at}/q"), "q is only for percentile");
                    0.0
                }
                _ => 0.0,
            };
            let value_unit = match (a.function, slot) {
                (AggregateFn::Duration, _) => Some("s".to_string()),
                (AggregateFn::Count | AggregateFn::Missing, _) => None,
                (_, Some(s)) => Some(slots[s].unit.clone()),
                _ => None,
            };
            let (conversion, unit) = match (&value_unit, &a.unit) {
                (Some(from), Some(to)) => match Conversion::between(from, to) {
                    Ok(c) => (c, Some(to.clone())),
                    Err(e) => {
                        self.err(format!("{at}/unit"), format!("incompatible unit: {e}"));
                        (Conversion::IDENTITY, Some(to.clone()))
                    }
                },
                (None, Some(_)) => {
                    self.err(format!("{at}/unit"), format!("{:?} yields a plain count; it has no unit", a.function));
                    (Conversion::IDENTITY, None)
                }
                (from, None) => (Conversion::IDENTITY, from.clone().filter(|u| u != "1")),
            };
            let integral_slot = slot.is_some_and(|s| slots[s].integral) && conversion == Conversion::IDENTITY;
            let column_type = match a.function {
                AggregateFn::Count | AggregateFn::Missing => ColumnType::Int,
                AggregateFn::Min | AggregateFn::Max | AggregateFn::First | AggregateFn::Last if integral_slot => ColumnType::Int,
                _ => ColumnType::Float,
            };
            aggregations.push(AggregationPlan { name: a.name.clone(), function: a.function, slot, q, conversion, column_type, unit });
        }
        aggregations
    }

    /// The event kinds the manifest takes (a bit mask) and the key dimensions' rules.
    fn kinds_and_keys(&mut self, m: &PipelineManifest) -> u16 {
        let mut kinds_mask = if m.input.kinds.is_empty() { u16::MAX } else { 0 };
        for k in &m.input.kinds {
            kinds_mask |= kind_bit(*k);
        }
        // No kind is implied: a `session_end` closes its session whatever the manifest takes,
        // and feeds its windows only if the manifest lists it.

        for (i, k) in m.key.iter().enumerate() {
            if k == "session_id" {
                self.err(format!("/key/{i}"), "session_id is always the first key column; do not list it");
            }
            if m.key[..i].contains(k) {
                self.err(format!("/key/{i}"), format!("key dimension {k:?} is listed twice"));
            }
            // Each key dimension is a column of its own: one of these would be written over.
            if k != "session_id" && ROW_COLUMNS.contains(&k.as_str()) {
                self.err(format!("/key/{i}"), format!("key dimension {k:?} is a column the row itself uses; rename the dimension"));
            }
            if slots_name_is_column(&m.window, k) {
                self.err(format!("/key/{i}"), format!("key dimension {k:?} is the segment field, a column of its own"));
            }
        }
        kinds_mask
    }
}

/// A selected input metric and its dimensions (`None`: a raw channel or an input in error).
type InputMetric<'d> = Option<(&'d MetricDef, BTreeMap<String, String>)>;

/// What the inputs stage gives the later ones.
struct Inputs<'d> {
    slots: Vec<SlotInfo>,
    metrics: Vec<InputMetric<'d>>,
    raw_channels: Vec<(String, usize)>,
}

/// Columns every row has besides its key and aggregations, and the one a PostgreSQL target
/// adds: no other column may take one of these names.
const ROW_COLUMNS: &[&str] = &["row_id", "session_id", "window_start", "window_end", "window_anchor", "complete", STORED_VERSION_COLUMN];

/// Whether `name` is a row column's, or a name formulas use (`dt`, `prev_<name>`).
fn is_reserved(name: &str) -> bool {
    ROW_COLUMNS.contains(&name) || name == "dt" || name.starts_with("prev_")
}

fn slots_name_is_column(window: &WindowDef, name: &str) -> bool {
    matches!(window, WindowDef::Segment { field } if field == name)
}

/// The analysis contract of a compiled manifest: the exact columns of its rows, in order.
fn contract_of(m: &PipelineManifest, slots: &[SlotInfo], segment_slot: Option<usize>, aggregations: &[AggregationPlan]) -> AnalysisContract {
    let col = |name: &str, t: ColumnType, unit: Option<String>, nullable: bool, role: ColumnRole, d: &str| Column {
        name: name.into(),
        column_type: t,
        unit,
        nullable,
        role,
        description: d.into(),
    };
    let mut columns = vec![
        col(
            "row_id",
            ColumnType::String,
            None,
            false,
            ColumnRole::Id,
            "SHA-256 of [manifest, version, key…, window kind, window start or segment value]; the upsert key.",
        ),
        col("session_id", ColumnType::String, None, false, ColumnRole::Key, "Session the row belongs to."),
    ];
    for k in &m.key {
        columns.push(col(k, ColumnType::String, None, false, ColumnRole::Key, &format!("Envelope dimension `{k}`.")));
    }
    columns.push(col(
        "window_start",
        ColumnType::Timestamp,
        None,
        false,
        ColumnRole::Window,
        "Start of the window (first event for segment, session and global windows).",
    ));
    columns.push(col(
        "window_end",
        ColumnType::Timestamp,
        None,
        false,
        ColumnRole::Window,
        "End of the window (exclusive for time windows; next segment's start for a complete segment).",
    ));
    columns.push(col("window_anchor", ColumnType::Timestamp, None, false, ColumnRole::Window, "The row's fixed time: window_start as the row was first emitted. Equal to window_start unless a late event moved the start of an already emitted segment or global window; every version of a row keeps it (QuestDB's designated timestamp and dedup key)."));
    if let Some(s) = segment_slot {
        let slot = &slots[s];
        let t = if slot.integral { ColumnType::Int } else { ColumnType::Float };
        columns.push(col(&slot.name, t, None, false, ColumnRole::Window, "Segment value: one row per value."));
    }
    for a in aggregations {
        let nullable = !matches!(a.function, AggregateFn::Count | AggregateFn::Missing | AggregateFn::Duration);
        let source = m.aggregations.iter().find(|x| x.name == a.name);
        let description = source.filter(|x| !x.description.is_empty()).map(|x| x.description.clone()).unwrap_or_else(|| describe(a, slots));
        columns.push(col(&a.name, a.column_type, a.unit.clone(), nullable, ColumnRole::Measure, &description));
    }
    if segment_slot.is_some() {
        columns.push(col(
            "complete",
            ColumnType::Bool,
            None,
            false,
            ColumnRole::Flag,
            "False when the segment was closed by session end, end of input or a jump in the segment value.",
        ));
    }
    AnalysisContract {
        schema: ANALYSIS_SCHEMA_V1.into(),
        manifest: m.name.clone(),
        version: m.version,
        window: m.window.kind_name().into(),
        topic: m.output.topic.clone(),
        columns,
    }
}

fn describe(a: &AggregationPlan, slots: &[SlotInfo]) -> String {
    let of = a.slot.map(|s| slots[s].name.as_str()).unwrap_or("events");
    match a.function {
        AggregateFn::Percentile => format!("p{} of {of}", a.q * 100.0),
        AggregateFn::Duration => "Window length in seconds.".into(),
        AggregateFn::Missing => "Events missing from the window's sequence-number range.".into(),
        f => format!("{f:?} of {of}").to_lowercase(),
    }
}
