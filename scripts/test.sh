#!/usr/bin/env bash
# The project's one test command (README, .ci/run): builds with the committed Cargo.lock and
# runs every test. The engine, replay and contracts need no services; when later issues add
# tests against the broker and PostgreSQL, this script starts them first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
# Property tests run with a fixed seed in CI (printed so a failure can be replayed).
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261126}"
echo "test.sh: CARGO_TARGET_DIR=$CARGO_TARGET_DIR PROPTEST_RNG_SEED=$PROPTEST_RNG_SEED"
cargo build --locked --release -p pitgun
cargo test --locked --workspace --release
"$CARGO_TARGET_DIR/release/pitgun" manifest test manifests/pipelines/*.yaml
