//! `pitgun validate`: which contract is this document, and is it valid?

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pitgun_contracts::load::{from_value, SourceText};
use pitgun_contracts::schema::ContractKind;
use pitgun_contracts::{analysis, bundle, dictionary, envelope, manifest, ContractError};

use crate::project::Project;

/// Arguments of `pitgun validate`.
#[derive(Args)]
#[command(after_help = "The contract is recognised by the document's `schema` field \
(pitgun-envelope/v1, pitgun-dictionary/v1, pitgun-pipeline/v1, pitgun-bundle/v1, pitgun-analysis/v1). \
NDJSON files are checked line by line as envelopes. A pipeline is also compiled against its \
dictionary (found beside it, or --dictionary) as replay would, and a bundle's pins are checked \
for every pipeline it ships. Exit code 1 when any document is invalid.")]
pub struct ValidateArgs {
    /// Files to check (YAML, JSON or NDJSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Dictionary pipelines are compiled against (default: found beside each manifest).
    #[arg(long)]
    dictionary: Option<PathBuf>,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let mut failed = 0usize;
    for path in &args.files {
        let source = match SourceText::read(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
                continue;
            }
        };
        let documents: Vec<(SourceText, Option<usize>)> = if source.file.ends_with(".ndjson") || source.file.ends_with(".jsonl") {
            source
                .text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| (SourceText { file: format!("{}:{}", source.file, i + 1), text: l.to_string() }, Some(i + 1)))
                .collect()
        } else {
            vec![(source, None)]
        };
        let mut file_errors = 0;
        for (doc, _) in &documents {
            let checked = check(doc).map_err(anyhow::Error::from).and_then(|kind| {
                runs(kind, path, args.dictionary.as_deref())?;
                Ok(kind)
            });
            match checked {
                Ok(kind) if documents.len() == 1 => println!("{}: valid {}", doc.file, kind.tag()),
                Ok(_) => {}
                Err(e) => {
                    file_errors += 1;
                    eprintln!("{e:#}");
                }
            }
        }
        if documents.len() > 1 && file_errors == 0 {
            println!("{}: {} valid envelopes", path.display(), documents.len());
        }
        failed += file_errors;
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Whether a valid document also runs: a pipeline compiles against its dictionary; every
/// pipeline of a bundle loads with all of the bundle's pins matching and compiles.
fn runs(kind: ContractKind, path: &Path, dictionary: Option<&Path>) -> Result<()> {
    match kind {
        ContractKind::Pipeline => {
            Project::load(path, dictionary)?.compile()?;
        }
        ContractKind::Bundle => {
            let b: pitgun_contracts::load::Loaded<bundle::Bundle> = pitgun_contracts::load::load(kind, path)?;
            for pinned in &b.doc.pipelines {
                Project::from_bundle(path, &pinned.name)?.compile()?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn check(source: &SourceText) -> Result<ContractKind, ContractError> {
    let value = source.parse()?;
    let Some(kind) = ContractKind::of_document(&value) else {
        let found = value.get("schema").map(|v| v.to_string()).unwrap_or_else(|| "nothing".into());
        return Err(ContractError::Invalid(vec![source.issue(
            "/schema",
            format!("unknown contract {found}; expected one of pitgun-envelope/v1, pitgun-dictionary/v1, pitgun-pipeline/v1, pitgun-bundle/v1, pitgun-analysis/v1"),
        )]));
    };
    match kind {
        ContractKind::Envelope => from_value::<envelope::Envelope>(kind, &value, source).map(|_| ()),
        ContractKind::Dictionary => from_value::<dictionary::Dictionary>(kind, &value, source).map(|_| ()),
        ContractKind::Pipeline => from_value::<manifest::PipelineManifest>(kind, &value, source).map(|_| ()),
        ContractKind::Bundle => from_value::<bundle::Bundle>(kind, &value, source).map(|_| ()),
        ContractKind::Analysis => from_value::<analysis::AnalysisContract>(kind, &value, source).map(|_| ()),
    }?;
    Ok(kind)
}
