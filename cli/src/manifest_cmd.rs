//! `pitgun manifest test|contract|diff|hash`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use pitgun_contracts::analysis::AnalysisContract;
use pitgun_contracts::load::{load, SourceText};
use pitgun_contracts::schema::{ContractKind, Validators};
use pitgun_engine::manifest_test::run_case;

use crate::project::Project;

/// Manifest tools.
#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Run the test cases a manifest carries, and check its committed analysis contract.
    ///
    /// Exit 0 when every check passes, 1 when one fails, 2 when a manifest could not be loaded
    /// (it is named, and the others are still tested).
    Test {
        /// Manifests to test.
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        /// Dictionary file (default: the one the manifest pins, <name>.yaml in ../dictionary/ from
        /// its folder, else in its folder).
        #[arg(long)]
        dictionary: Option<PathBuf>,
    },
    /// Print a manifest's analysis contract (the JSON Schema-valid description of its rows).
    Contract {
        /// The manifest.
        manifest: PathBuf,
        /// Dictionary file.
        #[arg(long)]
        dictionary: Option<PathBuf>,
        /// Write it beside the manifest as `<file stem>.contract.json` instead of printing.
        #[arg(long)]
        write: bool,
    },
    /// Compare two manifest versions' contracts; exit 1 when the change is incompatible
    /// and the version number did not change.
    Diff {
        /// The earlier manifest.
        old: PathBuf,
        /// The later manifest.
        new: PathBuf,
        /// Dictionary file.
        #[arg(long)]
        dictionary: Option<PathBuf>,
    },
    /// Print the content hash (SHA-256 of the RFC 8785 canonical JSON) of any contract document.
    ///
    /// A file that cannot be read or parsed is named on standard error and the others are still
    /// hashed; the exit code is then 2.
    Hash {
        /// Documents to hash.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(cmd: ManifestCommand) -> Result<ExitCode> {
    match cmd {
        ManifestCommand::Test { manifests, dictionary } => test(&manifests, dictionary.as_deref()),
        ManifestCommand::Contract { manifest, dictionary, write } => {
            let project = Project::load(&manifest, dictionary.as_deref())?;
            let contract = project.compile()?.contract;
            let text = contract_text(&contract);
            if write {
                let path = contract_path(&manifest);
                std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            } else {
                say!("{}", text.strip_suffix('\n').unwrap_or(&text))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Diff { old, new, dictionary } => {
            let a = Project::load(&old, dictionary.as_deref())?;
            let b = Project::load(&new, dictionary.as_deref())?;
            let (ca, cb) = (a.compile()?.contract, b.compile()?.contract);
            let changes = contract_changes(&ca, &cb);
            if changes.is_empty() {
                say!("contracts are identical")?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut incompatible = false;
            for c in &changes {
                say!("{} {}", if c.breaking { "BREAKING" } else { "compatible" }, c.what)?;
                incompatible |= c.breaking;
            }
            if incompatible && ca.version == cb.version {
                eprintln!("incompatible contract change without a new manifest version ({} v{})", cb.manifest, cb.version);
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Hash { files } => {
            let mut unloadable = 0;
            for f in files {
                match SourceText::read(&f).and_then(|source| source.parse()) {
                    Ok(value) => say!("{}  {}", pitgun_contracts::hash::content_hash(&value), f.display())?,
                    Err(e) => unloadable += not_loaded(&e.into()),
                }
            }
            Ok(if unloadable == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
    }
}

/// `manifests/pipelines/x.v1.yaml` → `manifests/pipelines/x.v1.contract.json`.
pub fn contract_path(manifest: &Path) -> PathBuf {
    let stem = manifest.file_stem().and_then(|s| s.to_str()).unwrap_or("manifest");
    manifest.with_file_name(format!("{stem}.contract.json"))
}

fn contract_text(c: &AnalysisContract) -> String {
    let mut text = serde_json::to_string_pretty(c).expect("contracts serialize");
    text.push('\n');
    text
}

/// A file a tool over several files could not load: named on standard error, and the tool goes
/// on with the next (as `grep` does); it exits 2 once all are done. Returns 1, to count.
fn not_loaded(e: &anyhow::Error) -> usize {
    eprintln!("error: {e:#}");
    1
}

fn test(manifests: &[PathBuf], dictionary: Option<&Path>) -> Result<ExitCode> {
    let (mut passed, mut failed, mut unloadable) = (0usize, 0usize, 0usize);
    for path in manifests {
        let loaded = Project::load(path, dictionary).and_then(|project| Ok((project.compile()?, project)));
        let (plan, project) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                unloadable += not_loaded(&e);
                continue;
            }
        };
        let name = format!("{} v{}", plan.manifest.name, plan.manifest.version);
        // The committed contract must match what the manifest generates.
        let committed = contract_path(path);
        let generated = &plan.contract;
        let schema_errors = Validators::get().validate(ContractKind::Analysis, &serde_json::to_value(generated)?);
        if !schema_errors.is_empty() {
            failed += 1;
            say!("FAIL {name}: generated contract violates pitgun-analysis/v1: {schema_errors:?}")?;
        }
        match load::<AnalysisContract>(ContractKind::Analysis, &committed) {
            Ok(c) if &c.doc == generated => {
                passed += 1;
                say!("ok   {name}: analysis contract matches {}", committed.display())?;
            }
            Ok(c) => {
                failed += 1;
                say!("FAIL {name}: the analysis contract changed without a new manifest version:")?;
                let changes = contract_changes(&c.doc, generated);
                for change in &changes {
                    let kind = if change.breaking { "breaking" } else { "compatible" };
                    say!("       {kind}: {}", change.what)?;
                }
                if changes.iter().any(|c| c.breaking) {
                    say!("       an incompatible change needs a new manifest (version {}) beside this one", plan.manifest.version + 1)?;
                } else {
                    say!("       compatible: record it with `pitgun manifest contract --write {}`", path.display())?;
                }
            }
            Err(e) => {
                failed += 1;
                say!("FAIL {name}: no committed contract: {e}")?;
            }
        }
        let cases = plan.manifest.tests.clone();
        drop(plan);
        let compile = || project.compile().expect("compiled once already");
        for case in &cases {
            let result = run_case(&compile, case);
            if result.failures.is_empty() {
                passed += 1;
                say!("ok   {name}: {}", result.name)?;
            } else {
                failed += 1;
                say!("FAIL {name}: {}", result.name)?;
                for f in &result.failures {
                    say!("       {f}")?;
                }
            }
        }
    }
    if unloadable > 0 {
        say!("{passed} passed, {failed} failed, {unloadable} not loaded")?;
        return Ok(ExitCode::from(2));
    }
    say!("{passed} passed, {failed} failed")?;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

struct Change {
    breaking: bool,
    what: String,
}

/// A contract's value as the contract writes it (`int`, `m/s`; `none` for an absent unit).
fn as_written<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Null) => "none".into(),
        Ok(other) => other.to_string(),
        Err(e) => format!("({e})"),
    }
}

/// Column-level differences; removing or retyping a column, or making it nullable, breaks readers.
fn contract_changes(old: &AnalysisContract, new: &AnalysisContract) -> Vec<Change> {
    // Every field of the contract is compared here: `manifest test` calls any difference a
    // change, so one this misses would fail the test with nothing listed.
    let mut out = Vec::new();
    if old.manifest != new.manifest {
        out.push(Change { breaking: true, what: format!("manifest {} → {}", old.manifest, new.manifest) });
    }
    if old.version != new.version {
        out.push(Change { breaking: false, what: format!("version {} → {}", old.version, new.version) });
    }
    if old.schema != new.schema {
        out.push(Change { breaking: true, what: format!("contract schema {} → {}", old.schema, new.schema) });
    }
    if old.window != new.window {
        out.push(Change { breaking: true, what: format!("window kind {} → {}", old.window, new.window) });
    }
    // The topic is the manifest's name and version (`pitgun.aggregates.<name>.v<version>`),
    // both named above: a version bump is not a breaking topic change of its own.
    // The order of the columns both have: a csv header's and every row's field order.
    let order = |a: &AnalysisContract, b: &AnalysisContract| -> Vec<String> {
        a.columns.iter().filter(|c| b.columns.iter().any(|n| n.name == c.name)).map(|c| c.name.clone()).collect()
    };
    if order(old, new) != order(new, old) {
        let names = |c: &AnalysisContract| c.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
        out.push(Change { breaking: true, what: format!("column order {} → {}", names(old), names(new)) });
    }
    for c in &old.columns {
        match new.columns.iter().find(|n| n.name == c.name) {
            None => out.push(Change { breaking: true, what: format!("column {:?} removed", c.name) }),
            Some(n) => {
                if n.column_type != c.column_type {
                    out.push(Change {
                        breaking: true,
                        what: format!("column {:?} type {} → {}", c.name, as_written(&c.column_type), as_written(&n.column_type)),
                    });
                }
                if n.unit != c.unit {
                    out.push(Change {
                        breaking: true, what: format!("column {:?} unit {} → {}", c.name, as_written(&c.unit), as_written(&n.unit))
                    });
                }
                if n.nullable && !c.nullable {
                    out.push(Change { breaking: true, what: format!("column {:?} became nullable", c.name) });
                }
                if !n.nullable && c.nullable {
                    out.push(Change { breaking: false, what: format!("column {:?} is no longer nullable", c.name) });
                }
                if n.role != c.role {
                    out.push(Change {
                        breaking: true, what: format!("column {:?} role {} → {}", c.name, as_written(&c.role), as_written(&n.role))
                    });
                }
                if n.description != c.description {
                    out.push(Change { breaking: false, what: format!("column {:?} description changed", c.name) });
                }
            }
        }
    }
    for n in &new.columns {
        if !old.columns.iter().any(|c| c.name == n.name) {
            out.push(Change { breaking: false, what: format!("column {:?} added", n.name) });
        }
    }
    out
}
