#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for SECONDS_PER_TARGET seconds (default 60) on the stable
# toolchain (cargo fuzz with `-s none`: libFuzzer's coverage guidance, no sanitizer), each on a
# copy of its committed corpus (fuzz/corpus/<target>), so CI never grows the committed one.
# Prints the seed, and per target the executions and libFuzzer's last coverage line (cov:,
# ft:); any crash, timeout or out-of-memory fails the run, with the saved input's path printed.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]    (PITGUN_FUZZ_SEED, PITGUN_FUZZ_TARGETS override)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-60}"
SEED="${PITGUN_FUZZ_SEED:-20261126}"
CARGO_FUZZ_VERSION=0.13.1
# Outside the clone and kept between CI runs, beside the main build's target directory.
FUZZ_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}/fuzz"

# PITGUN_FUZZ_SKIP_BUILD=1 runs the targets as last built (a build done separately, e.g. under a
# lock shared with other builds on the machine).
if [ "${PITGUN_FUZZ_SKIP_BUILD:-0}" != 1 ]; then
  if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
    env -u CARGO_TARGET_DIR cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
  fi
  # cargo fuzz has no --locked: the resolve is checked against fuzz/Cargo.lock first, so the
  # build below cannot change it.
  cargo fetch --locked --manifest-path fuzz/Cargo.toml
  cargo fuzz build -s none --target-dir "$FUZZ_DIR"
fi
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ_DIR/$TRIPLE/release"

TARGETS="${PITGUN_FUZZ_TARGETS:-$(basename -s .rs fuzz/fuzz_targets/*.rs)}"
RUN_DIR="$FUZZ_DIR/runs/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN_DIR"
# Earlier runs' logs and crash inputs: the last ten are kept.
ls -1d "$FUZZ_DIR/runs/"*/ | head -n -10 | xargs -r rm -rf
echo "fuzz.sh: ${SECONDS_PER_TARGET}s per target, -seed=$SEED, logs and crash inputs in $RUN_DIR"
failed=()
for t in $TARGETS; do
  corpus="$RUN_DIR/$t/corpus"
  mkdir -p "$corpus" "$RUN_DIR/$t/artifacts"
  cp -R "fuzz/corpus/$t/." "$corpus/"
  log="$RUN_DIR/$t/log"
  rc=0
  "$BIN_DIR/$t" -seed="$SEED" -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$RUN_DIR/$t/artifacts/" "$corpus" > "$log" 2>&1 || rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  last="$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1 || true)"
  echo "fuzz.sh: $t: ${execs:-?} executions; last: ${last:-none}"
  rm -rf "$corpus"
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    for a in "$RUN_DIR/$t/artifacts/"*; do [ -e "$a" ] && echo "fuzz.sh: $t: FAILED (exit $rc), input saved at $a" >&2; done
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: failing targets: ${failed[*]} (reproduce: $BIN_DIR/<target> <input>)" >&2
  exit 1
fi
echo "fuzz.sh: every target ran ${SECONDS_PER_TARGET}s without a crash"
