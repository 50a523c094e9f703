//! The operators' documents from text, as `pitgun manifest validate`, `replay` and the processor
//! read them: the loader (`pitgun_contracts::load::load_text`: JSON or YAML, the `schema` tag,
//! the JSON Schema, the typed parse, the content hash, error lines) for manifests, dictionaries,
//! bundles and analysis contracts; then the manifest compiler (`Plan::compile`: dictionary
//! bindings, units, formulas, windows) of a fuzzed manifest against the racing dictionary and of
//! the lap-performance manifest against a fuzzed dictionary; the gateway's channel catalog of a
//! fuzzed dictionary; and a compiled manifest's own test cases run on the engine
//! (`pitgun manifest test`).
//!
//! The first byte chooses the contract (and JSON or YAML by file name); the rest is the text.
//! Held: an invalid document is an error naming a file and pointer, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pitgun_contracts::analysis::AnalysisContract;
use pitgun_contracts::bundle::Bundle;
use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::error::ContractError;
use pitgun_contracts::load::{load_text, Loaded, SourceText};
use pitgun_contracts::manifest::PipelineManifest;
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::manifest_test::run_case;
use pitgun_engine::Plan;

fn racing() -> &'static Loaded<Dictionary> {
    static D: OnceLock<Loaded<Dictionary>> = OnceLock::new();
    D.get_or_init(|| {
        let text = include_str!("../../manifests/dictionary/racing.yaml");
        load_text(ContractKind::Dictionary, SourceText { file: "racing.yaml".into(), text: text.into() }).unwrap()
    })
}

fn lap_manifest() -> &'static Loaded<PipelineManifest> {
    static M: OnceLock<Loaded<PipelineManifest>> = OnceLock::new();
    M.get_or_init(|| {
        let text = include_str!("../../manifests/pipelines/lap-performance.v1.yaml");
        load_text(ContractKind::Pipeline, SourceText { file: "lap-performance.v1.yaml".into(), text: text.into() }).unwrap()
    })
}

/// An error must say where: a file, and a pointer or line when it is about the document.
fn explained(e: &ContractError) {
    assert!(!e.to_string().is_empty());
}

fn load<T: serde::de::DeserializeOwned>(kind: ContractKind, file: &str, text: &str) -> Option<Loaded<T>> {
    match load_text::<T>(kind, SourceText { file: file.into(), text: text.into() }) {
        Ok(l) => {
            assert!(l.hash.starts_with("sha256:"));
            Some(l)
        }
        Err(e) => {
            explained(&e);
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let file = if mode & 0x80 == 0 { "doc.yaml" } else { "doc.json" };
    match mode & 3 {
        0 => {
            let Some(manifest) = load::<PipelineManifest>(ContractKind::Pipeline, file, text) else { return };
            if let Err(e) = Plan::compile(&manifest, racing()) {
                return explained(&e);
            }
            // Its own test cases on the engine, bounded so one input stays fast.
            let events: usize = manifest.doc.tests.iter().map(|c| c.input.len()).sum();
            if events <= 64 {
                for case in manifest.doc.tests.iter().take(4) {
                    let _ = run_case(&|| Plan::compile(&manifest, racing()).expect("compiled once"), case);
                }
            }
        }
        1 => {
            let Some(dict) = load::<Dictionary>(ContractKind::Dictionary, file, text) else { return };
            if let Err(e) = Plan::compile(lap_manifest(), &dict) {
                explained(&e);
            }
            let _ = pitgun_ingest::catalog::ChannelCatalog::new(&dict.doc);
        }
        2 => {
            let _ = load::<Bundle>(ContractKind::Bundle, file, text);
        }
        _ => {
            let _ = load::<AnalysisContract>(ContractKind::Analysis, file, text);
        }
    }
});
