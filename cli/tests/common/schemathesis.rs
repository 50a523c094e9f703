//! Runs `schemathesis` (PyPI, pinned in scripts/test-requirements.txt) against a served OpenAPI
//! document: generated requests of every operation, every check, a fixed seed.

use std::path::PathBuf;
use std::process::Command;

/// The command: `$PITGUN_SCHEMATHESIS`, or the venv `scripts/stack.sh install` makes. Missing,
/// the test fails: it is never skipped.
pub fn schemathesis() -> PathBuf {
    let path = std::env::var_os("PITGUN_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/pitgun/venv/bin/schemathesis"));
    assert!(path.is_file(), "schemathesis not found at {} (run: bash scripts/stack.sh install)", path.display());
    path
}

/// Panics with schemathesis's report unless every response to its generated requests (a bounded
/// number per operation, every check: schemathesis enables them all unless the config turns one
/// off) matched the document at `url` and none was a 5xx. `extra`: more
/// arguments, e.g. `-H` with a credential; `config`: a `schemathesis.toml`, e.g. known ids for
/// path parameters so generated requests reach stored data, not only 404s.
pub fn assert_schemathesis(url: &str, what: &str, seed: u64, extra: &[&str], config: &str) {
    eprintln!("{what}: schemathesis against {url}, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let out = Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config_file)
        .args(["run", url, "--max-examples", "60", "--seed", &seed.to_string(), "--no-color"])
        .args(["--request-timeout", "10", "--max-failures", "20", "--generation-database", "none"])
        .args(extra)
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}: schemathesis found answers that break the OpenAPI document:\n{report}");
    let tail: Vec<&str> = report.lines().rev().take(12).collect();
    eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
}
