//! Where each row goes: every `output.sinks` entry of every manifest version becomes a route
//! (one table of one target), and every aggregates topic knows the routes its rows feed. The
//! targets are opened here, each with the tables routed to it, so a table that cannot be
//! created stops the sink before it reads a row.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use pitgun_contracts::analysis::AnalysisContract;
use pitgun_contracts::manifest::SinkKind;
use pitgun_runtime::kafka::topics;
use tracing::info;

use crate::batch::Targets;
use crate::error::{Error, Result};
use crate::postgres::{redact, PgTarget};
use crate::questdb::{QuestTable, QuestTarget};
use crate::runs_table::{is_runs_table, runs_shape};
use crate::service::Config;
use crate::table::{Binding, RowParser, TableShape};

/// One table of one target, fed by one manifest version.
pub(crate) struct Route {
    /// The target's index in [`Routing::targets`].
    pub target: usize,
    /// The table's index in that target.
    pub table: usize,
    /// The target's kind and the table's name (metrics labels).
    pub kind: &'static str,
    pub name: String,
}

impl Route {
    /// `postgres:<table>` or `questdb:<table>`: the summary's and dead letters' label.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind, self.name)
    }
}

/// The tables one aggregates topic feeds: its rows are parsed once, then converted per table.
pub(crate) struct TopicRoutes {
    pub topic: Arc<str>,
    pub parser: RowParser,
    /// Route index, the table's shape and its binding to the parser's fields.
    pub tables: Vec<(usize, TableShape, Binding)>,
}

impl TopicRoutes {
    fn new(topic: &str, contract: &AnalysisContract) -> TopicRoutes {
        TopicRoutes { topic: topic.into(), parser: RowParser::of(contract), tables: Vec::new() }
    }

    fn add(&mut self, route: usize, shape: TableShape) -> Result<()> {
        let binding = shape.bind(&self.parser)?;
        self.tables.push((route, shape, binding));
        Ok(())
    }
}

/// Routes, the topics that feed them, and the opened targets.
pub(crate) struct Routing {
    pub routes: Vec<Route>,
    pub topics: HashMap<String, TopicRoutes>,
    pub targets: Targets,
}

/// The tables of each kind of target, in route order, before the targets are opened.
#[derive(Default)]
struct Tables {
    postgres: Vec<(TableShape, String, u32)>,
    questdb: Vec<QuestTable>,
}

/// Routes every sink the configuration selects, then opens each target with its tables
/// (creating or checking them).
pub(crate) async fn open(cfg: &Config) -> Result<Routing> {
    let mut tables = Tables::default();
    let mut topics: HashMap<String, TopicRoutes> = HashMap::new();
    // Each route's target kind, table index and name, topic, and its table's shape.
    let mut routed: Vec<(SinkKind, usize, String, String, TableShape)> = Vec::new();
    let mut questdb_owners: HashMap<String, (String, u32)> = HashMap::new();
    for m in &cfg.manifests {
        let topic = cfg.broker.name(&topics::aggregates(&m.manifest, m.version));
        for sink in &m.sinks {
            if cfg.targets.as_ref().is_some_and(|only| !only.contains(&sink.kind)) {
                info!(manifest = %m.manifest, version = m.version, table = %sink.table, "target kind not selected (--targets): skipped");
                continue;
            }
            // Two manifest versions never share a table: their rows (distinct row ids) would mix.
            // PostgreSQL keeps each table's owner (`pitgun_sink_tables`), across sinks too;
            // QuestDB keeps none, so one sink's QuestDB tables are checked here.
            if sink.kind == SinkKind::Questdb {
                match questdb_owners.entry(sink.table.clone()) {
                    Entry::Occupied(owner) if owner.get() != &(m.manifest.clone(), m.version) => {
                        let (other, v) = owner.get();
                        return Err(Error::Setup(format!(
                            "QuestDB table {:?} is named by {other} v{v} and by {} v{}: two manifest versions never share a table \
                             (their rows would mix); give each version's output a table of its own",
                            sink.table, m.manifest, m.version
                        )));
                    }
                    Entry::Occupied(_) => {}
                    Entry::Vacant(owner) => {
                        owner.insert((m.manifest.clone(), m.version));
                    }
                }
            }
            let unconfigured =
                |what: &str, flag: &str| Error::Setup(format!("{} v{} writes {what} table {:?}: give {flag}", m.manifest, m.version, sink.table));
            let (shape, index) = match sink.kind {
                SinkKind::Postgres => {
                    if cfg.postgres.is_none() {
                        return Err(unconfigured("PostgreSQL", "--postgres URL (or name with --targets only the kinds to write without it)"));
                    }
                    let shape = if is_runs_table(&sink.table) {
                        runs_shape(&m.contract, &sink.table)?
                    } else {
                        TableShape::from_contract(&m.contract, &sink.table)?
                    };
                    tables.postgres.push((shape.clone(), m.manifest.clone(), m.version));
                    (shape, tables.postgres.len() - 1)
                }
                SinkKind::Questdb => {
                    if cfg.questdb.is_none() {
                        return Err(unconfigured(
                            "QuestDB",
                            "--questdb 'http::addr=HOST:9000;' (or name with --targets only the kinds to write without it)",
                        ));
                    }
                    let table = QuestTable::from_contract(&m.contract, &sink.table)?;
                    let shape = table.shape.clone();
                    tables.questdb.push(table);
                    (shape, tables.questdb.len() - 1)
                }
            };
            topics.entry(topic.clone()).or_insert_with(|| TopicRoutes::new(&topic, &m.contract));
            routed.push((sink.kind, index, sink.table.clone(), topic.clone(), shape));
        }
    }
    if routed.is_empty() {
        let why = match &cfg.targets {
            Some(only) => format!(
                "none of the tables the manifests name (output.sinks) is of a kind --targets selects ({})",
                only.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
            ),
            None => "none of the manifests names a table to write (output.sinks)".into(),
        };
        return Err(Error::Setup(why));
    }
    // Each kind of target opened once, with every table routed to it.
    let mut targets: Targets = Vec::new();
    let mut slot: HashMap<SinkKind, usize> = HashMap::new();
    // The shapes the PostgreSQL tables have: a table an earlier sink keyed by `row_id` alone
    // keeps that key, and a batch then holds one row of a `row_id`, as the table does.
    let mut pg_shapes: Vec<TableShape> = Vec::new();
    if let (Some(url), false) = (&cfg.postgres, tables.postgres.is_empty()) {
        let n = tables.postgres.len();
        let target = PgTarget::open(url, tables.postgres, cfg.pg_connections).await?;
        pg_shapes = target.shapes().cloned().collect();
        targets.push(Box::new(target));
        slot.insert(SinkKind::Postgres, targets.len() - 1);
        info!(postgres = %redact(url), tables = n, "PostgreSQL target ready");
    }
    if let (Some(conf), false) = (&cfg.questdb, tables.questdb.is_empty()) {
        let n = tables.questdb.len();
        targets.push(Box::new(QuestTarget::open(conf, tables.questdb).await?));
        slot.insert(SinkKind::Questdb, targets.len() - 1);
        info!(tables = n, "QuestDB target ready");
    }
    let mut routes = Vec::with_capacity(routed.len());
    for (route, (kind, table, name, topic, shape)) in routed.into_iter().enumerate() {
        let shape = if kind == SinkKind::Postgres { pg_shapes[table].clone() } else { shape };
        topics.get_mut(&topic).expect("added with its route").add(route, shape)?;
        let target = slot[&kind];
        routes.push(Route { target, table, kind: targets[target].kind(), name });
    }
    Ok(Routing { routes, topics, targets })
}
