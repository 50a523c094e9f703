//! `pitgun validate`: which contract is this document, and is it valid?

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pitgun_codec::dataset::{for_each_record, Format};
use pitgun_contracts::error::Issue;
use pitgun_contracts::load::{from_value, SourceText};
use pitgun_contracts::schema::ContractKind;
use pitgun_contracts::{analysis, bundle, dictionary, envelope, manifest, ContractError};

use crate::project::Project;

/// Arguments of `pitgun validate`.
#[derive(Args)]
#[command(after_help = "The contract is recognised by the document's `schema` field \
(pitgun-envelope/v1, pitgun-dictionary/v1, pitgun-pipeline/v1, pitgun-bundle/v1, pitgun-analysis/v1). \
Datasets (.ndjson, .jsonl, .json, plain or .gz/.zst, and .avro: what replay reads) are checked \
record by record as envelopes; a plain .json file is one when its first line is an envelope. A pipeline is also compiled against its \
dictionary (found beside it, or --dictionary) as replay would, and a bundle's pins are checked \
for every pipeline it ships. Exit code 1 when any document is invalid.")]
pub struct ValidateArgs {
    /// Files to check (YAML, JSON or NDJSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Dictionary pipelines are compiled against (default: for each, the one the manifest pins,
    /// <name>.yaml in ../dictionary/ from its folder, else in its folder).
    #[arg(long)]
    dictionary: Option<PathBuf>,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let mut failed = 0usize;
    for path in &args.files {
        if is_dataset(path) {
            failed += check_dataset(path)?;
            continue;
        }
        let source = match SourceText::read(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
                continue;
            }
        };
        let checked = check(&source).map_err(anyhow::Error::from).and_then(|kind| {
            // Named once: most errors already start with the file (and line).
            runs(kind, path, args.dictionary.as_deref()).map_err(|e| {
                if format!("{e:#}").starts_with(&source.file) {
                    e
                } else {
                    e.context(source.file.clone())
                }
            })?;
            Ok(kind)
        });
        match checked {
            Ok(kind) => say!("{}: valid {}", source.file, kind.tag())?,
            Err(e) => {
                failed += 1;
                eprintln!("{e:#}");
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A dataset of envelopes, as `replay` and `publish` read them: NDJSON or JSON lines (plain,
/// `.gz` or `.zst`) or Avro. A plain `.json` file is one document (contracts are JSON too),
/// unless it reads as replay reads it: its first line a whole envelope, or a JSON array (which
/// the dataset reader refuses, saying what to do).
fn is_dataset(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if Format::of(path).is_err() {
        return false;
    }
    if !name.ends_with(".json") {
        return true;
    }
    // The file's head tells: a megabyte holds the first line of any envelope.
    let mut head = Vec::new();
    let Ok(file) = std::fs::File::open(path) else { return false };
    if std::io::Read::read_to_end(&mut std::io::Read::take(file, 1 << 20), &mut head).is_err() {
        return false;
    }
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&head);
    let text = String::from_utf8_lossy(head);
    pitgun_codec::dataset::is_json_array(head)
        || text.lines().map(str::trim).find(|l| !l.is_empty()).is_some_and(|first| {
            serde_json::from_str::<serde_json::Value>(first)
                .is_ok_and(|v| v.get("schema").and_then(|s| s.as_str()) == Some(envelope::ENVELOPE_SCHEMA_V1))
        })
}

/// Checks every record of a dataset as an envelope, naming each bad one by file and line;
/// returns how many were bad (a file that cannot be read counts as one).
fn check_dataset(path: &Path) -> Result<usize> {
    let (mut records, mut bad) = (0u64, 0usize);
    let read = for_each_record::<anyhow::Error>(path, &|_| {}, |line, text| {
        records += 1;
        let file = format!("{}:{line}", path.display());
        let refused = |pointer: String, message: String| ContractError::Invalid(vec![Issue { file: file.clone(), line: None, pointer, message }]);
        let checked = text.map_err(|e| refused(e.pointer.clone(), e.message.clone())).and_then(|text| check_record(&file, text, refused));
        if let Err(e) = checked {
            bad += 1;
            eprintln!("{e}");
        }
        Ok(true)
    });
    if let Err(e) = read {
        eprintln!("{e:#}");
        return Ok(bad + 1);
    }
    match (records, bad) {
        (0, _) => say!("{}: no envelopes", path.display())?,
        (n, 0) => say!("{}: {n} valid envelopes", path.display())?,
        _ => {}
    }
    Ok(bad)
}

/// One dataset record (`file` is its label, `file:number`): a JSON envelope by the schema, then
/// by the decoder replay, publish and the gateway use, for what a JSON value cannot show (a
/// field or a channel written twice).
fn check_record(file: &str, text: &str, refused: impl Fn(String, String) -> ContractError) -> Result<(), ContractError> {
    let value = serde_json::from_str::<serde_json::Value>(text).map_err(|e| refused(String::new(), format!("not valid JSON: {e}")))?;
    let record = SourceText { file: file.to_string(), text: text.to_string() };
    from_value::<envelope::Envelope>(ContractKind::Envelope, &value, &record).map_err(|e| match e {
        // The record is one line: its number is in the label, not a line within it.
        ContractError::Invalid(mut issues) => {
            issues.iter_mut().for_each(|i| i.line = None);
            ContractError::Invalid(issues)
        }
        other => other,
    })?;
    let view = pitgun_codec::json::decode(text).map_err(|e| refused(e.pointer, e.message))?;
    pitgun_codec::rules::unique_channels(&view).map_err(|b| refused(b.pointer, b.message))
}

/// Whether a valid document also runs: a dictionary keeps its own rules; a pipeline compiles
/// against its dictionary; every pipeline of a bundle loads with all of the bundle's pins
/// matching and compiles.
fn runs(kind: ContractKind, path: &Path, dictionary: Option<&Path>) -> Result<()> {
    match kind {
        ContractKind::Pipeline => {
            Project::load(path, dictionary)?.compile()?;
        }
        ContractKind::Dictionary => {
            let d = pitgun_contracts::load::load::<dictionary::Dictionary>(kind, path)?;
            let broken = dictionary::issues(&d);
            if !broken.is_empty() {
                return Err(ContractError::Invalid(broken).into());
            }
            for warning in dictionary::warnings(&d) {
                eprintln!("{warning}");
            }
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
        let found = match value.get("schema") {
            Some(tag) => format!("unknown contract {tag}"),
            None => "no `schema` field names the contract".into(),
        };
        return Err(ContractError::Invalid(vec![source.issue(
            "/schema",
            format!("{found}; expected one of pitgun-envelope/v1, pitgun-dictionary/v1, pitgun-pipeline/v1, pitgun-bundle/v1, pitgun-analysis/v1"),
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
