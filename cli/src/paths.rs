//! Files a command writes may not be files it reads, nor each other: `replay --output` naming
//! its own dataset once replaced the dataset with the rows and exited 0.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Refuses, before anything is created, an output (flag, path) that is the same file as an
/// input or as an earlier output, whatever the spelling (`./`, `..`, a symbolic or hard link),
/// or one whose folder does not exist: a run that can only fail at its last output must not
/// first do all the work and replace the others. Only files are compared: `/dev/null` or a
/// terminal may take several outputs.
pub fn distinct(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<()> {
    for &(flag, path) in outputs {
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !folder.is_dir() {
            bail!("{flag} {}: the folder {} does not exist", path.display(), folder.display());
        }
    }
    let mut seen: Vec<(&str, &Path, Identity)> = inputs.iter().filter_map(|&(flag, p)| Some((flag, p, identity(p)?))).collect();
    for &(flag, path) in outputs {
        let Some(id) = identity(path) else { continue };
        if let Some((other, other_path, _)) = seen.iter().find(|(_, _, known)| *known == id) {
            bail!("{flag} {} is the same file as {other} {}: refusing to overwrite it; give another path", path.display(), other_path.display());
        }
        seen.push((flag, path, id));
    }
    Ok(())
}

/// What makes two paths one file: the device and inode of an existing file, else the absolute
/// path it would be created at (through a dangling symbolic link, its target's).
#[derive(PartialEq, Eq)]
enum Identity {
    File(u64, u64),
    Path(PathBuf),
}

/// `None` for what is not a file (a device, a pipe, a folder): never the same file as another.
fn identity(path: &Path) -> Option<Identity> {
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            return Some(Identity::File(m.dev(), m.ino()));
        }
    }
    let mut path = path.to_path_buf();
    // A link to a file not yet created: that file is what will be written.
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&path) else { break };
        path = path.parent().unwrap_or(Path::new(".")).join(target);
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let resolved = match (std::fs::canonicalize(parent), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => std::path::absolute(&path).unwrap_or(path),
    };
    Some(Identity::Path(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_under_other_names_is_refused_and_distinct_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        std::fs::write(&input, "{}\n").unwrap();
        let link = dir.path().join("link.ndjson");
        std::fs::hard_link(&input, &link).unwrap();
        let dotted = dir.path().join(".").join("in.ndjson");
        let out = dir.path().join("out.ndjson");
        for clash in [&input, &link, &dotted] {
            let e = distinct(&[("--input", &input)], &[("--output", clash)]).unwrap_err().to_string();
            assert!(e.starts_with("--output ") && e.contains("same file as --input"), "{e}");
        }
        let e = distinct(&[("--input", &input)], &[("--output", &out), ("--late", &dir.path().join("./out.ndjson"))]).unwrap_err().to_string();
        assert!(e.contains("--late") && e.contains("same file as --output"), "{e}");
        distinct(&[("--input", &input)], &[("--output", &out), ("--late", &dir.path().join("late.ndjson"))]).unwrap();
        // Devices take any number of outputs.
        distinct(&[("--input", &input)], &[("--output", Path::new("/dev/null")), ("--late", Path::new("/dev/null"))]).unwrap();
        // A dangling link names the file it will create.
        let link = dir.path().join("dangling.ndjson");
        std::os::unix::fs::symlink(dir.path().join("target.ndjson"), &link).unwrap();
        let e = distinct(&[], &[("--output", &link), ("--late", &dir.path().join("target.ndjson"))]).unwrap_err().to_string();
        assert!(e.contains("--late") && e.contains("same file as --output"), "{e}");
    }
}
