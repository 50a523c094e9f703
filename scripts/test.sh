#!/usr/bin/env bash
# The project's one test command (README, .ci/run). On a machine with nothing running it
# installs what is missing (scripts/stack.sh install), starts a private broker and PostgreSQL
# cluster on free ports in a temporary folder, builds with the committed Cargo.lock, runs every
# test against them, and stops both by the process ids it recorded — also when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pitgun/target}"
# Property tests and the live tests' random kill points run with fixed seeds (printed).
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261126}"
export PITGUN_TEST_SEED="${PITGUN_TEST_SEED:-20261126}"
echo "test.sh: CARGO_TARGET_DIR=$CARGO_TARGET_DIR PROPTEST_RNG_SEED=$PROPTEST_RNG_SEED PITGUN_TEST_SEED=$PITGUN_TEST_SEED"

bash scripts/stack.sh install

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
STACK_DIR="$(mktemp -d /tmp/pitgun-test-stack.XXXXXX)"
BROKER_PORT="$(free_port)"
PG_PORT="$(free_port)"
cleanup() { bash scripts/stack.sh down --dir "$STACK_DIR" || true; }
trap cleanup EXIT
bash scripts/stack.sh up --dir "$STACK_DIR" --broker-port "$BROKER_PORT" --pg-port "$PG_PORT" --rebalance-delay 300ms
export PITGUN_TEST_BROKERS="127.0.0.1:$BROKER_PORT"
export PITGUN_TEST_POSTGRES="postgres://pitgun:pitgun@127.0.0.1:$PG_PORT/pitgun"
export PITGUN_TEST_PG_PORT="$PG_PORT"

cargo build --locked --release -p pitgun
cargo test --locked --workspace --release
"$CARGO_TARGET_DIR/release/pitgun" manifest test manifests/pipelines/*.yaml
