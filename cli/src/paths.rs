//! Files a command writes may not be files it reads, nor each other: `replay --output` naming
//! its own dataset once replaced the dataset with the rows and exited 0. And a file a command
//! writes appears whole or not at all ([`Replacing`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

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

/// An output file written whole or not at all: written beside its name as a hidden file and
/// renamed onto it by [`Replacing::commit`], so a run that stops part way (a full disk, an error,
/// an interrupt) leaves no partial file under the name asked for, and a file already there as it
/// was. The hidden file goes too: when the value is dropped, or when a signal ends the process
/// ([`crate::interrupt`]). What is not a regular file (a device such as `/dev/null`, a pipe, a
/// symbolic link) is written in place: renaming onto it would replace the device or the link
/// itself.
pub struct Replacing {
    path: PathBuf,
    partial: Option<PathBuf>,
}

impl Replacing {
    /// The output `path`; its hidden file is created, empty.
    pub fn new(path: &Path) -> Replacing {
        let in_place = std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file());
        let partial = (!in_place).then(|| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let prefix = format!(".partial-{}-", std::process::id());
            // The name keeps its end, the extension a dataset's format is read from; its start
            // goes where the whole would be longer than a file name may be (255 bytes).
            let mut start = name.len().saturating_sub(255 - prefix.len());
            while !name.is_char_boundary(start) {
                start += 1;
            }
            path.with_file_name(format!("{prefix}{}", &name[start..]))
        });
        if let Some(partial) = &partial {
            // Created empty here, where a signal cannot come between its creation and its
            // registration; the writer opens it again (an error is then its to name).
            crate::interrupt::remove_if_interrupted(partial, || drop(std::fs::File::create(partial)));
        }
        Replacing { path: path.to_path_buf(), partial }
    }

    /// The file to create and write.
    pub fn file(&self) -> &Path {
        self.partial.as_deref().unwrap_or(&self.path)
    }

    /// A dataset error on the file written, naming the output as given instead.
    pub fn named(&self, e: pitgun_codec::dataset::DatasetError) -> pitgun_codec::dataset::DatasetError {
        pitgun_codec::dataset::DatasetError { path: self.path.display().to_string(), ..e }
    }

    /// The file is whole: it takes its name.
    pub fn commit(mut self) -> Result<()> {
        if let Some(partial) = &self.partial {
            crate::interrupt::done(partial, || std::fs::rename(partial, &self.path))
                .with_context(|| format!("cannot rename {} to {}", partial.display(), self.path.display()))?;
            self.partial = None;
        }
        Ok(())
    }
}

impl Drop for Replacing {
    /// Not committed: the partial file goes.
    fn drop(&mut self) {
        if let Some(partial) = &self.partial {
            let _ = crate::interrupt::done(partial, || std::fs::remove_file(partial));
        }
    }
}

/// Writes the file at `path` whole or not at all ([`Replacing`]), through a buffer; an error
/// names the file as given.
pub fn write_whole(path: &Path, write: impl FnOnce(&mut dyn std::io::Write) -> Result<()>) -> Result<()> {
    let output = Replacing::new(path);
    let written = std::fs::File::create(output.file()).map_err(anyhow::Error::from).and_then(|file| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    });
    written.and_then(|()| output.commit()).with_context(|| format!("cannot write {}", path.display()))
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

    /// A replaced file keeps its old content until the new one is whole, and an output that is
    /// not a regular file is written in place.
    #[test]
    fn an_output_takes_its_name_only_once_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rows.ndjson");
        std::fs::write(&out, "old\n").unwrap();
        let abandoned = Replacing::new(&out);
        assert!(abandoned.file().extension().is_some_and(|e| e == "ndjson"), "{}", abandoned.file().display());
        std::fs::write(abandoned.file(), "half").unwrap();
        drop(abandoned);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the partial file is removed");
        let done = Replacing::new(&out);
        std::fs::write(done.file(), "new\n").unwrap();
        done.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(Replacing::new(Path::new("/dev/null")).file(), Path::new("/dev/null"));
        let link = dir.path().join("link.ndjson");
        std::os::unix::fs::symlink(&out, &link).unwrap();
        assert_eq!(Replacing::new(&link).file(), link);
        // A name as long as a folder takes: the hidden one is cut at its start, not refused.
        let long = dir.path().join(format!("{}.ndjson", "r".repeat(248)));
        let output = Replacing::new(&long);
        std::fs::write(output.file(), "rows\n").unwrap();
        assert!(output.file().to_string_lossy().ends_with(".ndjson"));
        output.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&long).unwrap(), "rows\n");
    }

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
