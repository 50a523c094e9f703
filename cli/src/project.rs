//! Finding and compiling a manifest with its dictionary.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use pitgun_contracts::bundle::Bundle;
use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::manifest::PipelineManifest;
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::Plan;

/// A manifest and the dictionary it pins, loaded and checked.
pub struct Project {
    pub manifest: Loaded<PipelineManifest>,
    pub dictionary: Loaded<Dictionary>,
    /// Every file read, with what it is: a command's outputs may not overwrite any of them,
    /// including the dictionary found beside the manifest, which no flag names.
    pub files: Vec<(&'static str, PathBuf)>,
}

impl Project {
    /// Loads a manifest; the dictionary is `--dictionary`, or `<name>.yaml` in the
    /// `dictionary/` folder beside the manifest's folder (the repository layout).
    pub fn load(manifest_path: &Path, dictionary: Option<&Path>) -> Result<Project> {
        let manifest: Loaded<PipelineManifest> = load(ContractKind::Pipeline, manifest_path)?;
        let dict_path = match dictionary {
            Some(p) => p.to_path_buf(),
            None => default_dictionary(Path::new(&manifest.source.file), &manifest.doc.dictionary.name)?,
        };
        let dictionary = load(ContractKind::Dictionary, &dict_path)?;
        Ok(Project { manifest, dictionary, files: vec![("the manifest", manifest_path.to_path_buf()), ("the dictionary", dict_path)] })
    }

    /// Loads pipeline `name` from a bundle, checking every pinned hash.
    pub fn from_bundle(bundle: &Path, name: &str) -> Result<Project> {
        let b: Loaded<Bundle> = load(ContractKind::Bundle, bundle)?;
        let base = bundle.parent().unwrap_or(Path::new("."));
        let in_bundle = |e: String| anyhow!("{}: {e}", bundle.display());
        // A name pinned twice anywhere in the bundle is refused, whichever pipeline is asked for.
        for other in &b.doc.pipelines {
            b.doc.pipeline(&other.name).map_err(in_bundle)?;
        }
        let pinned = b.doc.pipeline(name).map_err(in_bundle)?;
        let mut files = vec![("the bundle", bundle.to_path_buf()), ("the bundle's manifest", base.join(&pinned.path))];
        let manifest: Loaded<PipelineManifest> = load(ContractKind::Pipeline, &files[1].1)?;
        if manifest.hash != pinned.sha256 {
            bail!("{}: content hash {} does not match the bundle's pin {}", pinned.path, manifest.hash, pinned.sha256);
        }
        pinned.names(&manifest.doc.name, &manifest.doc.version.to_string()).map_err(in_bundle)?;
        files.push(("the bundle's dictionary", base.join(&b.doc.dictionary.path)));
        let dictionary: Loaded<Dictionary> = load(ContractKind::Dictionary, &files[2].1)?;
        if dictionary.hash != b.doc.dictionary.sha256 {
            bail!("{}: content hash {} does not match the bundle's pin {}", b.doc.dictionary.path, dictionary.hash, b.doc.dictionary.sha256);
        }
        b.doc.dictionary.names(&dictionary.doc.name, &dictionary.doc.version).map_err(in_bundle)?;
        for schema in &b.doc.schemas {
            files.push(("a schema in the bundle", base.join(&schema.path)));
            let source = pitgun_contracts::load::SourceText::read(&base.join(&schema.path))?;
            let hash = pitgun_contracts::hash::content_hash(&source.parse()?);
            if hash != schema.sha256 {
                bail!("{}: content hash {hash} does not match the bundle's pin {}", schema.path, schema.sha256);
            }
            let embedded = pitgun_contracts::schema::schemas().iter().find(|s| s.id == schema.id);
            if embedded.is_none_or(|e| pitgun_contracts::hash::content_hash(&e.value) != hash) {
                bail!("schema {} in the bundle is not the one this pitgun was built with", schema.id);
            }
        }
        Ok(Project { manifest, dictionary, files })
    }

    /// Compiles the plan (every thread compiles its own: formulas are not shared across threads).
    pub fn compile(&self) -> Result<Plan> {
        Ok(Plan::compile(&self.manifest, &self.dictionary)?)
    }
}

fn default_dictionary(manifest: &Path, name: &str) -> Result<PathBuf> {
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join("../dictionary").join(format!("{name}.yaml")), dir.join(format!("{name}.yaml"))];
    candidates.iter().find(|p| p.exists()).cloned().with_context(|| {
        format!(
            "{}: the dictionary it pins, {name:?}, is not found: looked for {} and {}; pass --dictionary FILE",
            manifest.display(),
            candidates[0].display(),
            candidates[1].display()
        )
    })
}
