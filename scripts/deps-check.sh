#!/usr/bin/env bash
# The dependency tree under `cargo deny` (deny.toml): licences, bans and sources, then the RustSec
# advisories. Installs cargo-deny if missing.
#
#   scripts/deps-check.sh
#
# The advisory database is fetched from GitHub by cargo-deny. Where GitHub cannot be reached, set
# PITGUN_ADVISORY_DB to a local git copy of github.com/rustsec/advisory-db (a mirror); it is
# cloned where cargo-deny looks for its database and the check runs offline. The database's date
# is printed: an old copy misses recent advisories.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DENY_VERSION=0.20.2
log() { echo "deps-check: $*" >&2; }
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  log "installing cargo-deny $CARGO_DENY_VERSION (once per machine, a few minutes)"
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi
# cargo-deny reads `cargo metadata` of every target platform; fetch them all first (crates.io).
cargo fetch --locked --quiet
cargo deny --offline check licenses bans sources

MIRROR="${PITGUN_ADVISORY_DB:-}"
if [ -z "$MIRROR" ] && [ -d /work/.mirror/rustsec+advisory-db/repo ]; then
  MIRROR=/work/.mirror/rustsec+advisory-db/repo # this project's build machines: no GitHub access
fi
if [ -n "$MIRROR" ]; then
  # cargo-deny keeps the database of deny.toml's URL in this folder (named after the URL's hash).
  DB="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
  if [ -d "$DB/.git" ]; then
    git -C "$DB" fetch --quiet "$MIRROR" HEAD && git -C "$DB" reset --quiet --hard FETCH_HEAD
  else
    mkdir -p "$(dirname "$DB")" && git clone --quiet "$MIRROR" "$DB"
  fi
  log "advisory database from $MIRROR, last commit $(git -C "$DB" log -1 --format=%cs)"
  # A copy can go stale unnoticed: say how old it is, loudly past a month.
  age_days=$(( ($(date +%s) - $(git -C "$DB" log -1 --format=%ct)) / 86400 ))
  if [ "$age_days" -gt 30 ]; then
    log "WARNING: the advisory database is $age_days days old; advisories published since then are not checked (update $MIRROR)"
  fi
  cargo deny --offline check advisories
else
  cargo deny check advisories
fi
